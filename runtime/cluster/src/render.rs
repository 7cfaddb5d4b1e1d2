//! Text and JSON renderings of a canary (pure; snapshot-tested).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use veritas_controller::decide::{final_step, step_weight, TrackMetrics};
use veritas_crds::reasons::{self, types};
use veritas_crds::{find_condition, Phase, VeritasCanary, VeritasCanaryStatus};

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "no data".into())
}

fn secs(x: Option<f64>) -> String {
    x.map(|v| format!("{:.3}s", v))
        .unwrap_or_else(|| "no data".into())
}

fn count(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}"))
        .unwrap_or_else(|| "no data".into())
}

/// `canary inspect`: the state in words, including the auto-promotion line the guide greps
/// for (`grep -i "auto.*promotion"`).
pub fn inspect(c: &VeritasCanary) -> String {
    let s = &c.spec;
    let st = c.status.clone().unwrap_or_default();
    let mut o = String::new();
    let ns = c.metadata.namespace.as_deref().unwrap_or("");
    let name = c.metadata.name.as_deref().unwrap_or("");
    let _ = writeln!(o, "canary:            {ns}/{name}");
    let reason = st.reason.as_deref().unwrap_or("-");
    let _ = writeln!(
        o,
        "phase:             {} ({reason})",
        if c.status.is_some() {
            st.phase.as_str()
        } else {
            "Unknown (no status yet: is veritas-controller running?)"
        }
    );
    if let Some(m) = &st.message {
        let _ = writeln!(o, "message:           {m}");
    }
    let _ = writeln!(
        o,
        "traffic weight:    spec.trafficWeight {}%, desired {}%, actual {}%",
        s.traffic_weight, st.desired_weight, st.actual_weight
    );
    let weights: Vec<String> = (0..=final_step(s))
        .map(|i| format!("{}%", step_weight(s, i)))
        .collect();
    let _ = writeln!(
        o,
        "step:              {} of {} ({})",
        st.current_step,
        final_step(s),
        weights.join(" -> ")
    );
    let routing = match s.routing.kind() {
        Ok(veritas_crds::RoutingKind::Replicas) => format!(
            "replicas (replica ratio of {} pods behind Service {})",
            s.replicas
                .or(st.replicas)
                .map_or("the stable Deployment's".to_string(), |n| n.to_string()),
            s.shared_service
        ),
        Ok(veritas_crds::RoutingKind::GatewayApi) => format!(
            "gatewayAPI (HTTPRoute {})",
            s.routing
                .gateway_api
                .as_ref()
                .map(|g| g.http_route.as_str())
                .unwrap_or("")
        ),
        Ok(veritas_crds::RoutingKind::Istio) => format!(
            "istio (VirtualService {})",
            s.routing
                .istio
                .as_ref()
                .map(|i| i.virtual_service.as_str())
                .unwrap_or("")
        ),
        Err(e) => format!("invalid: {e}"),
    };
    let _ = writeln!(o, "routing:           {routing}");
    let _ = writeln!(
        o,
        "stable:            Deployment {} / Service {}",
        s.stable.deployment, s.stable.service
    );
    let _ = writeln!(
        o,
        "canary:            Deployment {} / Service {}",
        s.canary.deployment, s.canary.service
    );
    let _ = writeln!(o, "service monitor:   {}", s.service_monitor);
    let _ = writeln!(
        o,
        "auto-promotion:    {} (spec.promotion.auto={})",
        if s.promotion.auto {
            "enabled"
        } else {
            "disabled: the canary will not advance by itself"
        },
        s.promotion.auto
    );
    let _ = writeln!(
        o,
        "manual approval:   {}",
        if !s.promotion.manual_approval {
            "not required".to_string()
        } else if st.phase == Phase::WaitingForApproval {
            format!(
                "required: waiting for approval (kubectl annotate veritascanary {name} {}=true)",
                veritas_crds::annotations::APPROVE
            )
        } else {
            "required before each step".to_string()
        }
    );
    let _ = writeln!(
        o,
        "paused:            {}",
        if s.promotion.paused {
            "yes (spec.promotion.paused=true)"
        } else if st.phase == Phase::Paused {
            "yes (at step)"
        } else {
            "no"
        }
    );
    let _ = writeln!(o, "analysis:          {}/{} consecutive successes needed (successLimit), {}/{} failed in this run (failureLimit), {}/{} inconclusive in a row (errorLimit)", st.consecutive_successes, s.promotion.success_limit, st.failed_analyses, s.analysis.failure_limit, st.inconclusive_analyses, s.analysis.error_limit);
    let _ = writeln!(
        o,
        "thresholds:        error rate <= {}, p99 <= {}s, >= {} requests per {}s window, every {}s{}",
        s.analysis.error_rate_threshold,
        s.analysis.latency_p99_threshold,
        s.analysis.min_requests,
        s.analysis.window_seconds,
        s.analysis.interval_seconds,
        if s.analysis.compare_with_stable { ", relative to stable" } else { "" }
    );
    if !st.conditions.is_empty() {
        let _ = writeln!(o, "conditions:");
        for t in [
            types::REFERENCES_VALID,
            types::TRAFFIC_ROUTED,
            types::METRICS_AVAILABLE,
            types::ANALYSIS_SUCCESSFUL,
            types::PROGRESSING,
        ] {
            if let Some(c) = find_condition(&st.conditions, t) {
                let _ = writeln!(
                    o,
                    "  {:<20} {:<5} {:<26} {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
    }
    o
}

/// The JSON form of `canary inspect` (schema 1).
pub fn inspect_json(c: &VeritasCanary) -> Value {
    json!({
        "namespace": c.metadata.namespace,
        "name": c.metadata.name,
        "spec": c.spec,
        "status": c.status,
        "autoPromotion": c.spec.promotion.auto,
    })
}

/// `canary inspect --history`.
pub fn history(c: &VeritasCanary) -> String {
    let mut o = String::new();
    let runs = c
        .status
        .as_ref()
        .map(|s| s.analysis_history.as_slice())
        .unwrap_or_default();
    let _ = writeln!(o, "analysis history ({} runs, newest last):", runs.len());
    if runs.is_empty() {
        let _ = writeln!(o, "  (none yet)");
    }
    for r in runs {
        let _ = writeln!(
            o,
            "  {}  step {} at {:>3}%  {:<10} {:<22} error rate {:<8} p99 {:<8} requests {:<6} {}",
            r.time.0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            r.step,
            r.weight,
            format!("{:?}", r.verdict),
            r.reason,
            pct(r.error_rate),
            secs(r.latency_p99),
            count(r.requests),
            r.message
        );
    }
    o
}

/// `metrics canary` / `metrics compare` / `canary inspect --metrics`.
pub fn comparison(m: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "window: {}s", m.window_seconds);
    let _ = writeln!(
        o,
        "{:<8} {:>10} {:>12} {:>10}",
        "track", "requests", "error rate", "p99"
    );
    let row = |o: &mut String, name: &str, t: &Option<TrackMetrics>| {
        let t = t.unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<8} {:>10} {:>12} {:>10}",
            name,
            count(t.requests),
            pct(t.error_rate.or(t.requests.map(|_| 0.0))),
            secs(t.latency_p99)
        );
    };
    row(&mut o, "canary", &m.canary);
    if m.stable.is_some() {
        row(&mut o, "stable", &m.stable);
        if let (Some(c), Some(s)) = (m.canary, m.stable) {
            let d = c.error_rate.unwrap_or(0.0) - s.error_rate.unwrap_or(0.0);
            let _ = writeln!(o, "canary - stable error rate: {:+.2} points", d * 100.0);
        }
    }
    if m.canary.is_some_and(|c| c.requests.is_none()) {
        let _ = writeln!(o, "no canary data: check the ServiceMonitor veritas-spark-canary and the canary's metrics endpoint");
    }
    o
}

pub use crate::Comparison;

/// Rollback progress, as `rollback --status` and `--json` report it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RollbackState {
    pub phase: String,
    /// `complete`, `in progress`, `failed` (past its deadline, still trying: E5002) or
    /// `not rolled back`.
    pub state: String,
    pub complete: bool,
    pub actual_weight: i32,
    pub reason: Option<String>,
    pub detail: String,
}

/// A canary still rolling back after its deadline (reason `RollbackFailed`: stable cannot take
/// the traffic back). `rollback --status` and `deployment status` both report it as E5002.
pub fn rollback_failed(st: &VeritasCanaryStatus) -> bool {
    st.phase == Phase::RollingBack && st.reason.as_deref() == Some(reasons::ROLLBACK_FAILED)
}

pub fn rollback_state(c: &VeritasCanary) -> RollbackState {
    let st = c.status.clone().unwrap_or_default();
    let routed = find_condition(&st.conditions, types::TRAFFIC_ROUTED);
    let (state, complete) = match st.phase {
        Phase::Failed => ("complete", true),
        Phase::RollingBack if rollback_failed(&st) => ("failed", false),
        Phase::RollingBack => ("in progress", false),
        _ => ("not rolled back", false),
    };
    RollbackState {
        phase: st.phase.as_str().into(),
        state: state.into(),
        complete,
        actual_weight: st.actual_weight,
        reason: st.reason.clone(),
        detail: routed
            .map(|c| c.message.clone())
            .unwrap_or_else(|| st.message.clone().unwrap_or_default()),
    }
}

pub fn rollback_status(c: &VeritasCanary) -> String {
    let r = rollback_state(c);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "canary:    {}/{}",
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or("")
    );
    let _ = writeln!(o, "rollback:  {}", r.state);
    let _ = writeln!(
        o,
        "phase:     {} ({})",
        r.phase,
        r.reason.as_deref().unwrap_or("-")
    );
    let _ = writeln!(o, "traffic:   {}% on the canary", r.actual_weight);
    if !r.detail.is_empty() {
        let _ = writeln!(o, "detail:    {}", r.detail);
    }
    o
}
