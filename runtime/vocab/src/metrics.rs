//! Prometheus metric and label names. The first four are the guide's (its PromQL queries use
//! them); the rest follow the same `veritas_spark_` style.

pub const REQUESTS_TOTAL: &str = "veritas_spark_requests_total";
pub const REQUEST_DURATION: &str = "veritas_spark_request_duration";
pub const MEMORY_USED_BYTES: &str = "veritas_spark_memory_used_bytes";
pub const MEMORY_LIMIT_BYTES: &str = "veritas_spark_memory_limit_bytes";

pub const PROMPT_TOKENS_TOTAL: &str = "veritas_spark_prompt_tokens_total";
pub const GENERATED_TOKENS_TOTAL: &str = "veritas_spark_generated_tokens_total";
pub const QUEUE_DEPTH: &str = "veritas_spark_queue_depth";
pub const INFLIGHT_REQUESTS: &str = "veritas_spark_inflight_requests";
pub const MODEL_STATE: &str = "veritas_spark_model_state";
pub const ERRORS_TOTAL: &str = "veritas_spark_errors_total";
pub const WORKER_RESTARTS_TOTAL: &str = "veritas_spark_worker_restarts_total";
pub const SANDBOX_LAYER_ACTIVE: &str = "veritas_spark_sandbox_layer_active";
pub const SANDBOX_VIOLATIONS_TOTAL: &str = "veritas_spark_sandbox_violations_total";

/// Label names.
pub const LABEL_STATUS: &str = "status";
pub const LABEL_DEPLOYMENT: &str = "deployment";
pub const LABEL_CODE: &str = "code";
pub const LABEL_MODEL: &str = "model";
pub const LABEL_STATE: &str = "state";
pub const LABEL_LAYER: &str = "layer";
pub const LABEL_SYSCALL: &str = "syscall";

/// Values of the `status` label of [`REQUESTS_TOTAL`] (the guide queries `status="error"`).
pub const STATUS_SUCCESS: &str = "success";
pub const STATUS_ERROR: &str = "error";
/// A request whose caller went away before its answer (an HTTP client that hung up or timed
/// out): neither a success nor an error of ours, but never uncounted.
pub const STATUS_CANCELLED: &str = "cancelled";

/// Values of the `state` label of [`MODEL_STATE`].
pub const MODEL_STATES: &[&str] = &["loading", "ready", "failed", "unloaded"];

/// Request-duration buckets in seconds: tiny models answer in milliseconds, real ones in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The controller's own metrics (`veritas-controller` on its `/metrics`).
pub const CONTROLLER_RECONCILE_TOTAL: &str = "veritas_controller_reconcile_total";
pub const CONTROLLER_RECONCILE_ERRORS_TOTAL: &str = "veritas_controller_reconcile_errors_total";
pub const CONTROLLER_RECONCILE_DURATION: &str = "veritas_controller_reconcile_duration_seconds";
pub const CONTROLLER_ANALYSIS_TOTAL: &str = "veritas_controller_analysis_total";
pub const CONTROLLER_CANARY_WEIGHT: &str = "veritas_controller_canary_weight";
pub const CONTROLLER_LEADER: &str = "veritas_controller_leader";
/// Blue-green moves (switches and rollbacks) that ended, by kind, outcome and reason.
pub const CONTROLLER_SWITCHES_TOTAL: &str = "veritas_controller_switches_total";
/// Seconds from the start of a blue-green move to traffic on its target (completed moves).
pub const CONTROLLER_SWITCH_DURATION: &str = "veritas_controller_switch_duration_seconds";
/// 1 for the phase each canary is in, 0 for the others (one series per phase, as
/// kube-state-metrics shows a pod's phase).
pub const CONTROLLER_CANARY_PHASE: &str = "veritas_controller_canary_phase";
/// Analyses that could not ask Prometheus (unreachable, refused, timed out).
pub const CONTROLLER_PROMETHEUS_ERRORS_TOTAL: &str = "veritas_controller_prometheus_errors_total";

/// Label names of the controller's metrics.
pub const LABEL_ERROR: &str = "error";
pub const LABEL_VERDICT: &str = "verdict";
pub const LABEL_REASON: &str = "reason";
pub const LABEL_NAMESPACE: &str = "namespace";
pub const LABEL_CANARY: &str = "canary";
pub const LABEL_PHASE: &str = "phase";
pub const LABEL_KIND: &str = "kind";
pub const LABEL_OUTCOME: &str = "outcome";
