//! The blue-green decision: a pure function of what the controller observed (spec, last
//! status, both Deployments, the active and preview Services, probe results of the ready pods,
//! drift, the clock) to the actions to take and the whole new status.
//!
//! A switch is a recorded state machine (`status.switchProgress.step`):
//!
//! ```text
//!  Stable ──spec.activeEnvironment changes──▶ Verifying ──target ready, minReadySeconds,
//!    ▲                                          │        every ready pod passes its probe
//!    │                               deadline ──┤
//!    │                   (SwitchFailed, traffic │ never moved)
//!    │                                          ▼
//!    │                                  SwitchingSelector ──selector = target, the Service
//!    │                                          │           selects only target pods
//!    │                   target lost its pods / │ serviceUpdateTimeoutSeconds / spec changed back
//!    │                                          ▼                      ▼
//!    └────────── UpdatingPreview (preview = old)      RestoringSelector (selector = from)
//! ```
//!
//! Every step is written to status before its action is carried out (the reconcile writes the
//! status first, then acts), and every step's action is level-triggered: a controller killed
//! between the two, or anywhere else, repeats the action of the recorded step on its next pass.
//! The active Service's `environment` key is only ever set to an environment with at least one
//! ready pod, so a switch never leaves it selecting zero ready pods; a switch that misses its
//! deadline before the selector moved leaves traffic where it was, and one that fails after
//! moves it back.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use veritas_crds::reasons::{self, environment_types as types};
use veritas_crds::{
    annotations, Drift, EnvironmentName, EnvironmentObserved, EnvironmentPhase, ModelIdentity,
    SwitchKind, SwitchProgress, SwitchRecord, SwitchStep, VeritasEnvironmentSpec,
    VeritasEnvironmentStatus, ENVIRONMENT_SELECTOR_KEY,
};
use veritas_vocab::labels;

use super::drift::is_unknown;
use crate::decide::{fmt_labels, set_condition, set_condition_status, EventKind};

/// A Deployment of one environment as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvObs {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Ready pods of the Deployment (not terminating).
    pub ready: i32,
    /// Labels of the pod template.
    pub template_labels: BTreeMap<String, String>,
    /// When the most recently ready of its ready pods became ready (the pods' Ready
    /// condition), so `minReadySeconds` counts pod readiness, not when a switch noticed it.
    pub ready_since: Option<Timestamp>,
    /// Why the Deployment's rollout is not complete (in `kubectl rollout status`'s terms), or
    /// `None` when it is. Ready pods of an old ReplicaSet look healthy: a switch right after
    /// an image update would verify them, so the gate waits for this first.
    pub rollout_pending: Option<String>,
}

/// The active or preview Service as observed: its selector and the ready pods it selects now,
/// attributed to an environment by the Deployments' own selectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceObs {
    pub selector: BTreeMap<String, String>,
    pub ready_blue: i32,
    pub ready_green: i32,
}

impl ServiceObs {
    /// The environment its owned selector key names, if any.
    pub fn env(&self) -> Option<EnvironmentName> {
        self.selector
            .get(ENVIRONMENT_SELECTOR_KEY)
            .and_then(|v| EnvironmentName::parse(v))
    }
    pub fn ready(&self, e: EnvironmentName) -> i32 {
        match e {
            EnvironmentName::Blue => self.ready_blue,
            EnvironmentName::Green => self.ready_green,
        }
    }
}

/// What one pod answered on its health probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Healthy,
    /// It answered, unhealthy (HTTP status and body summary).
    Unhealthy(String),
    /// No answer within `probeTimeoutSeconds` (or no connection).
    NoAnswer(String),
}

/// The probe of one ready pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProbe {
    pub pod: String,
    pub outcome: ProbeOutcome,
    /// The model the pod's runtime reports on `/health`.
    pub model: Option<ModelIdentity>,
}

/// Everything one pass observed.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub annotations: BTreeMap<String, String>,
    pub blue: Option<EnvObs>,
    pub green: Option<EnvObs>,
    pub active_service: Option<ServiceObs>,
    pub preview_service: Option<ServiceObs>,
    /// Probes of the ready pods, per environment; an environment absent here was not probed.
    pub probes: BTreeMap<EnvironmentName, Vec<PodProbe>>,
    /// Differences between the environments ([`super::drift::diff`]).
    pub drift: Vec<Drift>,
}

impl Observed {
    pub fn env(&self, e: EnvironmentName) -> Option<&EnvObs> {
        match e {
            EnvironmentName::Blue => self.blue.as_ref(),
            EnvironmentName::Green => self.green.as_ref(),
        }
    }
    fn ready(&self, e: EnvironmentName) -> i32 {
        self.env(e).map_or(0, |d| d.ready)
    }
}

/// What the controller must do after writing the status of this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set the `environment` key of a Service's selector (JSON merge patch of that one key).
    SetSelector {
        service: String,
        env: EnvironmentName,
    },
    /// Remove an annotation the controller has acted on (after the status recording it).
    ClearAnnotation(String),
    /// Publish an Event (transitions only).
    Event {
        kind: EventKind,
        reason: &'static str,
        message: String,
    },
}

/// The result of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: VeritasEnvironmentStatus,
    pub actions: Vec<Action>,
    /// Seconds until the next pass is needed.
    pub requeue_after_secs: u64,
}

fn time(now: Timestamp) -> Time {
    Time(now)
}

fn secs_since(now: Timestamp, t: &Time) -> i64 {
    now.duration_since(t.0).as_secs()
}

/// Sets a condition; returns true when its status flipped (or it is new and False), which is
/// when an Event is due.
fn event(actions: &mut Vec<Action>, kind: EventKind, reason: &'static str, message: String) {
    actions.push(Action::Event {
        kind,
        reason,
        message,
    });
}

/// The phase a failed move ends in.
fn failed_phase(kind: SwitchKind) -> EnvironmentPhase {
    match kind {
        SwitchKind::Switch => EnvironmentPhase::SwitchFailed,
        SwitchKind::Rollback => EnvironmentPhase::RollbackFailed,
    }
}

fn in_progress_phase(kind: SwitchKind) -> EnvironmentPhase {
    match kind {
        SwitchKind::Switch => EnvironmentPhase::Switching,
        SwitchKind::Rollback => EnvironmentPhase::RollingBack,
    }
}

fn word(kind: SwitchKind) -> &'static str {
    match kind {
        SwitchKind::Switch => "switch",
        SwitchKind::Rollback => "rollback",
    }
}

/// The reason a drift kind reports under.
pub fn drift_reason(kind: &str) -> &'static str {
    match kind {
        "ConfigMap" => reasons::CONFIG_MAP_DRIFT,
        "Model" => reasons::MODEL_DRIFT,
        "EnvVar" => reasons::ENV_VAR_DRIFT,
        "Volume" => reasons::VOLUME_DRIFT,
        _ => reasons::SECRET_DRIFT,
    }
}

/// Whether the target passes the gate now: `Ok(())`, or the reason and what it waits for.
/// Updates `ready_since` (reset whenever a target pod is not ready).
fn verify(
    spec: &VeritasEnvironmentSpec,
    obs: &Observed,
    p: &mut SwitchProgress,
) -> Result<(), (&'static str, String)> {
    let t = p.target;
    let name = &spec.env(t).deployment;
    let Some(d) = obs.env(t) else {
        p.ready_since = None;
        return Err((
            reasons::REFERENCE_MISSING,
            format!("Deployment {name} ({t}) not found"),
        ));
    };
    let want = if p.force { 1 } else { d.replicas.max(1) };
    if d.ready < want {
        p.ready_since = None;
        return Err((
            reasons::TARGET_UNHEALTHY,
            format!(
                "{}/{} pods of {t} (Deployment {name}) ready{}",
                d.ready,
                d.replicas,
                if p.force {
                    ", a forced rollback still needs one"
                } else {
                    ""
                }
            ),
        ));
    }
    if p.force {
        return Ok(());
    }
    if let Some(why) = &d.rollout_pending {
        p.ready_since = None;
        return Err((
            reasons::TARGET_ROLLOUT_PENDING,
            format!("Deployment {name} ({t}) rollout not complete: {why}"),
        ));
    }
    let since = match d.ready_since {
        // Never later than now: clocks of the API server and the controller may differ.
        Some(t) => time(t.min(obs.now)),
        None => p.ready_since.clone().unwrap_or_else(|| time(obs.now)),
    };
    p.ready_since = Some(since.clone());
    let ready_for = secs_since(obs.now, &since);
    if ready_for < spec.min_ready_seconds {
        return Err((
            reasons::MIN_READY_SECONDS_NOT_MET,
            format!(
                "all {} pods of {t} ready since {}, minReadySeconds is {}",
                d.ready,
                since.0.strftime("%Y-%m-%dT%H:%M:%SZ"),
                spec.min_ready_seconds
            ),
        ));
    }
    let hc = &spec.switch.health_check;
    let probes = obs.probes.get(&t).map(Vec::as_slice).unwrap_or_default();
    if probes.len() < want as usize {
        return Err((
            reasons::HEALTH_CHECK_PENDING,
            format!(
                "health probe GET :{}{} answered by {}/{} pods of {t}",
                hc.port,
                hc.path,
                probes.len(),
                want
            ),
        ));
    }
    if let Some((pod, why)) = probes.iter().find_map(|p| match &p.outcome {
        ProbeOutcome::Unhealthy(w) => Some((&p.pod, w)),
        _ => None,
    }) {
        return Err((
            reasons::HEALTH_CHECK_FAILED,
            format!(
                "pod {pod} of {t} answered GET :{}{} unhealthy: {why}",
                hc.port, hc.path
            ),
        ));
    }
    if let Some((pod, why)) = probes.iter().find_map(|p| match &p.outcome {
        ProbeOutcome::NoAnswer(w) => Some((&p.pod, w)),
        _ => None,
    }) {
        return Err((
            reasons::HEALTH_CHECK_TIMEOUT,
            format!(
                "pod {pod} of {t} did not answer GET :{}{} within {}s: {why}",
                hc.port, hc.path, hc.probe_timeout_seconds
            ),
        ));
    }
    Ok(())
}

/// Everything the settle and step functions share.
struct Pass<'a> {
    name: &'a str,
    spec: &'a VeritasEnvironmentSpec,
    obs: &'a Observed,
    svc: &'a ServiceObs,
    st: VeritasEnvironmentStatus,
    actions: Vec<Action>,
    requeue: u64,
}

impl Pass<'_> {
    fn now(&self) -> Timestamp {
        self.obs.now
    }

    /// Point the active Service at `e` unless it already is; never at an environment without a
    /// ready pod. Returns whether it selects `e` (or was told to).
    fn point_active(&mut self, e: EnvironmentName) -> bool {
        if self.svc.env() == Some(e) {
            return true;
        }
        if self.obs.ready(e) < 1 {
            return false;
        }
        self.actions.push(Action::SetSelector {
            service: self.spec.active_service.clone(),
            env: e,
        });
        true
    }

    /// Point the preview Service (when it exists) at `e`.
    fn point_preview(&mut self, e: EnvironmentName) -> bool {
        match &self.obs.preview_service {
            None => true,
            Some(p) if p.env() == Some(e) => true,
            Some(_) => {
                self.actions.push(Action::SetSelector {
                    service: self.spec.preview_service.clone(),
                    env: e,
                });
                false
            }
        }
    }

    /// Ends a move: success (`Stable`) or failure (`SwitchFailed` / `RollbackFailed`).
    fn finish(
        &mut self,
        p: &SwitchProgress,
        phase: EnvironmentPhase,
        active: EnvironmentName,
        outcome: &str,
        reason: &'static str,
        message: String,
    ) {
        let now = self.now();
        let completed = outcome == "Completed";
        self.st.phase = phase;
        self.st.reason = Some(reason.into());
        self.st.message = Some(message.clone());
        if completed {
            self.st.previous_environment = Some(p.from);
        }
        self.st.active_environment = Some(active);
        self.st.switch_progress = None;
        self.st.last_switch = Some(SwitchRecord {
            kind: p.kind,
            from: p.from,
            target: p.target,
            started_at: p.started_at.clone(),
            finished_at: time(now),
            outcome: outcome.into(),
            reason: reason.into(),
            duration_seconds: secs_since(now, &p.started_at),
        });
        let kind = if phase.failed() {
            EventKind::Warning
        } else {
            EventKind::Normal
        };
        event(
            &mut self.actions,
            kind,
            reason,
            format!("{} {}: {message}", word(p.kind), self.name),
        );
        self.requeue = 1;
    }

    /// Starts undoing a move whose selector may already have changed.
    fn restore(&mut self, p: &mut SwitchProgress, reason: &'static str, message: String) {
        // Whatever this pass meant to do to the active Service is void now: it goes back.
        let active_service = self.spec.active_service.clone();
        self.actions.retain(
            |a| !matches!(a, Action::SetSelector { service, .. } if *service == active_service),
        );
        p.step = SwitchStep::RestoringSelector;
        p.since = time(self.now());
        p.failure_reason = Some(reason.into());
        p.failure_message = Some(message.clone());
        p.reason = Some(reason.into());
        p.waiting_for = Some(format!(
            "active Service {} back to {}",
            self.spec.active_service, p.from
        ));
        self.st.phase = EnvironmentPhase::RollingBack;
        self.st.reason = Some(reason.into());
        self.st.message = Some(format!(
            "undoing the {} {} -> {}: {message}",
            word(p.kind),
            p.from,
            p.target
        ));
        event(
            &mut self.actions,
            EventKind::Warning,
            reason,
            format!(
                "{} {}: {message}; moving traffic back to {}",
                word(p.kind),
                self.name,
                p.from
            ),
        );
    }

    /// The settled machine: `Pending`, `Stable`, `SwitchFailed`, `RollbackFailed`.
    fn settled(&mut self, generation_changed: bool, retry: bool, rollback: Option<&str>) {
        let want = self.spec.active_environment;
        let observed = self.svc.env();
        // The environment traffic is on: recorded, or (first pass) what the Service selects.
        let active = match self.st.active_environment {
            Some(a) => a,
            None => match observed {
                Some(e) => e,
                None => {
                    // The Service selects both environments (no `environment` key): select the
                    // desired one as soon as it has a ready pod.
                    if !self.point_active(want) {
                        self.st.phase = EnvironmentPhase::Pending;
                        self.st.reason = Some(reasons::TARGET_UNHEALTHY.into());
                        self.st.message = Some(format!(
                            "Service {} has no {} key and {want} has no ready pod to select",
                            self.spec.active_service, ENVIRONMENT_SELECTOR_KEY
                        ));
                        self.requeue = 5;
                        return;
                    }
                    want
                }
            },
        };
        let mut active = active;
        // A person pointed the Service at the desired environment (the guide's remedy for
        // "Service update failed"): that is now the active environment.
        if let Some(k) = observed {
            if k != active && k == want && self.obs.ready(k) >= 1 {
                self.st.previous_environment = Some(active);
                event(
                    &mut self.actions,
                    EventKind::Normal,
                    reasons::SELECTOR_ADOPTED,
                    format!(
                        "environment {}: Service {} selects {k} (set by hand); {k} is active",
                        self.name, self.spec.active_service
                    ),
                );
                active = k;
                self.st.phase = EnvironmentPhase::Stable;
                self.st.reason = Some(reasons::SELECTOR_ADOPTED.into());
                self.st.message = Some(format!(
                    "Service {} was set to {k} by hand",
                    self.spec.active_service
                ));
            }
        }
        self.st.active_environment = Some(active);
        self.point_active(active);
        self.point_preview(active.other());

        if want == active {
            if self.st.phase != EnvironmentPhase::Stable {
                let (reason, message) = if self.st.phase.failed() {
                    (
                        reasons::SWITCH_ABORTED,
                        format!("spec.activeEnvironment is {active} again, which serves"),
                    )
                } else {
                    (reasons::NO_SWITCH, format!("{active} serves"))
                };
                self.st.phase = EnvironmentPhase::Stable;
                self.st.reason = Some(reason.into());
                self.st.message = Some(message);
            }
            if rollback.is_some() {
                self.actions
                    .push(Action::ClearAnnotation(annotations::ROLLBACK.into()));
            }
            return;
        }
        if self.st.phase.failed() && !generation_changed && !retry && rollback.is_none() {
            // Failed: wait for a person (a spec change, the retry annotation, a rollback).
            return;
        }
        let kind = if rollback.is_some() {
            SwitchKind::Rollback
        } else {
            SwitchKind::Switch
        };
        let now = self.now();
        let p = SwitchProgress {
            kind,
            step: SwitchStep::Verifying,
            from: active,
            target: want,
            started_at: time(now),
            since: time(now),
            ready_since: None,
            force: rollback == Some(annotations::FORCE),
            reason: None,
            waiting_for: None,
            failure_reason: None,
            failure_message: None,
        };
        self.st.phase = in_progress_phase(kind);
        let reason = match kind {
            SwitchKind::Switch => reasons::SWITCH_STARTED,
            SwitchKind::Rollback => reasons::ROLLBACK_REQUESTED,
        };
        self.st.reason = Some(reason.into());
        self.st.message = Some(format!(
            "{} {active} -> {want} started{}",
            word(kind),
            if p.force { " (forced)" } else { "" }
        ));
        event(
            &mut self.actions,
            EventKind::Normal,
            reason,
            format!(
                "{} {}: {active} -> {want}{}",
                word(kind),
                self.name,
                if p.force { " (forced)" } else { "" }
            ),
        );
        if rollback.is_some() {
            // Consumed only after the status recording the rollback is written.
            self.actions
                .push(Action::ClearAnnotation(annotations::ROLLBACK.into()));
        }
        self.st.switch_progress = Some(p);
        self.step();
    }

    /// The step machine of a move in progress. Steps whose gate opens fall through to the
    /// next in the same pass; the status recording the new step is written before its action.
    fn step(&mut self) {
        let Some(mut p) = self.st.switch_progress.clone() else {
            return;
        };
        let now = self.now();
        let hc_timeout = self.spec.switch.health_check.timeout_seconds;
        let svc_timeout = self.spec.switch.service_update_timeout_seconds;
        // spec.activeEnvironment left the target while the move runs.
        if self.spec.active_environment != p.target && p.step != SwitchStep::RestoringSelector {
            let rollback = self.obs.annotations.contains_key(annotations::ROLLBACK);
            if rollback {
                p.kind = SwitchKind::Rollback;
                self.actions
                    .push(Action::ClearAnnotation(annotations::ROLLBACK.into()));
            }
            let reason = if rollback {
                reasons::ROLLBACK_REQUESTED
            } else {
                reasons::SWITCH_ABORTED
            };
            let message = format!(
                "spec.activeEnvironment is {} again during step {}",
                self.spec.active_environment, p.step
            );
            if p.step == SwitchStep::Verifying {
                // Traffic never moved: nothing to undo.
                self.finish(
                    &p,
                    EnvironmentPhase::Stable,
                    p.from,
                    "Aborted",
                    reason,
                    message,
                );
                self.point_active(p.from);
                self.point_preview(p.target);
                return;
            }
            self.restore(&mut p, reason, message);
        }
        loop {
            match p.step {
                SwitchStep::Verifying => {
                    // Traffic stays on `from` (re-asserted) and preview shows the target.
                    self.point_active(p.from);
                    self.point_preview(p.target);
                    match verify(self.spec, self.obs, &mut p) {
                        Ok(()) => {
                            p.step = SwitchStep::SwitchingSelector;
                            p.since = time(now);
                            p.reason = Some(reasons::TARGET_VERIFIED.into());
                            p.waiting_for = Some(format!(
                                "Service {} to select only {} pods",
                                self.spec.active_service, p.target
                            ));
                            continue;
                        }
                        Err((reason, msg)) => {
                            let waited = secs_since(now, &p.started_at);
                            if waited >= hc_timeout {
                                let message = format!(
                                    "{} not healthy within switch.healthCheck.timeoutSeconds={hc_timeout}: {msg}; traffic stays on {}",
                                    p.target, p.from
                                );
                                self.finish(
                                    &p,
                                    failed_phase(p.kind),
                                    p.from,
                                    "Failed",
                                    reason,
                                    message,
                                );
                                return;
                            }
                            p.reason = Some(reason.into());
                            p.waiting_for = Some(msg);
                            self.requeue = ((hc_timeout - waited).max(1) as u64).min(2);
                            break;
                        }
                    }
                }
                SwitchStep::SwitchingSelector => {
                    if self.obs.ready(p.target) < 1 {
                        let msg = format!("{} has no ready pod left", p.target);
                        self.restore(&mut p, reasons::TARGET_UNHEALTHY, msg);
                        continue;
                    }
                    let done = self.svc.env() == Some(p.target)
                        && self.svc.ready(p.target) >= 1
                        && self.svc.ready(p.from) == 0;
                    if done {
                        // Traffic is on the target now.
                        self.st.active_environment = Some(p.target);
                        self.st.previous_environment = Some(p.from);
                        p.step = SwitchStep::UpdatingPreview;
                        p.since = time(now);
                        p.reason = None;
                        p.waiting_for = Some(format!(
                            "preview Service {} to select {}",
                            self.spec.preview_service, p.from
                        ));
                        continue;
                    }
                    if secs_since(now, &p.since) >= svc_timeout {
                        let msg = format!(
                            "Service {} does not select only {} pods after {svc_timeout}s (serviceUpdateTimeoutSeconds): selector {}, ready {} blue / {} green",
                            self.spec.active_service,
                            p.target,
                            fmt_labels(&self.svc.selector),
                            self.svc.ready_blue,
                            self.svc.ready_green
                        );
                        self.restore(&mut p, reasons::SERVICE_UPDATE_FAILED, msg);
                        continue;
                    }
                    self.point_active(p.target);
                    p.reason = Some(reasons::TARGET_VERIFIED.into());
                    self.requeue = 1;
                    break;
                }
                SwitchStep::UpdatingPreview => {
                    let done = self.point_preview(p.from);
                    if done || secs_since(now, &p.since) >= svc_timeout {
                        let (reason, verb) = match p.kind {
                            SwitchKind::Switch => (reasons::SWITCH_COMPLETED, "switched"),
                            SwitchKind::Rollback => (reasons::ROLLED_BACK, "rolled back"),
                        };
                        let mut message = format!(
                            "{verb} {} -> {}; previous environment {} kept for rollback",
                            p.from, p.target, p.from
                        );
                        if !done {
                            message.push_str(&format!(
                                " (preview Service {} not updated)",
                                self.spec.preview_service
                            ));
                        }
                        self.finish(
                            &p,
                            EnvironmentPhase::Stable,
                            p.target,
                            "Completed",
                            reason,
                            message,
                        );
                        return;
                    }
                    self.requeue = 1;
                    break;
                }
                SwitchStep::RestoringSelector => {
                    let at_from = self.point_active(p.from) && self.svc.env() == Some(p.from);
                    if at_from {
                        // Traffic had reached the target: it is the one to roll back to now.
                        if self.st.active_environment == Some(p.target) {
                            self.st.previous_environment = Some(p.target);
                        }
                        self.point_preview(p.target);
                        let reason = p
                            .failure_reason
                            .as_deref()
                            .and_then(|r| reasons::ALL.iter().copied().find(|x| *x == r))
                            .unwrap_or(reasons::SERVICE_UPDATE_FAILED);
                        let msg = p.failure_message.clone().unwrap_or_default();
                        if self.spec.active_environment == p.from {
                            // A rollback or abort asked for: it worked.
                            let reason = if reason == reasons::ROLLBACK_REQUESTED {
                                reasons::ROLLED_BACK
                            } else {
                                reason
                            };
                            self.finish(
                                &p,
                                EnvironmentPhase::Stable,
                                p.from,
                                "Aborted",
                                reason,
                                format!("traffic back on {}: {msg}", p.from),
                            );
                        } else {
                            self.finish(
                                &p,
                                failed_phase(p.kind),
                                p.from,
                                "Failed",
                                reason,
                                format!("{msg}; traffic back on {}", p.from),
                            );
                        }
                        return;
                    }
                    let overdue = secs_since(now, &p.since) >= svc_timeout;
                    if overdue && self.obs.ready(p.from) >= 1 {
                        // The old environment can take traffic: keep writing the Service
                        // (a rejected write is retried; a person may also set it by hand).
                        p.reason = Some(reasons::SERVICE_UPDATE_FAILED.into());
                    }
                    if overdue && self.obs.ready(p.from) < 1 {
                        // Nowhere to move traffic back to: report where it is, and stop
                        // writing the Service so that what status says stays true.
                        let active_service = self.spec.active_service.clone();
                        self.actions.retain(|a| {
                            !matches!(a, Action::SetSelector { service, .. } if *service == active_service)
                        });
                        let truth = self.svc.env().unwrap_or(p.target);
                        let reason = if p.kind == SwitchKind::Rollback {
                            reasons::ROLLBACK_FAILED
                        } else {
                            reasons::SERVICE_UPDATE_FAILED
                        };
                        let msg = format!(
                            "{}; could not move the active Service {} back to {} within {svc_timeout}s ({} has {} ready pods); traffic is on {truth}",
                            p.failure_message.clone().unwrap_or_default(),
                            self.spec.active_service,
                            p.from,
                            p.from,
                            self.obs.ready(p.from)
                        );
                        self.finish(&p, failed_phase(p.kind), truth, "Failed", reason, msg);
                        return;
                    }
                    p.waiting_for = Some(if self.obs.ready(p.from) < 1 {
                        format!("a ready pod of {} to move traffic back to", p.from)
                    } else {
                        format!(
                            "active Service {} back to {}",
                            self.spec.active_service, p.from
                        )
                    });
                    self.requeue = 1;
                    break;
                }
            }
        }
        self.st.phase = in_progress_phase(p.kind);
        if p.step == SwitchStep::RestoringSelector {
            self.st.phase = EnvironmentPhase::RollingBack;
        } else {
            self.st.reason = p.reason.clone().or(self.st.reason.clone());
            self.st.message = Some(format!(
                "{} {} -> {}: step {}{}",
                word(p.kind),
                p.from,
                p.target,
                p.step,
                p.waiting_for
                    .as_ref()
                    .map(|w| format!(", waiting for {w}"))
                    .unwrap_or_default()
            ));
        }
        self.st.switch_progress = Some(p);
    }

    /// Conditions computed from the observation and the new status.
    fn conditions(&mut self) {
        let now = self.now();
        let gen = self.obs.generation;
        let Some(active) = self.st.active_environment else {
            return;
        };
        let moving_selector = self.st.switch_progress.as_ref().is_some_and(|p| {
            matches!(
                p.step,
                SwitchStep::SwitchingSelector | SwitchStep::RestoringSelector
            )
        });
        let svc = self.svc;
        let (ok, reason, msg) = if svc.ready_blue > 0 && svc.ready_green > 0 {
            (
                false,
                reasons::SELECTOR_DRIFT,
                format!(
                    "Service {} selects ready pods of both environments ({} blue, {} green): selector {}",
                    self.spec.active_service,
                    svc.ready_blue,
                    svc.ready_green,
                    fmt_labels(&svc.selector)
                ),
            )
        } else if svc.env() != Some(active) && !moving_selector {
            (
                false,
                reasons::SELECTOR_DRIFT,
                format!(
                    "Service {} selector {} does not select the active environment {active}",
                    self.spec.active_service,
                    fmt_labels(&svc.selector)
                ),
            )
        } else if svc.ready(active) == 0 && !moving_selector {
            (
                false,
                reasons::NO_READY_ENDPOINTS,
                format!(
                    "Service {} selects no ready pod of {active} (selector {})",
                    self.spec.active_service,
                    fmt_labels(&svc.selector)
                ),
            )
        } else {
            (
                true,
                reasons::ROUTED,
                format!(
                    "Service {} selects {} ready pods of {}",
                    self.spec.active_service,
                    svc.ready(svc.env().unwrap_or(active)),
                    svc.env().unwrap_or(active)
                ),
            )
        };
        if set_condition(
            &mut self.st.conditions,
            now,
            gen,
            types::TRAFFIC_ROUTED,
            ok,
            reason,
            msg.clone(),
        ) {
            event(
                &mut self.actions,
                EventKind::Warning,
                reason,
                format!("environment {}: {msg}", self.name),
            );
        }

        let standby = active.other();
        let (ok, reason, msg) = match self.obs.env(standby) {
            None => (
                false,
                reasons::REFERENCE_MISSING,
                format!("Deployment {} not found", self.spec.env(standby).deployment),
            ),
            Some(d) if d.ready < d.replicas.max(1) => (
                false,
                reasons::STANDBY_UNHEALTHY,
                format!(
                    "{}/{} pods of standby {standby} (Deployment {}) ready",
                    d.ready,
                    d.replicas,
                    self.spec.env(standby).deployment
                ),
            ),
            Some(d) => match self
                .obs
                .probes
                .get(&standby)
                .and_then(|ps| ps.iter().find(|p| p.outcome != ProbeOutcome::Healthy))
            {
                Some(p) => (
                    false,
                    match p.outcome {
                        ProbeOutcome::NoAnswer(_) => reasons::HEALTH_CHECK_TIMEOUT,
                        _ => reasons::HEALTH_CHECK_FAILED,
                    },
                    format!(
                        "pod {} of standby {standby}: {}",
                        p.pod,
                        match &p.outcome {
                            ProbeOutcome::NoAnswer(w) | ProbeOutcome::Unhealthy(w) => w.as_str(),
                            ProbeOutcome::Healthy => "",
                        }
                    ),
                ),
                None => (
                    true,
                    reasons::STANDBY_READY,
                    format!("{}/{} pods of standby {standby} ready", d.ready, d.replicas),
                ),
            },
        };
        if set_condition(
            &mut self.st.conditions,
            now,
            gen,
            types::STANDBY_HEALTHY,
            ok,
            reason,
            msg.clone(),
        ) {
            event(
                &mut self.actions,
                EventKind::Warning,
                reason,
                format!("environment {}: {msg}", self.name),
            );
        }

        let (known, unknown): (Vec<&Drift>, Vec<&Drift>) =
            self.obs.drift.iter().partition(|d| !is_unknown(d));
        let not_compared = || {
            format!(
                "{} Secret(s) not compared, the controller may not read them ({}): compare them as an identity that can, or grant `get` on Secrets",
                unknown.len(),
                unknown.iter().map(|d| d.key.as_str()).collect::<Vec<_>>().join(", ")
            )
        };
        let (status, reason, msg) = match (known.first(), unknown.is_empty()) {
            (None, true) => (
                "True",
                reasons::IN_SYNC,
                "blue and green have the same configuration".to_string(),
            ),
            (None, false) => (
                "Unknown",
                reasons::SECRETS_UNREADABLE,
                format!("everything readable matches; {}", not_compared()),
            ),
            (Some(first), _) => {
                let mut kinds: Vec<&str> = known.iter().map(|d| d.kind.as_str()).collect();
                kinds.dedup();
                let mut msg = format!(
                    "{} difference(s) between blue and green ({}): veritas-spark bluegreen diff",
                    known.len(),
                    kinds.join(", ")
                );
                if !unknown.is_empty() {
                    msg.push_str(&format!("; {}", not_compared()));
                }
                ("False", drift_reason(&first.kind), msg)
            }
        };
        if set_condition_status(
            &mut self.st.conditions,
            now,
            gen,
            types::IN_SYNC,
            status,
            reason,
            msg.clone(),
        ) {
            event(
                &mut self.actions,
                EventKind::Warning,
                reason,
                format!("environment {}: {msg}", self.name),
            );
        }

        let (ok, reason, msg) = match (&self.st.switch_progress, self.st.phase) {
            (Some(p), _) => (
                true,
                p.reason
                    .as_deref()
                    .and_then(|r| reasons::ALL.iter().copied().find(|x| *x == r))
                    .unwrap_or(reasons::SWITCH_STARTED),
                self.st.message.clone().unwrap_or_default(),
            ),
            (None, phase) => (
                !phase.failed(),
                self.st
                    .reason
                    .as_deref()
                    .and_then(|r| reasons::ALL.iter().copied().find(|x| *x == r))
                    .unwrap_or(reasons::NO_SWITCH),
                self.st.message.clone().unwrap_or_default(),
            ),
        };
        set_condition(
            &mut self.st.conditions,
            now,
            gen,
            types::PROGRESSING,
            ok,
            reason,
            msg,
        );
    }
}

/// Checks the references; sets `ReferencesValid`. Returns false when the active Service is
/// missing (nothing can move then).
fn references(
    spec: &VeritasEnvironmentSpec,
    obs: &Observed,
    st: &mut VeritasEnvironmentStatus,
) -> bool {
    let mut missing = Vec::new();
    for e in EnvironmentName::BOTH {
        if obs.env(e).is_none() {
            missing.push(format!("Deployment {}", spec.env(e).deployment));
        }
    }
    if obs.active_service.is_none() {
        missing.push(format!("Service {}", spec.active_service));
    }
    let (ok, reason, message) = if !missing.is_empty() {
        (
            false,
            reasons::REFERENCE_MISSING,
            format!("not found: {}", missing.join(", ")),
        )
    } else if let Some((e, have)) = EnvironmentName::BOTH.iter().find_map(|&e| {
        let l = obs
            .env(e)
            .and_then(|d| d.template_labels.get(labels::ENVIRONMENT).cloned());
        (l.as_deref() != Some(e.as_str())).then_some((e, l))
    }) {
        (
            false,
            reasons::POD_LABELS_WRONG,
            format!(
                "pods of Deployment {} have {}={} instead of {}={e}",
                spec.env(e).deployment,
                labels::ENVIRONMENT,
                have.as_deref().unwrap_or("<none>"),
                labels::ENVIRONMENT
            ),
        )
    } else {
        (
            true,
            "ReferencesResolved",
            "blue and green Deployments and the active Service resolved".to_string(),
        )
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
    obs.active_service.is_some()
}

/// Distinct models the probed pods of `e` report.
fn models(obs: &Observed, e: EnvironmentName) -> Vec<ModelIdentity> {
    let mut m: Vec<ModelIdentity> = obs
        .probes
        .get(&e)
        .map(|ps| ps.iter().filter_map(|p| p.model.clone()).collect())
        .unwrap_or_default();
    m.sort();
    m.dedup();
    m
}

/// Deleting the environment (the finalizer's cleanup): where traffic is left. It stays where
/// the record says it is served; a selector move the record shows half done is settled the way
/// a restarted controller would settle it (a verified target keeps the traffic; a switch still
/// verifying, or being restored, leaves it on the environment it came from). Never onto an
/// environment without a ready pod, and nothing for a resource the controller never recorded
/// (it never touched the Service). The Event names the outcome.
pub fn on_delete(
    name: &str,
    spec: &VeritasEnvironmentSpec,
    status: Option<&VeritasEnvironmentStatus>,
    obs: &Observed,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(keep) = status.and_then(|st| match &st.switch_progress {
        Some(p) => Some(match p.step {
            SwitchStep::SwitchingSelector | SwitchStep::UpdatingPreview => p.target,
            SwitchStep::Verifying | SwitchStep::RestoringSelector => p.from,
        }),
        None => st.active_environment,
    }) else {
        return actions;
    };
    let Some(svc) = &obs.active_service else {
        // The Service is gone too (a namespace being deleted): nothing to leave anywhere.
        return actions;
    };
    let message = if svc.env() == Some(keep) {
        format!(
            "environment {name} deleted: Service {} keeps selecting {keep}",
            spec.active_service
        )
    } else if obs.ready(keep) > 0 {
        actions.push(Action::SetSelector {
            service: spec.active_service.clone(),
            env: keep,
        });
        format!(
            "environment {name} deleted mid-switch: Service {} set to {keep}, where its recorded step leaves traffic",
            spec.active_service
        )
    } else {
        format!(
            "environment {name} deleted: Service {} left as it is ({}), {keep} has no ready pod",
            spec.active_service,
            fmt_labels(&svc.selector)
        )
    };
    event(
        &mut actions,
        EventKind::Normal,
        reasons::ENVIRONMENT_DELETED,
        message,
    );
    actions
}

/// Decides one pass. `old` is the status as read (None for a new resource).
pub fn decide(
    name: &str,
    spec: &VeritasEnvironmentSpec,
    old: Option<&VeritasEnvironmentStatus>,
    obs: &Observed,
) -> Decision {
    let refused = annotations::refused(&obs.annotations);
    let mut d = if refused.is_empty() {
        decide_read(name, spec, old, obs)
    } else {
        let mut read = obs.clone();
        read.annotations
            .retain(|k, _| !refused.iter().any(|r| r.key == *k));
        decide_read(name, spec, old, &read)
    };
    for r in refused {
        d.actions.push(Action::Event {
            kind: EventKind::Warning,
            reason: reasons::ANNOTATION_IGNORED,
            message: r.message(&format!("environment {name}")),
        });
        d.actions.push(Action::ClearAnnotation(r.key));
    }
    d
}

/// One pass over `obs` whose operator annotations all ask for something.
fn decide_read(
    name: &str,
    spec: &VeritasEnvironmentSpec,
    old: Option<&VeritasEnvironmentStatus>,
    obs: &Observed,
) -> Decision {
    let mut st = old.cloned().unwrap_or_default();
    let generation_changed =
        old.is_some() && obs.generation.is_some() && obs.generation != st.observed_generation;
    st.observed_generation = obs.generation;
    for e in EnvironmentName::BOTH {
        let o = EnvironmentObserved {
            replicas: obs.env(e).map_or(0, |d| d.replicas),
            ready: obs.ready(e),
            models: models(obs, e),
        };
        match e {
            EnvironmentName::Blue => st.environments.blue = o,
            EnvironmentName::Green => st.environments.green = o,
        }
    }
    st.drift = obs.drift.clone();
    if !references(spec, obs, &mut st) {
        st.reason = Some(reasons::REFERENCE_MISSING.into());
        st.message = Some(format!(
            "Service {} not found; nothing moves until it exists",
            spec.active_service
        ));
        return Decision {
            status: st,
            actions: Vec::new(),
            requeue_after_secs: 10,
        };
    }
    let svc = obs.active_service.as_ref().expect("checked");
    let mut pass = Pass {
        name,
        spec,
        obs,
        svc,
        st,
        actions: Vec::new(),
        requeue: 30,
    };
    let retry = obs.annotations.contains_key(annotations::RETRY);
    if retry {
        pass.actions
            .push(Action::ClearAnnotation(annotations::RETRY.into()));
    }
    if pass.st.switch_progress.is_some() {
        pass.step();
    } else {
        let rollback = obs
            .annotations
            .get(annotations::ROLLBACK)
            .map(String::as_str);
        pass.settled(generation_changed, retry, rollback);
    }
    pass.conditions();
    let mut actions = pass.actions;
    // Clearing an annotation twice in one pass is harmless but noisy.
    let mut seen = Vec::new();
    actions.retain(|a| match a {
        Action::ClearAnnotation(k) => {
            if seen.contains(k) {
                false
            } else {
                seen.push(k.clone());
                true
            }
        }
        _ => true,
    });
    Decision {
        status: pass.st,
        actions,
        requeue_after_secs: pass.requeue.max(1),
    }
}

/// The environment `rollback --bluegreen` moves traffic to: during a move, where it came
/// from; after a failed switch, the one that serves (the switch is abandoned); otherwise
/// (also after a failed rollback, which is then retried) the previous environment.
pub fn rollback_target(st: &VeritasEnvironmentStatus) -> Option<EnvironmentName> {
    use EnvironmentPhase as P;
    match st.phase {
        P::Switching | P::RollingBack => st.switch_progress.as_ref().map(|p| p.from),
        P::SwitchFailed => st.active_environment,
        P::Stable | P::RollbackFailed | P::Pending => st.previous_environment,
    }
}

/// How long the whole move may take at most, for tests and the CLI's waits: the health-check
/// deadline, then a selector change and a restore.
pub fn max_move_seconds(spec: &VeritasEnvironmentSpec) -> i64 {
    spec.switch.health_check.timeout_seconds + 3 * spec.switch.service_update_timeout_seconds
}

/// `now` plus `secs` (the model and tests move the clock with it).
pub fn after(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_secs(secs))
        .expect("in range")
}
