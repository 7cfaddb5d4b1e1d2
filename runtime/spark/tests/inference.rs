//! Real inference through the daemon: deterministic greedy output, equal to calling the
//! engine directly; probes; metrics that move by exactly the requests made.

mod common;
use common::*;
use veritas_vocab::metrics as m;

#[test]
fn greedy_generation_is_deterministic_and_equals_direct_llama_cpp() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let (ok, first) = d.cli_json(&["generate", "Hello, Veritas 🌍", "--max-tokens", "24"]);
    assert!(ok, "{first}");
    let (_, second) = d.cli_json(&["generate", "Hello, Veritas 🌍", "--max-tokens", "24"]);
    assert_eq!(first["text"], second["text"]);
    assert_eq!(first["generated_tokens"], 24);
    assert_eq!(first["finish_reason"], "length");
    assert_eq!(first["model"], MODEL);

    // The same decode loop run in this process on the same file gives the same text.
    let engine = veritas_engine::Engine::load(
        &reg.path().join("tiny.gguf"),
        veritas_engine::EngineOptions::default(),
    )
    .unwrap();
    let direct = engine.generate("Hello, Veritas 🌍", 24).unwrap();
    assert_eq!(first["text"].as_str().unwrap(), direct.text);
    assert_eq!(
        first["prompt_tokens"].as_u64().unwrap() as u32,
        direct.prompt_tokens
    );

    // A different seed is a different model: a different answer.
    let other = Registry::new();
    other.add_healthy("tiny", VERSION, 7);
    let d2 = Daemon::start(&other, DaemonOptions::default());
    let (_, third) = d2.cli_json(&["generate", "Hello, Veritas 🌍", "--max-tokens", "24"]);
    assert_ne!(first["text"], third["text"]);
}

#[test]
fn probes_and_http_endpoints() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    assert!(d.cli(&["health"]).status.success());
    assert!(d.cli(&["live"]).status.success());
    assert!(d.cli(&["ready"]).status.success());
    let (status, body) = d.http_get("/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.http_get("/live").0, 200);
    let (status, body) = d.http_get("/health");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "healthy");
    let (status, body) = d.http_post("/v1/generate", r#"{"prompt":"abc","max_tokens":5}"#);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generated_tokens"], 5);
}

#[test]
fn metrics_move_by_exactly_the_requests_made_with_labels() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--deployment".into(), "canary".into()],
            ..Default::default()
        },
    );
    let before = d.scrape();
    let canary_ok = [
        (m::LABEL_STATUS, m::STATUS_SUCCESS),
        (m::LABEL_DEPLOYMENT, "canary"),
    ];
    let canary_err = [
        (m::LABEL_STATUS, m::STATUS_ERROR),
        (m::LABEL_DEPLOYMENT, "canary"),
    ];
    assert_eq!(
        metric_value(&before, m::REQUESTS_TOTAL, &canary_ok),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&before, m::REQUESTS_TOTAL, &canary_err),
        Some(0.0)
    );
    for _ in 0..3 {
        assert!(d
            .cli(&["generate", "ping", "--max-tokens", "4"])
            .status
            .success());
    }
    let long = "x".repeat(400);
    assert!(!d
        .cli(&["generate", &long, "--max-tokens", "4"])
        .status
        .success());
    let after = d.scrape();
    assert_eq!(
        metric_value(&after, m::REQUESTS_TOTAL, &canary_ok),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&after, m::REQUESTS_TOTAL, &canary_err),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &after,
            &format!("{}_count", m::REQUEST_DURATION),
            &[(m::LABEL_DEPLOYMENT, "canary")]
        ),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &after,
            m::GENERATED_TOKENS_TOTAL,
            &[(m::LABEL_DEPLOYMENT, "canary")]
        ),
        Some(12.0)
    );
    assert_eq!(
        metric_value(&after, m::ERRORS_TOTAL, &[(m::LABEL_CODE, "E4003")]),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &after,
            m::MODEL_STATE,
            &[(m::LABEL_MODEL, MODEL), (m::LABEL_STATE, "ready")]
        ),
        Some(1.0)
    );
    assert!(metric_value(&after, m::MEMORY_USED_BYTES, &[]).unwrap() > 1e6);
    assert!(metric_value(&after, m::MEMORY_LIMIT_BYTES, &[]).unwrap() > 0.0);
    // No series under the other deployment value.
    assert_eq!(
        metric_value(
            &after,
            m::REQUESTS_TOTAL,
            &[(m::LABEL_DEPLOYMENT, "stable")]
        ),
        None
    );

    let (ok, summary) = d.cli_json(&["metrics", "summary"]);
    assert!(ok);
    assert_eq!(summary["requests_success"], 3);
    assert_eq!(summary["requests_error"], 1);
    assert_eq!(summary["error_rate"], 0.25);
    let (ok, tel) = d.cli_json(&["telemetry", "status"]);
    assert!(ok);
    assert_eq!(tel["metrics_enabled"], true);
}

#[test]
fn a_full_queue_is_refused_at_once_with_e3003_not_a_hang() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec![
                "--parallel".into(),
                "1".into(),
                "--queue-size".into(),
                "1".into(),
            ],
            ..Default::default()
        },
    );
    let handles = d.generate_concurrently(8, "request", 200);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(
        ok + refused.len(),
        8,
        "every request is answered 200 or 429: {results:?}"
    );
    assert!(ok >= 1, "admitted requests complete");
    assert!(
        !refused.is_empty(),
        "eight simultaneous requests exceed a capacity of two"
    );
    for (_, body) in refused {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "E3003");
        assert!(v["detail"].as_str().unwrap().contains("queue full"));
    }
}

#[test]
fn sigterm_under_load_loses_no_accepted_request() {
    let reg = Registry::new();
    let mut d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--parallel".into(), "1".into()],
            ..Default::default()
        },
    );
    let handles = d.requests_in_flight("drain", 220, 2.0);
    let inflight = metric_value(&d.scrape(), m::INFLIGHT_REQUESTS, &[]).unwrap();
    let socket = d.socket.clone();
    let status = d.terminate();
    // Every admitted request completes; one that arrived after SIGTERM is refused as such,
    // never cut off.
    let mut completed = 0.0;
    for h in handles {
        let (code, body) = h.join().unwrap();
        if code == 200 {
            completed += 1.0;
        } else if code == 0 {
            // Sent after the listener closed: refused at connect, never admitted.
        } else {
            assert!(
                code == 503 && body.contains("shutting down"),
                "a request was lost on SIGTERM: {code} {body}"
            );
        }
    }
    assert!(
        completed >= inflight,
        "{completed} completed, {inflight} were in flight at SIGTERM"
    );
    assert!(status.success(), "daemon exit status {status}");
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}
