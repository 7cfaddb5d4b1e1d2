//! The inference sandbox on real kernel features: same output confined or not, a self-test
//! that sees every forbidden operation blocked, E3001 under a container-like profile, E3002
//! from a real seccomp kill, E3003 from a real address-space ceiling.

mod common;
use common::*;
use veritas_vocab::metrics as m;

fn opts(extra: &[&str]) -> DaemonOptions<'static> {
    DaemonOptions {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn confined_inference_gives_the_same_output_and_every_layer_is_active() {
    let reg = Registry::new();
    let confined = Daemon::start(&reg, opts(&["--sandbox", "required"]));
    let open = Daemon::start(&reg, opts(&["--sandbox", "off"]));
    let args = ["generate", "Sandboxed 🔒 prompt", "--max-tokens", "32"];
    let (ok_a, a) = confined.cli_json(&args);
    let (ok_b, b) = open.cli_json(&args);
    assert!(ok_a && ok_b, "{a} {b}");
    assert_eq!(a["text"], b["text"]);

    let (_, health) = confined.cli_json(&["health", "--verbose"]);
    let layers = health["sandbox"]["layers"]
        .as_array()
        .expect("sandbox layers reported");
    assert_eq!(layers.len(), 7);
    for l in layers {
        assert_eq!(l["state"], "active", "{l}");
    }
    // The probe's answer (not verbose) leaves the layer report out and stays healthy.
    let (ok, probe) = confined.cli_json(&["health"]);
    assert!(ok, "{probe}");
    assert_eq!(probe["status"], "healthy", "{probe}");
    assert!(probe["sandbox"].is_null(), "{probe}");
    let text = confined.scrape();
    for layer in [
        "userns",
        "mountns",
        "netns",
        "rlimits",
        "landlock",
        "capabilities",
        "seccomp",
    ] {
        assert_eq!(
            metric_value(&text, m::SANDBOX_LAYER_ACTIVE, &[(m::LABEL_LAYER, layer)]),
            Some(1.0),
            "{layer}"
        );
    }
    let (_, health) = open.cli_json(&["health", "--verbose"]);
    assert!(health["sandbox"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["state"] == "disabled"));
}

#[test]
fn selftest_shows_every_forbidden_operation_blocked_and_fails_when_unconfined() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, opts(&["--sandbox", "required"]));
    let (ok, v) = d.cli_json(&["sandbox", "selftest"]);
    assert!(ok, "{v}");
    let probes = v["probes"].as_array().unwrap();
    let names: Vec<_> = probes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for p in probes.iter().filter(|p| p["expect"] == "blocked") {
        assert_eq!(p["blocked"], true, "{p}");
    }
    assert!(
        probes.iter().filter(|p| p["expect"] == "blocked").count() >= 5,
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("outside")),
        "a file outside the model dir is probed: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("connect-inet")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.contains("unshare") || n.contains("userns")),
        "{names:?}"
    );
    // The daemon still serves after the probes.
    assert!(d
        .cli(&["generate", "after selftest", "--max-tokens", "3"])
        .status
        .success());

    let open = Daemon::start(&reg, opts(&["--sandbox", "off"]));
    let out = open.cli(&["sandbox", "selftest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("E3001"), "{}", stderr(&out));
}

#[test]
fn e3001_required_mode_refuses_under_a_profile_denying_user_namespaces() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            extra: vec!["--sandbox".into(), "required".into()],
            deny_userns: true,
        },
    );
    let v = expect_error(&d, &["models", "load", MODEL], "E3001");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("userns"),
        "names the failing layer: {detail}"
    );
    assert!(
        detail.contains("max_user_namespaces"),
        "lists the kernel checks: {detail}"
    );
    assert!(
        detail.contains("Security Context"),
        "hints at the container security context: {detail}"
    );
    let out = d.cli(&["generate", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("E3001 SANDBOX_INIT_FAILED"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.cli(&["ready"]).status.code(), Some(1));
}

#[test]
fn e3001_best_effort_mode_serves_and_reports_the_missing_layer() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--sandbox".into(), "best-effort".into()],
            deny_userns: true,
            ..Default::default()
        },
    );
    assert!(d
        .cli(&["generate", "still serving", "--max-tokens", "4"])
        .status
        .success());
    let (_, health) = d.cli_json(&["health", "--verbose"]);
    let layers = health["sandbox"]["layers"].as_array().unwrap();
    let userns = layers.iter().find(|l| l["layer"] == "userns").unwrap();
    assert_eq!(userns["state"], "unavailable", "{userns}");
    assert!(
        userns["reason"].as_str().unwrap().contains("EPERM"),
        "{userns}"
    );
    assert_eq!(
        layers.iter().find(|l| l["layer"] == "seccomp").unwrap()["state"],
        "active"
    );
    let text = d.scrape();
    assert_eq!(
        metric_value(
            &text,
            m::SANDBOX_LAYER_ACTIVE,
            &[(m::LABEL_LAYER, "userns")]
        ),
        Some(0.0)
    );
    let out = d.cli(&["health", "--verbose"]);
    assert!(
        stdout(&out).contains("userns        unavailable"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn e3002_violation_is_reported_counted_and_the_worker_restarted() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        opts(&[
            "--sandbox",
            "required",
            "--parallel",
            "1",
            "--enable-fault-injection",
        ]),
    );
    let first = d.worker_pid();
    let reqs = d.requests_in_flight("v", 220, 2.0);
    assert!(d.cli(&["fault", "sandbox-violation"]).status.success());
    let results: Vec<_> = reqs.into_iter().map(|h| h.join().unwrap()).collect();
    let failed: Vec<serde_json::Value> = results
        .iter()
        .filter(|(s, _)| *s != 200)
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    assert!(!failed.is_empty(), "in-flight requests fail: {results:?}");
    for v in &failed {
        assert_eq!(v["code"], "E3002", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("socket"),
            "names the syscall: {v}"
        );
    }
    d.wait_ready();
    assert_ne!(d.worker_pid(), first);
    assert!(d
        .cli(&["generate", "after", "--max-tokens", "3"])
        .status
        .success());
    let text = d.scrape();
    assert_eq!(
        metric_value(
            &text,
            m::SANDBOX_VIOLATIONS_TOTAL,
            &[(m::LABEL_SYSCALL, "socket")]
        ),
        Some(1.0)
    );
    let failed_count = failed.len() as f64;
    assert_eq!(
        metric_value(&text, m::ERRORS_TOTAL, &[(m::LABEL_CODE, "E3002")]),
        Some(failed_count)
    );
    assert!(d.log_text().contains("E3002"), "{}", d.log_text());
}

#[test]
fn fault_injection_is_refused_unless_enabled() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let (ok, v) = d.cli_json(&["fault", "worker-abort"]);
    assert!(!ok);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("--enable-fault-injection"),
        "{v}"
    );
    assert!(d.cli(&["health"]).status.success());
}

#[test]
fn e3003_memory_ceiling_for_requests_and_for_models() {
    let reg = Registry::new();
    // Room for the model, not for the batch's context: the load fails, before Ready. The
    // worker's own address space (threads, libraries) takes more than 30 MB of the ceiling,
    // so the window is 50-60 MB.
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            extra: ["--sandbox", "required", "--worker-memory-limit", "60000000"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let v = expect_error(&d, &["models", "load", MODEL], "E3003");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("--parallel 2 requests")
            && detail.contains("needs about")
            && detail.contains("ceiling is 60000000 bytes"),
        "{detail}"
    );
    assert!(d.cli(&["live"]).status.success(), "the daemon stays up");
    assert!(!d.cli(&["ready"]).status.success(), "nothing to serve");

    // Room for nothing: the model itself does not fit.
    let tiny = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            extra: vec!["--worker-memory-limit".into(), "10000000".into()],
            ..Default::default()
        },
    );
    let v = expect_error(&tiny, &["models", "load", MODEL], "E3003");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("10000000 bytes") && detail.contains("469504 bytes"),
        "both numbers: {detail}"
    );
    assert!(tiny.cli(&["live"]).status.success());
}

#[test]
fn e4001_aborted_worker_is_restarted_and_later_requests_succeed() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, opts(&["--parallel", "1", "--enable-fault-injection"]));
    let first = d.worker_pid();
    let reqs = d.requests_in_flight("abort", 220, 2.0);
    assert!(d.cli(&["fault", "worker-abort"]).status.success());
    let failed: Vec<serde_json::Value> = reqs
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|(s, _)| *s != 200)
        .map(|(_, b)| serde_json::from_str(&b).unwrap())
        .collect();
    assert!(!failed.is_empty());
    for v in &failed {
        assert_eq!(v["code"], "E4001", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("SIGABRT"), "{v}");
    }
    d.wait_ready();
    assert_ne!(d.worker_pid(), first);
    assert!(d
        .cli(&["generate", "after abort", "--max-tokens", "3"])
        .status
        .success());
}

/// Issue 21 §3.8, with continuous batching: under a ceiling that holds the model but not the
/// one context of every parallel request, the load fails with E3003 naming the ceiling and
/// the parallel count, and the runtime is never ready (the worker once panicked at thread spawn after saying Ready, and
/// the runtime restarted it in a loop as E4001).
#[test]
fn e3003_when_the_batch_context_does_not_fit_the_ceiling() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            // 256 sequences of 65536 tokens: about 8.6 GB of KV cache for the tiny model,
            // under a 2 GB ceiling that the model itself fits.
            extra: [
                "--sandbox",
                "required",
                "--worker-memory-limit",
                "2000000000",
                "--parallel",
                "256",
                "--ctx-size",
                "65536",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    let v = expect_error(&d, &["models", "load", MODEL], "E3003");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("--parallel 256") && detail.contains("2000000000 bytes"),
        "{detail}"
    );
    assert!(d.cli(&["live"]).status.success());
    assert!(
        !d.cli(&["ready"]).status.success(),
        "never ready without a context"
    );
    let restarts = metric_value(
        &d.scrape(),
        veritas_vocab::metrics::WORKER_RESTARTS_TOTAL,
        &[],
    );
    assert!(restarts.unwrap_or(0.0) == 0.0, "{restarts:?}");
}
