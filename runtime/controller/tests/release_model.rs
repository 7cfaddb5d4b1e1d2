//! The canary release model (Flagger / Argo Rollouts): a promotion writes the canary's pod
//! template into stable, waits for stable's rollout, moves traffic back onto stable and
//! scales the canary to 0; a new canary template is a new revision analysed from step 0; an
//! analysis-only edit after success moves nothing; a rollback of a promoted canary keeps
//! traffic on stable. Driven on the simulator with pods that take passes to become ready,
//! checking at every pass that traffic only goes to ready pods.

use veritas_controller::decide::{analysis_due, template_hash, Action};
use veritas_controller::sim::{healthy, pod_template, spec, World};
use veritas_crds::reasons;
use veritas_crds::{annotations, Phase, Step, OWNED_SELECTOR_KEY};
use veritas_vocab::labels;

fn world(delay: u32) -> World {
    let mut s = spec(20);
    s.replicas = Some(4);
    s.promotion.success_limit = 1;
    s.promotion.steps = vec![Step {
        weight: 50,
        pause: None,
    }];
    World::with_revisions(s, "spark:1.0", "spark:1.1", delay)
}

/// Traffic is on ready pods only: the shared Service has a ready pod behind it, and when it
/// is pinned to one track that track has ready pods.
fn check(w: &World, trace: &mut Vec<String>) {
    let st = w.status.as_ref().unwrap();
    trace.push(format!(
        "{:?}/{} step {} w {} stable {:?} canary {:?} sel {:?}",
        st.phase,
        st.reason.clone().unwrap_or_default(),
        st.current_step,
        st.desired_weight,
        w.stable.as_ref().map(|d| (d.replicas, d.ready)),
        w.canary.as_ref().map(|d| (d.replicas, d.ready)),
        w.shared_selector
            .as_ref()
            .and_then(|s| s.get(OWNED_SELECTOR_KEY).cloned()),
    ));
    assert!(
        w.serving() > 0,
        "no ready pod behind the shared Service:\n{}",
        trace.join("\n")
    );
    let pinned = w
        .shared_selector
        .as_ref()
        .and_then(|s| s.get(OWNED_SELECTOR_KEY).cloned());
    if pinned.as_deref() == Some(labels::DEPLOYMENT_STABLE) {
        assert!(w.stable.as_ref().unwrap().ready > 0, "{}", trace.join("\n"));
    }
}

/// Runs passes 5 s apart (with a healthy analysis whenever one is due) until `until` holds.
fn drive(w: &mut World, trace: &mut Vec<String>, until: impl Fn(&World) -> bool) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..400 {
        w.advance(5);
        let due = analysis_due(&w.spec, w.status.as_ref(), w.now);
        let d = w.pass(due.then(healthy));
        all.extend(d.actions);
        check(w, trace);
        if until(w) {
            return all;
        }
    }
    panic!("never reached the state:\n{}", trace.join("\n"));
}

fn st(w: &World) -> &veritas_crds::VeritasCanaryStatus {
    w.status.as_ref().unwrap()
}

fn succeeded(w: &World) -> bool {
    st(w).phase == Phase::Succeeded
}

#[test]
fn a_promotion_writes_the_template_into_stable_waits_for_its_rollout_then_moves_traffic_then_scales_the_canary_down(
) {
    let mut w = world(3);
    let mut trace = Vec::new();
    let canary_rev = w.canary.as_ref().unwrap().template_hash.clone();
    drive(&mut w, &mut trace, succeeded);
    let s = st(&w);
    assert_eq!(s.reason.as_deref(), Some(reasons::PROMOTED));
    assert_eq!(s.stable_revision, canary_rev);
    assert_eq!(s.canary_revision, canary_rev);
    assert_eq!(s.desired_weight, 0);
    assert_eq!(w.stable_image().as_deref(), Some("spark:1.1"));
    assert_eq!(w.stable.as_ref().unwrap().ready, 4);
    assert_eq!(w.canary.as_ref().unwrap().replicas, 0);
    // The phases in between told what was happening, in order.
    let pos = |r: &str| trace.iter().position(|l| l.contains(&format!("/{r} ")));
    let (a, b, c) = (
        pos(reasons::STABLE_ROLLOUT_PENDING).expect("StableRolloutPending shown"),
        pos(reasons::TRAFFIC_TO_STABLE).expect("TrafficToStable shown"),
        pos(reasons::CANARY_SCALING_DOWN).expect("CanaryScalingDown shown"),
    );
    assert!(a < b && b < c, "{}", trace.join("\n"));
    // Nothing more moves once promoted.
    for _ in 0..5 {
        w.advance(60);
        let d = w.pass(None);
        assert!(d.actions.iter().all(|a| matches!(a, Action::Event { .. })));
        check(&w, &mut trace);
    }
}

#[test]
fn a_second_release_is_analysed_from_step_0_and_promoted_and_a_rollback_after_it_keeps_traffic_on_stable(
) {
    let mut w = world(2);
    let mut trace = Vec::new();
    drive(&mut w, &mut trace, succeeded);
    let first = st(&w).stable_revision.clone();

    // Release 2: a new image in the canary template.
    w.set_canary_image("spark:1.2");
    let second = w.canary.as_ref().unwrap().template_hash.clone();
    assert_ne!(first, second);
    let actions = drive(&mut w, &mut trace, |w| st(w).phase != Phase::Succeeded);
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Event { reason, .. } if *reason == reasons::NEW_REVISION)));
    let s = st(&w);
    assert_eq!(s.current_step, 0);
    assert_eq!(s.desired_weight, 20);
    assert_eq!(s.canary_revision, second);
    assert_eq!(s.stable_revision, first);
    assert_eq!(s.failed_analyses + s.consecutive_successes, 0);
    // Every step is analysed again before 100 %.
    let before = st(&w).analysis_history.len();
    drive(&mut w, &mut trace, succeeded);
    let runs: Vec<i32> = st(&w).analysis_history[before..]
        .iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(runs, vec![0, 1], "{}", trace.join("\n"));
    assert_eq!(st(&w).stable_revision, second);
    assert_eq!(w.stable_image().as_deref(), Some("spark:1.2"));

    // Forced rollback of the promoted canary: nothing moves, traffic stays on stable.
    w.annotate(annotations::ROLLBACK, annotations::FORCE);
    for _ in 0..10 {
        w.advance(5);
        let d = w.pass(None);
        assert!(d
            .actions
            .iter()
            .all(|a| matches!(a, Action::Event { .. } | Action::ClearAnnotation(_))));
        check(&w, &mut trace);
    }
    assert_eq!(st(&w).phase, Phase::Succeeded);
    assert!(w
        .events
        .iter()
        .any(|(r, _)| *r == reasons::NOTHING_TO_ROLL_BACK));
    assert_eq!(w.stable.as_ref().unwrap().ready, 4);
}

#[test]
fn an_analysis_only_edit_after_success_never_moves_traffic() {
    let mut w = world(1);
    let mut trace = Vec::new();
    drive(&mut w, &mut trace, succeeded);
    w.edit(|s| s.analysis.error_rate_threshold = 0.5);
    for _ in 0..10 {
        w.advance(30);
        let d = w.pass(None);
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::Event { .. })),
            "{:?}",
            d.actions
        );
    }
    let s = st(&w);
    assert_eq!(s.phase, Phase::Succeeded);
    assert_eq!(s.observed_generation, Some(w.generation));
    assert_eq!(w.canary.as_ref().unwrap().replicas, 0);
}

#[test]
fn a_new_revision_mid_run_restarts_the_run_from_step_0() {
    let mut w = world(0);
    let mut trace = Vec::new();
    drive(&mut w, &mut trace, |w| st(w).current_step == 1);
    w.set_canary_image("spark:1.1-hotfix");
    let d = w.pass(None);
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Event { reason, .. } if *reason == reasons::NEW_REVISION)));
    let s = st(&w);
    assert_eq!((s.current_step, s.desired_weight), (0, 20));
    assert_eq!(s.canary_revision, w.canary.as_ref().unwrap().template_hash);
}

#[test]
fn the_revision_ignores_the_track_label_and_key_order() {
    let a = pod_template("spark:1.0");
    let mut b: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    b["metadata"]["labels"][labels::DEPLOYMENT] = labels::DEPLOYMENT_CANARY.into();
    assert_eq!(template_hash(&a), template_hash(&b));
    assert_ne!(template_hash(&a), template_hash(&pod_template("spark:1.1")));
    assert_eq!(template_hash(&a).len(), 16);
}
