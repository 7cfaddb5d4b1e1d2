//! Snapshots of the canary commands' output on canaries driven through the controller's
//! decision (the in-memory model), one per guide situation the output must show.

use veritas_cluster::render;
use veritas_controller::sim::{erroring, healthy, spec, World};
use veritas_crds::VeritasCanary;

/// Snapshots live with the others in the workspace's `snapshots/`.
fn snap(name: &str, out: String) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, out));
}

fn canary(w: &World) -> VeritasCanary {
    let mut c = VeritasCanary::new(&w.name, w.spec.clone());
    c.metadata.namespace = Some(w.namespace.clone());
    c.status = w.status.clone();
    c
}

#[test]
fn inspect_auto_promotion_disabled() {
    let mut s = spec(25);
    s.promotion.auto = false;
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 3);
    let out = veritas_cluster::render::inspect(&canary(&w));
    assert!(out.lines().any(|l| l.to_lowercase().contains("auto")
        && l.to_lowercase().contains("promotion")
        && l.contains("disabled")));
    snap("canary_inspect_auto_promotion_disabled", out);
}

#[test]
fn inspect_waiting_for_approval_greps_as_waiting() {
    let mut s = spec(25);
    s.promotion.manual_approval = true;
    s.promotion.success_limit = 1;
    let mut w = World::new(s);
    w.settle(5);
    w.analyses(healthy(), 1);
    let out = veritas_cluster::render::inspect(&canary(&w));
    assert!(out.to_lowercase().contains("waiting"));
    snap("canary_inspect_waiting_for_approval", out);
}

#[test]
fn inspect_history_after_rollback() {
    let mut w = World::new(spec(25));
    w.settle(5);
    w.analyses(healthy(), 1);
    w.analyses(erroring(0.3), 3);
    let c = canary(&w);
    snap(
        "canary_inspect_history_rollback_status",
        format!(
            "{}\n{}\n{}",
            veritas_cluster::render::inspect(&c),
            veritas_cluster::render::history(&c),
            veritas_cluster::render::rollback_status(&c)
        ),
    );
}

#[test]
fn inspect_json_is_versioned_and_names_auto_promotion() {
    let w = World::new(spec(25));
    let v = veritas_cluster::render::inspect_json(&canary(&w));
    assert_eq!(v["autoPromotion"], true);
    assert_eq!(v["spec"]["trafficWeight"], 25);
}

#[test]
fn metrics_compare_output() {
    use veritas_cluster::Comparison;
    use veritas_controller::decide::TrackMetrics;
    let m = Comparison {
        window_seconds: 300,
        canary: Some(TrackMetrics {
            requests: Some(412.0),
            error_rate: Some(0.0243),
            latency_p99: Some(0.181),
        }),
        stable: Some(TrackMetrics {
            requests: Some(1650.0),
            error_rate: Some(0.0051),
            latency_p99: Some(0.094),
        }),
    };
    snap("metrics_compare", veritas_cluster::render::comparison(&m));
    let none = Comparison {
        window_seconds: 300,
        canary: Some(TrackMetrics::default()),
        stable: None,
    };
    snap(
        "metrics_canary_no_data",
        veritas_cluster::render::comparison(&none),
    );
}

#[test]
fn cli_errors_carry_deployment_codes() {
    let e = veritas_cluster::CliError {
        code: veritas_vocab::ErrorCode::RollbackFailed,
        detail: "canary spark already succeeded".into(),
    };
    assert_eq!(
        e.to_string(),
        "E5002 ROLLBACK_FAILED: canary spark already succeeded"
    );
}

#[test]
fn rollback_status_past_its_deadline_is_failed_not_in_progress() {
    let mut w = World::new(spec(50));
    w.settle(3);
    // Stable shrank for the 50 % split; the pods it needs back never become ready.
    w.pods_become_ready = false;
    w.annotate(
        veritas_crds::annotations::ROLLBACK,
        veritas_crds::annotations::TRUE,
    );
    w.settle(3);
    assert_eq!(render::rollback_state(&canary(&w)).state, "in progress");
    w.advance(700);
    w.settle(3);
    let st = render::rollback_state(&canary(&w));
    assert_eq!((st.state.as_str(), st.complete), ("failed", false));
    assert!(render::rollback_status(&canary(&w)).contains("RollbackFailed"));
    w.pods_ready();
    w.settle(5);
    assert_eq!(render::rollback_state(&canary(&w)).state, "complete");
}
