//! Snapshots of `bluegreen inspect`, `bluegreen diff`, `bluegreen switch --dry-run`,
//! `rollback --status` and `deployment status` on environments driven through the
//! controller's decision (the in-memory model), one per guide situation the output must show.
//! The model's clock is fixed, so times are stable; nothing else varies.

use bytes::Bytes;
use veritas_cluster::bgrender::{self, PlanFacts};
use veritas_cluster::status::{self, PodAnswers, PodFacts};
use veritas_controller::bluegreen::decide::{EnvObs, ProbeOutcome, ServiceObs};
use veritas_controller::bluegreen::drift::{self, EnvSnapshot};
use veritas_controller::bluegreen::probe::Answer;
use veritas_controller::bluegreen::sim::{env_labels, selector, tiny_model, World};
use veritas_crds::{EnvironmentName::*, VeritasEnvironment};

fn snap(name: &str, out: String) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, out));
}

fn env(w: &World) -> VeritasEnvironment {
    let mut e = VeritasEnvironment::new(&w.name, w.spec.clone());
    e.metadata.namespace = Some("veritas".into());
    e.status = w.status.clone();
    e
}

fn facts(w: &World) -> PlanFacts {
    let o = w.observe();
    PlanFacts {
        blue: o.blue,
        green: o.green,
        active_service: o.active_service,
        preview_service: o.preview_service,
        drift: o.drift,
    }
}

#[test]
fn inspect_stuck_switching_on_a_failing_health_check() {
    let mut w = World::new(Blue);
    w.settle(5);
    w.env_mut(Green).probe = ProbeOutcome::Unhealthy(
        "HTTP 503 status=critical model_state=failed last_error=E2001 sha256 mismatch".into(),
    );
    w.request(Green);
    w.pass();
    w.advance(30);
    w.pass();
    let out = bgrender::inspect(&env(&w));
    // The guide's diagnosis: phase Switching, the step, what it waits for, and why.
    for needle in [
        "Switching",
        "step Verifying",
        "HealthCheckFailed",
        "waiting for:",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    snap("bluegreen_inspect_switching_health_check_failed", out);
}

#[test]
fn inspect_after_a_switch_and_a_failed_rollback() {
    let mut w = World::new(Blue);
    w.settle(5);
    w.request(Green);
    w.settle(5);
    w.env_mut(Blue).ready = 0;
    w.rollback(false);
    w.pass();
    w.advance(120);
    w.pass();
    let e = env(&w);
    snap(
        "bluegreen_inspect_rollback_failed",
        format!(
            "{}\n{}",
            bgrender::inspect(&e),
            bgrender::env_rollback_status(&e)
        ),
    );
    assert_eq!(bgrender::env_rollback_state(&e).state, "failed");
}

#[test]
fn diff_of_drifted_environments_never_shows_a_secret() {
    let base = || EnvSnapshot {
        config: Some(
            [
                ("VERITAS_MODEL".to_string(), "tiny".to_string()),
                ("VERITAS_THREADS".to_string(), "1".to_string()),
            ]
            .into(),
        ),
        models: vec![tiny_model("1.0.0")],
        env_vars: [("spark/VERITAS_PARALLEL".to_string(), "2".to_string())].into(),
        mounts: [(
            "spark:/models".to_string(),
            "pvc models-{env} (ro)".to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let mut blue = base();
    let mut green = base();
    green
        .config
        .as_mut()
        .unwrap()
        .insert("VERITAS_THREADS".into(), "4".into());
    green.models = vec![tiny_model("1.1.0")];
    green
        .env_vars
        .insert("spark/VERITAS_PARALLEL".into(), "8".into());
    green
        .mounts
        .insert("spark:/models".into(), "pvc models-v2 (ro)".into());
    blue.secrets.insert(
        "api-{env}".into(),
        [(
            "token".to_string(),
            drift::keyed_digest(&[7; 32], b"s3cr3t-blue"),
        )]
        .into(),
    );
    green.secrets.insert(
        "api-{env}".into(),
        [(
            "token".to_string(),
            drift::keyed_digest(&[7; 32], b"s3cr3t-green"),
        )]
        .into(),
    );
    let d = drift::diff(&blue, &green);
    let out = bgrender::diff(&d);
    assert!(!out.contains("s3cr3t"));
    snap("bluegreen_diff_drift", out);
    snap("bluegreen_diff_in_sync", bgrender::diff(&[]));
    // An identity that may not read Secrets: unknown, never "in sync".
    let mut blue = base();
    let mut green = base();
    blue.unreadable_secrets.insert("api-{env}".into());
    green.unreadable_secrets.insert("api-{env}".into());
    let out = bgrender::diff(&drift::diff(&blue, &green));
    assert!(!out.contains("in sync:"), "{out}");
    snap("bluegreen_diff_secrets_unreadable", out);
}

#[test]
fn switch_dry_run_plans_each_step_and_warns() {
    let mut w = World::new(Blue);
    w.settle(5);
    let e = env(&w);
    let plan = bgrender::switch_plan(&e, Green, &facts(&w));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(plan.steps.len(), 5);
    snap("bluegreen_switch_dry_run", bgrender::plan_text(&e, &plan));
    // A target without ready pods: the dry run says the switch would fail and why.
    w.env_mut(Green).ready = 0;
    w.pass();
    let e = env(&w);
    let plan = bgrender::switch_plan(&e, Green, &facts(&w));
    assert!(plan.warnings.iter().any(|w| w.contains("TargetUnhealthy")));
    snap(
        "bluegreen_switch_dry_run_unready_target",
        bgrender::plan_text(&e, &plan),
    );
}

#[test]
fn plan_facts_types_are_the_controllers() {
    // The dry run reads the same observation types the decision does.
    let _ = PlanFacts {
        blue: Some(EnvObs {
            replicas: 1,
            ready: 1,
            template_labels: env_labels(Blue),
            ready_since: None,
            rollout_pending: None,
        }),
        green: None,
        active_service: Some(ServiceObs {
            selector: selector(Some(Blue)),
            ready_blue: 1,
            ready_green: 0,
        }),
        preview_service: None,
        drift: vec![],
    };
}

fn pod(name: &str, track: &str, ready: bool, waiting: Option<&str>) -> PodFacts {
    PodFacts {
        name: name.into(),
        track: track.into(),
        phase: "Running".into(),
        ready,
        waiting: waiting.map(String::from),
        restarts: if waiting.is_some() { 7 } else { 0 },
        node: Some("kind-worker".into()),
    }
}

fn answers(name: &str, healthy: bool) -> PodAnswers {
    let ok = |b: &'static [u8]| Answer::Http {
        status: 200,
        body: Bytes::from_static(b),
    };
    PodAnswers {
        pod: name.into(),
        health: if healthy {
            ok(b"{\"status\":\"healthy\"}")
        } else {
            Answer::Http {
                status: 503,
                body: Bytes::from_static(
                    b"{\"status\":\"critical\",\"model_state\":\"failed\",\"last_error\":{\"code\":\"E2001\",\"detail\":\"sha256 mismatch\"}}",
                ),
            }
        },
        ready: if healthy {
            ok(b"{\"ok\":true}")
        } else {
            Answer::Timeout
        },
        metrics: if healthy {
            Answer::Http {
                status: 200,
                body: Bytes::from(status::EXPECTED_SERIES.join(" 1\n")),
            }
        } else {
            Answer::Unreachable("connection refused".into())
        },
    }
}

#[test]
fn deployment_status_matrix_healthy_and_critical() {
    let pods = vec![
        pod("veritas-spark-blue-0", "blue", true, None),
        pod("veritas-spark-blue-1", "blue", true, None),
    ];
    let ans = vec![
        answers("veritas-spark-blue-0", true),
        answers("veritas-spark-blue-1", true),
    ];
    let rows = status::matrix(&pods, &ans);
    assert_eq!(status::exit_code(&rows), 0);
    let res = vec![status::ResourceLine {
        kind: "VeritasEnvironment",
        name: "veritas-spark".into(),
        phase: "Stable".into(),
        reason: Some("SwitchCompleted".into()),
        summary: "active blue, desired blue".into(),
    }];
    snap(
        "deployment_status_healthy",
        status::render("veritas", &rows, &pods, &ans, &res, false),
    );
    let pods = vec![
        pod("veritas-spark-green-0", "green", true, None),
        pod(
            "veritas-spark-green-1",
            "green",
            false,
            Some("CrashLoopBackOff"),
        ),
    ];
    let ans = vec![
        answers("veritas-spark-green-0", true),
        answers("veritas-spark-green-1", false),
    ];
    let rows = status::matrix(&pods, &ans);
    assert_eq!(status::exit_code(&rows), 1);
    let checks = status::Checks {
        events: vec![
            "Warning BackOff Pod/veritas-spark-green-1: Back-off restarting failed container"
                .into(),
        ],
        node_allocation: vec![
            "kind-worker: cpu requests 850m of 2000m (42%), memory requests 512Mi of 7940Mi (6%)"
                .into(),
        ],
        controller_logs: vec![
            "veritas-controller-0: switch: phase SwitchFailed step -: ...".into(),
        ],
    };
    snap(
        "deployment_status_verbose_critical",
        format!(
            "{}{}",
            status::render("veritas", &rows, &pods, &ans, &[], true),
            status::checks_text(&checks)
        ),
    );
}

#[test]
fn quantities_parse_like_kubectl() {
    assert_eq!(status::cpu_millis("250m"), Some(250));
    assert_eq!(status::cpu_millis("2"), Some(2000));
    assert_eq!(status::mem_bytes("64Mi"), Some(64 << 20));
    assert_eq!(status::mem_bytes("1G"), Some(1_000_000_000));
    assert_eq!(status::mem_bytes("8135308Ki"), Some(8135308 << 10));
}
