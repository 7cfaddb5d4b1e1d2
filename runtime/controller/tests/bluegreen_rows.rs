//! The blue-green decision, one test per row of the guide's blue-green sections ("Switch Not
//! Completing", "State Not Syncing", "Standby Environment Unhealthy", "DNS Not Updating") and
//! per step of the switch, on the in-memory model (`bluegreen::sim`).

use veritas_controller::bluegreen::decide::{Action, ProbeOutcome};
use veritas_controller::bluegreen::drift::{self, EnvSnapshot};
use veritas_controller::bluegreen::sim::{selector, tiny_model, World};
use veritas_crds::reasons::{self, environment_types as types};
use veritas_crds::{
    annotations, find_condition, Drift, EnvironmentName::*, EnvironmentPhase, SwitchKind,
    SwitchStep, VeritasEnvironmentStatus,
};

fn st(w: &World) -> &VeritasEnvironmentStatus {
    w.status.as_ref().expect("status")
}

fn cond<'a>(w: &'a World, t: &str) -> &'a veritas_crds::Condition {
    find_condition(&st(w).conditions, t).unwrap_or_else(|| panic!("no condition {t}"))
}

fn stable_on_blue() -> World {
    let mut w = World::new(Blue);
    w.settle(5);
    assert_eq!(st(&w).phase, EnvironmentPhase::Stable);
    assert_eq!(st(&w).active_environment, Some(Blue));
    w.events.clear();
    w
}

fn selects(d: &veritas_controller::bluegreen::decide::Decision, svc: &str) -> Option<String> {
    d.actions.iter().find_map(|a| match a {
        Action::SetSelector { service, env } if service == svc => Some(env.to_string()),
        _ => None,
    })
}

#[test]
fn switch_happy_path_records_each_step_before_acting() {
    let mut w = stable_on_blue();
    w.request(Green);
    // Pass 1: the target passes every check, so the switch is recorded at SwitchingSelector
    // and the one action is the selector change (the reconcile writes status first).
    let d = w.pass();
    let p = d.status.switch_progress.clone().expect("in progress");
    assert_eq!(d.status.phase, EnvironmentPhase::Switching);
    assert_eq!(
        (p.step, p.from, p.target),
        (SwitchStep::SwitchingSelector, Blue, Green)
    );
    assert_eq!(selects(&d, "veritas-spark").as_deref(), Some("green"));
    // Pass 2: the Service selects only green: traffic is on green, the preview moves to blue.
    let d = w.pass();
    let p = d.status.switch_progress.clone().expect("in progress");
    assert_eq!(p.step, SwitchStep::UpdatingPreview);
    assert_eq!(d.status.active_environment, Some(Green));
    assert_eq!(
        selects(&d, "veritas-spark-preview").as_deref(),
        Some("blue")
    );
    // Pass 3: done.
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::Stable);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::SWITCH_COMPLETED));
    assert_eq!(d.status.active_environment, Some(Green));
    assert_eq!(d.status.previous_environment, Some(Blue));
    assert!(d.status.switch_progress.is_none());
    let rec = d.status.last_switch.clone().unwrap();
    assert_eq!(
        (rec.from, rec.target, rec.outcome.as_str()),
        (Blue, Green, "Completed")
    );
    assert_eq!(w.selected(), Some(Green));
    let reasons: Vec<&str> = w.events.iter().map(|e| e.0).collect();
    assert_eq!(
        reasons,
        [reasons::SWITCH_STARTED, reasons::SWITCH_COMPLETED]
    );
    // Settled: another pass changes nothing and publishes nothing.
    let d = w.pass();
    assert_eq!(Some(&d.status), w.status.as_ref());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
}

#[test]
fn health_check_failing_fails_at_the_deadline_and_leaves_traffic_on_the_old_environment() {
    let mut w = stable_on_blue();
    w.env_mut(Green).probe = ProbeOutcome::Unhealthy("503 model_state failed".into());
    w.request(Green);
    let d = w.pass();
    let p = d.status.switch_progress.clone().unwrap();
    assert_eq!(p.step, SwitchStep::Verifying);
    assert_eq!(p.reason.as_deref(), Some(reasons::HEALTH_CHECK_FAILED));
    assert!(p.waiting_for.unwrap().contains("503 model_state failed"));
    assert!(selects(&d, "veritas-spark").is_none());
    w.advance(119);
    assert_eq!(w.pass().status.phase, EnvironmentPhase::Switching);
    w.advance(1);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(
        d.status.reason.as_deref(),
        Some(reasons::HEALTH_CHECK_FAILED)
    );
    assert!(d
        .status
        .message
        .as_ref()
        .unwrap()
        .contains("timeoutSeconds=120"));
    assert_eq!(d.status.active_environment, Some(Blue));
    assert_eq!(w.selected(), Some(Blue));
    let c = cond(&w, types::PROGRESSING);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::HEALTH_CHECK_FAILED)
    );
    // Failed stays failed (no retry loop) until a person acts.
    w.advance(300);
    w.settle(5);
    assert_eq!(st(&w).phase, EnvironmentPhase::SwitchFailed);
    // Remedy "Fix target env health issues", then retry.
    w.env_mut(Green).probe = ProbeOutcome::Healthy;
    // A value that asks for nothing retries nothing: cleared, with a warning.
    w.annotations
        .insert(annotations::RETRY.into(), "false".into());
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert!(!w.annotations.contains_key(annotations::RETRY));
    assert!(d.actions.iter().any(|a| matches!(a,
        veritas_controller::bluegreen::decide::Action::Event { reason, message, .. }
            if *reason == reasons::ANNOTATION_IGNORED && message.contains("\"false\""))));
    w.annotations
        .insert(annotations::RETRY.into(), "true".into());
    w.settle(10);
    assert_eq!(st(&w).phase, EnvironmentPhase::Stable);
    assert_eq!(st(&w).active_environment, Some(Green));
    assert!(!w.annotations.contains_key(annotations::RETRY));
}

#[test]
fn probe_without_answer_is_health_check_timeout() {
    let mut w = stable_on_blue();
    w.env_mut(Green).probe = ProbeOutcome::NoAnswer("connection refused".into());
    w.request(Green);
    w.pass();
    w.advance(120);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(
        d.status.reason.as_deref(),
        Some(reasons::HEALTH_CHECK_TIMEOUT)
    );
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn timeout_too_short_then_increased() {
    let mut w = stable_on_blue();
    w.spec.min_ready_seconds = 30;
    w.spec.switch.health_check.timeout_seconds = 10;
    w.generation += 1;
    w.settle(3);
    w.request(Green);
    w.pass();
    w.advance(10);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(
        d.status.reason.as_deref(),
        Some(reasons::MIN_READY_SECONDS_NOT_MET)
    );
    assert_eq!(w.selected(), Some(Blue));
    // Remedy "Increase switch.healthCheck.timeout": a new generation retries.
    w.spec.switch.health_check.timeout_seconds = 60;
    w.generation += 1;
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::Switching);
    w.advance(30);
    w.settle(5);
    assert_eq!(st(&w).active_environment, Some(Green));
}

#[test]
fn min_ready_seconds_restarts_when_a_pod_flips() {
    let mut w = stable_on_blue();
    w.spec.min_ready_seconds = 20;
    w.request(Green);
    let d = w.pass();
    assert_eq!(
        d.status.switch_progress.unwrap().reason.as_deref(),
        Some(reasons::MIN_READY_SECONDS_NOT_MET)
    );
    w.advance(15);
    w.env_mut(Green).ready = 1;
    let d = w.pass();
    let p = d.status.switch_progress.unwrap();
    assert_eq!(p.reason.as_deref(), Some(reasons::TARGET_UNHEALTHY));
    assert!(p.ready_since.is_none());
    w.env_mut(Green).ready = 2;
    w.pass();
    w.advance(15);
    // Only 15 s since the flip: still waiting.
    let d = w.pass();
    assert_eq!(
        d.status.switch_progress.unwrap().step,
        SwitchStep::Verifying
    );
    w.advance(5);
    w.settle(5);
    assert_eq!(st(&w).active_environment, Some(Green));
}

#[test]
fn min_ready_seconds_counts_from_the_pods_ready_condition() {
    use veritas_controller::bluegreen::decide::after;
    let mut w = stable_on_blue();
    w.spec.min_ready_seconds = 20;
    // Ready for a minute already: nothing to wait for.
    w.env_mut(Green).ready_since = Some(after(w.now, -60));
    w.request(Green);
    let d = w.pass();
    assert_eq!(
        d.status.switch_progress.unwrap().step,
        SwitchStep::SwitchingSelector
    );
    w.settle(5);
    assert_eq!(st(&w).active_environment, Some(Green));
    // Ready 5 s ago: 15 s more.
    w.env_mut(Blue).ready_since = Some(after(w.now, -5));
    w.request(Blue);
    let d = w.pass();
    assert_eq!(
        d.status.switch_progress.unwrap().reason.as_deref(),
        Some(reasons::MIN_READY_SECONDS_NOT_MET)
    );
    w.advance(14);
    assert_eq!(
        w.pass().status.switch_progress.unwrap().step,
        SwitchStep::Verifying
    );
    w.advance(1);
    w.settle(5);
    assert_eq!(st(&w).active_environment, Some(Blue));
}

#[test]
fn a_switch_right_after_an_image_update_waits_for_the_new_revision() {
    let mut w = stable_on_blue();
    // Green's old pods are ready and answer healthy; its new revision is still rolling out.
    w.env_mut(Green).rollout_pending = Some("1 of 2 new replicas updated".into());
    w.request(Green);
    w.settle(3);
    let p = st(&w).switch_progress.clone().expect("switch in progress");
    assert_eq!(p.reason.as_deref(), Some(reasons::TARGET_ROLLOUT_PENDING));
    assert!(
        p.waiting_for
            .as_deref()
            .unwrap_or_default()
            .contains("1 of 2 new replicas updated"),
        "{p:?}"
    );
    assert_eq!(w.selected(), Some(Blue), "verified the old revision's pods");
    // Rolled out: the gate runs on the new pods and the switch completes.
    w.env_mut(Green).rollout_pending = None;
    w.advance(60);
    w.settle(10);
    assert_eq!(st(&w).phase, EnvironmentPhase::Stable);
    assert_eq!(w.selected(), Some(Green));
}

#[test]
fn target_pods_not_ready_is_target_unhealthy() {
    let mut w = stable_on_blue();
    w.env_mut(Green).ready = 0;
    w.request(Green);
    let d = w.pass();
    assert_eq!(
        d.status.switch_progress.unwrap().reason.as_deref(),
        Some(reasons::TARGET_UNHEALTHY)
    );
    w.advance(120);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::TARGET_UNHEALTHY));
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn service_update_failed_restores_then_manual_selector_is_adopted() {
    let mut w = stable_on_blue();
    w.active_updates_fail = true;
    w.request(Green);
    w.pass();
    assert_eq!(
        st(&w).switch_progress.as_ref().unwrap().step,
        SwitchStep::SwitchingSelector
    );
    w.advance(60);
    let d = w.pass();
    // The selector never moved, so restoring it is immediate.
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(
        d.status.reason.as_deref(),
        Some(reasons::SERVICE_UPDATE_FAILED)
    );
    assert_eq!(d.status.active_environment, Some(Blue));
    assert_eq!(w.selected(), Some(Blue));
    // Remedy "Manually update service selector".
    w.active_selector = Some(selector(Some(Green)));
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::Stable);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::SELECTOR_ADOPTED));
    assert_eq!(d.status.active_environment, Some(Green));
    assert_eq!(d.status.previous_environment, Some(Blue));
}

#[test]
fn controller_killed_after_recording_each_step_resumes() {
    // Kill the controller after it wrote each step's status and before it acted.
    let mut w = stable_on_blue();
    w.request(Green);
    let mut steps = Vec::new();
    for _ in 0..10 {
        let d = w.crash_after(0);
        if let Some(p) = &d.status.switch_progress {
            steps.push(p.step);
        }
        // A new controller: a full pass from the recorded status.
        let d = w.pass();
        if d.status.phase == EnvironmentPhase::Stable {
            break;
        }
    }
    assert_eq!(st(&w).phase, EnvironmentPhase::Stable);
    assert_eq!(st(&w).active_environment, Some(Green));
    assert_eq!(w.selected(), Some(Green));
    assert!(steps.contains(&SwitchStep::SwitchingSelector), "{steps:?}");
}

#[test]
fn target_lost_after_verification_moves_traffic_back() {
    let mut w = stable_on_blue();
    w.request(Green);
    // Recorded SwitchingSelector, killed before the selector change...
    w.crash_after(0);
    // ...and green lost its pods meanwhile: never select it.
    w.env_mut(Green).ready = 0;
    let d = w.pass();
    assert!(selects(&d, "veritas-spark").is_none());
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::TARGET_UNHEALTHY));
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn target_lost_after_the_selector_moved_restores_the_old_environment() {
    let mut w = stable_on_blue();
    w.request(Green);
    w.pass(); // selector -> green
    assert_eq!(w.selected(), Some(Green));
    w.env_mut(Green).ready = 0;
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::RollingBack);
    assert_eq!(
        d.status.switch_progress.as_ref().unwrap().step,
        SwitchStep::RestoringSelector
    );
    assert_eq!(selects(&d, "veritas-spark").as_deref(), Some("blue"));
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::SwitchFailed);
    assert_eq!(d.status.active_environment, Some(Blue));
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn rollback_to_the_previous_environment() {
    let mut w = stable_on_blue();
    w.request(Green);
    w.settle(5);
    assert_eq!(st(&w).active_environment, Some(Green));
    w.rollback(false);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::RollingBack);
    assert_eq!(
        d.status.switch_progress.as_ref().unwrap().kind,
        SwitchKind::Rollback
    );
    assert!(d
        .actions
        .contains(&Action::ClearAnnotation(annotations::ROLLBACK.into())));
    w.settle(5);
    let s = st(&w);
    assert_eq!(s.phase, EnvironmentPhase::Stable);
    assert_eq!(s.reason.as_deref(), Some(reasons::ROLLED_BACK));
    assert_eq!(
        (s.active_environment, s.previous_environment),
        (Some(Blue), Some(Green))
    );
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn rollback_that_cannot_complete_is_rollback_failed_and_force_overrides_checks() {
    let mut w = stable_on_blue();
    w.request(Green);
    w.settle(5);
    w.env_mut(Blue).ready = 0;
    w.rollback(false);
    w.pass();
    w.advance(120);
    w.pass();
    let s = st(&w);
    assert_eq!(s.phase, EnvironmentPhase::RollbackFailed);
    assert_eq!(s.reason.as_deref(), Some(reasons::TARGET_UNHEALTHY));
    assert_eq!(s.active_environment, Some(Green));
    assert_eq!(w.selected(), Some(Green));
    // Even forced, zero ready pods is never selected.
    w.rollback(true);
    w.pass();
    w.advance(120);
    w.pass();
    assert_eq!(st(&w).phase, EnvironmentPhase::RollbackFailed);
    assert_eq!(w.selected(), Some(Green));
    // One ready pod that fails its probe: --force overrides the probe and minReadySeconds.
    w.env_mut(Blue).ready = 1;
    w.env_mut(Blue).probe = ProbeOutcome::Unhealthy("503".into());
    w.spec.min_ready_seconds = 600;
    w.rollback(true);
    w.settle(5);
    assert_eq!(st(&w).phase, EnvironmentPhase::Stable);
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn aborted_before_traffic_moved() {
    let mut w = stable_on_blue();
    w.env_mut(Green).ready = 0;
    w.request(Green);
    w.pass();
    w.request(Blue);
    let d = w.pass();
    assert_eq!(d.status.phase, EnvironmentPhase::Stable);
    assert_eq!(d.status.reason.as_deref(), Some(reasons::SWITCH_ABORTED));
    assert_eq!(d.status.last_switch.unwrap().outcome, "Aborted");
    assert_eq!(w.selected(), Some(Blue));
}

#[test]
fn both_environments_selected_is_reported_and_repaired() {
    let mut w = stable_on_blue();
    // The fault: the owned key removed by hand, the Service selects blue and green.
    w.active_selector = Some(selector(None));
    let d = w.pass();
    let c = cond(&w, types::TRAFFIC_ROUTED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::SELECTOR_DRIFT)
    );
    assert!(c.message.contains("both environments"));
    assert_eq!(selects(&d, "veritas-spark").as_deref(), Some("blue"));
    assert!(w.events.iter().any(|e| e.0 == reasons::SELECTOR_DRIFT));
    w.pass();
    assert!(cond(&w, types::TRAFFIC_ROUTED).is_true());
}

#[test]
fn first_pass_on_a_service_without_the_key_selects_the_desired_environment() {
    let mut w = World::new(Green);
    w.active_selector = Some(selector(None));
    let d = w.pass();
    assert_eq!(selects(&d, "veritas-spark").as_deref(), Some("green"));
    assert_eq!(d.status.active_environment, Some(Green));
    // No ready green pod: nothing is selected, Pending.
    let mut w = World::new(Green);
    w.active_selector = Some(selector(None));
    w.env_mut(Green).ready = 0;
    let d = w.pass();
    assert!(selects(&d, "veritas-spark").is_none());
    assert_eq!(d.status.phase, EnvironmentPhase::Pending);
}

#[test]
fn active_environment_without_ready_pods_is_no_ready_endpoints() {
    let mut w = stable_on_blue();
    w.env_mut(Blue).ready = 0;
    w.pass();
    let c = cond(&w, types::TRAFFIC_ROUTED);
    assert_eq!(c.reason, reasons::NO_READY_ENDPOINTS);
}

#[test]
fn standby_unhealthy_is_a_condition_with_one_event() {
    let mut w = stable_on_blue();
    w.env_mut(Green).ready = 1;
    w.pass();
    let c = cond(&w, types::STANDBY_HEALTHY);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::STANDBY_UNHEALTHY)
    );
    assert!(c.message.contains("1/2 pods of standby green"));
    w.pass();
    assert_eq!(
        w.events
            .iter()
            .filter(|e| e.0 == reasons::STANDBY_UNHEALTHY)
            .count(),
        1,
        "one event per transition"
    );
    w.env_mut(Green).ready = 2;
    w.env_mut(Green).probe = ProbeOutcome::Unhealthy("503".into());
    w.pass();
    assert_eq!(
        cond(&w, types::STANDBY_HEALTHY).reason,
        reasons::HEALTH_CHECK_FAILED
    );
}

#[test]
fn drift_is_a_condition_and_in_status() {
    let mut w = stable_on_blue();
    w.drift = vec![Drift {
        kind: "ConfigMap".into(),
        key: "data.VERITAS_THREADS".into(),
        blue: "1".into(),
        green: "4".into(),
    }];
    w.pass();
    let c = cond(&w, types::IN_SYNC);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::CONFIG_MAP_DRIFT)
    );
    assert_eq!(st(&w).drift.len(), 1);
}

#[test]
fn secrets_the_controller_may_not_read_leave_in_sync_unknown() {
    let mut w = stable_on_blue();
    let mut blue = snap();
    let mut green = snap();
    blue.unreadable_secrets.insert("api-{env}".into());
    green.unreadable_secrets.insert("api-{env}".into());
    w.drift = drift::diff(&blue, &green);
    w.pass();
    let c = cond(&w, types::IN_SYNC);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", reasons::SECRETS_UNREADABLE),
        "{}",
        c.message
    );
    assert!(c.message.contains("secret api-{env}"), "{}", c.message);
    // A real difference beside it: False, and the unknown is still named.
    w.drift.push(Drift {
        kind: "ConfigMap".into(),
        key: "data.VERITAS_THREADS".into(),
        blue: "1".into(),
        green: "4".into(),
    });
    w.pass();
    let c = cond(&w, types::IN_SYNC);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::CONFIG_MAP_DRIFT)
    );
    assert!(c.message.contains("not compared"), "{}", c.message);
}

#[test]
fn model_versions_reported_by_the_pods_are_in_status() {
    let mut w = stable_on_blue();
    w.env_mut(Green).model = Some(tiny_model("2.0.0"));
    w.pass();
    assert_eq!(st(&w).environments.green.models, vec![tiny_model("2.0.0")]);
    assert_eq!(st(&w).environments.blue.models, vec![tiny_model("1.0.0")]);
}

#[test]
fn pod_labels_wrong_is_reported() {
    let mut w = stable_on_blue();
    w.env_mut(Green)
        .template_labels
        .insert("environment".into(), "blue".into());
    w.pass();
    let c = cond(&w, types::REFERENCES_VALID);
    assert_eq!(c.reason, reasons::POD_LABELS_WRONG);
}

#[test]
fn missing_active_service_moves_nothing() {
    let mut w = stable_on_blue();
    w.active_selector = None;
    w.request(Green);
    let d = w.pass();
    assert!(d.actions.is_empty());
    assert_eq!(d.status.reason.as_deref(), Some(reasons::REFERENCE_MISSING));
}

// --- drift (pure) ---

fn snap() -> EnvSnapshot {
    EnvSnapshot {
        config: Some([("VERITAS_MODEL".to_string(), "tiny".to_string())].into()),
        models: vec![tiny_model("1.0.0")],
        ..Default::default()
    }
}

#[test]
fn normalise_treats_env_named_references_as_one() {
    assert_eq!(
        drift::normalise("veritas-config-blue", Blue),
        "veritas-config-{env}"
    );
    assert_eq!(
        drift::normalise("veritas-config-green", Green),
        "veritas-config-{env}"
    );
    assert_eq!(drift::normalise("bluebird", Blue), "bluebird");
    assert_eq!(drift::normalise("models.blue_v1", Blue), "models.{env}_v1");
}

#[test]
fn config_model_env_and_mount_drift() {
    let a = snap();
    let mut b = snap();
    assert!(drift::diff(&a, &b).is_empty());
    b.config
        .as_mut()
        .unwrap()
        .insert("VERITAS_THREADS".into(), "4".into());
    b.models = vec![tiny_model("2.0.0")];
    b.env_vars
        .insert("spark/VERITAS_PARALLEL".into(), "8".into());
    b.mounts
        .insert("spark:/models".into(), "pvc models-v2 (ro)".into());
    let d = drift::diff(&a, &b);
    let kinds: Vec<&str> = d.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Model", "EnvVar", "Volume"]);
    assert_eq!(d[0].blue, drift::ABSENT);
    assert!(d[1].green.contains("tiny@2.0.0"));
    // A side whose model is unknown (no ready pod) is not compared.
    b.models.clear();
    assert!(!drift::diff(&a, &b).iter().any(|d| d.kind == "Model"));
}

#[test]
fn secrets_are_compared_by_digest_and_never_shown() {
    let mut a = snap();
    let mut b = snap();
    let secret_value = "hunter2-very-secret";
    a.secrets.insert(
        "api-{env}".into(),
        [(
            "token".to_string(),
            drift::secret_digest(secret_value.as_bytes()),
        )]
        .into(),
    );
    b.secrets.insert(
        "api-{env}".into(),
        [("token".to_string(), drift::secret_digest(b"another"))].into(),
    );
    let d = drift::diff(&a, &b);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, "Secret");
    let shown = format!("{d:?}");
    assert!(!shown.contains(secret_value));
    assert!(d[0].blue.starts_with("hmac:") && d[0].blue.len() == 17);
    b.missing_secrets.insert("api-{env}".into());
    b.secrets.clear();
    let d = drift::diff(&a, &b);
    assert_eq!(
        (d[0].blue.as_str(), d[0].green.as_str()),
        ("present", drift::ABSENT)
    );
}

#[test]
fn template_parts_normalise_references() {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    let t = |e: &str| -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "spark", "image": "x",
            "envFrom": [{"configMapRef": {"name": format!("veritas-config-{e}")}}],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": format!("api-{e}"), "key": "token"}}}],
            "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": true}]}],
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": format!("models-{e}")}}]}}))
        .unwrap()
    };
    let (bv, bm) = drift::template_parts(&t("blue"), Blue);
    let (gv, gm) = drift::template_parts(&t("green"), Green);
    assert_eq!((bv.clone(), bm.clone()), (gv, gm));
    assert_eq!(bm["spark:/models"], "pvc models-{env} (ro)");
    assert_eq!(bv["spark/TOKEN"], "secret api-{env}/token");
    assert_eq!(
        drift::referenced_secrets(&t("blue"))
            .into_iter()
            .collect::<Vec<_>>(),
        ["api-blue"]
    );
}

fn on_delete(w: &World) -> Vec<Action> {
    veritas_controller::bluegreen::decide::on_delete(
        &w.name,
        &w.spec,
        w.status.as_ref(),
        &w.observe(),
    )
}

#[test]
fn deletion_leaves_traffic_where_the_record_says() {
    // Stable: nothing moves; the Event says where traffic stays.
    let w = stable_on_blue();
    let a = on_delete(&w);
    assert!(
        matches!(&a[..], [Action::Event { reason, .. }] if *reason == reasons::ENVIRONMENT_DELETED),
        "{a:?}"
    );
    // Never reconciled: the controller never touched the Service, so it does nothing.
    let mut fresh = World::new(Blue);
    fresh.status = None;
    assert!(on_delete(&fresh).is_empty());

    // Recorded at SwitchingSelector with the selector not yet written (killed after the
    // status write): the verified target keeps the traffic.
    let mut w = stable_on_blue();
    w.request(Green);
    w.crash_after(0);
    assert_eq!(w.selected(), Some(Blue));
    let a = on_delete(&w);
    assert!(
        a.contains(&Action::SetSelector {
            service: "veritas-spark".into(),
            env: Green
        }),
        "{a:?}"
    );

    // Still verifying (the target fails its probe): the Service never moved and stays.
    let mut w = stable_on_blue();
    w.env_mut(Green).probe = ProbeOutcome::Unhealthy("503".into());
    w.request(Green);
    w.pass();
    assert_eq!(
        st(&w).switch_progress.as_ref().map(|p| p.step),
        Some(SwitchStep::Verifying)
    );
    assert!(!on_delete(&w)
        .iter()
        .any(|a| matches!(a, Action::SetSelector { .. })));

    // The environment to keep has no ready pod: the Service is left as it is.
    let mut w = stable_on_blue();
    w.request(Green);
    w.crash_after(0);
    w.env_mut(Green).ready = 0;
    assert!(!on_delete(&w)
        .iter()
        .any(|a| matches!(a, Action::SetSelector { .. })));
}
