//! Invariants of the decision over random histories (proptest): weights stay within
//! 0..=100; no step is taken without `successLimit` consecutive successes; no data never
//! counts as a success; a rollback is always reachable; a paused canary never moves.

use proptest::prelude::*;
use veritas_controller::decide::{analysis_due, judge, Action, AnalysisSample, TrackMetrics};
use veritas_controller::sim::{spec, World};
use veritas_crds::{annotations, Phase, Step, StepPause, Verdict};

#[derive(Clone, Debug)]
enum Ev {
    Analyse(AnalysisSample),
    Advance(i64),
    Annotate(&'static str, &'static str),
    TogglePaused,
    ToggleAuto,
    SetWeight(i32),
    PodsReady(bool),
}

fn sample() -> impl Strategy<Value = AnalysisSample> {
    let opt = |r: std::ops::Range<f64>| prop_oneof![Just(None), r.prop_map(Some)];
    prop_oneof![
        (opt(0.0..2000.0), opt(0.0..0.3), opt(0.0..4.0)).prop_map(
            |(requests, error_rate, latency_p99)| AnalysisSample::Data {
                canary: TrackMetrics {
                    requests,
                    error_rate,
                    latency_p99
                },
                stable: None
            }
        ),
        Just(AnalysisSample::Unreachable("connection refused".into())),
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => sample().prop_map(Ev::Analyse),
        3 => (1i64..400).prop_map(Ev::Advance),
        1 => prop_oneof![
            Just(Ev::Annotate(annotations::APPROVE, "true")),
            Just(Ev::Annotate(annotations::RESUME, "true")),
            Just(Ev::Annotate(annotations::RETRY, "true")),
        ],
        1 => Just(Ev::TogglePaused),
        1 => Just(Ev::ToggleAuto),
        1 => (0i32..=100).prop_map(Ev::SetWeight),
        1 => any::<bool>().prop_map(Ev::PodsReady),
    ]
}

fn world() -> impl Strategy<Value = World> {
    (
        0i32..=100,
        1i32..=12,
        1i32..=4,
        1i32..=4,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec((0i32..=100, any::<bool>()), 0..3),
    )
        .prop_map(
            |(weight, replicas, success_limit, failure_limit, auto, manual, steps)| {
                let mut s = spec(weight);
                s.replicas = Some(replicas);
                s.promotion.success_limit = success_limit;
                s.promotion.auto = auto;
                s.promotion.manual_approval = manual;
                s.analysis.failure_limit = failure_limit;
                let mut ws: Vec<i32> = steps.iter().map(|(w, _)| *w).collect();
                ws.sort();
                s.promotion.steps = ws
                    .into_iter()
                    .zip(steps.iter().map(|(_, p)| *p))
                    .map(|(weight, p)| Step {
                        weight,
                        pause: p.then_some(StepPause {
                            duration_seconds: Some(60),
                        }),
                    })
                    .collect();
                World::new(s)
            },
        )
}

fn counts_as_no_data(s: &AnalysisSample) -> bool {
    match s {
        AnalysisSample::Unreachable(_) => true,
        AnalysisSample::Data { canary, .. } => canary.requests.is_none(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_random_histories(mut w in world(), events in proptest::collection::vec(event(), 1..60)) {
        w.pass(None);
        for ev in events {
            let mut sample = None;
            match ev {
                Ev::Analyse(s) => {
                    w.advance(w.spec.analysis.interval_seconds);
                    if analysis_due(&w.spec, w.status.as_ref(), w.now) { sample = Some(s); }
                }
                Ev::Advance(secs) => w.advance(secs),
                Ev::Annotate(k, v) => w.annotate(k, v),
                Ev::TogglePaused => w.edit(|s| s.promotion.paused = !s.promotion.paused),
                Ev::ToggleAuto => w.edit(|s| s.promotion.auto = !s.promotion.auto),
                Ev::SetWeight(x) => w.edit(|s| s.traffic_weight = x),
                Ev::PodsReady(b) => w.pods_become_ready = b,
            }
            let old = w.status.clone().expect("first pass ran");
            let restart = old.phase.is_terminal();
            let paused_before = w.spec.promotion.paused && !old.phase.is_terminal() && old.phase != Phase::RollingBack;
            let d = w.pass(sample.clone());
            let new = &d.status;

            // Weights within 0..=100, replicas never negative.
            prop_assert!((0..=100).contains(&new.desired_weight));
            prop_assert!((0..=100).contains(&new.actual_weight));
            for a in &d.actions {
                match a {
                    Action::Scale { replicas, .. } => prop_assert!(*replicas >= 0),
                    Action::SetRouteWeights { stable, canary } => {
                        prop_assert!((0..=100).contains(stable) && (0..=100).contains(canary) && stable + canary == 100);
                    }
                    _ => {}
                }
            }

            // A paused canary never moves.
            if paused_before {
                prop_assert_eq!(new.phase, Phase::Paused);
                prop_assert_eq!(new.current_step, old.current_step);
                let moved = d.actions.iter().any(|a| matches!(a, Action::Scale { .. } | Action::SetSelector { .. } | Action::SetRouteWeights { .. }));
                prop_assert!(!moved, "paused canary acted: {:?}", d.actions);
                prop_assert_eq!(new.consecutive_successes, old.consecutive_successes);
            }

            // Never promote without successLimit successes.
            if !restart && new.current_step > old.current_step {
                let this = sample.as_ref().map(|s| judge(&w.spec, s, w.service_monitor).0 == Verdict::Successful).unwrap_or(false);
                prop_assert!(old.consecutive_successes + i32::from(this) >= w.spec.promotion.success_limit,
                    "advanced with {} (+{}) successes, limit {}", old.consecutive_successes, this, w.spec.promotion.success_limit);
                prop_assert_eq!(new.current_step, old.current_step + 1);
            }

            // No data never counts as a success.
            if let Some(s) = &sample {
                if counts_as_no_data(s) && !restart {
                    prop_assert!(new.consecutive_successes <= old.consecutive_successes);
                    if let Some(run) = new.analysis_history.last() {
                        prop_assert!(run.verdict != Verdict::Successful || new.analysis_history.len() == old.analysis_history.len());
                    }
                }
            }

            // A rollback never takes the last ready endpoint from the shared Service while
            // stable's pods are still starting.
            let mut slow = w.clone();
            slow.pods_become_ready = false;
            let serving = slow.serving();
            slow.annotate(annotations::ROLLBACK, annotations::FORCE);
            for _ in 0..3 {
                slow.pass(None);
                prop_assert!(serving == 0 || slow.serving() > 0,
                    "rollback from {:?} left the shared Service without a ready pod: {:?}", old.phase, slow.status);
            }

            // A rollback is always reachable once the pods it waits for have started.
            let mut probe = w.clone();
            probe.pods_become_ready = true;
            probe.pods_ready();
            probe.annotate(annotations::ROLLBACK, annotations::FORCE);
            probe.settle(10);
            let st = probe.status.as_ref().unwrap();
            prop_assert_eq!(st.phase, Phase::Failed, "rollback from {:?} ended in {:?}", old.phase, st);
            prop_assert_eq!(st.actual_weight, 0);
        }
    }
}
