//! The canary decision: a pure function of what the controller observed (spec, last status,
//! Deployments, Services, ServiceMonitor, route, one analysis sample, the clock) to the
//! actions to take and the whole new status (Argo Rollouts `utils/replicaset/canary.go`).
//!
//! Nothing here talks to a cluster, so every row of the guide's canary sections is a unit
//! test, and the invariants (weight within 0..=100, no promotion without `successLimit`
//! successes, no data never a success, rollback always reachable, a paused canary never
//! moves) are property tests.
//!
//! State machine, per pass:
//! 1. a finished canary (`Succeeded`/`Failed`) restarts on a new spec generation or the
//!    `retry` annotation; the `rollback` annotation moves any other phase to `RollingBack`;
//! 2. references are checked and reported (never repaired);
//! 3. `spec.promotion.paused` freezes everything; otherwise the current step's weight is
//!    realised (replica ratio, or a route's weights), then the analysis sample is counted,
//!    then the canary advances when `successLimit` consecutive successes allow it and auto
//!    promotion / approval / the step's pause say so;
//! 4. `failureLimit` consecutive failures or the progress deadline roll back: traffic returns
//!    to stable, canary pods stay Running for their logs, and the canary ends `Failed`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use veritas_crds::canary::ANALYSIS_HISTORY_LIMIT;
use veritas_crds::reasons::{self, types};
use veritas_crds::{
    annotations, AnalysisRun, Condition, Phase, RoutingKind, Verdict, VeritasCanarySpec,
    VeritasCanaryStatus, OWNED_SELECTOR_KEY,
};
use veritas_vocab::labels;

/// A Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentObs {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// Labels of the pod template.
    pub template_labels: BTreeMap<String, String>,
    /// [`template_hash`] of `spec.template` (`None`: not observed).
    pub template_hash: Option<String>,
    /// `spec.template` without the track label the controller owns (what a promotion writes
    /// into stable).
    pub template: Option<Value>,
    /// Why the Deployment's rollout is not finished (`None`: rolled out and available), as
    /// [`crate::bluegreen::observe::rollout_pending`] says.
    pub rollout_pending: Option<String>,
}

/// `spec.template` without the track label (`deployment=stable|canary`) the controller owns:
/// the part of a pod template that makes a revision.
pub fn release_template(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(labels::DEPLOYMENT);
    }
    t
}

/// The revision of a pod template: sha256 of the canonical JSON (keys sorted) of
/// [`release_template`], first 16 hex digits. The one place a revision is computed.
pub fn template_hash(template: &Value) -> String {
    use sha2::{Digest, Sha256};
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    canonical(&release_template(template), &mut s);
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The canary Service as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceObs {
    pub selector: BTreeMap<String, String>,
    /// Ready endpoints (addresses) behind it.
    pub ready_endpoints: i32,
}

/// The shared Service (`veritas-spark`) as observed: its selector and how many ready pods of
/// each track it selects now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedServiceObs {
    pub selector: BTreeMap<String, String>,
    pub ready_stable: i32,
    pub ready_canary: i32,
}

/// Whether the ServiceMonitor exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorObs {
    Present,
    Missing,
    /// The ServiceMonitor CRD itself is not installed (no Prometheus Operator).
    CrdMissing,
}

/// The weights an HTTPRoute / VirtualService carries now: `(stable, canary)`.
pub type RouteWeights = Option<(i32, i32)>;

/// Metrics of one track over the analysis window. `None` = Prometheus returned no series.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackMetrics {
    pub requests: Option<f64>,
    pub error_rate: Option<f64>,
    pub latency_p99: Option<f64>,
}

/// One analysis as the controller ran it.
#[derive(Clone, Debug, PartialEq)]
pub enum AnalysisSample {
    /// Prometheus answered.
    Data {
        canary: TrackMetrics,
        /// Present when `compareWithStable`.
        stable: Option<TrackMetrics>,
    },
    /// Prometheus could not be queried (the message says why).
    Unreachable(String),
}

/// The objects a canary drives (scales, rewrites, re-selects): its two Deployments and, where
/// it routes by replicas, the shared Service. Two canaries driving one object would undo each
/// other's every pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryClaim {
    pub name: String,
    /// `metadata.creationTimestamp`; `None` (not yet created) comes last.
    pub created: Option<Timestamp>,
    pub objects: std::collections::BTreeSet<String>,
}

impl CanaryClaim {
    pub fn of(name: &str, created: Option<Timestamp>, spec: &VeritasCanarySpec) -> CanaryClaim {
        let mut objects = std::collections::BTreeSet::from([
            format!("Deployment {}", spec.stable.deployment),
            format!("Deployment {}", spec.canary.deployment),
        ]);
        if spec.routing.kind() == Ok(RoutingKind::Replicas) {
            objects.insert(format!("Service {}", spec.shared_service));
        }
        CanaryClaim {
            name: name.to_string(),
            created,
            objects,
        }
    }

    /// The older claim wins (creation time, then name): a rule every replica and every pass
    /// reaches alike from what it reads, so exactly one canary of a conflicting set acts.
    fn precedes(&self, other: &CanaryClaim) -> bool {
        let key = |c: &CanaryClaim| (c.created.is_none(), c.created, c.name.clone());
        key(self) < key(other)
    }
}

/// A canary that comes first and drives some of the same objects: `(its name, the objects)`.
pub type PriorClaim = (String, Vec<String>);

/// The canaries of `all` that come before `me` and drive an object `me` drives: while any
/// exists, `me` stands aside.
pub fn prior_claims(me: &CanaryClaim, all: &[CanaryClaim]) -> Vec<PriorClaim> {
    all.iter()
        .filter(|o| o.name != me.name && o.precedes(me))
        .filter_map(|o| {
            let shared: Vec<String> = o.objects.intersection(&me.objects).cloned().collect();
            (!shared.is_empty()).then(|| (o.name.clone(), shared))
        })
        .collect()
}

/// Everything one pass observed.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub annotations: BTreeMap<String, String>,
    pub stable: Option<DeploymentObs>,
    pub canary: Option<DeploymentObs>,
    pub canary_service: Option<ServiceObs>,
    pub shared_service: Option<SharedServiceObs>,
    pub service_monitor: MonitorObs,
    /// Routing `gatewayAPI`/`istio` only: the route's weights, `None` when it does not exist.
    pub route: RouteWeights,
    /// Present when [`analysis_due`] said so and the controller queried Prometheus.
    pub analysis: Option<AnalysisSample>,
    /// Earlier canaries driving the same objects ([`prior_claims`]).
    pub prior_claims: Vec<PriorClaim>,
}

/// Event type of a Kubernetes Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// What the controller must do after this pass (besides writing the status).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set `spec.replicas` of a Deployment (server-side apply of that one field).
    Scale { deployment: String, replicas: i32 },
    /// Set (or with `None` remove) [`OWNED_SELECTOR_KEY`] in a Service's selector.
    SetSelector {
        service: String,
        value: Option<String>,
    },
    /// Set the two weights of the canary's route (see [`route_weight_patch`]); nothing else
    /// of the route is touched.
    SetRouteWeights { stable: i32, canary: i32 },
    /// Promotion: write this pod template (a [`release_template`]) into a Deployment, keeping
    /// that Deployment's own track label and selector labels.
    PromoteTemplate { deployment: String, template: Value },
    /// Remove an annotation the controller has acted on.
    ClearAnnotation(String),
    /// Publish an Event (only on transitions).
    Event {
        kind: EventKind,
        reason: &'static str,
        message: String,
    },
}

/// The result of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: VeritasCanaryStatus,
    pub actions: Vec<Action>,
    /// Seconds until the next pass is needed.
    pub requeue_after_secs: u64,
}

/// Weight of a step: 0 = `trafficWeight`, 1..=n the steps, n+1 (and above) = 100.
pub fn step_weight(spec: &VeritasCanarySpec, step: i32) -> i32 {
    let n = spec.promotion.steps.len() as i32;
    let w = if step <= 0 {
        spec.traffic_weight
    } else if step <= n {
        spec.promotion.steps[(step - 1) as usize].weight
    } else {
        100
    };
    w.clamp(0, 100)
}

/// The last step (100 %).
pub fn final_step(spec: &VeritasCanarySpec) -> i32 {
    spec.promotion.steps.len() as i32 + 1
}

/// Replica counts `(stable, canary)` realising `weight` of `total` pods (routing `replicas`).
///
/// The canary gets `ceil(total * weight / 100)` pods (at least one while weight > 0, so a
/// small weight is never rounded to no traffic); stable keeps the rest but at least one while
/// the canary is below 100 %. Weight 0 keeps one canary pod Running (out of the shared
/// Service), so its logs and metrics endpoint stay inspectable.
pub fn replica_split(total: i32, weight: i32) -> (i32, i32) {
    let total = total.max(1);
    let weight = weight.clamp(0, 100);
    match weight {
        0 => (total, 1),
        100 => (0, total),
        w => {
            let canary = ((total as i64 * w as i64 + 99) / 100).max(1) as i32;
            let stable = (total - canary).max(1);
            (stable, canary)
        }
    }
}

/// Percent of ready pods behind the shared Service that are canary pods.
pub fn ratio_weight(ready_stable: i32, ready_canary: i32) -> i32 {
    let total = ready_stable.max(0) + ready_canary.max(0);
    if total == 0 {
        0
    } else {
        ((ready_canary.max(0) as f64 * 100.0 / total as f64).round() as i32).clamp(0, 100)
    }
}

/// Whether an analysis is due now: the canary is taking traffic at a realised weight, is
/// neither paused nor finished, and `interval` has passed since the last one.
pub fn analysis_due(
    spec: &VeritasCanarySpec,
    status: Option<&VeritasCanaryStatus>,
    now: Timestamp,
) -> bool {
    let Some(st) = status else { return false };
    if spec.promotion.paused || !matches!(st.phase, Phase::Progressing | Phase::WaitingForApproval)
    {
        return false;
    }
    if st.desired_weight == 0 || st.current_step >= final_step(spec) {
        return false;
    }
    // Routed at this run's weight: the `RolledBack` a restarted canary keeps does not count.
    let routed = veritas_crds::find_condition(&st.conditions, types::TRAFFIC_ROUTED)
        .is_some_and(|c| c.is_true() && weight_in_place(&c.reason));
    routed && secs_to_next_analysis(spec, st, now) <= 0
}

/// Seconds until the next analysis is due (0 or less: due). The first analysis of a run (a new
/// canary, or one restarted) waits until a whole window of traffic at the realised weight
/// exists: a window reaching back before it would judge the canary's past (rolled back and
/// idle, or the broken build the restart replaced). Later ones follow every interval.
fn secs_to_next_analysis(
    spec: &VeritasCanarySpec,
    st: &VeritasCanaryStatus,
    now: Timestamp,
) -> i64 {
    match (&st.last_analysis_time, &st.last_progress_time) {
        (Some(t), _) => spec.analysis.interval_seconds.max(1) - now.duration_since(t.0).as_secs(),
        (None, Some(t)) => spec.analysis.window_seconds.max(1) - now.duration_since(t.0).as_secs(),
        (None, None) => 0,
    }
}

/// Verdict of one sample against the spec: `(verdict, reason, message)`.
pub fn judge(
    spec: &VeritasCanarySpec,
    sample: &AnalysisSample,
    service_monitor: MonitorObs,
) -> (Verdict, &'static str, String) {
    let a = &spec.analysis;
    let (canary, stable) = match sample {
        AnalysisSample::Unreachable(why) => {
            return (
                Verdict::Inconclusive,
                reasons::PROMETHEUS_UNREACHABLE,
                format!("prometheus query failed: {why}"),
            );
        }
        AnalysisSample::Data { canary, stable } => (canary, stable),
    };
    let Some(requests) = canary.requests else {
        let hint = match service_monitor {
            MonitorObs::Present => "check the canary's metrics endpoint, the ServiceMonitor's selector and port, and Prometheus's permissions".to_string(),
            MonitorObs::Missing => format!("ServiceMonitor {} is missing", spec.service_monitor),
            MonitorObs::CrdMissing => "the ServiceMonitor CRD is not installed (no Prometheus Operator)".to_string(),
        };
        return (
            Verdict::Failed,
            reasons::NO_METRICS_DATA,
            format!(
                "prometheus has no {} series for deployment=\"canary\": {hint}",
                veritas_vocab::metrics::REQUESTS_TOTAL
            ),
        );
    };
    if requests < a.min_requests as f64 || requests <= 0.0 {
        return (
            Verdict::Failed,
            reasons::INSUFFICIENT_TRAFFIC,
            format!(
                "{requests:.0} canary requests in the last {}s, minRequests is {}",
                a.window_seconds, a.min_requests
            ),
        );
    }
    let (stable_err, stable_p99) = if a.compare_with_stable {
        match stable {
            Some(TrackMetrics {
                requests: Some(r),
                error_rate,
                latency_p99,
            }) if *r > 0.0 => (error_rate.unwrap_or(0.0), *latency_p99),
            _ => {
                return (
                    Verdict::Failed,
                    reasons::NO_METRICS_DATA,
                    "compareWithStable: prometheus has no traffic data for deployment=\"stable\""
                        .to_string(),
                );
            }
        }
    } else {
        (0.0, None)
    };
    // A track with requests but no error series has had no errors.
    let err = canary.error_rate.unwrap_or(0.0);
    let err_limit = a.error_rate_threshold + stable_err;
    if err > err_limit {
        return (
            Verdict::Failed,
            reasons::THRESHOLD_EXCEEDED,
            format!(
                "error rate {err:.4} exceeds {err_limit:.4} (errorRateThreshold {}{})",
                a.error_rate_threshold,
                if a.compare_with_stable {
                    format!(" + stable {stable_err:.4}")
                } else {
                    String::new()
                }
            ),
        );
    }
    // Traffic without a latency histogram (or NaN from it) is missing data, never a pass.
    let no_latency = |track: &str| {
        (
            Verdict::Failed,
            reasons::NO_METRICS_DATA,
            format!(
                "{requests:.0} canary requests but no p99 latency for deployment=\"{track}\": prometheus has no {}_bucket series (or only NaN) in the last {}s",
                veritas_vocab::metrics::REQUEST_DURATION,
                a.window_seconds
            ),
        )
    };
    let Some(p99) = canary.latency_p99.filter(|p| p.is_finite()) else {
        return no_latency(veritas_vocab::labels::DEPLOYMENT_CANARY);
    };
    {
        let base = if a.compare_with_stable {
            match stable_p99.filter(|p| p.is_finite()) {
                Some(p) => p,
                None => return no_latency(veritas_vocab::labels::DEPLOYMENT_STABLE),
            }
        } else {
            0.0
        };
        let limit = a.latency_p99_threshold + base;
        if p99 > limit {
            return (
                Verdict::Failed,
                reasons::THRESHOLD_EXCEEDED,
                format!(
                    "p99 latency {p99:.3}s exceeds {limit:.3}s (latencyP99Threshold {}{})",
                    a.latency_p99_threshold,
                    if a.compare_with_stable {
                        format!(" + stable {base:.3}")
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
    (
        Verdict::Successful,
        reasons::ANALYSIS_PASSED,
        format!("error rate {err:.4} <= {err_limit:.4}, p99 {p99:.3}s, {requests:.0} requests"),
    )
}

/// Where the weights of one rule that sends to both the stable and the canary Service live
/// (HTTPRoute `spec.rules[i].backendRefs`, VirtualService `spec.http[i].route`), as JSON
/// pointers to each entry's `weight`. Everything else in the route is the user's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSlots {
    pub stable: String,
    pub canary: String,
    pub stable_weight: i32,
    pub canary_weight: i32,
}

/// Every rule of an observed HTTPRoute or VirtualService that sends to both tracks (several
/// rules, e.g. one per path, may each split them; all of them carry the canary's weight).
pub fn route_slots(route: &Value, spec: &VeritasCanarySpec) -> Vec<RouteSlots> {
    let ns = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let gateway = route["spec"]["rules"].as_array();
    let (rules, list, rules_at) = match gateway {
        Some(rules) => (rules, "backendRefs", "/spec/rules"),
        None => match route["spec"]["http"].as_array() {
            Some(rules) => (rules, "route", "/spec/http"),
            None => return Vec::new(),
        },
    };
    // A backendRef to a Service of this namespace; an Istio host as a short name or
    // qualified with this namespace (`svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`).
    let names = |e: &Value, svc: &str| -> bool {
        if gateway.is_some() {
            e["name"].as_str() == Some(svc)
                && e["kind"].as_str().is_none_or(|k| k == "Service")
                && e["group"].as_str().is_none_or(str::is_empty)
                && e["namespace"].as_str().is_none_or(|n| n == ns)
        } else {
            e["destination"]["host"].as_str().is_some_and(|h| {
                h == svc
                    || h.strip_prefix(svc)
                        .and_then(|rest| rest.strip_prefix('.'))
                        .and_then(|rest| rest.strip_prefix(ns))
                        .is_some_and(|q| matches!(q, "" | ".svc" | ".svc.cluster.local"))
            })
        }
    };
    // Without a weight, a Gateway API backendRef weighs 1; an Istio destination 0.
    let unweighted = if gateway.is_some() { 1 } else { 0 };
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let entries = rule[list].as_array()?;
            let at = |svc: &str| entries.iter().position(|e| names(e, svc));
            let (s, c) = (at(&spec.stable.service)?, at(&spec.canary.service)?);
            let weight = |j: usize| entries[j]["weight"].as_i64().unwrap_or(unweighted) as i32;
            Some(RouteSlots {
                stable: format!("{rules_at}/{i}/{list}/{s}/weight"),
                canary: format!("{rules_at}/{i}/{list}/{c}/weight"),
                stable_weight: weight(s),
                canary_weight: weight(c),
            })
        })
        .collect()
}

/// The weights an observed route carries: `(stable, canary)`; `None` when no rule sends to
/// both. Rules that disagree read as `(0, 0)`, a split no step asks for, so they are all set.
pub fn route_weights(route: &Value, spec: &VeritasCanarySpec) -> Option<(i32, i32)> {
    let slots = route_slots(route, spec);
    let first = slots.first()?;
    let split = (first.stable_weight, first.canary_weight);
    Some(
        if slots
            .iter()
            .all(|s| (s.stable_weight, s.canary_weight) == split)
        {
            split
        } else {
            (0, 0)
        },
    )
}

/// The JSON patch that sets only the weights of the rules that split the tracks, refused by the
/// API server if the route changed since it was read (`test` of its resourceVersion). Routes'
/// rule lists are atomic in their CRDs' schemas, so server-side apply could not own just these
/// fields: it would replace the user's rules, matches, filters and hosts.
pub fn route_weight_patch(
    route: &Value,
    spec: &VeritasCanarySpec,
    stable: i32,
    canary: i32,
) -> Option<Value> {
    let slots = route_slots(route, spec);
    if slots.is_empty() {
        return None;
    }
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": route["metadata"]["resourceVersion"]}),
    ];
    for s in slots {
        ops.push(json!({"op": "add", "path": s.stable, "value": stable.clamp(0, 100)}));
        ops.push(json!({"op": "add", "path": s.canary, "value": canary.clamp(0, 100)}));
    }
    Some(Value::Array(ops))
}

/// The canary's share of a route's traffic, in percent. Gateway API weights are relative (3 and
/// 1 send 25 % to the second); Istio's sum to 100, where this is the canary's weight itself.
fn route_share(route: RouteWeights) -> i32 {
    match route {
        Some((stable, canary)) if stable.max(0) + canary.max(0) > 0 => {
            let (stable, canary) = (i64::from(stable.max(0)), i64::from(canary.max(0)));
            ((100 * canary + (stable + canary) / 2) / (stable + canary)) as i32
        }
        _ => 0,
    }
}

/// Whether a route's split sends everything to stable (the rules agree, canary at 0).
fn on_stable_only(route: RouteWeights) -> bool {
    matches!(route, Some((stable, 0)) if stable > 0)
}

/// The route a router canary names: (`HTTPRoute`/`VirtualService`, its name).
pub(crate) fn route_name(spec: &VeritasCanarySpec, kind: RoutingKind) -> (&'static str, String) {
    if kind == RoutingKind::GatewayApi {
        let name = spec
            .routing
            .gateway_api
            .as_ref()
            .map(|g| g.http_route.clone());
        ("HTTPRoute", name.unwrap_or_default())
    } else {
        let name = spec
            .routing
            .istio
            .as_ref()
            .map(|i| i.virtual_service.clone());
        ("VirtualService", name.unwrap_or_default())
    }
}

fn time(now: Timestamp) -> Time {
    Time(now)
}

/// Sets a condition, moving `lastTransitionTime` only when its status flips. Returns whether
/// it is worth an Event: a flip, a new failure reason, or a new failing condition.
/// Canaries and environments share it (one condition vocabulary).
pub(crate) fn set_condition(
    conds: &mut Vec<Condition>,
    now: Timestamp,
    generation: Option<i64>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> bool {
    let status = if ok { "True" } else { "False" };
    set_condition_status(conds, now, generation, type_, status, reason, message)
}

/// [`set_condition`] with the status spelled out: `Unknown` when the controller cannot tell
/// (what it would have to read, it may not).
pub(crate) fn set_condition_status(
    conds: &mut Vec<Condition>,
    now: Timestamp,
    generation: Option<i64>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> bool {
    let ok = status == "True";
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let flipped = c.status != status;
            if flipped {
                c.last_transition_time = Some(time(now));
            }
            let reason_changed = c.reason != reason;
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
            flipped || (!ok && reason_changed)
        }
        None => {
            conds.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Some(time(now)),
                observed_generation: generation,
            });
            !ok
        }
    }
}

/// Checks the references; returns `false` when a referenced object is missing (nothing can
/// be done until it exists).
fn check_references(
    spec: &VeritasCanarySpec,
    obs: &Observed,
    kind: RoutingKind,
    st: &mut VeritasCanaryStatus,
) -> bool {
    let mut missing = Vec::new();
    if obs.stable.is_none() {
        missing.push(format!("Deployment {}", spec.stable.deployment));
    }
    if obs.canary.is_none() {
        missing.push(format!("Deployment {}", spec.canary.deployment));
    }
    if obs.canary_service.is_none() {
        missing.push(format!("Service {}", spec.canary.service));
    }
    if kind == RoutingKind::Replicas && obs.shared_service.is_none() {
        missing.push(format!("Service {}", spec.shared_service));
    }
    let (ok, reason, message) = if !missing.is_empty() {
        (
            false,
            reasons::REFERENCE_MISSING,
            format!("not found: {}", missing.join(", ")),
        )
    } else {
        let canary = obs.canary.as_ref().expect("checked");
        let svc = obs.canary_service.as_ref().expect("checked");
        let label = canary
            .template_labels
            .get(labels::DEPLOYMENT)
            .map(String::as_str);
        if label != Some(labels::DEPLOYMENT_CANARY) {
            (
                false,
                reasons::POD_LABELS_WRONG,
                format!(
                    "pods of Deployment {} have {}={} instead of {}={}",
                    spec.canary.deployment,
                    labels::DEPLOYMENT,
                    label.unwrap_or("<none>"),
                    labels::DEPLOYMENT,
                    labels::DEPLOYMENT_CANARY
                ),
            )
        } else if svc.selector.is_empty()
            || !svc
                .selector
                .iter()
                .all(|(k, v)| canary.template_labels.get(k) == Some(v))
        {
            (
                false,
                reasons::SELECTOR_MISMATCH,
                format!(
                    "Service {} selector {} matches no pod of Deployment {}",
                    spec.canary.service,
                    fmt_labels(&svc.selector),
                    spec.canary.deployment
                ),
            )
        } else if canary.ready > 0 && svc.ready_endpoints == 0 {
            (
                false,
                reasons::NO_ENDPOINTS,
                format!(
                    "Service {} has no ready endpoints although {} canary pods are ready",
                    spec.canary.service, canary.ready
                ),
            )
        } else {
            (true, reasons::REFERENCE_MISSING, String::new())
        }
    };
    let (reason, message) = if ok {
        (
            "ReferencesResolved",
            "stable and canary Deployments and Services resolved".to_string(),
        )
    } else {
        (reason, message)
    };
    set_condition(
        &mut st.conditions,
        obs.now,
        obs.generation,
        types::REFERENCES_VALID,
        ok,
        reason,
        message,
    );
    missing.is_empty()
}

/// `k=v,k=v` (`{}` when empty), as selectors are shown in messages.
pub(crate) fn fmt_labels(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "{}".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Emits the actions realising `weight` and says whether it is realised now, with the
/// weight achieved.
/// Whether the `TrafficRouted` reason says the step's weight is in place (exactly, or as
/// closely as the replica split can).
pub fn weight_in_place(reason: &str) -> bool {
    reason == reasons::WEIGHT_REALISED || reason == reasons::WEIGHT_APPROXIMATED
}

/// Pods the replicas router splits in this run: `spec.replicas`, else the run's remembered
/// size, else the larger track now (a new run: stable's size as the user gave it; a canary
/// promoted under the old model holds them all).
fn total_replicas(spec: &VeritasCanarySpec, st: &VeritasCanaryStatus, obs: &Observed) -> i32 {
    spec.replicas
        .or(st.replicas)
        .unwrap_or_else(|| {
            let size = |d: &Option<DeploymentObs>| d.as_ref().map_or(0, |d| d.replicas);
            size(&obs.stable).max(size(&obs.canary))
        })
        .max(1)
}

fn route(
    spec: &VeritasCanarySpec,
    obs: &Observed,
    kind: RoutingKind,
    weight: i32,
    total: i32,
    actions: &mut Vec<Action>,
) -> (bool, i32, &'static str, String) {
    match kind {
        RoutingKind::Replicas => {
            let (want_stable, want_canary) = replica_split(total, weight);
            let (stable, canary, shared) = (
                obs.stable.as_ref(),
                obs.canary.as_ref(),
                obs.shared_service.as_ref(),
            );
            let (Some(stable), Some(canary), Some(shared)) = (stable, canary, shared) else {
                return (
                    false,
                    0,
                    reasons::REFERENCE_MISSING,
                    "references missing".into(),
                );
            };
            // Weight 0 keeps the canary's pods and takes them out of the shared Service;
            // anything else selects both tracks (replica ratio).
            let want_key = (weight == 0).then(|| labels::DEPLOYMENT_STABLE.to_string());
            if weight == 0 {
                // Stable scaled up first, and the canary taken out of the Service only once
                // stable's pods are ready behind it: after a promotion stable is at 0 replicas,
                // and moving the selector first would leave the Service with no endpoint.
                if stable.replicas != want_stable {
                    actions.push(Action::Scale {
                        deployment: spec.stable.deployment.clone(),
                        replicas: want_stable,
                    });
                }
                // (A canary with no ready pod carries nothing: moving then loses nothing.)
                if shared.selector.get(OWNED_SELECTOR_KEY) != want_key.as_ref()
                    && (shared.ready_stable >= want_stable.max(1) || shared.ready_canary == 0)
                {
                    actions.push(Action::SetSelector {
                        service: spec.shared_service.clone(),
                        value: want_key.clone(),
                    });
                }
                // The canary keeps at least its one pod (never scaled to 0 here).
                if canary.replicas < want_canary {
                    actions.push(Action::Scale {
                        deployment: spec.canary.deployment.clone(),
                        replicas: want_canary,
                    });
                }
            } else {
                // Surge before shrink: a track is scaled down only once the other one has its
                // wanted pods ready (its Deployment's count or its pods behind the shared
                // Service), so capacity never dips below the split being left.
                let canary_grows = want_canary > canary.replicas;
                let stable_grows = want_stable > stable.replicas;
                let stable_ready = stable.ready.max(shared.ready_stable);
                let canary_ready = canary.ready.max(shared.ready_canary);
                if canary.replicas != want_canary && (canary_grows || stable_ready >= want_stable) {
                    actions.push(Action::Scale {
                        deployment: spec.canary.deployment.clone(),
                        replicas: want_canary,
                    });
                }
                if stable.replicas != want_stable && (stable_grows || canary_ready >= want_canary) {
                    actions.push(Action::Scale {
                        deployment: spec.stable.deployment.clone(),
                        replicas: want_stable,
                    });
                }
                if shared.selector.get(OWNED_SELECTOR_KEY) != want_key.as_ref() {
                    actions.push(Action::SetSelector {
                        service: spec.shared_service.clone(),
                        value: want_key.clone(),
                    });
                }
            }
            let actual = ratio_weight(shared.ready_stable, shared.ready_canary);
            let selector_ok = shared.selector.get(OWNED_SELECTOR_KEY) == want_key.as_ref();
            let replicas_ok = stable.replicas == want_stable
                && if weight == 0 {
                    canary.replicas >= 1
                } else {
                    canary.replicas == want_canary
                };
            let ready_ok = match weight {
                0 => shared.ready_canary == 0 && shared.ready_stable >= want_stable,
                100 => shared.ready_stable == 0 && shared.ready_canary >= want_canary,
                _ => shared.ready_canary >= want_canary && shared.ready_stable >= want_stable,
            };
            let realised = selector_ok && replicas_ok && ready_ok;
            // What the split can give: 4 pods move in 25 % steps, so 10 % asked is 25 % served.
            let split = match weight {
                0 => 0,
                _ => ratio_weight(want_stable, want_canary),
            };
            let mut msg = format!(
                "weight {weight}%: want {want_stable} stable / {want_canary} canary pods; ready behind {}: {} stable / {} canary (actual {actual}%)",
                spec.shared_service, shared.ready_stable, shared.ready_canary
            );
            let reason = match (realised, split == weight) {
                (false, _) => reasons::WAITING_FOR_PODS,
                (true, true) => reasons::WEIGHT_REALISED,
                (true, false) => {
                    msg = format!(
                        "weight {weight}% asked, {split}% served: {total} pods split {want_stable} stable / {want_canary} canary (more pods in spec.replicas, or a gatewayAPI/istio router, give finer weights)"
                    );
                    reasons::WEIGHT_APPROXIMATED
                }
            };
            (realised, actual, reason, msg)
        }
        RoutingKind::GatewayApi | RoutingKind::Istio => {
            let (what, name) = route_name(spec, kind);
            let want = (100 - weight, weight);
            // A promoted canary is at 0 replicas: a new revision gets its pods back (stable's
            // size, so it can carry any step) and no weight until one of them is ready.
            if let (true, Some(canary)) = (weight > 0, obs.canary.as_ref()) {
                let size = obs.stable.as_ref().map_or(1, |s| s.replicas.max(1));
                if canary.replicas == 0 {
                    actions.push(Action::Scale {
                        deployment: spec.canary.deployment.clone(),
                        replicas: size,
                    });
                }
                if canary.ready == 0 {
                    let actual = route_share(obs.route);
                    return (
                        false,
                        actual,
                        reasons::WAITING_FOR_PODS,
                        format!(
                            "weight {weight}%: Deployment {} has no ready pod yet; the {what} keeps its weights",
                            spec.canary.deployment
                        ),
                    );
                }
            }
            let (realised, actual, msg) = match obs.route {
                Some(have) if have == want => (
                    true,
                    route_share(Some(have)),
                    format!("{what} {name}: stable {} / canary {}", have.0, have.1),
                ),
                Some(have) => (
                    false,
                    route_share(Some(have)),
                    format!(
                        "{what} {name} splits stable {} / canary {}, want {} / {}",
                        have.0, have.1, want.0, want.1
                    ),
                ),
                // Never created: a route's parents, hosts and matches are the user's to choose.
                None => (
                    false,
                    0,
                    format!(
                        "{what} {name} not found, or none of its rules sends to both Service {} and Service {}: create it with such a rule (parentRefs, hostnames, matches are yours); the controller sets only those two weights",
                        spec.stable.service, spec.canary.service
                    ),
                ),
            };
            if !realised && obs.route.is_some() {
                actions.push(Action::SetRouteWeights {
                    stable: want.0,
                    canary: want.1,
                });
            }
            (
                realised,
                actual,
                if realised {
                    reasons::WEIGHT_REALISED
                } else {
                    reasons::ROUTE_MISCONFIGURED
                },
                msg,
            )
        }
    }
}

fn push_history(st: &mut VeritasCanaryStatus, run: AnalysisRun) {
    st.analysis_history.push(run);
    let n = st.analysis_history.len();
    if n > ANALYSIS_HISTORY_LIMIT {
        st.analysis_history.drain(..n - ANALYSIS_HISTORY_LIMIT);
    }
}

fn secs_since(now: Timestamp, t: &Option<Time>) -> i64 {
    t.as_ref()
        .map(|t| now.duration_since(t.0).as_secs())
        .unwrap_or(0)
}

/// Decides one pass. `old` is the status as read (None for a new canary). Reads as the state
/// diagram in the README: each numbered stage is a method of [`Pass`], and each stage that ends
/// the pass returns its [`Decision`].
fn decide_inner(
    name: &str,
    spec: &VeritasCanarySpec,
    old: Option<&VeritasCanaryStatus>,
    obs: &Observed,
    was_held: bool,
) -> Decision {
    let mut p = Pass {
        name,
        spec,
        obs,
        was_held,
        st: old.cloned().unwrap_or_default(),
        actions: Vec::new(),
        requeue: 60,
    };
    let first = old.is_none();
    if first {
        p.start();
    }

    // 0. Another canary, created first, drives the same objects: stand aside, touch nothing.
    if !obs.prior_claims.is_empty() {
        return p.stands_aside();
    }
    if p.st.phase == Phase::Failed && p.st.reason.as_deref() == Some(reasons::CONFLICTING_CANARY) {
        // The other one is gone: this canary never acted, its run starts now.
        p.start();
    }

    // 1. A new run: a finished canary restarted, or a new canary revision.
    let legacy_succeeded = p.restart_when_due(first);
    // Sizes of this run (fixed at its start, since the split then resizes the tracks).
    let total = total_replicas(spec, &p.st, obs);
    p.st.replicas = Some(total);
    let kind = match spec.routing.kind() {
        Ok(k) => k,
        Err(msg) => return p.invalid_spec(msg),
    };

    // 2. Rollback asked for by a person (or the CLI).
    if let Some(value) = p.annotation(annotations::ROLLBACK) {
        p.rollback_requested(value, legacy_succeeded);
    }

    // 3. References (reported, never repaired).
    if !p.references_present(kind) {
        return p.references_missing();
    }

    // 4. Frozen by the spec: nothing moves, nothing is counted.
    if spec.promotion.paused
        && !matches!(p.st.phase, Phase::RollingBack)
        && !p.st.phase.is_terminal()
    {
        return p.paused_by_spec();
    }
    if p.st.phase == Phase::Paused && p.st.reason.as_deref() == Some(reasons::PAUSED_BY_SPEC) {
        p.st.phase = Phase::Progressing;
    }

    // 5. Rolling back / finished: traffic to stable, or stays at 100 %.
    match p.st.phase {
        Phase::RollingBack | Phase::Failed => return p.rolling_back(kind, total),
        Phase::Succeeded if !legacy_succeeded => return p.promoted(kind),
        Phase::Succeeded => return p.succeeded_at_full_weight(kind, total),
        _ => {}
    }

    // 6. Realise the current step's weight.
    let fin = final_step(spec);
    p.st.current_step = p.st.current_step.clamp(0, fin);
    let weight = step_weight(spec, p.st.current_step);
    p.st.desired_weight = weight;
    let (realised, actual, route_reason, route_msg) =
        route(spec, obs, kind, weight, total, &mut p.actions);
    p.st.actual_weight = actual;
    let was_routed = veritas_crds::find_condition(&p.st.conditions, types::TRAFFIC_ROUTED)
        .is_some_and(|c| c.is_true() && weight_in_place(&c.reason));
    if weight == 0 {
        return p.zero_weight(realised, route_msg);
    }
    p.condition(types::TRAFFIC_ROUTED, realised, route_reason, route_msg);
    if realised && !was_routed {
        p.st.last_progress_time = Some(time(obs.now));
    }

    // 7. Promoting: 100 % on the canary, then its template into stable, stable rolled out and
    // ready, traffic back on stable, the canary scaled to 0.
    if p.st.current_step >= fin || p.st.phase == Phase::Promoting {
        return p.promoting(kind, realised);
    }
    if !realised {
        return p.waiting_for_route(route_reason);
    }

    // 8. A step's pause.
    if p.paused_at_step(weight) {
        let requeue = p.requeue;
        return p.done(requeue);
    }

    // 9. Count the analysis; a limit reached starts the rollback in this same pass.
    if p.count_analysis(weight, kind, total) {
        return p.done(5);
    }

    // 10. Advance when allowed.
    if let Some(requeue) = p.advance_when_allowed(fin, kind, total) {
        return p.done(requeue);
    }

    // 11. Still counting.
    p.still_counting()
}

/// One pass of the canary decision: what it observed, and the status and actions it builds.
struct Pass<'a> {
    name: &'a str,
    spec: &'a VeritasCanarySpec,
    obs: &'a Observed,
    /// The status read was under a hold (the progress clock stood still).
    was_held: bool,
    st: VeritasCanaryStatus,
    actions: Vec<Action>,
    /// Seconds until the next pass, unless a stage says otherwise.
    requeue: u64,
}

impl<'a> Pass<'a> {
    fn annotation(&self, k: &str) -> Option<&'a str> {
        self.obs.annotations.get(k).map(String::as_str)
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, message: String) {
        self.actions.push(Action::Event {
            kind,
            reason,
            message,
        });
    }

    /// Sets a condition at this pass's time and generation.
    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        set_condition(
            &mut self.st.conditions,
            self.obs.now,
            self.obs.generation,
            type_,
            ok,
            reason,
            message,
        );
    }

    /// Ends the pass.
    fn done(self, requeue_after_secs: u64) -> Decision {
        Decision {
            status: self.st,
            actions: self.actions,
            requeue_after_secs,
        }
    }

    /// Ends the pass, unless the progress deadline has passed (then the rollback starts).
    fn deadline(self, requeue: u64) -> Decision {
        deadline(
            self.spec,
            self.name,
            self.st,
            self.actions,
            self.obs.now,
            self.was_held,
            requeue,
        )
    }

    /// A new canary: its clock starts now.
    fn start(&mut self) {
        self.st = VeritasCanaryStatus {
            last_progress_time: Some(time(self.obs.now)),
            ..Default::default()
        };
        let message = format!(
            "canary {} started at {}%",
            self.name,
            step_weight(self.spec, 0)
        );
        self.event(EventKind::Normal, reasons::ANALYSIS_PENDING, message);
    }

    /// Stage 1. Restarts a finished canary (new spec generation, the retry annotation) and
    /// starts a new run for a new canary pod template; records the revisions. Returns whether
    /// the status is a `Succeeded` of the old model (canary at 100 %, nothing promoted).
    fn restart_when_due(&mut self, first: bool) -> bool {
        let (name, obs, now) = (self.name, self.obs, self.obs.now);
        let new_generation =
            !first && obs.generation.is_some() && obs.generation != self.st.observed_generation;
        let retry = self.annotation(annotations::RETRY).is_some();
        if retry {
            self.actions
                .push(Action::ClearAnnotation(annotations::RETRY.into()));
        }
        // Revisions: a new canary pod template is a new release, analysed from step 0. A
        // promoted canary (new model: `desiredWeight` 0, stable carries the release) restarts
        // only for a new template; an edit of analysis settings, steps or thresholds moves
        // nothing.
        let canary_rev = obs.canary.as_ref().and_then(|c| c.template_hash.clone());
        let st = &mut self.st;
        let legacy_succeeded = st.phase == Phase::Succeeded && st.desired_weight == 100;
        if st.phase == Phase::Succeeded && st.stable_revision.is_none() {
            st.stable_revision = st.canary_revision.clone().or_else(|| canary_rev.clone());
        }
        let new_revision = match st.phase {
            Phase::Succeeded => canary_rev.is_some() && canary_rev != st.stable_revision,
            Phase::RollingBack => false,
            _ => {
                canary_rev.is_some()
                    && st.canary_revision.is_some()
                    && canary_rev != st.canary_revision
            }
        };
        let restart_terminal = match st.phase {
            Phase::Succeeded => new_revision || (legacy_succeeded && new_generation),
            Phase::Failed => new_generation || retry || new_revision,
            _ => false,
        };
        if restart_terminal || (new_revision && !st.phase.is_terminal()) {
            let (reason, why) = if new_revision {
                (
                    reasons::NEW_REVISION,
                    format!(
                        "new canary revision {}",
                        canary_rev.as_deref().unwrap_or("?")
                    ),
                )
            } else if new_generation {
                (reasons::RESTARTED, "spec changed".to_string())
            } else {
                (reasons::RESTARTED, "retry annotation".to_string())
            };
            *st = VeritasCanaryStatus {
                conditions: std::mem::take(&mut st.conditions),
                analysis_history: std::mem::take(&mut st.analysis_history),
                stable_revision: st.stable_revision.take(),
                last_progress_time: Some(time(now)),
                reason: Some(reason.into()),
                message: Some(format!("restarted from step 0 ({why})")),
                ..Default::default()
            };
            self.event(
                EventKind::Normal,
                reason,
                format!("canary {name} restarted from step 0 ({why})"),
            );
        }
        let st = &mut self.st;
        if st.canary_revision.is_none()
            || (st.phase != Phase::Succeeded
                && canary_rev.is_some()
                && st.phase != Phase::RollingBack)
        {
            st.canary_revision = canary_rev.clone().or(st.canary_revision.take());
        }
        st.observed_generation = obs.generation;
        legacy_succeeded
    }

    /// Stage 0. Two canaries driving one Deployment would undo each other's every pass: the
    /// later one does nothing, ends `Failed` (so `deployment status` reports E5001) and says
    /// which canary holds which object; it starts afresh once that one is gone.
    fn stands_aside(mut self) -> Decision {
        let held: Vec<String> = self
            .obs
            .prior_claims
            .iter()
            .map(|(other, objects)| {
                format!(
                    "{} already driven by VeritasCanary {other}",
                    objects.join(" and ")
                )
            })
            .collect();
        let message = format!(
            "{}: this canary does nothing while that one exists (delete the duplicate, or point this one at Deployments of its own)",
            held.join("; ")
        );
        if self.st.reason.as_deref() != Some(reasons::CONFLICTING_CANARY) {
            self.event(
                EventKind::Warning,
                reasons::CONFLICTING_CANARY,
                format!("canary {}: {message}", self.name),
            );
        }
        self.condition(
            types::REFERENCES_VALID,
            false,
            reasons::CONFLICTING_CANARY,
            message.clone(),
        );
        self.st.phase = Phase::Failed;
        self.st.reason = Some(reasons::CONFLICTING_CANARY.into());
        self.st.message = Some(message);
        self.done(15)
    }

    /// A spec the controller cannot run (e.g. two routers).
    fn invalid_spec(mut self, msg: String) -> Decision {
        self.condition(
            types::REFERENCES_VALID,
            false,
            reasons::INVALID_SPEC,
            msg.clone(),
        );
        self.st.reason = Some(reasons::INVALID_SPEC.into());
        self.st.message = Some(msg);
        let requeue = self.requeue;
        self.done(requeue)
    }

    /// Stage 2. The rollback annotation (consumed): `RollingBack`, unless there is nothing to
    /// roll back or the canary already succeeded (then only `force` does).
    fn rollback_requested(&mut self, value: &str, legacy_succeeded: bool) {
        let (name, now) = (self.name, self.obs.now);
        self.actions
            .push(Action::ClearAnnotation(annotations::ROLLBACK.into()));
        let forced = value == annotations::FORCE;
        match self.st.phase {
            // Promoted: stable runs the release and carries all traffic; moving traffic would
            // only take it off ready pods.
            Phase::Succeeded if !legacy_succeeded => {
                let msg = format!(
                    "rollback ignored: nothing to roll back, stable already runs the promoted revision {} with all traffic",
                    self.st.stable_revision.as_deref().unwrap_or("?")
                );
                self.st.message = Some(msg.clone());
                self.event(
                    EventKind::Normal,
                    reasons::NOTHING_TO_ROLL_BACK,
                    format!("canary {name}: {msg}"),
                );
            }
            Phase::Succeeded if !forced => self.event(
                EventKind::Warning,
                reasons::ROLLBACK_REQUESTED,
                "rollback refused: the canary already succeeded; use --force".into(),
            ),
            Phase::RollingBack | Phase::Failed => {}
            _ => {
                self.st.phase = Phase::RollingBack;
                // The rollback's own deadline counts from here.
                self.st.last_progress_time = Some(time(now));
                self.st.reason = Some(reasons::ROLLBACK_REQUESTED.into());
                self.st.message = Some(format!(
                    "rollback requested by annotation {}={value}",
                    annotations::ROLLBACK
                ));
                self.event(
                    EventKind::Warning,
                    reasons::ROLLBACK_REQUESTED,
                    format!("canary {name}: rollback requested"),
                );
            }
        }
    }

    /// Stage 3. Checks the references and the ServiceMonitor; `false` when a referenced object
    /// is missing.
    fn references_present(&mut self, kind: RoutingKind) -> bool {
        let (spec, obs) = (self.spec, self.obs);
        let present = check_references(spec, obs, kind, &mut self.st);
        if obs.service_monitor != MonitorObs::Present {
            let msg = if obs.service_monitor == MonitorObs::Missing {
                format!(
                    "ServiceMonitor {} not found: Prometheus does not scrape the canary",
                    spec.service_monitor
                )
            } else {
                "the ServiceMonitor CRD is not installed: Prometheus does not scrape the canary"
                    .to_string()
            };
            self.condition(
                types::METRICS_AVAILABLE,
                false,
                reasons::SERVICE_MONITOR_MISSING,
                msg,
            );
        }
        present
    }

    /// Nothing can be done until the referenced objects exist: the status says which.
    fn references_missing(mut self) -> Decision {
        let c = veritas_crds::find_condition(&self.st.conditions, types::REFERENCES_VALID).cloned();
        self.st.reason = c.as_ref().map(|c| c.reason.clone());
        self.st.message = c.map(|c| c.message);
        self.done(15)
    }

    /// Stage 4. `spec.promotion.paused`: nothing moves, nothing is counted.
    fn paused_by_spec(mut self) -> Decision {
        if self.st.phase != Phase::Paused
            || self.st.reason.as_deref() != Some(reasons::PAUSED_BY_SPEC)
        {
            let message = format!("canary {} paused by spec.promotion.paused", self.name);
            self.event(EventKind::Normal, reasons::PAUSED_BY_SPEC, message);
        }
        self.st.phase = Phase::Paused;
        self.st.reason = Some(reasons::PAUSED_BY_SPEC.into());
        self.st.message = Some("spec.promotion.paused is true: set it to false to resume".into());
        self.condition(
            types::PROGRESSING,
            false,
            reasons::PAUSED_BY_SPEC,
            "paused by spec.promotion.paused".into(),
        );
        let requeue = self.requeue;
        self.done(requeue)
    }

    /// Stage 5. `RollingBack` (traffic to stable; `Failed` once stable carries it all) and
    /// `Failed` (kept on stable). The canary is never scaled down: its pods stay for
    /// `kubectl logs -l deployment=canary`.
    fn rolling_back(mut self, kind: RoutingKind, total: i32) -> Decision {
        let (name, spec, obs, now) = (self.name, self.spec, self.obs, self.obs.now);
        self.st.desired_weight = 0;
        let (_, actual, route_reason, msg) = route(spec, obs, kind, 0, total, &mut self.actions);
        self.actions.retain(|a| !matches!(a, Action::Scale { deployment, .. } if *deployment == spec.canary.deployment));
        self.st.actual_weight = actual;
        let back = match kind {
            RoutingKind::Replicas => obs.shared_service.as_ref().is_some_and(|s| {
                s.ready_canary == 0
                    && s.ready_stable > 0
                    && s.selector.get(OWNED_SELECTOR_KEY).map(String::as_str)
                        == Some(labels::DEPLOYMENT_STABLE)
            }),
            _ => on_stable_only(obs.route),
        };
        self.condition(
            types::TRAFFIC_ROUTED,
            back,
            if back {
                reasons::ROLLED_BACK
            } else if kind == RoutingKind::Replicas {
                reasons::WAITING_FOR_PODS
            } else {
                // A route that is missing (or lost its split) says so.
                route_reason
            },
            msg.clone(),
        );
        // A rollback that cannot finish (stable never gets a ready pod) keeps trying and says
        // so once its deadline passed: E5002, not an endless "in progress".
        let late = secs_since(now, &self.st.last_progress_time);
        if self.st.phase == Phase::RollingBack
            && !back
            && late > spec.progress_deadline_seconds
            && self.st.reason.as_deref() != Some(reasons::ROLLBACK_FAILED)
        {
            self.st.reason = Some(reasons::ROLLBACK_FAILED.into());
            self.st.message = Some(format!(
                "rollback not complete after {late}s (progressDeadlineSeconds {}): {msg}; still trying",
                spec.progress_deadline_seconds
            ));
            let message = format!(
                "canary {name}: {}",
                self.st.message.clone().unwrap_or_default()
            );
            self.event(EventKind::Warning, reasons::ROLLBACK_FAILED, message);
        }
        if self.st.phase == Phase::RollingBack && back {
            if self.st.reason.as_deref() == Some(reasons::ROLLBACK_FAILED) {
                self.st.reason = Some(reasons::ROLLED_BACK.into());
                self.st.message = Some("rolled back, after its deadline had passed".into());
            }
            self.st.phase = Phase::Failed;
            let message = format!(
                "canary {name} rolled back: {}",
                self.st.message.clone().unwrap_or_default()
            );
            self.event(EventKind::Warning, reasons::ROLLED_BACK, message);
        }
        let reason = self
            .st
            .reason
            .clone()
            .unwrap_or_else(|| reasons::ROLLED_BACK.into());
        let message = self.st.message.clone().unwrap_or_default();
        self.condition(types::PROGRESSING, false, &reason, message);
        self.done(if back { 60 } else { 5 })
    }

    /// Stage 5. Promoted into stable: nothing to do until a new revision.
    fn promoted(mut self, kind: RoutingKind) -> Decision {
        self.st.desired_weight = 0;
        self.st.actual_weight = match kind {
            RoutingKind::Replicas => self
                .obs
                .shared_service
                .as_ref()
                .map(|s| ratio_weight(s.ready_stable, s.ready_canary))
                .unwrap_or(0),
            _ => route_share(self.obs.route),
        };
        self.done(300)
    }

    /// Stage 5. A `Succeeded` of the old model: the canary keeps 100 %.
    fn succeeded_at_full_weight(mut self, kind: RoutingKind, total: i32) -> Decision {
        self.st.desired_weight = 100;
        let (_, actual, _, _) = route(self.spec, self.obs, kind, 100, total, &mut self.actions);
        self.st.actual_weight = actual;
        self.done(300)
    }

    /// Stage 6. The step's weight is 0: canary pods run but get no traffic, and nothing is
    /// analysed (a hold: the progress clock stands still).
    fn zero_weight(mut self, realised: bool, route_msg: String) -> Decision {
        // Name the field that is 0: step 0 is spec.trafficWeight, a later step its own weight.
        let (field, fix) = if self.st.current_step == 0 {
            ("spec.trafficWeight".to_string(), "set trafficWeight > 0")
        } else {
            (
                format!("spec.promotion.steps[{}].weight", self.st.current_step - 1),
                "give the step a weight > 0 (or remove it)",
            )
        };
        self.condition(
            types::TRAFFIC_ROUTED,
            false,
            reasons::ZERO_WEIGHT,
            format!("{field} is 0: canary pods run but receive no traffic; {fix} ({route_msg})"),
        );
        self.st.phase = Phase::Progressing;
        self.st.reason = Some(reasons::ZERO_WEIGHT.into());
        self.st.message = Some(format!(
            "{field} is 0: the canary receives no traffic and is not analysed; {fix}"
        ));
        self.condition(
            types::PROGRESSING,
            false,
            reasons::ZERO_WEIGHT,
            format!("{field} is 0"),
        );
        let requeue = if realised { self.requeue } else { 5 };
        self.done(requeue)
    }

    /// Stage 7. Promoting: all traffic on the canary, then its template written into stable
    /// ([`promote_into_stable`] takes it from there).
    fn promoting(mut self, kind: RoutingKind, realised: bool) -> Decision {
        let (name, spec, obs) = (self.name, self.spec, self.obs);
        self.st.phase = Phase::Promoting;
        self.st.reason = Some(reasons::PROMOTING.into());
        self.st.message = Some("canary taking all traffic".into());
        let stable = obs.stable.as_ref().expect("references present");
        let canary = obs.canary.as_ref().expect("references present");
        let in_stable = stable.template_hash == canary.template_hash;
        if realised && !in_stable {
            if let Some(t) = &canary.template {
                self.actions.push(Action::PromoteTemplate {
                    deployment: spec.stable.deployment.clone(),
                    template: t.clone(),
                });
            }
            let msg = format!(
                "writing canary revision {} into Deployment {}",
                canary.template_hash.as_deref().unwrap_or("?"),
                spec.stable.deployment
            );
            self.st.reason = Some(reasons::STABLE_ROLLOUT_PENDING.into());
            self.st.message = Some(msg.clone());
            self.condition(
                types::PROGRESSING,
                true,
                reasons::STABLE_ROLLOUT_PENDING,
                msg,
            );
            return self.deadline(5);
        }
        if in_stable && canary.template_hash.is_some() {
            return promote_into_stable(
                name,
                spec,
                obs,
                kind,
                self.st,
                self.actions,
                self.was_held,
            );
        }
        if realised {
            self.st.phase = Phase::Succeeded;
            self.st.reason = Some(reasons::PROMOTED.into());
            self.st.message = Some("canary promoted to 100%".into());
            self.condition(
                types::PROGRESSING,
                true,
                reasons::PROMOTED,
                "canary promoted to 100%".into(),
            );
            self.event(
                EventKind::Normal,
                reasons::PROMOTED,
                format!("canary {name} promoted to 100%"),
            );
            return self.done(300);
        }
        self.condition(
            types::PROGRESSING,
            true,
            reasons::PROMOTING,
            "waiting for all traffic on the canary".into(),
        );
        self.deadline(5)
    }

    /// Stage 7. The step's weight is not in place yet: the routing's reason is the status.
    fn waiting_for_route(mut self, route_reason: &str) -> Decision {
        self.st.phase = Phase::Progressing;
        self.st.reason = Some(route_reason.into());
        self.st.message = veritas_crds::find_condition(&self.st.conditions, types::TRAFFIC_ROUTED)
            .map(|c| c.message.clone());
        self.deadline(5)
    }

    /// Stage 8. A step's pause: `true` while it holds (a duration not yet over, or no
    /// duration and no resume annotation); a pause that ends is progress.
    fn paused_at_step(&mut self, weight: i32) -> bool {
        let (name, now) = (self.name, self.obs.now);
        let Some(started) = self.st.pause_start_time.clone() else {
            if self.st.phase == Phase::Paused {
                self.st.phase = Phase::Progressing;
            }
            return false;
        };
        let pause = self
            .spec
            .promotion
            .steps
            .get((self.st.current_step - 1).max(0) as usize)
            .and_then(|s| s.pause.clone());
        let elapsed = now.duration_since(started.0).as_secs();
        let resumed = self.annotation(annotations::RESUME).is_some();
        let done = match pause.as_ref().and_then(|p| p.duration_seconds) {
            Some(d) => elapsed >= d || resumed,
            None => resumed || pause.is_none(),
        };
        if resumed {
            self.actions
                .push(Action::ClearAnnotation(annotations::RESUME.into()));
        }
        if !done {
            self.st.phase = Phase::Paused;
            self.st.reason = Some(reasons::PAUSED_AT_STEP.into());
            let how = match pause.and_then(|p| p.duration_seconds) {
                Some(d) => {
                    self.requeue = (d - elapsed).clamp(1, 60) as u64;
                    format!("for {d}s from {}, or until resumed", started.0)
                }
                None => "until resumed".to_string(),
            };
            let msg = format!(
                "paused at step {} ({}%) {how}: kubectl annotate veritascanary {name} {}=true",
                self.st.current_step,
                weight,
                annotations::RESUME
            );
            self.condition(
                types::PROGRESSING,
                false,
                reasons::PAUSED_AT_STEP,
                msg.clone(),
            );
            self.st.message = Some(msg);
            return true;
        }
        self.st.pause_start_time = None;
        self.st.phase = Phase::Progressing;
        self.st.last_progress_time = Some(time(now));
        let message = format!(
            "canary {name}: pause at step {} ended",
            self.st.current_step
        );
        self.event(EventKind::Normal, reasons::STEP_ADVANCED, message);
        false
    }

    /// Stage 9. Counts this pass's analysis, if one ran. `true` when a limit is reached: the
    /// canary is `RollingBack` and the rollback's first actions are taken in this pass.
    fn count_analysis(&mut self, weight: i32, kind: RoutingKind, total: i32) -> bool {
        let (name, spec, obs, now) = (self.name, self.spec, self.obs, self.obs.now);
        let Some(sample) = &obs.analysis else {
            return false;
        };
        let (verdict, reason, message) = judge(spec, sample, obs.service_monitor);
        let (canary, stable) = match sample {
            AnalysisSample::Data { canary, stable } => (*canary, *stable),
            AnalysisSample::Unreachable(_) => (TrackMetrics::default(), None),
        };
        let step = self.st.current_step;
        push_history(
            &mut self.st,
            AnalysisRun {
                time: time(now),
                step,
                weight,
                verdict,
                reason: reason.into(),
                message: message.clone(),
                error_rate: canary.error_rate.filter(|v| v.is_finite()),
                latency_p99: canary.latency_p99.filter(|v| v.is_finite()),
                requests: canary.requests.filter(|v| v.is_finite()),
                stable_error_rate: stable.and_then(|s| s.error_rate).filter(|v| v.is_finite()),
                stable_latency_p99: stable.and_then(|s| s.latency_p99).filter(|v| v.is_finite()),
            },
        );
        self.st.last_analysis_time = Some(time(now));
        let ok = verdict == Verdict::Successful;
        self.condition(types::ANALYSIS_SUCCESSFUL, ok, reason, message.clone());
        if obs.service_monitor == MonitorObs::Present {
            let data =
                reason != reasons::NO_METRICS_DATA && reason != reasons::PROMETHEUS_UNREACHABLE;
            self.condition(
                types::METRICS_AVAILABLE,
                data,
                if data {
                    reasons::METRICS_PRESENT
                } else {
                    reason
                },
                if data {
                    "prometheus has canary data".into()
                } else {
                    message.clone()
                },
            );
        }
        // Only a step advance is progress: successes that never add up to one must not hold
        // the deadline off (a flapping canary ends).
        let st = &mut self.st;
        let limit_hit = match verdict {
            Verdict::Successful => {
                st.consecutive_successes += 1;
                st.consecutive_failures = 0;
                st.inconclusive_analyses = 0;
                None
            }
            Verdict::Inconclusive => {
                st.inconclusive_analyses += 1;
                let (n, limit) = (st.inconclusive_analyses, spec.analysis.error_limit);
                self.event(
                    EventKind::Warning,
                    reason,
                    format!(
                        "canary {name} analysis inconclusive ({n}/{limit} in a row, errorLimit): {message}"
                    ),
                );
                (n >= limit).then(|| {
                    (
                        reasons::ERROR_LIMIT_REACHED,
                        format!(
                            "{n} analyses in a row could not measure (errorLimit {limit}), last: {reason}: {message}"
                        ),
                    )
                })
            }
            _ => {
                st.failed_analyses += 1;
                st.consecutive_failures += 1;
                st.consecutive_successes = 0;
                st.inconclusive_analyses = 0;
                let (failed, consecutive, limit) = (
                    st.failed_analyses,
                    st.consecutive_failures,
                    spec.analysis.failure_limit,
                );
                self.event(
                    EventKind::Warning,
                    reason,
                    format!(
                        "canary {name} analysis failed ({failed}/{limit} in this run): {message}"
                    ),
                );
                (failed >= limit).then(|| {
                    (
                        reasons::FAILURE_LIMIT_REACHED,
                        format!(
                            "{failed} failed analyses in this run ({consecutive} consecutive; failureLimit {limit}), last: {reason}: {message}"
                        ),
                    )
                })
            }
        };
        let Some((why, text)) = limit_hit else {
            return false;
        };
        self.st.phase = Phase::RollingBack;
        self.st.last_progress_time = Some(time(now));
        self.st.reason = Some(why.into());
        self.st.message = Some(text.clone());
        self.condition(types::PROGRESSING, false, why, text.clone());
        self.event(
            EventKind::Warning,
            why,
            format!("canary {name} rolling back: {text}"),
        );
        // Start the rollback in this same pass.
        let mut rb = Vec::new();
        route(spec, obs, kind, 0, total, &mut rb);
        rb.retain(|a| !matches!(a, Action::Scale { deployment, .. } if *deployment == spec.canary.deployment));
        self.actions.retain(|a| {
            !matches!(
                a,
                Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }
            )
        });
        self.actions.extend(rb);
        self.st.desired_weight = 0;
        true
    }

    /// Stage 10. Advances a step once `successLimit` analyses in a row passed, unless manual
    /// approval or `auto: false` holds it. `Some(requeue)` ends the pass.
    fn advance_when_allowed(&mut self, fin: i32, kind: RoutingKind, total: i32) -> Option<u64> {
        let (name, spec, obs, now) = (self.name, self.spec, self.obs, self.obs.now);
        let limit = spec.promotion.success_limit.max(1);
        let approved = self.annotation(annotations::APPROVE).is_some();
        if self.st.consecutive_successes < limit {
            return None;
        }
        let blocked = if spec.promotion.manual_approval && !approved {
            Some((Phase::WaitingForApproval, reasons::WAITING_FOR_APPROVAL, format!("waiting for manual approval of step {}: kubectl annotate veritascanary {name} {}=true", self.st.current_step + 1, annotations::APPROVE)))
        } else if !spec.promotion.auto && !approved {
            Some((Phase::Progressing, reasons::AUTO_PROMOTION_DISABLED, format!("analysis passed {}/{limit} but auto promotion is disabled (spec.promotion.auto=false): set it to true or approve with {}=true", self.st.consecutive_successes, annotations::APPROVE)))
        } else {
            None
        };
        if let Some((phase, reason, message)) = blocked {
            if self.st.phase != phase || self.st.reason.as_deref() != Some(reason) {
                self.event(
                    EventKind::Normal,
                    reason,
                    format!("canary {name}: {message}"),
                );
            }
            self.st.phase = phase;
            self.st.reason = Some(reason.into());
            self.st.message = Some(message.clone());
            self.condition(types::PROGRESSING, false, reason, message);
            return Some(self.requeue);
        }
        if approved {
            self.actions
                .push(Action::ClearAnnotation(annotations::APPROVE.into()));
        }
        self.st.current_step += 1;
        self.st.consecutive_successes = 0;
        self.st.consecutive_failures = 0;
        self.st.last_progress_time = Some(time(now));
        let next = step_weight(spec, self.st.current_step);
        self.st.desired_weight = next;
        self.actions.retain(|a| {
            !matches!(
                a,
                Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }
            )
        });
        let (_, _, _, msg) = route(spec, obs, kind, next, total, &mut self.actions);
        self.condition(types::TRAFFIC_ROUTED, false, reasons::WAITING_FOR_PODS, msg);
        let step = self.st.current_step;
        if step >= fin {
            self.st.phase = Phase::Promoting;
            self.st.reason = Some(reasons::PROMOTING.into());
            self.st.message = Some("promoting the canary to 100%".into());
            self.event(
                EventKind::Normal,
                reasons::PROMOTING,
                format!("canary {name} promoting to 100%"),
            );
        } else {
            let pause = spec
                .promotion
                .steps
                .get((step - 1) as usize)
                .and_then(|s| s.pause.as_ref());
            self.st.phase = Phase::Progressing;
            self.st.reason = Some(reasons::STEP_ADVANCED.into());
            self.st.message = Some(format!("advanced to step {step} ({next}%)"));
            if pause.is_some() {
                self.st.pause_start_time = Some(time(now));
            }
            self.event(
                EventKind::Normal,
                reasons::STEP_ADVANCED,
                format!("canary {name} advanced to step {step} ({next}%)"),
            );
        }
        self.condition(
            types::PROGRESSING,
            true,
            reasons::STEP_ADVANCED,
            format!("step {step} ({next}%)"),
        );
        Some(5)
    }

    /// Stage 11. Still counting: the status says what the run waits for (the first analysis,
    /// more successes, or after a failed or inconclusive one).
    fn still_counting(mut self) -> Decision {
        let (spec, now) = (self.spec, self.obs.now);
        let limit = spec.promotion.success_limit.max(1);
        let st = &mut self.st;
        st.phase = Phase::Progressing;
        let last_unsuccessful = st.analysis_history.last().filter(|r| {
            (r.verdict == Verdict::Failed && st.consecutive_failures > 0)
                || (r.verdict == Verdict::Inconclusive && st.inconclusive_analyses > 0)
        });
        let (reason, message) = match (
            last_unsuccessful,
            st.analysis_history.is_empty() || st.last_analysis_time.is_none(),
        ) {
            (Some(r), _) if r.verdict == Verdict::Inconclusive => (
                r.reason.clone(),
                format!(
                    "last analysis inconclusive ({}/{} in a row, errorLimit): {}",
                    st.inconclusive_analyses, spec.analysis.error_limit, r.message
                ),
            ),
            (Some(r), _) => (
                r.reason.clone(),
                format!(
                    "last analysis failed ({}/{} in this run, failureLimit): {}",
                    st.failed_analyses, spec.analysis.failure_limit, r.message
                ),
            ),
            (None, true) => (
                reasons::ANALYSIS_PENDING.to_string(),
                "waiting for the first analysis".to_string(),
            ),
            (None, false) => (
                reasons::SUCCESS_LIMIT_NOT_MET.to_string(),
                format!(
                    "successLimit not met: {}/{limit} consecutive successful analyses",
                    st.consecutive_successes
                ),
            ),
        };
        self.condition(types::PROGRESSING, true, &reason, message.clone());
        self.st.reason = Some(reason);
        self.st.message = Some(message);
        let next_analysis = secs_to_next_analysis(spec, &self.st, now).clamp(1, 3600) as u64;
        let requeue = next_analysis.min(self.requeue);
        self.deadline(requeue)
    }
}

/// The promotion after 100 %: stable runs the canary's template. Waits for stable's rollout
/// (scaled to `spec.replicas`), then moves traffic onto it, then scales the canary to 0, then
/// `Succeeded`. Traffic moves only onto ready stable pods of the promoted revision.
fn promote_into_stable(
    name: &str,
    spec: &VeritasCanarySpec,
    obs: &Observed,
    kind: RoutingKind,
    mut st: VeritasCanaryStatus,
    mut actions: Vec<Action>,
    was_held: bool,
) -> Decision {
    let now = obs.now;
    let stable = obs.stable.as_ref().expect("references present");
    let canary = obs.canary.as_ref().expect("references present");
    let rev = canary.template_hash.clone().unwrap_or_default();
    // The 100 % route of step 6 no longer applies: stable gets the traffic back.
    actions.retain(|a| {
        !matches!(
            a,
            Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }
        )
    });
    st.desired_weight = 0;
    let total = total_replicas(spec, &st, obs);
    let want_stable = match kind {
        RoutingKind::Replicas => total,
        // A router leaves the sizes to the user: stable keeps its own, or gets the run's
        // size back if it was at 0.
        _ if stable.replicas == 0 => total,
        _ => stable.replicas,
    };
    let progress = |st: &mut VeritasCanaryStatus, reason: &'static str, msg: String| {
        st.reason = Some(reason.into());
        st.message = Some(msg.clone());
        set_condition(
            &mut st.conditions,
            now,
            obs.generation,
            types::PROGRESSING,
            true,
            reason,
            msg,
        );
    };
    // 1. Stable rolled out with the promoted template and ready.
    if stable.replicas != want_stable {
        actions.push(Action::Scale {
            deployment: spec.stable.deployment.clone(),
            replicas: want_stable,
        });
    }
    let stable_ready = stable.replicas == want_stable
        && stable.rollout_pending.is_none()
        && stable.ready >= want_stable;
    if !stable_ready {
        let why = stable
            .rollout_pending
            .clone()
            .unwrap_or_else(|| format!("{} of {want_stable} stable pods ready", stable.ready));
        progress(
            &mut st,
            reasons::STABLE_ROLLOUT_PENDING,
            format!(
                "Deployment {} rolling out revision {rev}: {why}; traffic stays on the canary",
                spec.stable.deployment
            ),
        );
        return deadline(spec, name, st, actions, now, was_held, 5);
    }
    // 2. Traffic onto stable.
    let back = match kind {
        RoutingKind::Replicas => {
            let shared = obs.shared_service.as_ref().expect("references present");
            let on_stable = shared.selector.get(OWNED_SELECTOR_KEY).map(String::as_str)
                == Some(labels::DEPLOYMENT_STABLE);
            if !on_stable && shared.ready_stable >= want_stable {
                actions.push(Action::SetSelector {
                    service: spec.shared_service.clone(),
                    value: Some(labels::DEPLOYMENT_STABLE.into()),
                });
            }
            st.actual_weight = ratio_weight(shared.ready_stable, shared.ready_canary);
            on_stable && shared.ready_canary == 0 && shared.ready_stable > 0
        }
        RoutingKind::GatewayApi | RoutingKind::Istio => {
            st.actual_weight = route_share(obs.route);
            let back = on_stable_only(obs.route);
            if obs.route.is_none() {
                let (what, route) = route_name(spec, kind);
                progress(
                    &mut st,
                    reasons::ROUTE_MISCONFIGURED,
                    format!("stable runs revision {rev} and is ready, but {what} {route} is gone (or lost its rule for the two Services): traffic cannot move onto stable"),
                );
                return deadline(spec, name, st, actions, now, was_held, 5);
            }
            if !back {
                actions.push(Action::SetRouteWeights {
                    stable: 100,
                    canary: 0,
                });
            }
            back
        }
    };
    if !back {
        progress(
            &mut st,
            reasons::TRAFFIC_TO_STABLE,
            format!("stable runs revision {rev} and is ready: moving traffic onto it"),
        );
        return deadline(spec, name, st, actions, now, was_held, 5);
    }
    set_condition(
        &mut st.conditions,
        now,
        obs.generation,
        types::TRAFFIC_ROUTED,
        true,
        reasons::PROMOTED,
        format!("all traffic on stable (revision {rev})"),
    );
    // 3. The canary scaled to 0 (it carries nothing now).
    if canary.replicas != 0 {
        actions.push(Action::Scale {
            deployment: spec.canary.deployment.clone(),
            replicas: 0,
        });
        progress(
            &mut st,
            reasons::CANARY_SCALING_DOWN,
            format!(
                "traffic on stable (revision {rev}): scaling Deployment {} to 0",
                spec.canary.deployment
            ),
        );
        return deadline(spec, name, st, actions, now, was_held, 5);
    }
    let msg = format!(
        "revision {rev} promoted into Deployment {}, which carries all traffic",
        spec.stable.deployment
    );
    st.phase = Phase::Succeeded;
    st.reason = Some(reasons::PROMOTED.into());
    st.message = Some(msg.clone());
    st.stable_revision = Some(rev.clone());
    set_condition(
        &mut st.conditions,
        now,
        obs.generation,
        types::PROGRESSING,
        true,
        reasons::PROMOTED,
        msg.clone(),
    );
    actions.push(Action::Event {
        kind: EventKind::Normal,
        reason: reasons::PROMOTED,
        message: format!("canary {name}: {msg}"),
    });
    Decision {
        status: st,
        actions,
        requeue_after_secs: 300,
    }
}

/// Applies the progress deadline to a canary the controller is moving.
fn deadline(
    spec: &VeritasCanarySpec,
    name: &str,
    mut st: VeritasCanaryStatus,
    mut actions: Vec<Action>,
    now: Timestamp,
    was_held: bool,
    requeue: u64,
) -> Decision {
    // Leaving a hold restarts the clock (the wrapper records it).
    let idle = if was_held {
        0
    } else {
        secs_since(now, &st.last_progress_time)
    };
    if idle > spec.progress_deadline_seconds {
        st.phase = Phase::RollingBack;
        st.last_progress_time = Some(time(now));
        st.reason = Some(reasons::PROGRESS_DEADLINE_EXCEEDED.into());
        st.message = Some(format!(
            "no progress for {idle}s (progressDeadlineSeconds {}), last state: {}",
            spec.progress_deadline_seconds,
            st.message.clone().unwrap_or_default()
        ));
        set_condition(
            &mut st.conditions,
            now,
            st.observed_generation,
            types::PROGRESSING,
            false,
            reasons::PROGRESS_DEADLINE_EXCEEDED,
            st.message.clone().unwrap_or_default(),
        );
        actions.retain(|a| {
            !matches!(
                a,
                Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }
            )
        });
        actions.push(Action::Event {
            kind: EventKind::Warning,
            reason: reasons::PROGRESS_DEADLINE_EXCEEDED,
            message: format!("canary {name}: {}", st.message.clone().unwrap_or_default()),
        });
        return Decision {
            status: st,
            actions,
            requeue_after_secs: 1,
        };
    }
    let left = (spec.progress_deadline_seconds - idle).max(1) as u64;
    Decision {
        status: st,
        actions,
        requeue_after_secs: requeue.min(left),
    }
}

/// Holds for a person or an explicit setting: the progress deadline does not run.
fn is_held(st: &VeritasCanaryStatus) -> bool {
    matches!(
        st.reason.as_deref(),
        Some(
            reasons::ZERO_WEIGHT
                | reasons::PAUSED_BY_SPEC
                | reasons::PAUSED_AT_STEP
                | reasons::WAITING_FOR_APPROVAL
                | reasons::AUTO_PROMOTION_DISABLED
        )
    ) && !st.phase.is_terminal()
}

/// Decides one pass. `old` is the status as read (None for a new canary).
///
/// The progress clock does not move during a hold (weight 0, a pause, a wait for approval or
/// for auto promotion) and restarts when the hold ends, so a status under a hold is written
/// once, not on every pass.
pub fn decide(
    name: &str,
    spec: &VeritasCanarySpec,
    old: Option<&VeritasCanaryStatus>,
    obs: &Observed,
) -> Decision {
    let was_held = old.is_some_and(is_held);
    let refused = annotations::refused(&obs.annotations);
    let mut d = if refused.is_empty() {
        decide_inner(name, spec, old, obs, was_held)
    } else {
        let mut read = obs.clone();
        read.annotations
            .retain(|k, _| !refused.iter().any(|r| r.key == *k));
        decide_inner(name, spec, old, &read, was_held)
    };
    for r in refused {
        d.actions.push(Action::Event {
            kind: EventKind::Warning,
            reason: reasons::ANNOTATION_IGNORED,
            message: r.message(&format!("canary {name}")),
        });
        d.actions.push(Action::ClearAnnotation(r.key));
    }
    if is_held(&d.status) {
        if let Some(t) = old.and_then(|o| o.last_progress_time.clone()) {
            d.status.last_progress_time = Some(t);
        }
    } else if was_held && !d.status.phase.is_terminal() {
        d.status.last_progress_time = Some(time(obs.now));
    }
    d
}
