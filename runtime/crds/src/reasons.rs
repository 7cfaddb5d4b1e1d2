//! Condition types and reasons: one vocabulary for users (`kubectl describe`), alerts, logs
//! and tests (Argo Rollouts' `utils/conditions` habit). Nothing else spells these strings.
//!
//! Each reason maps to a row of the guide's canary or blue-green sections; the row is named
//! next to it.

/// Condition types of a `VeritasCanary`.
pub mod types {
    /// Stable and canary Deployments, Services and labels are as the canary needs them.
    pub const REFERENCES_VALID: &str = "ReferencesValid";
    /// The desired weight is realised by the routing.
    pub const TRAFFIC_ROUTED: &str = "TrafficRouted";
    /// Prometheus can see the canary (ServiceMonitor present, data in the last analysis).
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// The last analysis passed.
    pub const ANALYSIS_SUCCESSFUL: &str = "AnalysisSuccessful";
    /// The canary advances (or why not).
    pub const PROGRESSING: &str = "Progressing";
    /// Present only while the controller cannot carry out a pass: `False`, with the API call
    /// that failed and the server's answer (RBAC, an admission webhook, a conflict). The next
    /// pass that succeeds removes it.
    pub const RECONCILED: &str = "Reconciled";
}

// --- Canary Not Receiving Traffic ---
/// Row "Traffic weight = 0".
pub const ZERO_WEIGHT: &str = "ZeroWeight";
/// Row "Pod labels wrong": the canary pod template lacks `deployment=canary`.
pub const POD_LABELS_WRONG: &str = "PodLabelsWrong";
/// Row "Service selector mismatch": the canary Service selects none of the canary pods.
pub const SELECTOR_MISMATCH: &str = "SelectorMismatch";
/// Canary pods are ready but the canary Service has no ready endpoints (e.g. a wrong port
/// name, or pods not ready).
pub const NO_ENDPOINTS: &str = "NoEndpoints";
/// A referenced Deployment or Service does not exist.
pub const REFERENCE_MISSING: &str = "ReferenceMissing";
/// The route object (HTTPRoute / VirtualService) is missing or its weights differ from the
/// desired ones. Row "Service mesh misconfigured".
pub const ROUTE_MISCONFIGURED: &str = "RouteMisconfigured";
/// `spec.routing` sets more than one router.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Another VeritasCanary, created first, drives a Deployment or the shared Service this one
/// references: this one stands aside (E5001, "check for conflicting deployments").
pub const CONFLICTING_CANARY: &str = "ConflictingCanary";
/// Pods not yet ready for the desired weight.
pub const WAITING_FOR_PODS: &str = "WaitingForPods";
/// The weight is realised.
pub const WEIGHT_REALISED: &str = "WeightRealised";
/// `TrafficRouted`: the replica split is in place but cannot realise the asked weight exactly
/// (4 pods give 25 % steps); the message says the weight realised and how to get finer steps.
pub const WEIGHT_APPROXIMATED: &str = "WeightApproximated";

// --- Metrics Not Reporting ---
/// Row "ServiceMonitor missing".
pub const SERVICE_MONITOR_MISSING: &str = "ServiceMonitorMissing";
/// Prometheus returned no series for the canary. Never a pass.
pub const NO_METRICS_DATA: &str = "NoMetricsData";
/// Prometheus could not be queried at all.
pub const PROMETHEUS_UNREACHABLE: &str = "PrometheusUnreachable";
pub const METRICS_PRESENT: &str = "MetricsPresent";

// --- Unexpected Rollback ---
/// Row "Traffic too low": fewer requests than `spec.analysis.minRequests`.
pub const INSUFFICIENT_TRAFFIC: &str = "InsufficientTraffic";
/// Rows "Threshold too strict", "Canary has real bug", "Baseline metrics wrong": a metric
/// above its limit; the message names metric, value and limit.
pub const THRESHOLD_EXCEEDED: &str = "ThresholdExceeded";
pub const ANALYSIS_PASSED: &str = "AnalysisPassed";
/// `failureLimit` failed analyses in one run: the controller rolls back.
pub const FAILURE_LIMIT_REACHED: &str = "FailureLimitReached";
/// `errorLimit` analyses in a row could not measure (Prometheus unreachable).
pub const ERROR_LIMIT_REACHED: &str = "ErrorLimitReached";
/// Rollback asked for by annotation (`veritas-spark rollback --canary`).
pub const ROLLBACK_REQUESTED: &str = "RollbackRequested";
/// An operator annotation (`approve`, `resume`, `rollback`, `retry`) with a value that asks
/// for nothing (`approve=false`): cleared without acting.
pub const ANNOTATION_IGNORED: &str = "AnnotationIgnored";
/// Traffic is back on stable; the canary pods are kept for their logs.
pub const ROLLED_BACK: &str = "RolledBack";
/// No progress within `spec.progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

// --- Promotion Stuck ---
/// Row "Auto-promotion disabled".
pub const AUTO_PROMOTION_DISABLED: &str = "AutoPromotionDisabled";
/// Row "Paused at step": a step's pause (duration or until resumed).
pub const PAUSED_AT_STEP: &str = "PausedAtStep";
/// `spec.promotion.paused` is true.
pub const PAUSED_BY_SPEC: &str = "PausedBySpec";
/// Row "successLimit not met".
pub const SUCCESS_LIMIT_NOT_MET: &str = "SuccessLimitNotMet";
/// Row "Manual approval required".
pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
pub const STEP_ADVANCED: &str = "StepAdvanced";
pub const PROMOTING: &str = "Promoting";
/// `Succeeded`: the analysed revision runs in the stable Deployment, which carries all traffic.
pub const PROMOTED: &str = "Promoted";
/// `Promoting`: the canary's pod template is written into stable; waiting for its rollout.
pub const STABLE_ROLLOUT_PENDING: &str = "StableRolloutPending";
/// `Promoting`: stable runs the promoted revision and is ready; traffic is moving onto it.
pub const TRAFFIC_TO_STABLE: &str = "TrafficToStable";
/// `Promoting`: traffic is on stable; the canary Deployment is scaled to 0.
pub const CANARY_SCALING_DOWN: &str = "CanaryScalingDown";
/// A new pod template of the canary (a new revision) started a new analysed run at step 0.
pub const NEW_REVISION: &str = "NewRevision";
/// A rollback of a promoted canary: stable already runs the promoted revision with all
/// traffic, so there is nothing to roll back (traffic does not move).
pub const NOTHING_TO_ROLL_BACK: &str = "NothingToRollBack";
/// A new generation of the spec (or the retry annotation) restarted a finished canary.
pub const RESTARTED: &str = "Restarted";
pub const ANALYSIS_PENDING: &str = "AnalysisPending";
/// Reading the canary's objects failed with something other than "not found" (e.g. 403):
/// nothing is decided on what could not be read.
pub const OBSERVE_FAILED: &str = "ObserveFailed";
/// Writing a decision failed (a scale, a selector, route weights, a promotion refused).
pub const ACTION_FAILED: &str = "ActionFailed";

/// Condition types of a `VeritasEnvironment`.
pub mod environment_types {
    /// Deployments, the active Service and the pod labels are as blue-green needs them.
    pub const REFERENCES_VALID: &str = "ReferencesValid";
    /// The active Service selects ready pods of the active environment and none of the other.
    pub const TRAFFIC_ROUTED: &str = "TrafficRouted";
    /// A switch moves (True, reason = what it waits for), completed (True), or failed (False).
    pub const PROGRESSING: &str = "Progressing";
    /// The standby environment has all its replicas ready (and passes its probe).
    pub const STANDBY_HEALTHY: &str = "StandbyHealthy";
    /// Blue and green run the same configuration, model, env vars, mounts and Secrets.
    pub const IN_SYNC: &str = "InSync";
    /// As for canaries: present (`False`) only while a pass cannot read or act.
    pub const RECONCILED: &str = super::types::RECONCILED;
}

// --- Switch Not Completing ---
/// Row "Health check failing": a target pod answered its probe unhealthy.
pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
/// A target pod did not answer its probe within `probeTimeoutSeconds`.
pub const HEALTH_CHECK_TIMEOUT: &str = "HealthCheckTimeout";
/// The probe has not run yet in this step.
pub const HEALTH_CHECK_PENDING: &str = "HealthCheckPending";
/// Row "minReadySeconds not met".
pub const MIN_READY_SECONDS_NOT_MET: &str = "MinReadySecondsNotMet";
/// Row "Service update failed": the active Service did not take the new selector in
/// `serviceUpdateTimeoutSeconds`.
pub const SERVICE_UPDATE_FAILED: &str = "ServiceUpdateFailed";
/// The target environment has fewer ready pods than replicas (or none, for a forced rollback).
pub const TARGET_UNHEALTHY: &str = "TargetUnhealthy";
/// The target Deployment's rollout is not complete (new revision not observed, updated or
/// available, or old pods left): its ready pods may be the old revision's.
pub const TARGET_ROLLOUT_PENDING: &str = "TargetRolloutPending";
pub const SWITCH_STARTED: &str = "SwitchStarted";
/// Every check of the target passed; the selector moves next.
pub const TARGET_VERIFIED: &str = "TargetVerified";
pub const SWITCH_COMPLETED: &str = "SwitchCompleted";
/// `spec.activeEnvironment` went back to the old environment before traffic moved.
pub const SWITCH_ABORTED: &str = "SwitchAborted";
/// A rollback could not complete (E5002).
pub const ROLLBACK_FAILED: &str = "RollbackFailed";
/// The active Service was pointed at `spec.activeEnvironment` by hand (the guide's remedy
/// "Manually update service selector"); the controller takes it as the active environment.
pub const SELECTOR_ADOPTED: &str = "SelectorAdopted";
/// No switch asked for; the active Service selects the active environment.
pub const NO_SWITCH: &str = "NoSwitch";
/// The `VeritasEnvironment` was deleted; the Event says where traffic was left.
pub const ENVIRONMENT_DELETED: &str = "EnvironmentDeleted";

// --- DNS Not Updating / both environments receiving traffic ---
/// The active Service's `environment` key is missing or names the other environment: it
/// selects pods of both environments, or of the wrong one.
pub const SELECTOR_DRIFT: &str = "SelectorDrift";
/// The active Service selects no ready pod (row "Endpoints not updated").
pub const NO_READY_ENDPOINTS: &str = "NoReadyEndpoints";
pub const ROUTED: &str = "Routed";

// --- Standby Environment Unhealthy ---
pub const STANDBY_UNHEALTHY: &str = "StandbyUnhealthy";
pub const STANDBY_READY: &str = "StandbyReady";

// --- State Not Syncing ---
/// Row "ConfigMap not synced".
pub const CONFIG_MAP_DRIFT: &str = "ConfigMapDrift";
/// Rows "Model versions mismatched" / "Model mount different".
pub const MODEL_DRIFT: &str = "ModelDrift";
/// Row "Environment variable drift".
pub const ENV_VAR_DRIFT: &str = "EnvVarDrift";
/// Row "Model mount different" (volumes, PVC claims, mount paths).
pub const VOLUME_DRIFT: &str = "VolumeDrift";
/// Row "Secrets mismatch" (compared by hash).
pub const SECRET_DRIFT: &str = "SecretDrift";
/// Row "Secrets mismatch", undecided: the reader may not get the Secrets (RBAC), so whether
/// they match is unknown, never reported as a match.
pub const SECRETS_UNREADABLE: &str = "SecretsUnreadable";
pub const IN_SYNC: &str = "InSync";

/// Every reason, for tests and docs.
pub const ALL: &[&str] = &[
    ZERO_WEIGHT,
    POD_LABELS_WRONG,
    SELECTOR_MISMATCH,
    NO_ENDPOINTS,
    REFERENCE_MISSING,
    ROUTE_MISCONFIGURED,
    INVALID_SPEC,
    WAITING_FOR_PODS,
    WEIGHT_REALISED,
    WEIGHT_APPROXIMATED,
    SERVICE_MONITOR_MISSING,
    NO_METRICS_DATA,
    PROMETHEUS_UNREACHABLE,
    METRICS_PRESENT,
    INSUFFICIENT_TRAFFIC,
    THRESHOLD_EXCEEDED,
    ANALYSIS_PASSED,
    FAILURE_LIMIT_REACHED,
    ERROR_LIMIT_REACHED,
    ROLLBACK_REQUESTED,
    ANNOTATION_IGNORED,
    ROLLED_BACK,
    PROGRESS_DEADLINE_EXCEEDED,
    AUTO_PROMOTION_DISABLED,
    PAUSED_AT_STEP,
    PAUSED_BY_SPEC,
    SUCCESS_LIMIT_NOT_MET,
    WAITING_FOR_APPROVAL,
    STEP_ADVANCED,
    PROMOTING,
    PROMOTED,
    STABLE_ROLLOUT_PENDING,
    TRAFFIC_TO_STABLE,
    CANARY_SCALING_DOWN,
    NEW_REVISION,
    NOTHING_TO_ROLL_BACK,
    RESTARTED,
    ANALYSIS_PENDING,
    OBSERVE_FAILED,
    ACTION_FAILED,
    HEALTH_CHECK_FAILED,
    HEALTH_CHECK_TIMEOUT,
    HEALTH_CHECK_PENDING,
    MIN_READY_SECONDS_NOT_MET,
    SERVICE_UPDATE_FAILED,
    TARGET_UNHEALTHY,
    TARGET_ROLLOUT_PENDING,
    SWITCH_STARTED,
    TARGET_VERIFIED,
    SWITCH_COMPLETED,
    SWITCH_ABORTED,
    ROLLBACK_FAILED,
    SELECTOR_ADOPTED,
    NO_SWITCH,
    ENVIRONMENT_DELETED,
    SELECTOR_DRIFT,
    NO_READY_ENDPOINTS,
    ROUTED,
    STANDBY_UNHEALTHY,
    STANDBY_READY,
    CONFIG_MAP_DRIFT,
    MODEL_DRIFT,
    ENV_VAR_DRIFT,
    VOLUME_DRIFT,
    SECRET_DRIFT,
    SECRETS_UNREADABLE,
    IN_SYNC,
];
