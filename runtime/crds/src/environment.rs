//! `VeritasEnvironment`: blue-green deployment of the runtime between two user-owned
//! Deployments (pods labelled `environment=blue|green`).
//!
//! The user owns both Deployments, their ConfigMaps (`veritas-config-blue` /
//! `veritas-config-green`), the active Service (`veritas-spark`) and the preview Service. The
//! controller changes one selector key (`environment`) of the active and preview Services, and
//! nothing else: a switch is `spec.activeEnvironment` changing, carried out as a recorded state
//! machine (`status.switchProgress`) so that a controller killed at any step resumes or rolls
//! back from what status says (Argo Rollouts' blue-green, with the steps made explicit).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use veritas_vocab::labels;

use crate::Condition;

/// The selector key of the active and preview Services the controller owns; the same key is
/// the guide's `environment` pod label.
pub const ENVIRONMENT_SELECTOR_KEY: &str = labels::ENVIRONMENT;

/// Desired state of a blue-green pair.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "veritas.hearthlink.ai",
    version = "v1alpha1",
    kind = "VeritasEnvironment",
    plural = "veritasenvironments",
    singular = "veritasenvironment",
    shortname = "venv",
    namespaced,
    status = "VeritasEnvironmentStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeEnvironment","description":"Environment the active Service selects now"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.activeEnvironment"}"#,
    printcolumn = r#"{"name":"Previous","type":"string","jsonPath":".status.previousEnvironment","priority":1}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.switchProgress.step","priority":1}"#,
    printcolumn = r#"{"name":"Waiting","type":"string","jsonPath":".status.switchProgress.reason","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VeritasEnvironmentSpec {
    /// The environment that should serve (`blue` or `green`). Changing it starts a switch.
    pub active_environment: EnvironmentName,
    /// The active Service whose `environment` selector key the controller switches.
    #[serde(default = "default_active_service")]
    pub active_service: String,
    /// The preview Service: selects the standby environment (the switch target while a switch
    /// verifies it). Skipped when it does not exist.
    #[serde(default = "default_preview_service")]
    pub preview_service: String,
    /// The blue environment's Deployment and ConfigMap.
    #[serde(default = "EnvironmentRef::default_blue")]
    pub blue: EnvironmentRef,
    /// The green environment's Deployment and ConfigMap.
    #[serde(default = "EnvironmentRef::default_green")]
    pub green: EnvironmentRef,
    #[serde(default)]
    pub switch: Switch,
    /// Seconds every pod of the target must have been ready before traffic moves to it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: i64,
}

fn default_active_service() -> String {
    labels::SERVICE_SPARK.to_string()
}
fn default_preview_service() -> String {
    labels::SERVICE_PREVIEW.to_string()
}

impl VeritasEnvironmentSpec {
    pub fn env(&self, e: EnvironmentName) -> &EnvironmentRef {
        match e {
            EnvironmentName::Blue => &self.blue,
            EnvironmentName::Green => &self.green,
        }
    }
}

/// One environment of the pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentRef {
    pub deployment: String,
    pub config_map: String,
}

impl EnvironmentRef {
    pub fn default_blue() -> EnvironmentRef {
        EnvironmentRef {
            deployment: format!("{}-{}", labels::APP_SPARK, labels::ENVIRONMENT_BLUE),
            config_map: labels::CONFIGMAP_BLUE.to_string(),
        }
    }
    pub fn default_green() -> EnvironmentRef {
        EnvironmentRef {
            deployment: format!("{}-{}", labels::APP_SPARK, labels::ENVIRONMENT_GREEN),
            config_map: labels::CONFIGMAP_GREEN.to_string(),
        }
    }
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentName {
    Blue,
    Green,
}

impl EnvironmentName {
    pub const BOTH: [EnvironmentName; 2] = [EnvironmentName::Blue, EnvironmentName::Green];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentName::Blue => labels::ENVIRONMENT_BLUE,
            EnvironmentName::Green => labels::ENVIRONMENT_GREEN,
        }
    }
    pub fn other(self) -> EnvironmentName {
        match self {
            EnvironmentName::Blue => EnvironmentName::Green,
            EnvironmentName::Green => EnvironmentName::Blue,
        }
    }
    pub fn parse(s: &str) -> Option<EnvironmentName> {
        match s {
            labels::ENVIRONMENT_BLUE => Some(EnvironmentName::Blue),
            labels::ENVIRONMENT_GREEN => Some(EnvironmentName::Green),
            _ => None,
        }
    }
}

impl std::fmt::Display for EnvironmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a switch is carried out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Switch {
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Seconds a Service selector change may take to show (the Service selecting only the
    /// new environment's ready pods) before the switch is undone with `ServiceUpdateFailed`.
    #[serde(default = "default_service_update_timeout")]
    #[schemars(range(min = 1))]
    pub service_update_timeout_seconds: i64,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            health_check: HealthCheck::default(),
            service_update_timeout_seconds: default_service_update_timeout(),
        }
    }
}

fn default_service_update_timeout() -> i64 {
    60
}

/// The gate the target environment must pass before traffic moves to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Seconds, from the start of the switch, the target has to be ready (all replicas,
    /// `minReadySeconds`) and to pass its probe; past it the switch fails and traffic stays
    /// on the old environment (the guide's `switch.healthCheck.timeout`).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i64,
    /// HTTP path probed on every ready pod of the target (the runtime's `/health`, whose JSON
    /// also names the loaded model).
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Port of the probe.
    #[serde(default = "default_probe_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Seconds one probe request may take before it counts as `HealthCheckTimeout`.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1))]
    pub probe_timeout_seconds: i64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            timeout_seconds: default_timeout(),
            path: default_probe_path(),
            port: default_probe_port(),
            probe_timeout_seconds: default_probe_timeout(),
        }
    }
}

fn default_timeout() -> i64 {
    120
}
fn default_probe_path() -> String {
    "/health".into()
}
fn default_probe_port() -> i32 {
    labels::DEFAULT_HTTP_PORT as i32
}
fn default_probe_timeout() -> i64 {
    2
}

/// Lifecycle phase (the guide greps `status.phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum EnvironmentPhase {
    /// No pass yet, or the active Service's selector could not be settled.
    #[default]
    Pending,
    /// One environment active, nothing moving.
    Stable,
    /// A switch to `switchProgress.target` is under way.
    Switching,
    /// A rollback (to the previous environment, or undoing a switch that failed after its
    /// selector change) is under way.
    RollingBack,
    /// The last switch failed; traffic is on `status.activeEnvironment`.
    SwitchFailed,
    /// The last rollback failed (`E5002 ROLLBACK_FAILED`); traffic is on
    /// `status.activeEnvironment`.
    RollbackFailed,
}

impl EnvironmentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentPhase::Pending => "Pending",
            EnvironmentPhase::Stable => "Stable",
            EnvironmentPhase::Switching => "Switching",
            EnvironmentPhase::RollingBack => "RollingBack",
            EnvironmentPhase::SwitchFailed => "SwitchFailed",
            EnvironmentPhase::RollbackFailed => "RollbackFailed",
        }
    }
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            EnvironmentPhase::Switching | EnvironmentPhase::RollingBack
        )
    }
    pub fn failed(self) -> bool {
        matches!(
            self,
            EnvironmentPhase::SwitchFailed | EnvironmentPhase::RollbackFailed
        )
    }
}

impl std::fmt::Display for EnvironmentPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a move of traffic is a switch (spec changed) or a rollback (asked for by
/// annotation, `veritas-spark rollback --bluegreen`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SwitchKind {
    Switch,
    Rollback,
}

/// The recorded steps of a switch. Each is written to status before it is acted on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SwitchStep {
    /// Waiting for the target: all replicas ready, `minReadySeconds`, health probe on every
    /// ready pod. No traffic has moved.
    Verifying,
    /// The active Service's selector is being set to the target; done when the Service selects
    /// ready target pods and no old ones.
    SwitchingSelector,
    /// Traffic is on the target; the preview Service is being pointed at the old environment.
    UpdatingPreview,
    /// The switch failed after its selector change (or was aborted): the active Service is
    /// being set back to `from`.
    RestoringSelector,
}

impl SwitchStep {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchStep::Verifying => "Verifying",
            SwitchStep::SwitchingSelector => "SwitchingSelector",
            SwitchStep::UpdatingPreview => "UpdatingPreview",
            SwitchStep::RestoringSelector => "RestoringSelector",
        }
    }
}

impl std::fmt::Display for SwitchStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a switch is: which step, since when, what it waits for (`kubectl get
/// veritasenvironment NAME -o jsonpath="{.status.switchProgress}"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProgress {
    pub kind: SwitchKind,
    pub step: SwitchStep,
    /// Environment traffic moves away from.
    pub from: EnvironmentName,
    /// Environment traffic moves to.
    pub target: EnvironmentName,
    /// When the switch started (its health-check deadline counts from here).
    pub started_at: Time,
    /// When the current step started.
    pub since: Time,
    /// Since when every target replica has been ready (for `minReadySeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Time>,
    /// `rollback --force`: skip `minReadySeconds` and the probe (at least one ready pod is
    /// still required: the active Service never selects zero ready pods).
    #[serde(default)]
    pub force: bool,
    /// Reason of the current wait (a constant of [`crate::reasons`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the step waits for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Step `RestoringSelector`: why the switch is being undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
}

/// The model a runtime pod reports on its `/health` (name, version, sha256).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// One environment as the controller saw it on its last pass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentObserved {
    /// `spec.replicas` of the Deployment.
    pub replicas: i32,
    /// Ready pods of the Deployment.
    pub ready: i32,
    /// Models the ready pods report (distinct; more than one is itself drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelIdentity>,
}

/// Both environments as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentsObserved {
    pub blue: EnvironmentObserved,
    pub green: EnvironmentObserved,
}

impl EnvironmentsObserved {
    pub fn get(&self, e: EnvironmentName) -> &EnvironmentObserved {
        match e {
            EnvironmentName::Blue => &self.blue,
            EnvironmentName::Green => &self.green,
        }
    }
}

/// One difference between the environments (`veritas-spark bluegreen diff`). Secret values
/// never appear: a Secret's key is compared by a keyed hash of its value (HMAC-SHA256 under a
/// key that lives only in the comparing process, so a reader of this status cannot test
/// guesses against it), and only a short prefix is kept. A side that could not be read says
/// so (`<unknown: ...>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// `ConfigMap`, `Model`, `EnvVar`, `Volume`, `Secret`.
    pub kind: String,
    /// What differs, e.g. `data.VERITAS_MODEL` or `container spark: VERITAS_THREADS`.
    pub key: String,
    /// Blue's side (`<absent>` when missing).
    pub blue: String,
    pub green: String,
}

/// The last switch or rollback that ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchRecord {
    pub kind: SwitchKind,
    pub from: EnvironmentName,
    pub target: EnvironmentName,
    pub started_at: Time,
    pub finished_at: Time,
    /// `Completed`, `Failed`, `Aborted`.
    pub outcome: String,
    pub reason: String,
    /// Start of the switch to traffic on the target (or back on `from`), seconds.
    pub duration_seconds: i64,
}

/// Observed state of a blue-green pair, computed whole by the controller on each pass and
/// written only when it changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VeritasEnvironmentStatus {
    #[serde(default)]
    pub phase: EnvironmentPhase,
    /// Reason of the phase (a constant of [`crate::reasons`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The environment the active Service selects (the truth, also after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_environment: Option<EnvironmentName>,
    /// The environment that was active before the last completed switch: the target of
    /// `veritas-spark rollback --bluegreen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_environment: Option<EnvironmentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_progress: Option<SwitchProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switch: Option<SwitchRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub environments: EnvironmentsObserved,
    /// Differences between blue and green (empty when in sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
