//! Custom resources of the Veritas controller, shared by the controller, the CLI's cluster
//! commands and the harness.
//!
//! - [`canary`]: `VeritasCanary` (spec, status, phases, analysis history).
//! - [`environment`]: `VeritasEnvironment` (blue-green: switch state machine, drift, phases).
//! - [`reasons`]: condition types and reasons, the one vocabulary for describe/alerts/tests.
//! - [`annotations`]: what users `kubectl annotate` (approve, resume, rollback, retry).
//! - [`crdgen`]: renders the CRD YAML committed under `fixtures/manifests/crds/`.
//!
//! Types only: no controller logic lives here.

pub mod canary;
pub mod environment;
pub mod reasons;

pub use canary::{
    Analysis, AnalysisRun, Phase, Promotion, Routing, RoutingKind, Step, StepPause, Verdict,
    VeritasCanary, VeritasCanarySpec, VeritasCanaryStatus, WorkloadRef,
};
pub use environment::{
    Drift, EnvironmentName, EnvironmentObserved, EnvironmentPhase, EnvironmentRef,
    EnvironmentsObserved, ModelIdentity, SwitchKind, SwitchProgress, SwitchRecord, SwitchStep,
    VeritasEnvironment, VeritasEnvironmentSpec, VeritasEnvironmentStatus, ENVIRONMENT_SELECTOR_KEY,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Veritas resource.
pub const GROUP: &str = "veritas.hearthlink.ai";
/// Finalizer the controller puts on each canary it manages.
pub const FINALIZER: &str = "veritas.hearthlink.ai/finalizer";
/// Field manager of the controller's server-side applies.
pub const FIELD_MANAGER: &str = "veritas-controller";

/// Annotations users (or `veritas-spark`) set on a `VeritasCanary` (and, `rollback` and
/// `retry`, on a `VeritasEnvironment`). The controller removes each one once it has acted on
/// it, so an old approval never approves a later step.
pub mod annotations {
    /// Approve the next step (phase `WaitingForApproval`, or a hold with auto promotion off).
    pub const APPROVE: &str = "veritas.hearthlink.ai/approve";
    /// End a step's pause that waits until resumed.
    pub const RESUME: &str = "veritas.hearthlink.ai/resume";
    /// Roll back now (`veritas-spark rollback --canary`); value `force` also rolls back a
    /// canary that already succeeded (`rollback --force`). On a `VeritasEnvironment` it marks
    /// the change of `spec.activeEnvironment` that goes with it as a rollback (`force`: skip
    /// `minReadySeconds` and the probe).
    pub const ROLLBACK: &str = "veritas.hearthlink.ai/rollback";
    /// Restart a `Failed` canary from step 0 with the spec as it is; retry a failed switch.
    pub const RETRY: &str = "veritas.hearthlink.ai/retry";
    /// The value that means yes.
    pub const TRUE: &str = "true";
    pub const FORCE: &str = "force";

    /// The values each operator annotation acts on: `true`, and `force` for `rollback`.
    pub fn accepted_values(key: &str) -> Option<&'static [&'static str]> {
        match key {
            APPROVE | RESUME | RETRY => Some(&[TRUE]),
            ROLLBACK => Some(&[TRUE, FORCE]),
            _ => None,
        }
    }

    /// An operator annotation whose value asks for nothing (`false`, `yes`, empty).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Refused {
        pub key: String,
        pub value: String,
        pub accepted: &'static [&'static str],
    }

    impl Refused {
        /// What the Warning Event says, `object` naming the resource (`canary spark`).
        pub fn message(&self, object: &str) -> String {
            format!(
                "{object}: {}={:?} ignored (it acts on {}); cleared",
                self.key,
                self.value,
                self.accepted.join(" or ")
            )
        }
    }

    /// The operator annotations in `annotations` the controller must refuse: an annotation is
    /// read by its value, never by its presence (`approve=false` must not approve).
    pub fn refused(annotations: &std::collections::BTreeMap<String, String>) -> Vec<Refused> {
        annotations
            .iter()
            .filter_map(|(key, value)| {
                let accepted = accepted_values(key)?;
                (!accepted.contains(&value.as_str())).then(|| Refused {
                    key: key.clone(),
                    value: value.clone(),
                    accepted,
                })
            })
            .collect()
    }
}

/// The one selector key of the shared Service the controller owns (routing `replicas`):
/// absent while the canary takes traffic (both tracks are selected in replica ratio), set to
/// `stable` while the canary weight is 0 or after a rollback, so canary pods stay Running but
/// out of the shared Service. The same key is the guide's `deployment` pod label.
pub const OWNED_SELECTOR_KEY: &str = veritas_vocab::labels::DEPLOYMENT;

/// A status condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub mod crdgen {
    //! Renders the CRDs from the Rust types (controller-rs `crdgen`).
    use kube::CustomResourceExt;

    /// `(file name, YAML)` for each CRD, in a stable order.
    pub fn render() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
        Ok(vec![
            (
                "veritascanaries.veritas.hearthlink.ai.yaml",
                header(serde_yaml::to_string(&super::VeritasCanary::crd())?),
            ),
            (
                "veritasenvironments.veritas.hearthlink.ai.yaml",
                header(serde_yaml::to_string(&super::VeritasEnvironment::crd())?),
            ),
        ])
    }

    fn header(yaml: String) -> String {
        format!("# Generated by `cargo run -p veritas-crds --bin crdgen`; do not edit.\n{yaml}")
    }

    /// Directory of the committed CRDs, relative to the workspace root.
    pub const DIR: &str = "fixtures/manifests/crds";
}
