//! What `confine` did, layer by layer. This is what the worker sends to the daemon and what
//! operators see in `--json` output, so the shape is flat and stable:
//! `{"layer":"seccomp","state":"active","detail":"..."}` /
//! `{"layer":"userns","state":"unavailable","reason":"..."}` / `{"layer":"netns","state":"disabled"}`.

use serde::{Deserialize, Serialize};

use crate::config::{Layer, SandboxMode};

/// The outcome for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerState {
    /// Applied and in force.
    Active,
    /// Enabled by configuration but could not be applied (BestEffort mode only).
    Unavailable { reason: String },
    /// Not enabled by configuration, or mode is `off`.
    Disabled,
}

impl LayerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerState::Active => "active",
            LayerState::Unavailable { .. } => "unavailable",
            LayerState::Disabled => "disabled",
        }
    }
}

/// One line of a [`SandboxReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "LayerStatusWire", try_from = "LayerStatusWire")]
pub struct LayerStatus {
    pub layer: Layer,
    pub state: LayerState,
    /// What exactly is in force (e.g. the Landlock ABI, the number of seccomp rules).
    pub detail: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct LayerStatusWire {
    layer: Layer,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<LayerStatus> for LayerStatusWire {
    fn from(s: LayerStatus) -> Self {
        let state = s.state.as_str().to_owned();
        let reason = match s.state {
            LayerState::Unavailable { reason } => Some(reason),
            _ => None,
        };
        LayerStatusWire {
            layer: s.layer,
            state,
            reason,
            detail: s.detail,
        }
    }
}

impl TryFrom<LayerStatusWire> for LayerStatus {
    type Error = String;
    fn try_from(w: LayerStatusWire) -> Result<Self, String> {
        let state = match w.state.as_str() {
            "active" => LayerState::Active,
            "disabled" => LayerState::Disabled,
            "unavailable" => LayerState::Unavailable {
                reason: w.reason.unwrap_or_default(),
            },
            other => return Err(format!("unknown layer state {other:?}")),
        };
        Ok(LayerStatus {
            layer: w.layer,
            state,
            detail: w.detail,
        })
    }
}

/// What `confine` applied. One entry per layer, in application order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub mode: SandboxMode,
    pub layers: Vec<LayerStatus>,
}

impl SandboxReport {
    pub fn status(&self, layer: Layer) -> Option<&LayerStatus> {
        self.layers.iter().find(|s| s.layer == layer)
    }
    pub fn state(&self, layer: Layer) -> Option<&LayerState> {
        self.status(layer).map(|s| &s.state)
    }
    pub fn is_active(&self, layer: Layer) -> bool {
        matches!(self.state(layer), Some(LayerState::Active))
    }
    /// Layers that were enabled but could not be applied.
    pub fn unavailable(&self) -> impl Iterator<Item = &LayerStatus> {
        self.layers
            .iter()
            .filter(|s| matches!(s.state, LayerState::Unavailable { .. }))
    }
}
