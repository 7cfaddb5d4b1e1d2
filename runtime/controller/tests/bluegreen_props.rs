//! Invariants of the blue-green switch over random event sequences (proptest): pod readiness
//! flips (and the time the pods report becoming ready), probe answers, the clock, switch and rollback requests, failing Service updates, and
//! controller restarts at every step (killed after writing its status and carrying out some or
//! none of its actions, or before writing it).
//!
//! Checked after every pass:
//! - the active Service is only ever pointed at an environment with a ready pod;
//! - after a completed switch or rollback exactly one environment is active: the Service's
//!   `environment` key names the target, it selects no pod of the other, status says so;
//! - a failed switch leaves the old environment active (unless the Service could not be
//!   written, or the old environment has no ready pod to go back to: then status reports
//!   where traffic really is);
//! - outside a move, status names the environment the Service selects;
//! - every move ends (completed, failed or aborted) within its deadlines once events stop.

use proptest::prelude::*;
use veritas_controller::bluegreen::decide::{max_move_seconds, Action, ProbeOutcome};
use veritas_controller::bluegreen::sim::World;
use veritas_crds::{
    annotations, EnvironmentName, EnvironmentPhase, SwitchStep, ENVIRONMENT_SELECTOR_KEY,
};

#[derive(Clone, Debug)]
enum Ev {
    Ready(EnvironmentName, i32),
    /// The pods' Ready condition says they became ready this long ago (or is absent).
    ReadyFor(EnvironmentName, Option<i64>),
    Probe(EnvironmentName, u8),
    Advance(i64),
    Request(EnvironmentName),
    Rollback(bool),
    Retry,
    ServiceFails(bool),
    Pass,
    /// Killed after writing status and carrying out this many actions.
    Crash(usize),
    /// Killed before writing status: the pass is lost.
    Lost,
}

fn env() -> impl Strategy<Value = EnvironmentName> {
    prop_oneof![Just(EnvironmentName::Blue), Just(EnvironmentName::Green)]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (env(), 0i32..=2).prop_map(|(e, n)| Ev::Ready(e, n)),
        2 => (env(), 0u8..3).prop_map(|(e, o)| Ev::Probe(e, o)),
        1 => (env(), prop::option::of(0i64..300)).prop_map(|(e, s)| Ev::ReadyFor(e, s)),
        3 => (1i64..90).prop_map(Ev::Advance),
        2 => env().prop_map(Ev::Request),
        1 => any::<bool>().prop_map(Ev::Rollback),
        1 => Just(Ev::Retry),
        1 => any::<bool>().prop_map(Ev::ServiceFails),
        6 => Just(Ev::Pass),
        3 => (0usize..3).prop_map(Ev::Crash),
        1 => Just(Ev::Lost),
    ]
}

fn outcome(o: u8) -> ProbeOutcome {
    match o {
        0 => ProbeOutcome::Healthy,
        1 => ProbeOutcome::Unhealthy("503".into()),
        _ => ProbeOutcome::NoAnswer("timeout".into()),
    }
}

/// Checks one pass (the world before it, the decision, the world after it).
/// `failed_since` is the count of dropped Service updates when the current move started.
fn check(
    before: &World,
    d: &veritas_controller::bluegreen::decide::Decision,
    after: &World,
    failed_since: u64,
) {
    // Never point the active Service at an environment without a ready pod.
    for a in &d.actions {
        if let Action::SetSelector { service, env } = a {
            if *service == before.spec.active_service {
                assert!(
                    before.ready(*env) >= 1,
                    "pointed the active Service at {env} with no ready pod: {:?}",
                    d.status
                );
            }
        }
    }
    let old = before.status.clone().unwrap_or_default();
    let new = &d.status;
    let ended = old.phase.in_progress() && !new.phase.in_progress();
    if ended {
        let rec = new
            .last_switch
            .clone()
            .expect("a finished move is recorded");
        if rec.outcome == "Completed" {
            // Completion is decided on the observed Service: exactly one environment active.
            let sel = before
                .active_selector
                .as_ref()
                .and_then(|s| s.get(ENVIRONMENT_SELECTOR_KEY))
                .cloned();
            assert_eq!(sel.as_deref(), Some(rec.target.as_str()));
            assert_eq!(new.active_environment, Some(rec.target));
            assert_eq!(new.previous_environment, Some(rec.from));
            assert_eq!(after.selected(), Some(rec.target));
        }
        if rec.outcome == "Failed" {
            // Wherever traffic is after a failure, status says so.
            assert_eq!(new.active_environment, after.selected(), "{new:?}");
        }
        let updates_failed = after.failed_updates > failed_since;
        if rec.outcome == "Failed" && !updates_failed && before.ready(rec.from) >= 1 {
            assert_eq!(
                new.active_environment,
                Some(rec.from),
                "a failed move leaves the old environment active: {new:?}"
            );
        }
    }
    // Outside a move, and when the controller could act, status names what the Service
    // selects.
    if !new.phase.in_progress()
        && new.phase != EnvironmentPhase::Pending
        && !after.active_updates_fail
    {
        let active = new.active_environment.expect("active known");
        if after.ready(active) >= 1 {
            assert_eq!(after.selected(), Some(active), "{new:?}");
        }
    }
    if let Some(p) = &new.switch_progress {
        assert_ne!(p.from, p.target);
        if p.step == SwitchStep::Verifying {
            // Before the selector step, traffic has not moved to the target.
            assert_ne!(after.selected(), Some(p.target), "{new:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn switch_invariants_hold_over_random_histories(
        start in env(),
        events in prop::collection::vec(event(), 1..60),
    ) {
        let mut w = World::new(start);
        w.pass();
        let mut failed_since = 0;
        for ev in events {
            let was_moving = w.status.as_ref().is_some_and(|s| s.phase.in_progress());
            if !was_moving {
                failed_since = w.failed_updates;
            }
            match ev {
                Ev::Ready(e, n) => {
                    w.env_mut(e).ready = n;
                    // Pods that just became ready report it now.
                    if w.env(e).is_some_and(|m| m.ready_since.is_some()) {
                        let now = w.now;
                        w.env_mut(e).ready_since = Some(now);
                    }
                }
                Ev::ReadyFor(e, s) => {
                    let since = s.map(|s| veritas_controller::bluegreen::decide::after(w.now, -s));
                    w.env_mut(e).ready_since = since;
                }
                Ev::Probe(e, o) => w.env_mut(e).probe = outcome(o),
                Ev::Advance(s) => w.advance(s),
                Ev::Request(e) => w.request(e),
                Ev::Rollback(force) => w.rollback(force),
                Ev::Retry => { w.annotations.insert(annotations::RETRY.into(), "true".into()); }
                Ev::ServiceFails(f) => w.active_updates_fail = f,
                Ev::Pass => {
                    let before = w.clone();
                    let d = w.pass();
                    check(&before, &d, &w, failed_since);
                }
                Ev::Crash(n) => {
                    let before = w.clone();
                    let d = w.crash_after(n);
                    // Only what was carried out happened; the invariants on the decision hold.
                    for a in d.actions.iter().take(n) {
                        if let Action::SetSelector { service, env } = a {
                            if *service == before.spec.active_service {
                                prop_assert!(before.ready(*env) >= 1);
                            }
                        }
                    }
                }
                Ev::Lost => {
                    let _ = w.decide();
                }
            }
        }
        // Events stop; the Service takes writes again: every move ends within its deadlines.
        w.active_updates_fail = false;
        let limit = max_move_seconds(&w.spec) + 10;
        let mut waited = 0;
        for _ in 0..400 {
            let before = w.clone();
            let d = w.pass();
            check(&before, &d, &w, failed_since);
            if !d.status.phase.in_progress() {
                break;
            }
            w.advance(d.requeue_after_secs as i64);
            waited += d.requeue_after_secs as i64;
        }
        let st = w.status.clone().unwrap();
        prop_assert!(!st.phase.in_progress(), "still {:?} after {waited}s (limit {limit}s): {:?}", st.phase, st.switch_progress);
        prop_assert!(waited <= limit, "took {waited}s, limit {limit}s");
    }
}
