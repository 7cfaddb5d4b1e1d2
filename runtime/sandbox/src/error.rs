//! Typed errors. The daemon maps them to the shared vocabulary (E3001 for [`SandboxError::Init`]).

use crate::config::Layer;
use crate::diag::InitChecks;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// An enabled layer could not be applied in `required` mode (E3001 SANDBOX_INIT_FAILED).
    /// The process is left partly confined and must exit.
    #[error("cannot apply sandbox layer {layer}: {reason}; checks: {checks}")]
    Init {
        layer: Layer,
        reason: String,
        checks: Box<InitChecks>,
    },
    /// The configuration itself is unusable (e.g. `ipc_fd` is not an open descriptor): a bug in
    /// the caller, reported before anything is applied.
    #[error("invalid sandbox configuration: {reason}")]
    InvalidConfig { reason: String },
}

impl SandboxError {
    pub(crate) fn init(layer: Layer, reason: impl Into<String>, checks: &InitChecks) -> Self {
        let reason = reason.into();
        SandboxError::Init {
            layer,
            checks: Box::new(checks.for_failure(&reason)),
            reason,
        }
    }

    /// The layer that failed.
    pub fn layer(&self) -> Option<Layer> {
        match self {
            SandboxError::Init { layer, .. } => Some(*layer),
            SandboxError::InvalidConfig { .. } => None,
        }
    }

    /// Why it failed, without the checks.
    pub fn reason(&self) -> &str {
        match self {
            SandboxError::Init { reason, .. } | SandboxError::InvalidConfig { reason } => reason,
        }
    }

    /// The guide's diagnostic checks, read when the failure happened.
    pub fn checks(&self) -> Option<&InitChecks> {
        match self {
            SandboxError::Init { checks, .. } => Some(checks),
            SandboxError::InvalidConfig { .. } => None,
        }
    }
}
