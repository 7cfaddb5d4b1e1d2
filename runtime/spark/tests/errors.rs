//! Every error code the runtime can raise, provoked for real and asserted (code and exit).

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use veritas_fixtures::corrupt::Corruption;

#[test]
fn e1001_missing_socket_names_the_guide_checks() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("veritas-spark.sock");
    let sock_str = sock.to_str().unwrap();
    let out = cli(&sock, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("E1001 IPC_CONNECTION_FAILED: "), "{err}");
    assert!(err.contains(&format!("ls -la {sock_str}")), "{err}");
    // "runtime running" looks at the whole machine: other tests' daemons may be running, and
    // then the check names one and says to compare its --socket instead of suggesting pgrep.
    assert!(
        err.contains("pgrep -a veritas-spark")
            || (err.contains("[ok] runtime running")
                && err.contains(&format!("started with --socket {sock_str}"))),
        "{err}"
    );

    let out = cli(&sock, &["ready", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "E1001");
    assert_eq!(v["name"], "IPC_CONNECTION_FAILED");
    assert_eq!(v["severity"], "Critical");
    let checks: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert!(checks.contains(&"socket exists".to_string()), "{checks:?}");
    assert!(
        checks.contains(&"runtime running".to_string()),
        "{checks:?}"
    );
}

#[test]
fn e1001_stale_socket_is_refused_by_the_cli_and_replaced_by_the_daemon() {
    let reg = Registry::new();
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap()); // the file stays, nobody listens
    let out = cli(&sock, &["health", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "E1001");
    assert!(v["detail"].as_str().unwrap().contains("stale"), "{v}");
    let checks = v["checks"].as_array().unwrap();
    assert!(
        checks.iter().any(|c| c["name"] == "socket permissions"),
        "{v}"
    );

    let d = Daemon::spawn_on(&reg, &DaemonOptions::default(), sock.clone(), tmp);
    d.wait_ready();
    assert!(
        d.log_text().contains("replacing stale socket"),
        "{}",
        d.log_text()
    );

    // A second daemon never steals a live socket.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut second = Daemon::spawn_on(&reg, &DaemonOptions::default(), sock.clone(), tmp2);
    let status = wait_child(second.child.as_mut().unwrap(), Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        second.log_text().contains("another runtime is serving"),
        "{}",
        second.log_text()
    );
    assert!(
        second.log_text().contains("E1001"),
        "the refusal carries its code: {}",
        second.log_text()
    );
    assert!(
        d.cli(&["health"]).status.success(),
        "the first daemon still serves"
    );
}

/// The guide's "verify no other process holding socket": a process that accepts on the
/// runtime's socket path and never answers is E1001 naming that cause within the probe
/// deadline (it was a 30 s wait ending in E1002, blaming a long generation).
#[test]
fn e1001_another_process_holding_the_socket_is_named_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("veritas-spark.sock");
    // Listens, never accepts: the kernel completes the connection, nobody answers.
    let _holder = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let started = std::time::Instant::now();
    let out = cli(&socket, &["health", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "E1001", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("another process may be holding the socket"),
        "{detail}"
    );
    assert!(detail.contains("ss -xlp"), "{detail}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A request that may legitimately take long keeps its own deadline and code.
    let out = cli(&socket, &["generate", "hi", "--timeout", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "E1002", "{v}");
}

#[test]
fn e1002_client_timeout_and_daemon_request_timeout() {
    // A socket that accepts and never answers a generation: the CLI gives up with E1002 (a
    // probe there is E1001 naming the holder: the test above).
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = (&s).read(&mut buf);
        // Keep the connection open and silent until the CLI has given up.
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let out = cli(&sock, &["generate", "hi", "--timeout", "0.3", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "E1002");
    done_tx.send(()).unwrap();
    holder.join().unwrap();

    // The daemon's own deadline on inference: 1 ms cannot hold 200 tokens.
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--request-timeout".into(), "0.001".into()],
            ..Default::default()
        },
    );
    let v = expect_error(&d, &["generate", "slow", "--max-tokens", "200"], "E1002");
    assert!(
        v["detail"].as_str().unwrap().contains("did not finish"),
        "{v}"
    );
}

fn raw_request(stream: &mut UnixStream, bytes: &[u8]) -> serde_json::Value {
    stream.write_all(bytes).unwrap();
    let payload = veritas_vocab::ipc::read_frame(stream, u32::MAX)
        .unwrap()
        .expect("an answer frame");
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn e1003_malformed_frames_are_answered_and_the_daemon_keeps_serving() {
    use veritas_vocab::ipc::{encode, encode_header, Op, Request};
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--max-frame".into(), "4096".into()],
            ..Default::default()
        },
    );
    let connect = || {
        let s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };

    // Valid frame, invalid JSON message: E1003, and the same connection still works.
    let mut s = connect();
    let mut frame = encode_header(9).to_vec();
    frame.extend_from_slice(b"{not json");
    let v = raw_request(&mut s, &frame);
    assert_eq!(v["outcome"]["error"]["code"], "E1003");
    let v = raw_request(
        &mut s,
        &encode(&Request {
            id: 5,
            op: Op::Live,
        }),
    );
    assert_eq!(v["id"], 5);
    assert!(v["outcome"]["ok"].is_object(), "{v}");

    // Unknown message type with the id echoed.
    let body = br#"{"id":9,"op":{"type":"reboot"}}"#;
    let mut frame = encode_header(body.len() as u32).to_vec();
    frame.extend_from_slice(body);
    let v = raw_request(&mut s, &frame);
    assert_eq!(v["id"], 9);
    assert_eq!(v["outcome"]["error"]["code"], "E1003");

    // Bad magic, unknown version, oversize: E1003, then the connection is closed.
    for (what, header) in [
        ("bad magic", *b"XX\x01\x00\x00\x00\x00\x02"),
        ("unknown version", *b"VS\x07\x00\x00\x00\x00\x02"),
        ("oversize", {
            let mut h = encode_header(1 << 20);
            h[4] = 0;
            h
        }),
    ] {
        let mut s = connect();
        let v = raw_request(&mut s, &header);
        assert_eq!(v["outcome"]["error"]["code"], "E1003", "{what}: {v}");
        let mut rest = Vec::new();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap(),
            0,
            "{what}: connection closed after the error"
        );
    }
    let v = {
        let mut s = connect();
        raw_request(&mut s, &encode_header(5000))
    };
    assert!(
        v["outcome"]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("exceeds the maximum of 4096"),
        "{v}"
    );

    assert!(d.cli(&["health"]).status.success(), "daemon still healthy");
    let text = d.scrape();
    assert!(
        metric_value(
            &text,
            veritas_vocab::metrics::ERRORS_TOTAL,
            &[("code", "E1003")]
        )
        .unwrap()
            >= 6.0
    );
}

#[test]
fn e2001_every_load_failure_names_its_cause_and_the_served_model_survives() {
    let reg = Registry::new();
    reg.add_entry("ghost", "ghost.gguf", None);
    reg.add_corrupt("empty", Corruption::Empty);
    reg.add_corrupt("badmagic", Corruption::BadMagic);
    reg.add_corrupt("truncated", Corruption::Truncated);
    reg.add_corrupt("alien", Corruption::UnknownArchitecture);
    reg.add_corrupt("holey", Corruption::MissingTensor);
    // A flipped byte: the manifest pins the healthy file's sha256.
    veritas_fixtures::corrupt::write_corrupt_gguf(
        &reg.path().join("flipped.gguf"),
        &veritas_fixtures::TinyModelSpec::default(),
        Corruption::FlippedDataByte,
    )
    .unwrap();
    reg.add_entry("flipped", "flipped.gguf", Some(&reg.healthy_sha()));
    let d = Daemon::start(&reg, DaemonOptions::default());
    for (model, needle) in [
        ("ghost", "does not exist"),
        ("empty", "not a GGUF file"),
        ("badmagic", "not a GGUF file"),
        ("truncated", "truncated"),
        ("flipped", "sha256 mismatch"),
        ("alien", "llama.cpp"),
        ("holey", "llama.cpp"),
    ] {
        let v = expect_error(&d, &["models", "load", model, "--verbose"], "E2001");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{model}: {v}"
        );
        assert_eq!(v["severity"], "Critical");
    }
    // Text form carries the code and the guide's next steps.
    let out = d.cli(&["models", "load", "flipped"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("E2001 MODEL_LOAD_FAILED: "), "{err}");
    assert!(err.contains("sha256sum"), "{err}");
    // The model being served is untouched by failed loads.
    assert!(d
        .cli(&["generate", "still here", "--max-tokens", "3"])
        .status
        .success());
    assert!(d.cli(&["health"]).status.success());
}

#[test]
fn e2001_not_enough_memory_says_both_numbers() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            extra: vec!["--memory-limit".into(), "100000".into()],
            ..Default::default()
        },
    );
    let v = expect_error(&d, &["models", "load", MODEL], "E2001");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("not enough memory")
            && detail.contains("needs about")
            && detail.contains("bytes available"),
        "{detail}"
    );
    // Health now reports the failure as critical with the cause.
    let out = d.cli(&["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("E5003 HEALTH_CHECK_FAILED"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn e2002_and_e2003_registry_lookups() {
    let reg = Registry::new();
    reg.add_corrupt("old", Corruption::UnsupportedVersion);
    let d = Daemon::start(&reg, DaemonOptions::default());
    let v = expect_error(&d, &["models", "load", "nosuch"], "E2002");
    assert!(v["detail"].as_str().unwrap().contains("known: tiny"), "{v}");
    expect_error(&d, &["generate", "x", "--model", "nosuch"], "E2002");
    let v = expect_error(&d, &["models", "load", "tiny@9.9.9"], "E2003");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("registry has version 1.0.0"),
        "{v}"
    );
    expect_error(&d, &["generate", "x", "--model", "tiny@2.0.0"], "E2003");
    let v = expect_error(&d, &["models", "load", "old"], "E2003");
    assert!(v["detail"].as_str().unwrap().contains("version 99"), "{v}");
    // The right version works.
    assert!(d
        .cli(&[
            "generate",
            "x",
            "--model",
            "tiny@1.0.0",
            "--max-tokens",
            "2"
        ])
        .status
        .success());
}

#[test]
fn a_request_naming_the_served_model_does_not_read_the_registry() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    // The registry becomes unreadable while `tiny` is served: requests naming it (as every
    // OpenAI client does) are still served by it; a request naming another model still goes
    // to the registry and fails there.
    std::fs::write(reg.path().join("manifest.json"), "{ not json").unwrap();
    for model in ["tiny", "tiny@1.0.0"] {
        let out = d.cli(&["generate", "x", "--model", model, "--max-tokens", "2"]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
    }
    let v = expect_error(&d, &["generate", "x", "--model", "nova"], "E2001");
    assert!(v["detail"].as_str().unwrap().contains("manifest"), "{v}");
    expect_error(&d, &["generate", "x", "--model", "tiny@2.0.0"], "E2001");
}

#[test]
fn e4002_e4003_prompt_errors() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    expect_error(&d, &["generate", "", "--max-tokens", "4"], "E4002");
    let long = "y".repeat(300);
    let v = expect_error(&d, &["generate", &long, "--max-tokens", "4"], "E4003");
    let detail = v["detail"].as_str().unwrap();
    let prompt_tokens: u32 = detail
        .strip_prefix("prompt is ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("detail names the prompt's token count: {detail}"));
    assert!(prompt_tokens > 300, "{detail}");
    assert!(detail.ends_with("context window is 256 tokens"), "{detail}");
    assert_eq!(v["severity"], "Warning");
    let v = expect_error(&d, &["generate", "short", "--max-tokens", "250"], "E4003");
    assert!(
        v["detail"].as_str().unwrap().contains("max_tokens 250"),
        "{v}"
    );
    let (status, body) = d.http_post(
        "/v1/generate",
        &format!(r#"{{"prompt":"{long}","max_tokens":1}}"#),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = d.http_post("/v1/generate", r#"{"prompt": 3}"#);
    assert_eq!(status, 422);
    assert!(body.contains("E1003"), "{body}");
}

#[test]
fn e4001_worker_killed_mid_request_then_restarted() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--parallel".into(), "1".into()],
            ..Default::default()
        },
    );
    let first = d.worker_pid();
    let reqs = d.requests_in_flight("kill", 220, 2.0);
    // SAFETY: killing the worker process we just looked up.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let results: Vec<_> = reqs.into_iter().map(|h| h.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s == 500).collect();
    assert!(
        !failed.is_empty(),
        "the in-flight requests fail: {results:?}"
    );
    for (_, body) in &failed {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "E4001", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("signal 9"), "{v}");
    }
    d.wait_ready();
    let second = d.worker_pid();
    assert_ne!(first, second, "a new worker serves");
    assert!(d
        .cli(&["generate", "after", "--max-tokens", "3"])
        .status
        .success());
    let text = d.scrape();
    assert_eq!(
        metric_value(&text, veritas_vocab::metrics::WORKER_RESTARTS_TOTAL, &[]),
        Some(1.0)
    );
}

#[test]
fn e5003_health_and_ready_without_a_model() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            ..Default::default()
        },
    );
    let out = d.cli(&["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("E5003 HEALTH_CHECK_FAILED"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.cli(&["ready"]).status.code(), Some(1));
    assert!(
        d.cli(&["live"]).status.success(),
        "live even without a model"
    );
    assert_eq!(d.http_get("/ready").0, 503);
    expect_error(&d, &["generate", "x"], "E5003");
    // Loading a model makes it ready.
    assert!(d.cli(&["models", "load", MODEL]).status.success());
    assert!(d.cli(&["ready"]).status.success());
}
