//! `VeritasEnvironment` (blue-green): the type skeleton only, so that both resources live in
//! one crate and one CRD directory. The blue-green controller is a separate piece of work and
//! will grow these types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;

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
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeEnvironment"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.activeEnvironment"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.switchProgress.step","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VeritasEnvironmentSpec {
    /// The environment that should serve (`blue` or `green`).
    pub active_environment: EnvironmentName,
    /// The active Service whose selector is switched (`veritas-spark`).
    #[serde(default = "default_active_service")]
    pub active_service: String,
    /// The preview Service selecting the standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    #[serde(default)]
    pub switch: Switch,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: i64,
}

fn default_active_service() -> String {
    veritas_vocab::labels::SERVICE_SPARK.to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentName {
    Blue,
    Green,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Switch {
    #[serde(default)]
    pub health_check: HealthCheck,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Seconds the target environment has to pass its health check.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            timeout_seconds: default_timeout(),
        }
    }
}

fn default_timeout() -> i64 {
    120
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VeritasEnvironmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_environment: Option<EnvironmentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_environment: Option<EnvironmentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_progress: Option<SwitchProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchProgress {
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}
