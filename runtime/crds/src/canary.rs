//! `VeritasCanary`: a canary of the runtime between two user-owned Deployments.
//!
//! The user owns the stable and canary Deployments, the shared Service (`veritas-spark`), the
//! canary Service (`veritas-spark-canary`) and the ServiceMonitor; the resource references them,
//! as Argo Rollouts' `workloadRef` does. The controller changes only what weights and promotion
//! need (replica counts, one selector key of the shared Service, or a route's weights) and reports
//! every broken reference as a condition instead of repairing it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use veritas_vocab::labels;

use crate::Condition;

/// Desired state of a canary.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "veritas.hearthlink.ai",
    version = "v1alpha1",
    kind = "VeritasCanary",
    plural = "veritascanaries",
    singular = "veritascanary",
    shortname = "vcanary",
    namespaced,
    status = "VeritasCanaryStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.desiredWeight","description":"Weight of the current step, the one the controller is realising (percent; spec.trafficWeight is step 0 only)"}"#,
    printcolumn = r#"{"name":"Actual","type":"integer","jsonPath":".status.actualWeight","description":"Weight the routing achieves now (percent)"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.currentStep"}"#,
    printcolumn = r#"{"name":"Auto","type":"boolean","jsonPath":".spec.promotion.auto","priority":1}"#,
    printcolumn = r#"{"name":"Successes","type":"integer","jsonPath":".status.consecutiveSuccesses","priority":1}"#,
    printcolumn = r#"{"name":"Failures","type":"integer","jsonPath":".status.failedAnalyses","description":"Failed analyses in this run (failureLimit counts these)","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#,
    printcolumn = r#"{"name":"Stable-Rev","type":"string","jsonPath":".status.stableRevision","description":"Pod-template hash last promoted into stable","priority":1}"#,
    printcolumn = r#"{"name":"Canary-Rev","type":"string","jsonPath":".status.canaryRevision","description":"Pod-template hash the current run analyses","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // Admission refuses what the controller could only report after the fact (CEL, checked by
    // the API server on create and update; `kubectl apply` shows the message).
    validation = Rule::new(
        "!has(self.spec.routing) || [has(self.spec.routing.replicas), has(self.spec.routing.gatewayAPI), has(self.spec.routing.istio)].filter(x, x).size() <= 1"
    ).message("spec.routing: set one router of replicas, gatewayAPI, istio").field_path(".spec.routing"),
    validation = Rule::new(
        "!has(self.spec.promotion) || !has(self.spec.promotion.steps) || self.spec.promotion.steps.map(s, s.weight).isSorted()"
    ).message("spec.promotion.steps: weights must not decrease (the canary climbs to 100)").field_path(".spec.promotion.steps"),
    validation = Rule::new(
        "!has(self.spec.promotion) || !has(self.spec.promotion.steps) || self.spec.promotion.steps.all(s, s.weight >= self.spec.trafficWeight)"
    ).message("spec.promotion.steps: every step's weight is at least spec.trafficWeight (step 0)").field_path(".spec.promotion.steps"),
    validation = Rule::new(
        "!has(self.spec.analysis) || !has(self.spec.progressDeadlineSeconds) || (self.spec.analysis.intervalSeconds < self.spec.progressDeadlineSeconds && self.spec.analysis.windowSeconds + self.spec.analysis.intervalSeconds <= self.spec.progressDeadlineSeconds)"
    ).message("spec.analysis: the first analysis (a whole window, then an interval) must fit in spec.progressDeadlineSeconds, or every run fails with ProgressDeadlineExceeded before it is judged").field_path(".spec.analysis")
)]
#[serde(rename_all = "camelCase")]
pub struct VeritasCanarySpec {
    /// Percentage of traffic the canary receives at the start (step 0). 0 keeps the canary pods
    /// running but out of the shared Service: nothing reaches them and analysis is held.
    #[schemars(range(min = 0, max = 100))]
    pub traffic_weight: i32,
    /// Total number of runtime pods shared by stable and canary (routing `replicas`). Unset:
    /// the size the stable Deployment had when the run started (`status.replicas` keeps it), so
    /// the controller never resizes a user's workload to a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,
    /// How the weight is realised. Default: replica ratio behind the shared Service.
    #[serde(default)]
    pub routing: Routing,
    /// The stable workload (Deployment + Service).
    #[serde(default = "WorkloadRef::default_stable")]
    pub stable: WorkloadRef,
    /// The canary workload (Deployment + Service).
    #[serde(default = "WorkloadRef::default_canary")]
    pub canary: WorkloadRef,
    /// The Service both tracks sit behind (`veritas-spark`).
    #[serde(default = "default_shared_service")]
    pub shared_service: String,
    /// The ServiceMonitor that makes Prometheus scrape the canary (`veritas-spark-canary`).
    #[serde(default = "default_service_monitor")]
    pub service_monitor: String,
    #[serde(default)]
    pub promotion: Promotion,
    #[serde(default)]
    pub analysis: Analysis,
    /// Seconds without progress the controller is responsible for (pods becoming ready, a
    /// weight realised, a successful analysis, a step) before the canary fails with
    /// `ProgressDeadlineExceeded`. Waits for a person (pause until resumed, approval, auto
    /// promotion off, weight 0) do not count.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: i64,
}

fn default_shared_service() -> String {
    labels::SERVICE_SPARK.to_string()
}
fn default_service_monitor() -> String {
    labels::SERVICE_MONITOR_CANARY.to_string()
}
fn default_progress_deadline() -> i64 {
    600
}

/// A Deployment and the Service that selects only its pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub deployment: String,
    pub service: String,
}

impl WorkloadRef {
    pub fn default_stable() -> WorkloadRef {
        WorkloadRef {
            deployment: format!("{}-{}", labels::APP_SPARK, labels::DEPLOYMENT_STABLE),
            service: format!("{}-{}", labels::APP_SPARK, labels::DEPLOYMENT_STABLE),
        }
    }
    pub fn default_canary() -> WorkloadRef {
        WorkloadRef {
            deployment: format!("{}-{}", labels::APP_SPARK, labels::DEPLOYMENT_CANARY),
            service: labels::SERVICE_CANARY.to_string(),
        }
    }
}

/// One of three traffic routers. Exactly one field may be set; none means `replicas`.
///
/// A struct of optional fields rather than an enum keeps the YAML as users write it
/// (`routing: {gatewayAPI: {...}}`) and the schema readable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Replica ratio of canary to stable behind the shared Service (works on a bare cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaRouting>,
    /// Weights on the backendRefs of a Gateway API `HTTPRoute`.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Weights on the routes of an Istio `VirtualService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
}

/// The router kind a [`Routing`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingKind {
    Replicas,
    GatewayApi,
    Istio,
}

impl Routing {
    /// The selected router, or an error message when more than one is set.
    pub fn kind(&self) -> Result<RoutingKind, String> {
        match (
            self.replicas.is_some(),
            self.gateway_api.is_some(),
            self.istio.is_some(),
        ) {
            (_, false, false) => Ok(RoutingKind::Replicas),
            (false, true, false) => Ok(RoutingKind::GatewayApi),
            (false, false, true) => Ok(RoutingKind::Istio),
            _ => Err("spec.routing sets more than one of replicas, gatewayAPI, istio".into()),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRouting {}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute (same namespace). The route is the user's (parentRefs,
    /// hostnames, matches, filters, other rules); the controller sets only the weights of the
    /// first rule whose backendRefs name both the stable and the canary Service, and never
    /// creates the route.
    pub http_route: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// Name of the VirtualService (same namespace), `veritas-spark` in the guide. As with an
    /// HTTPRoute, the controller sets only the weights of the first `http` route whose
    /// destinations are the stable and the canary Service.
    #[serde(default = "default_shared_service")]
    pub virtual_service: String,
}

/// How the canary climbs to 100 %.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Advance automatically after `successLimit` consecutive successful analyses. When false
    /// the canary holds its weight (phase `Progressing`, reason `AutoPromotionDisabled`) until
    /// this is set to true or a step is approved by annotation.
    #[serde(default = "yes")]
    pub auto: bool,
    /// Weights after `trafficWeight`, ascending; 100 is implied as the last step.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Stop all movement (no weight change, no analysis counted) until set back to false.
    #[serde(default)]
    pub paused: bool,
    /// Consecutive successful analyses needed at a step before advancing.
    #[serde(default = "default_success_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub success_limit: i32,
    /// Each advance waits for `kubectl annotate veritascanary NAME veritas.hearthlink.ai/approve=true`.
    #[serde(default)]
    pub manual_approval: bool,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            auto: true,
            steps: Vec::new(),
            paused: false,
            success_limit: default_success_limit(),
            manual_approval: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_success_limit() -> i32 {
    3
}

/// One promotion step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
    /// Pause when this step's weight is reached, before analysis counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<StepPause>,
}

/// A pause of a fixed duration, or until resumed by
/// `kubectl annotate veritascanary NAME veritas.hearthlink.ai/resume=true`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepPause {
    /// Seconds; absent means until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub duration_seconds: Option<i64>,
}

/// Analysis of the canary against Prometheus.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Seconds between two analyses.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1))]
    pub interval_seconds: i64,
    /// Range of the PromQL `rate()` window, seconds (the guide uses 5m). The first analysis of
    /// a run (a new or restarted canary) waits until a whole window of its traffic exists.
    #[serde(default = "default_window")]
    #[schemars(range(min = 10))]
    pub window_seconds: i64,
    /// Highest acceptable canary error rate (0..1).
    #[serde(default = "default_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate_threshold: f64,
    /// Highest acceptable canary p99 latency, seconds.
    #[serde(default = "default_p99")]
    #[schemars(range(min = 0.0))]
    pub latency_p99_threshold: f64,
    /// Fewest canary requests in the window for a verdict (`InsufficientTraffic` below).
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0))]
    pub min_requests: i64,
    /// Judge the canary relative to stable: thresholds apply to canary minus stable.
    #[serde(default)]
    pub compare_with_stable: bool,
    /// Failed analyses in one run (a success does not reset them) that trigger the automatic
    /// rollback: a canary failing every other analysis is rolled back, not promoted.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,
    /// Analyses in a row that could not measure (Prometheus unreachable or answering an error)
    /// that trigger the automatic rollback: such an analysis is neither a success nor a failure.
    #[serde(default = "default_error_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub error_limit: i32,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval_seconds: default_interval(),
            window_seconds: default_window(),
            error_rate_threshold: default_error_rate(),
            latency_p99_threshold: default_p99(),
            min_requests: default_min_requests(),
            compare_with_stable: false,
            failure_limit: default_failure_limit(),
            error_limit: default_error_limit(),
        }
    }
}

fn default_interval() -> i64 {
    30
}
fn default_window() -> i64 {
    300
}
fn default_error_rate() -> f64 {
    0.05
}
fn default_p99() -> f64 {
    2.0
}
fn default_min_requests() -> i64 {
    20
}
fn default_failure_limit() -> i32 {
    3
}
fn default_error_limit() -> i32 {
    4
}

/// Lifecycle phase (the guide greps `status.phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    #[default]
    Progressing,
    Paused,
    WaitingForApproval,
    Promoting,
    Succeeded,
    RollingBack,
    Failed,
}

impl Phase {
    /// Every phase (the controller's phase gauge has a series for each). `as_str` matches every
    /// variant, and a test checks each is here.
    pub const ALL: &'static [Phase] = &[
        Phase::Progressing,
        Phase::Paused,
        Phase::WaitingForApproval,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::RollingBack,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::WaitingForApproval => "WaitingForApproval",
            Phase::Promoting => "Promoting",
            Phase::Succeeded => "Succeeded",
            Phase::RollingBack => "RollingBack",
            Phase::Failed => "Failed",
        }
    }

    /// Phases a new generation of the spec (or the retry annotation) restarts from.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of one analysis.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Verdict {
    Successful,
    Failed,
    /// Not counted either way: the step was paused or the weight was 0 when it ran.
    Skipped,
    /// The measurement failed (Prometheus unreachable or answering an error): not counted as a
    /// success or a failure; `errorLimit` of them in a row roll back.
    Inconclusive,
}

/// One analysis, as kept in `status.analysisHistory` (newest last, bounded).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    pub time: Time,
    pub step: i32,
    pub weight: i32,
    pub verdict: Verdict,
    /// A reason constant from [`crate::reasons`].
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_latency_p99: Option<f64>,
}

/// Most analyses kept in status; older ones are dropped first.
pub const ANALYSIS_HISTORY_LIMIT: usize = 20;

/// Observed state of a canary, computed whole by the controller on each pass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VeritasCanaryStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Reason of the phase (a constant of [`crate::reasons`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// 0 = `spec.trafficWeight`; n = `spec.promotion.steps[n-1]`; `steps.len()+1` = 100 %.
    #[serde(default)]
    pub current_step: i32,
    /// Weight the controller is realising now (percent).
    #[serde(default)]
    pub desired_weight: i32,
    /// Weight the routing achieves now: ready canary pods behind the shared Service over all
    /// ready pods behind it (routing `replicas`), or the route's weight.
    #[serde(default)]
    pub actual_weight: i32,
    #[serde(default)]
    pub consecutive_successes: i32,
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Failed analyses since the run started (`failureLimit` counts these).
    #[serde(default)]
    pub failed_analyses: i32,
    /// Inconclusive analyses in a row (`errorLimit` counts these).
    #[serde(default)]
    pub inconclusive_analyses: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_time: Option<Time>,
    /// Last time something the controller is responsible for moved forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// When the current step's pause started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_start_time: Option<Time>,
    /// Pods the replicas router splits in this run: `spec.replicas`, or the stable
    /// Deployment's size when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pod-template hash of the revision last promoted into the stable Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Pod-template hash of the canary revision the current run analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub analysis_history: Vec<AnalysisRun>,
}
