//! Text and JSON renderings of a `VeritasEnvironment` (pure; snapshot-tested): `bluegreen
//! inspect`, `bluegreen diff`, the `bluegreen switch --dry-run` plan, `rollback --status`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use veritas_controller::bluegreen::decide::{rollback_target, EnvObs, ServiceObs};
use veritas_controller::bluegreen::drift::is_unknown;
use veritas_crds::reasons::environment_types as types;
use veritas_crds::{
    find_condition, Drift, EnvironmentName, EnvironmentPhase, ModelIdentity, SwitchKind,
    VeritasEnvironment, ENVIRONMENT_SELECTOR_KEY,
};

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn models(m: &[ModelIdentity]) -> String {
    if m.is_empty() {
        return "unknown (no ready pod answered)".into();
    }
    m.iter()
        .map(|m| {
            format!(
                "{}@{} (sha256:{})",
                m.name,
                m.version,
                m.sha256.get(..12).unwrap_or(&m.sha256)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `bluegreen inspect`.
pub fn inspect(e: &VeritasEnvironment) -> String {
    let s = &e.spec;
    let st = e.status.clone().unwrap_or_default();
    let ns = e.metadata.namespace.as_deref().unwrap_or("");
    let name = e.metadata.name.as_deref().unwrap_or("");
    let mut o = String::new();
    let _ = writeln!(o, "environment:       {ns}/{name}");
    let _ = writeln!(
        o,
        "phase:             {} ({})",
        if e.status.is_some() {
            st.phase.as_str()
        } else {
            "Unknown (no status yet: is veritas-controller running?)"
        },
        st.reason.as_deref().unwrap_or("-")
    );
    if let Some(m) = &st.message {
        let _ = writeln!(o, "message:           {m}");
    }
    let active = st.active_environment;
    let _ = writeln!(
        o,
        "active:            {} (Service {} selects {ENVIRONMENT_SELECTOR_KEY}={})",
        active.map(|a| a.as_str()).unwrap_or("unknown"),
        s.active_service,
        active.map(|a| a.as_str()).unwrap_or("?")
    );
    let _ = writeln!(
        o,
        "desired:           {} (spec.activeEnvironment){}",
        s.active_environment,
        if Some(s.active_environment) != active && !st.phase.in_progress() && e.status.is_some() {
            "  <- differs from active"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "previous:          {}",
        match rollback_target(&st) {
            Some(p) => format!("{p} (veritas-spark rollback --bluegreen moves traffic to it)"),
            None => "none (nothing to roll back to)".into(),
        }
    );
    if let Some(a) = active {
        let _ = writeln!(
            o,
            "standby:           {} (preview Service {})",
            a.other(),
            s.preview_service
        );
    }
    match &st.switch_progress {
        None => {
            let _ = writeln!(o, "switch progress:   none");
        }
        Some(p) => {
            let _ = writeln!(
                o,
                "switch progress:   {:?} {} -> {}, step {} since {}{}",
                p.kind,
                p.from,
                p.target,
                p.step,
                ts(&p.since),
                if p.force { " (forced)" } else { "" }
            );
            let _ = writeln!(
                o,
                "  started:         {} (deadline {}s: switch.healthCheck.timeoutSeconds)",
                ts(&p.started_at),
                s.switch.health_check.timeout_seconds
            );
            if let Some(r) = &p.reason {
                let _ = writeln!(o, "  reason:          {r}");
            }
            if let Some(w) = &p.waiting_for {
                let _ = writeln!(o, "  waiting for:     {w}");
            }
        }
    }
    let hc = &s.switch.health_check;
    let _ = writeln!(
        o,
        "health check:      GET :{}{} on every ready pod of the target ({}s per probe), all replicas ready for minReadySeconds {}, within {}s",
        hc.port, hc.path, hc.probe_timeout_seconds, s.min_ready_seconds, hc.timeout_seconds
    );
    let _ = writeln!(o, "environments:");
    for env in EnvironmentName::BOTH {
        let ob = st.environments.get(env);
        let role = match active {
            Some(a) if a == env => "active",
            Some(_) => "standby",
            None => "-",
        };
        let _ = writeln!(
            o,
            "  {:<6} {:<8} Deployment {:<22} {}/{} ready  ConfigMap {:<22} model {}",
            env.as_str(),
            role,
            s.env(env).deployment,
            ob.ready,
            ob.replicas,
            s.env(env).config_map,
            models(&ob.models)
        );
    }
    match &st.last_switch {
        None => {
            let _ = writeln!(o, "last switch:       none");
        }
        Some(r) => {
            let _ = writeln!(
                o,
                "last switch:       {:?} {} -> {} {} ({}) in {}s, finished {}",
                r.kind,
                r.from,
                r.target,
                r.outcome,
                r.reason,
                r.duration_seconds,
                ts(&r.finished_at)
            );
        }
    }
    let _ = writeln!(
        o,
        "drift:             {}",
        if st.drift.is_empty() {
            "none".to_string()
        } else {
            format!(
                "{} difference(s) between blue and green (veritas-spark bluegreen diff)",
                st.drift.len()
            )
        }
    );
    if !st.conditions.is_empty() {
        let _ = writeln!(o, "conditions:");
        for t in [
            types::REFERENCES_VALID,
            types::TRAFFIC_ROUTED,
            types::PROGRESSING,
            types::STANDBY_HEALTHY,
            types::IN_SYNC,
        ] {
            if let Some(c) = find_condition(&st.conditions, t) {
                let _ = writeln!(
                    o,
                    "  {:<16} {:<5} {:<22} {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
        }
    }
    o
}

/// The JSON form of `bluegreen inspect` (schema 1).
pub fn inspect_json(e: &VeritasEnvironment) -> Value {
    json!({
        "namespace": e.metadata.namespace,
        "name": e.metadata.name,
        "spec": e.spec,
        "status": e.status,
        "rollbackTarget": e.status.as_ref().and_then(rollback_target),
    })
}

/// `bluegreen diff`: one line per difference, Secrets by digest only.
pub fn diff(drift: &[Drift]) -> String {
    let mut o = String::new();
    if drift.is_empty() {
        let _ = writeln!(
            o,
            "blue and green are in sync: ConfigMap data, loaded model, env vars, mounts and Secrets match"
        );
        return o;
    }
    let unknown = drift.iter().filter(|d| is_unknown(d)).count();
    if unknown == drift.len() {
        let _ = writeln!(
            o,
            "blue and green match in everything readable, but {unknown} Secret(s) could not be read: in sync is unknown"
        );
    } else {
        let _ = writeln!(
            o,
            "{} difference(s) between blue and green (Secrets compared by a keyed hash, values never shown):",
            drift.len() - unknown
        );
    }
    let w = drift.iter().map(|d| d.key.len()).max().unwrap_or(0).min(48);
    let _ = writeln!(o, "  {:<9} {:<w$}  {:<30} GREEN", "KIND", "KEY", "BLUE");
    for d in drift {
        let _ = writeln!(
            o,
            "  {:<9} {:<w$}  {:<30} {}",
            d.kind, d.key, d.blue, d.green
        );
    }
    let mut kinds: Vec<&str> = drift.iter().map(|d| d.kind.as_str()).collect();
    kinds.dedup();
    let _ = writeln!(
        o,
        "remedies (deployment-troubleshooting guide, State Not Syncing):"
    );
    for k in kinds {
        let hint = match k {
            "ConfigMap" => "ConfigMap not synced: apply the same data to veritas-config-blue and veritas-config-green",
            "Model" => "model versions mismatched: load the same model in both (veritas-spark models list in a pod of each)",
            "Volume" => "model mount different: make the PVC mounts identical",
            "Secret" if unknown > 0 => "Secrets mismatch, or not: this identity may not read Secrets (kubectl auth can-i get secrets); compare them as one that can",
            "Secret" => "Secrets mismatch: sync the Secrets between the environments",
            _ => "environment variable drift: update the Deployment manifests",
        };
        let _ = writeln!(o, "  {k:<9} {hint}");
    }
    o
}

/// What `bluegreen switch --dry-run` sees.
#[derive(Clone, Debug, Default)]
pub struct PlanFacts {
    pub blue: Option<EnvObs>,
    pub green: Option<EnvObs>,
    pub active_service: Option<ServiceObs>,
    pub preview_service: Option<ServiceObs>,
    pub drift: Vec<Drift>,
}

impl PlanFacts {
    fn env(&self, e: EnvironmentName) -> Option<&EnvObs> {
        match e {
            EnvironmentName::Blue => self.blue.as_ref(),
            EnvironmentName::Green => self.green.as_ref(),
        }
    }
}

/// A dry-run plan: each step the controller would take and what it would change, plus
/// warnings about what would make it fail.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Plan {
    pub from: Option<EnvironmentName>,
    pub to: EnvironmentName,
    pub steps: Vec<String>,
    pub warnings: Vec<String>,
    /// The change the command makes (without --dry-run).
    pub change: String,
}

pub fn switch_plan(e: &VeritasEnvironment, to: EnvironmentName, f: &PlanFacts) -> Plan {
    let s = &e.spec;
    let st = e.status.clone().unwrap_or_default();
    let name = e.metadata.name.as_deref().unwrap_or("");
    // Before the controller's first pass, what the active Service selects.
    let from = st
        .active_environment
        .or(f.active_service.as_ref().and_then(ServiceObs::env));
    let from_s = from.map(|f| f.as_str()).unwrap_or("?");
    let hc = &s.switch.health_check;
    let sel = |svc: &Option<ServiceObs>| {
        svc.as_ref()
            .and_then(|v| v.selector.get(ENVIRONMENT_SELECTOR_KEY).cloned())
            .unwrap_or_else(|| "<none>".into())
    };
    let tgt = f.env(to);
    let (ready, replicas) = tgt.map_or((0, 0), |d| (d.ready, d.replicas));
    let mut steps = vec![
        format!(
            "record the switch: status.phase Switching, switchProgress.step Verifying, {from_s} -> {to}, deadline {}s (switch.healthCheck.timeoutSeconds)",
            hc.timeout_seconds
        ),
        format!(
            "verify {to}: all {replicas} pods ready (now {ready}/{replicas}), for minReadySeconds {}, then GET :{}{} healthy on every ready pod; traffic stays on {from_s} meanwhile",
            s.min_ready_seconds, hc.port, hc.path
        ),
        format!(
            "record step SwitchingSelector, then set Service {} selector {ENVIRONMENT_SELECTOR_KEY}: {} -> {to} ({ready} ready {to} pods take the traffic); done when it selects only {to} pods (serviceUpdateTimeoutSeconds {})",
            s.active_service,
            sel(&f.active_service),
            s.switch.service_update_timeout_seconds
        ),
    ];
    if f.preview_service.is_some() {
        steps.push(format!(
            "record step UpdatingPreview, then set Service {} selector {ENVIRONMENT_SELECTOR_KEY}: {} -> {from_s}",
            s.preview_service,
            sel(&f.preview_service)
        ));
    } else {
        steps.push(format!(
            "preview Service {} does not exist: skipped",
            s.preview_service
        ));
    }
    steps.push(format!(
        "Stable: active {to}, previous {from_s} (undo with: veritas-spark rollback --bluegreen)"
    ));
    let mut warnings = Vec::new();
    if st.phase.in_progress() {
        warnings.push(format!(
            "a {} is in progress (phase {}): wait for it or roll it back",
            match st.switch_progress.as_ref().map(|p| p.kind) {
                Some(SwitchKind::Rollback) => "rollback",
                _ => "switch",
            },
            st.phase
        ));
    }
    if Some(to) == from && st.phase == EnvironmentPhase::Stable {
        warnings.push(format!("{to} is already active: nothing to do"));
    }
    match tgt {
        None => warnings.push(format!(
            "Deployment {} not found: the switch would fail",
            s.env(to).deployment
        )),
        Some(d) if d.ready == 0 => warnings.push(format!(
            "{to} has 0/{} ready pods: the switch would fail with TargetUnhealthy after {}s and traffic would stay on {from_s}",
            d.replicas, hc.timeout_seconds
        )),
        Some(d) if d.ready < d.replicas.max(1) => warnings.push(format!(
            "{to} has {}/{} ready pods: the switch waits for all of them (TargetUnhealthy) up to {}s",
            d.ready, d.replicas, hc.timeout_seconds
        )),
        Some(_) => {}
    }
    if s.min_ready_seconds >= hc.timeout_seconds {
        warnings.push(format!(
            "minReadySeconds {} >= switch.healthCheck.timeoutSeconds {}: the switch would fail with MinReadySecondsNotMet",
            s.min_ready_seconds, hc.timeout_seconds
        ));
    }
    if let Some(c) = find_condition(&st.conditions, types::STANDBY_HEALTHY) {
        if !c.is_true() && from.map(|f| f.other()) == Some(to) {
            warnings.push(format!(
                "standby {to} unhealthy: {} ({})",
                c.message, c.reason
            ));
        }
    }
    if !f.drift.is_empty() {
        warnings.push(format!(
            "{} difference(s) between blue and green: veritas-spark bluegreen diff",
            f.drift.len()
        ));
    }
    Plan {
        from,
        to,
        steps,
        warnings,
        change: format!(
            "kubectl patch veritasenvironment {name} --type merge -p '{{\"spec\":{{\"activeEnvironment\":\"{to}\"}}}}'"
        ),
    }
}

pub fn plan_text(e: &VeritasEnvironment, p: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bluegreen switch {}/{}: {} -> {} (dry run: nothing is changed)",
        e.metadata.namespace.as_deref().unwrap_or(""),
        e.metadata.name.as_deref().unwrap_or(""),
        p.from.map(|f| f.as_str()).unwrap_or("?"),
        p.to
    );
    let _ = writeln!(
        o,
        "steps the controller would take, each recorded in status before it acts:"
    );
    for (i, s) in p.steps.iter().enumerate() {
        let _ = writeln!(o, "  {}. {s}", i + 1);
    }
    let _ = writeln!(o, "change this command would make:\n  {}", p.change);
    if p.warnings.is_empty() {
        let _ = writeln!(o, "warnings: none");
    } else {
        let _ = writeln!(o, "warnings:");
        for w in &p.warnings {
            let _ = writeln!(o, "  - {w}");
        }
    }
    o
}

/// Rollback progress of an environment, as `rollback --status` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvRollbackState {
    pub phase: String,
    /// `complete`, `in progress`, `failed` or `not rolled back`.
    pub state: String,
    pub active: Option<EnvironmentName>,
    pub target: Option<EnvironmentName>,
    pub reason: Option<String>,
    pub detail: String,
}

pub fn env_rollback_state(e: &VeritasEnvironment) -> EnvRollbackState {
    let st = e.status.clone().unwrap_or_default();
    let rollback_running = st
        .switch_progress
        .as_ref()
        .is_some_and(|p| p.kind == SwitchKind::Rollback);
    let last_rollback = st
        .last_switch
        .as_ref()
        .filter(|r| r.kind == SwitchKind::Rollback);
    let state = if rollback_running || st.phase == EnvironmentPhase::RollingBack {
        "in progress"
    } else if st.phase == EnvironmentPhase::RollbackFailed {
        "failed"
    } else if last_rollback.is_some_and(|r| r.outcome != "Failed")
        && st.phase == EnvironmentPhase::Stable
    {
        "complete"
    } else {
        "not rolled back"
    };
    EnvRollbackState {
        phase: st.phase.as_str().into(),
        state: state.into(),
        active: st.active_environment,
        target: rollback_target(&st),
        reason: st.reason.clone(),
        detail: st
            .switch_progress
            .as_ref()
            .and_then(|p| p.waiting_for.clone())
            .or(st.message.clone())
            .unwrap_or_default(),
    }
}

pub fn env_rollback_status(e: &VeritasEnvironment) -> String {
    let r = env_rollback_state(e);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "environment: {}/{}",
        e.metadata.namespace.as_deref().unwrap_or(""),
        e.metadata.name.as_deref().unwrap_or("")
    );
    let _ = writeln!(o, "rollback:    {}", r.state);
    let _ = writeln!(
        o,
        "phase:       {} ({})",
        r.phase,
        r.reason.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        o,
        "traffic:     on {}",
        r.active.map(|a| a.as_str()).unwrap_or("unknown")
    );
    if !r.detail.is_empty() {
        let _ = writeln!(o, "detail:      {}", r.detail);
    }
    o
}
