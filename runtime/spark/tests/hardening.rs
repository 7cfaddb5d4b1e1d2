//! Runtime hardening (issue 9): no request can wedge or kill the worker, every bound is
//! enforced, every cause is named honestly. Real daemons on the generated model.

mod common;
use common::*;
use std::time::Duration;
use veritas_vocab::metrics as m;

fn code_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["code"].as_str().unwrap_or_default().to_string()
}

/// Finding 1: `max_tokens` is capped, its sum with the prompt cannot overflow, and the HTTP
/// body limit is the IPC frame limit, so no admitted request can break the worker channel.
#[test]
fn request_sizes_are_bounded_and_never_restart_the_worker() {
    let reg = Registry::new();
    // A 64 KiB frame limit keeps the near-limit prompt quick to tokenize in a debug build.
    const MAX: usize = 65536;
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--max-frame".into(), MAX.to_string()],
            ..Default::default()
        },
    );
    let pid = d.worker_pid();

    // The largest u32: refused with E4003 at once, the worker untouched.
    let (status, body) = d.http_post("/v1/generate", r#"{"prompt":"hi","max_tokens":4294967295}"#);
    assert_eq!(status, 422, "{body}");
    assert_eq!(code_of(&body), "E4003", "{body}");
    assert!(body.contains("4294967295"), "{body}");
    let v = expect_error(
        &d,
        &["generate", "hi", "--max-tokens", "4294967295"],
        "E4003",
    );
    assert!(
        v["detail"].as_str().unwrap().contains("context window"),
        "{v}"
    );

    // A body above the frame limit but below axum's default (2 MB): E1003, 413.
    let big = format!(
        r#"{{"prompt":"{}","max_tokens":1}}"#,
        "a".repeat(MAX + 1000)
    );
    let (status, body) = d.http_post("/v1/generate", &big);
    assert_eq!(status, 413, "{}", &body[..body.len().min(300)]);
    assert_eq!(code_of(&body), "E1003", "{body}");

    // A body just under the limit whose worker command is just over it: it reaches the
    // worker, which answers for this request alone (too many tokens for the window).
    let overhead = r#"{"prompt":"","max_tokens":1}"#.len();
    let prompt = "b".repeat(MAX - overhead - 4);
    let body = format!(r#"{{"prompt":"{prompt}","max_tokens":1}}"#);
    assert!(body.len() <= MAX);
    let (status, answer) = d.http_post("/v1/generate", &body);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(code_of(&answer), "E4003", "{answer}");

    // The worker never restarted and still serves.
    assert_eq!(d.worker_pid(), pid, "the worker was not restarted");
    assert_eq!(
        metric_value(&d.scrape(), m::WORKER_RESTARTS_TOTAL, &[]),
        Some(0.0)
    );
    assert!(d
        .cli(&["generate", "still fine", "--max-tokens", "3"])
        .status
        .success());
}

/// Finding 2: a restart re-verifies the file; a restart that fails leaves the runtime
/// `failed` with the cause (critical, not ready, requests get the cause's code), never
/// `ready` without a worker; a `models load` of a good file recovers.
#[test]
fn a_restart_reverifies_and_a_failed_restart_is_reported_as_failed() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let first = d.worker_pid();
    let path = reg.path().join(format!("{MODEL}.gguf"));
    let original = std::fs::read(&path).unwrap();
    // Another valid model takes the file's place; the manifest still pins the original.
    veritas_fixtures::write_gguf(
        &path,
        &veritas_fixtures::TinyModelSpec::default().with_seed(7),
    )
    .unwrap();
    // SAFETY: killing the worker process we just looked up.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let v = wait_for("model state failed", Duration::from_secs(60), || {
        let (_, v) = d.cli_json(&["health"]);
        (v["model_state"] == "failed").then_some(v)
    });
    assert_eq!(v["status"], "critical", "{v}");
    assert!(v["worker"]["pid"].is_null(), "{v}");
    assert_eq!(v["last_error"]["code"], "E2001", "{v}");
    assert!(
        v["last_error"]["detail"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{v}"
    );
    assert_eq!(d.cli(&["ready"]).status.code(), Some(1));
    let e = expect_error(&d, &["generate", "x", "--max-tokens", "2"], "E2001");
    assert!(e["detail"].as_str().unwrap().contains("sha256"), "{e}");
    assert_eq!(d.http_get("/ready").0, 503);

    // The operator restores the file and loads it again.
    let tmp = reg.path().join(".restore");
    std::fs::write(&tmp, &original).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(d.cli(&["models", "load", MODEL]).status.success());
    d.wait_ready();
    assert!(d
        .cli(&["generate", "back", "--max-tokens", "3"])
        .status
        .success());
}

/// Finding 6: a request that timed out stops decoding in the worker, so the slot it held
/// serves the next request at once instead of after the abandoned generation ends.
#[test]
fn a_timed_out_request_is_cancelled_in_the_worker() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: [
                "--parallel",
                "1",
                "--queue-size",
                "1",
                "--ctx-size",
                "32768",
                "--request-timeout",
                "1",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    // Tens of thousands of tokens: several seconds of decoding, far above the timeout.
    let started = std::time::Instant::now();
    let v = expect_error(&d, &["generate", "long", "--max-tokens", "32000"], "E1002");
    assert!(started.elapsed() >= Duration::from_secs(1), "{v}");
    // The one slot is free again: a short request is answered within its own timeout.
    let (ok, v) = d.cli_json(&["generate", "short", "--max-tokens", "2"]);
    assert!(ok, "the abandoned generation still held the worker: {v}");
    assert_eq!(v["generated_tokens"], 2, "{v}");
}

fn connect(d: &Daemon) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn call(
    s: &mut std::os::unix::net::UnixStream,
    id: u64,
    op: veritas_vocab::ipc::Op,
) -> serde_json::Value {
    use std::io::Write;
    s.write_all(&veritas_vocab::ipc::encode(&veritas_vocab::ipc::Request {
        id,
        op,
    }))
    .unwrap();
    read_answer(s)
}

fn read_answer(s: &mut std::os::unix::net::UnixStream) -> serde_json::Value {
    let payload = veritas_vocab::ipc::read_frame(s, u32::MAX)
        .unwrap()
        .expect("an answer frame");
    serde_json::from_slice(&payload).unwrap()
}

/// Finding 7: connections are capped (E3003 beyond the cap), an idle or stalled
/// connection is closed, and one connection cannot pipeline past its bound.
#[test]
fn ipc_connections_are_capped_timed_out_and_bounded() {
    use std::io::{Read, Write};
    use veritas_vocab::ipc::{GenerateRequest, Op};
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: [
                "--max-connections",
                "4",
                "--ipc-idle-timeout",
                "1",
                "--max-pipelined",
                "2",
                "--parallel",
                "1",
                "--queue-size",
                "2",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    // Four connections, each proven served.
    let mut held: Vec<_> = (0..4)
        .map(|i| {
            let mut s = connect(&d);
            let v = call(&mut s, i, Op::Live);
            assert!(v["outcome"]["ok"].is_object(), "{v}");
            s
        })
        .collect();
    // The fifth is served at once (within the idle timeout): the oldest idle connection is
    // closed to make room (issue 21 §3.10; a full socket refused it for as long as idle
    // connections stayed open).
    let mut fifth = connect(&d);
    let v = call(&mut fifth, 5, Op::Live);
    assert!(v["outcome"]["ok"].is_object(), "{v}");
    let mut rest = Vec::new();
    assert_eq!(
        held[0].read_to_end(&mut rest).unwrap(),
        0,
        "the oldest idle one is closed"
    );
    held.push(fifth);

    // The held connections sit idle: the daemon closes them after the idle timeout, and a
    // client that stops in the middle of a frame is closed too.
    held[1].write_all(b"VS\x01").unwrap();
    for s in held.iter_mut() {
        let mut rest = Vec::new();
        let n = s
            .read_to_end(&mut rest)
            .expect("closed by the daemon, not by our timeout");
        // At most an E1003 for the half frame.
        let _ = n;
    }
    drop(held);

    // A fresh connection is served again (the slots were released).
    let mut s = wait_for("a connection slot", Duration::from_secs(20), || {
        let mut s = connect(&d);
        let v = call(&mut s, 100, Op::Live);
        v["outcome"]["ok"].is_object().then_some(s)
    });
    // Forty generations written back to back on one connection: with two in flight at
    // most, the admission queue (capacity 3) never overflows.
    let n = 40u64;
    for id in 0..n {
        let req = veritas_vocab::ipc::Request {
            id: 1000 + id,
            op: Op::Generate(GenerateRequest {
                prompt: format!("pipelined {id}"),
                max_tokens: 8,
                model: None,
                ..Default::default()
            }),
        };
        s.write_all(&veritas_vocab::ipc::encode(&req)).unwrap();
    }
    for _ in 0..n {
        let v = read_answer(&mut s);
        assert!(
            v["outcome"]["ok"].is_object(),
            "a pipelined request failed: {v}"
        );
    }
    assert!(d.cli(&["health"]).status.success());
}

/// Finding 7: the daemon never deletes a regular file sitting at its socket path.
#[test]
fn bind_refuses_to_delete_a_regular_file_at_the_socket_path() {
    let reg = Registry::new();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("veritas-spark.sock");
    std::fs::write(&path, b"not a socket").unwrap();
    let mut d = Daemon::spawn_on(&reg, &DaemonOptions::default(), path.clone(), tmp);
    let status = wait_child(d.child.as_mut().unwrap(), Duration::from_secs(30));
    assert!(!status.success());
    assert!(d.log_text().contains("not a socket"), "{}", d.log_text());
    assert!(d.log_text().contains("E1001"), "{}", d.log_text());
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

/// Finding 4: E3003 only when the ceiling was the cause. A model llama.cpp rejects for
/// another reason stays E2001 under a generous ceiling and with the sandbox off.
#[test]
fn a_load_failure_under_a_ceiling_keeps_its_own_cause() {
    let reg = Registry::new();
    reg.add_corrupt(
        "alien",
        veritas_fixtures::corrupt::Corruption::UnknownArchitecture,
    );
    for sandbox in ["best-effort", "off"] {
        let d = Daemon::start(
            &reg,
            DaemonOptions {
                extra: ["--worker-memory-limit", "4000000000", "--sandbox", sandbox]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
        );
        let v = expect_error(&d, &["models", "load", "alien"], "E2001");
        assert!(
            v["detail"].as_str().unwrap().contains("llama.cpp"),
            "{sandbox}: {v}"
        );
    }
    // With the sandbox off no ceiling is applied: a tiny one cannot be the cause either.
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: ["--worker-memory-limit", "10000000", "--sandbox", "off"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    expect_error(&d, &["models", "load", "alien"], "E2001");
}

/// Finding 4: the E2001 memory check counts the KV caches of the contexts the runtime
/// will create, against what is available under the limit.
#[test]
fn the_memory_check_counts_the_kv_cache() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: None,
            // 2 contexts x 1M tokens x 2 layers x 64 wide x K and V in f16: about 1 GiB.
            extra: ["--ctx-size", "1000000", "--memory-limit", "300000000"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let v = expect_error(&d, &["models", "load", MODEL], "E2001");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("not enough memory") && detail.contains("KV cache"),
        "{detail}"
    );
    // The limit, not the machine's free memory, is what is short: the error names it.
    assert!(
        detail.contains("under the runtime's memory limit of 300000000 bytes"),
        "{detail}"
    );
}

/// Finding 8: the sha256 of a large model is computed off the async threads, so probes
/// answer while loads hash.
#[test]
fn hashing_large_models_does_not_stall_the_probes() {
    let reg = Registry::new();
    // A valid model followed by 256 MiB of sparse padding, pinned to a wrong sha256:
    // verification reads and hashes all of it, then refuses it.
    let big = reg.path().join("big.gguf");
    std::fs::copy(reg.path().join(format!("{MODEL}.gguf")), &big).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    reg.add_entry("big", "big.gguf", Some(&"0".repeat(64)));
    let d = Daemon::start(&reg, DaemonOptions::default());
    // More loads at once than the daemon has async threads.
    let n = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    let started = std::time::Instant::now();
    let loads: Vec<_> = (0..n)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                cli(
                    &socket,
                    &["models", "load", "big", "--json", "--timeout", "300"],
                )
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    while !loads.iter().all(|h| h.is_finished()) {
        let t = std::time::Instant::now();
        assert_eq!(d.http_get("/live").0, 200);
        worst = worst.max(t.elapsed());
    }
    let total = started.elapsed();
    for h in loads {
        let out = h.join().unwrap();
        assert!(stdout(&out).contains("sha256 mismatch"), "{}", stdout(&out));
    }
    assert!(
        worst * 4 < total,
        "/live took up to {worst:?} while {n} loads hashed for {total:?}"
    );
}

/// Finding 9: best-effort confinement with a layer missing is reported `degraded`, naming
/// the layer, not `healthy`.
#[test]
fn partial_best_effort_sandbox_is_degraded_and_names_the_missing_layer() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--sandbox".into(), "best-effort".into()],
            deny_userns: true,
            ..Default::default()
        },
    );
    let (_, v) = d.cli_json(&["health", "--verbose"]);
    assert_eq!(v["status"], "degraded", "{v}");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sandbox")
        .unwrap_or_else(|| panic!("a sandbox check: {v}"))
        .clone();
    assert_eq!(check["ok"], false);
    assert!(
        check["detail"].as_str().unwrap().contains("userns"),
        "{check}"
    );
    assert!(d.cli(&["ready"]).status.success(), "still serving");
}

/// Finding 3: a character the vocabulary cannot represent is E4002 naming it, and the
/// worker is untouched (no llama.cpp exception, no restart).
#[test]
fn an_out_of_vocabulary_character_is_e4002_and_the_worker_survives() {
    let reg = Registry::new();
    veritas_fixtures::write_gguf_without_byte_tokens(
        &reg.path().join("ascii.gguf"),
        &veritas_fixtures::TinyModelSpec::default(),
        "ascii",
    )
    .unwrap();
    reg.add_entry("ascii", "ascii.gguf", None);
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: Some("ascii"),
            ..Default::default()
        },
    );
    let pid = d.worker_pid();
    let (ok, v) = d.cli_json(&["generate", "plain ascii", "--max-tokens", "3"]);
    assert!(ok, "{v}");
    for _ in 0..2 {
        let v = expect_error(
            &d,
            &["generate", "café au lait", "--max-tokens", "3"],
            "E4002",
        );
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("'é'") && detail.contains("U+00E9"),
            "{detail}"
        );
    }
    assert_eq!(d.worker_pid(), pid, "the worker was not restarted");
    assert!(d.log_text().contains("no byte tokens"), "flagged at load");
    assert!(d
        .cli(&["generate", "still fine", "--max-tokens", "3"])
        .status
        .success());
}

/// Finding 11: `models load --verbose` shows the model's details; without it, one line.
#[test]
fn models_load_verbose_is_honoured() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let quiet = d.cli(&["models", "load", MODEL]);
    assert!(quiet.status.success());
    let loud = d.cli(&["models", "load", MODEL, "--verbose"]);
    assert!(loud.status.success());
    assert_eq!(stdout(&quiet).lines().count(), 1, "{}", stdout(&quiet));
    assert!(
        stdout(&loud).lines().count() > 1 && stdout(&loud).contains(&reg.healthy_sha()),
        "{}",
        stdout(&loud)
    );
}

/// Finding 10: without --ctx-size, a long-context model gets a bounded window (not its
/// training length), and the per-slot context reused across requests gives each request
/// a clean cache.
#[test]
fn contexts_are_bounded_by_default_and_reused_cleanly() {
    let reg = Registry::new();
    let spec = veritas_fixtures::TinyModelSpec {
        n_ctx_train: 131_072,
        ..Default::default()
    };
    veritas_fixtures::add_model(reg.path(), "long", "1.0.0", &spec).unwrap();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: Some("long"),
            extra: vec!["--parallel".into(), "1".into()],
            ..Default::default()
        },
    );
    let (_, v) = d.cli_json(&["health", "--verbose"]);
    assert_eq!(v["model"]["n_ctx"], 4096, "{v}");
    let gen = |p: &str| {
        let (ok, v) = d.cli_json(&["generate", p, "--max-tokens", "12"]);
        assert!(ok, "{v}");
        v["text"].as_str().unwrap().to_string()
    };
    let first = gen("alpha");
    let other = gen("a different and longer prompt");
    assert_ne!(first, other);
    assert_eq!(gen("alpha"), first, "the reused context was cleared");
}

/// Issue 21 §3.1: an answer larger than the daemon reads from the worker (a long-token
/// vocabulary: a few hundred tokens of 16 KiB make megabytes of text) is refused with E3003
/// naming max_tokens; nothing wedges: the admission permits come back, later requests run.
#[test]
fn an_answer_too_large_for_one_worker_event_is_e3003_and_nothing_wedges() {
    let reg = Registry::new();
    veritas_fixtures::write_gguf_with_long_tokens(
        &reg.path().join("long.gguf"),
        &veritas_fixtures::TinyModelSpec::default(),
        "long",
        16 * 1024,
    )
    .unwrap();
    reg.add_entry("long", "long.gguf", None);
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            model: Some("long"),
            extra: ["--parallel", "1", "--queue-size", "1", "--ctx-size", "256"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let pid = d.worker_pid();
    // More oversize answers than admission permits: a leaked permit would refuse the last.
    for _ in 0..3 {
        let v = expect_error(&d, &["generate", "a b", "--max-tokens", "200"], "E3003");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.contains("max_tokens") && detail.contains("bytes"),
            "{detail}"
        );
    }
    // Streamed, the same text goes out piece by piece, each piece one event: it is served.
    let (status, body) = d.http_post(
        "/v1/completions",
        r#"{"prompt":"a b","max_tokens":200,"stream":true}"#,
    );
    let tail = &body[body.len().saturating_sub(1000)..];
    assert_eq!(status, 200, "{tail}");
    assert!(body.len() > 1 << 20, "{} bytes streamed", body.len());
    assert!(
        !body.contains("E3003")
            && tail.contains("\"finish_reason\":\"length\"")
            && tail.contains("[DONE]"),
        "{tail}"
    );
    let (ok, v) = d.cli_json(&["generate", "a b", "--max-tokens", "2"]);
    assert!(ok, "{v}");
    assert_eq!(d.worker_pid(), pid, "refusing an answer needs no restart");
    assert!(d.cli(&["ready"]).status.success());
}

/// Issue 21 §3.1: a worker event the daemon cannot read (here a header announcing 4 GiB)
/// ends that worker: it is killed and restarted, its requests fail with E4001 naming the
/// cause, and the daemon serves again, instead of every later request getting E3003.
#[test]
fn an_unreadable_worker_event_restarts_the_worker_and_nothing_wedges() {
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: ["--parallel", "1", "--enable-fault-injection"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let first = d.worker_pid();
    let reqs = d.requests_in_flight("unreadable", 220, 2.0);
    assert!(d.cli(&["fault", "unreadable-event"]).status.success());
    let failed: Vec<serde_json::Value> = reqs
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|(s, _)| *s != 200)
        .map(|(_, b)| serde_json::from_str(&b).unwrap())
        .collect();
    assert!(!failed.is_empty());
    for v in &failed {
        assert_eq!(v["code"], "E4001", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("cannot read"), "{v}");
    }
    wait_for("a new worker", Duration::from_secs(60), || {
        (d.cli(&["ready"]).status.success() && d.worker_pid() != first).then_some(())
    });
    for i in 0..4 {
        let (ok, v) = d.cli_json(&["generate", &format!("after {i}"), "--max-tokens", "3"]);
        assert!(ok, "{v}");
    }
}

/// Issue 21 §3.4: a request whose HTTP client hangs up before the answer is counted (status
/// `cancelled`, with its duration), instead of vanishing from the metrics with its handler.
#[test]
fn requests_abandoned_by_their_http_client_are_counted_as_cancelled() {
    use std::io::Write as _;
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: vec!["--parallel".into(), "1".into()],
            ..Default::default()
        },
    );
    let body = r#"{"prompt":"abandon","max_tokens":220}"#;
    let send = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", d.http)).unwrap();
        write!(
            s,
            "POST /v1/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        s
    };
    // Hang up while requests are in flight (a fast machine may finish a batch first: retry).
    let mut n = 4;
    let hung_up = (0..8).any(|_| {
        let clients: Vec<_> = (0..n).map(|_| send()).collect();
        let seen = (0..2000).any(|_| {
            let inflight = metric_value(&d.scrape(), m::INFLIGHT_REQUESTS, &[]);
            inflight.is_some_and(|v| v >= 2.0)
        });
        drop(clients);
        n = (n * 2).min(32);
        seen
    });
    assert!(hung_up, "never saw requests in flight");
    let cancelled = wait_for(
        "cancelled requests counted",
        Duration::from_secs(60),
        || {
            metric_value(
                &d.scrape(),
                m::REQUESTS_TOTAL,
                &[(m::LABEL_STATUS, m::STATUS_CANCELLED)],
            )
            .filter(|v| *v >= 1.0)
        },
    );
    assert!(cancelled >= 1.0);
    wait_for("nothing left in flight", Duration::from_secs(60), || {
        metric_value(&d.scrape(), m::INFLIGHT_REQUESTS, &[]).filter(|v| *v == 0.0)
    });
}

/// Issue 21 §3.5: after a failed `models load` of another model, `model_state` still names
/// the model being served (it named the failed one as ready).
#[test]
fn model_state_names_the_served_model_after_a_failed_load_of_another() {
    let reg = Registry::new();
    reg.add_corrupt("broken", veritas_fixtures::corrupt::Corruption::BadMagic);
    let d = Daemon::start(&reg, DaemonOptions::default());
    let v = expect_error(&d, &["models", "load", "broken"], "E2001");
    assert!(v["detail"].as_str().is_some(), "{v}");
    let text = d.scrape();
    assert_eq!(
        metric_value(
            &text,
            m::MODEL_STATE,
            &[(m::LABEL_MODEL, MODEL), (m::LABEL_STATE, "ready")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with(m::MODEL_STATE) && l.contains("\"broken\"")),
        "{text}"
    );
}

/// Issue 21 §3.2: the HTTP fronts cap their connections (one more is answered 503 with
/// E3003 and closed at once) and give a client `--http-timeout` to send its headers or its
/// body: idle and trickling clients are closed, and the daemon serves again.
#[test]
fn http_connections_are_capped_and_slow_clients_time_out() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: ["--max-http-connections", "3", "--http-timeout", "1"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    for port in [d.http, d.metrics] {
        // Three clients that connect and send nothing hold every slot.
        let idle: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let (status, headers, body) = wait_for(
            "the fourth connection refused",
            Duration::from_secs(10),
            || {
                let r = http_with_headers(port, "GET", "/live", None);
                (r.0 == 503).then_some(r)
            },
        );
        assert_eq!(status, 503);
        assert!(headers.contains("Retry-After: 1"), "{headers}");
        assert!(
            body.contains("E3003") && body.contains("--max-http-connections"),
            "{body}"
        );
        // The idle ones are closed by the daemon within the header timeout (1 s), not by
        // this test's read timeout...
        let waiting = std::time::Instant::now();
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            let n = s.read_to_end(&mut rest).expect("closed by the daemon");
            assert!(
                n == 0 || String::from_utf8_lossy(&rest).contains("408"),
                "{rest:?}"
            );
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "{:?}",
            waiting.elapsed()
        );
        // ...and the front serves again.
        wait_for("a slot free again", Duration::from_secs(10), || {
            (http(
                port,
                "GET",
                if port == d.http { "/live" } else { "/metrics" },
                None,
            )
            .0 == 200)
                .then_some(())
        });
    }
    // A body announced and never finished is answered 408 within the timeout.
    let mut s = TcpStream::connect(("127.0.0.1", d.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\":"
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Issue 21 §3.2: a daemon out of file descriptors when its worker dies says so (E3003,
/// not E2001 blaming the model) and keeps retrying; once descriptors are free again the
/// worker is back and the daemon ready, with nobody touching it.
#[test]
fn a_restart_without_descriptors_is_e3003_and_recovers_when_they_are_free() {
    use std::net::TcpStream;
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: ["--http-timeout", "120", "--max-http-connections", "1024"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let worker = d.worker_pid();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .unwrap()
            .count()
    };
    // The daemon's open-files limit: a few above what it holds now.
    let limit = open_fds() + 8;
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &d.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .expect("prlimit (util-linux)");
    assert!(out.status.success(), "{}", stderr(&out));
    // Idle HTTP connections take the rest.
    let mut held = Vec::new();
    wait_for(
        "the daemon's descriptors exhausted",
        Duration::from_secs(20),
        || {
            held.push(TcpStream::connect(("127.0.0.1", d.http)).unwrap());
            (open_fds() >= limit).then_some(())
        },
    );
    // SAFETY: signalling the worker this test's daemon started.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    wait_for(
        "a restart refused for want of descriptors",
        Duration::from_secs(20),
        || {
            let log = d.log_text();
            log.lines()
                .find(|l| l.contains("restart failed") && l.contains("E3003"))
                .map(str::to_string)
        },
    );
    assert!(
        !d.log_text()
            .lines()
            .any(|l| l.contains("restart") && l.contains("E2001")),
        "blamed the model: {}",
        d.log_text()
    );
    drop(held);
    wait_for("ready again", Duration::from_secs(30), || {
        (http(d.http, "GET", "/ready", None).0 == 200).then_some(())
    });
    assert_ne!(d.worker_pid(), worker);
}

/// Issue 21 §3.10: at the connection cap a new client is refused (E3003) only when every
/// connection has a request in flight; once they are idle it is admitted at once.
#[test]
fn a_full_runtime_socket_refuses_only_when_every_connection_is_busy() {
    use veritas_vocab::ipc::{GenerateRequest, Op};
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: [
                "--max-connections",
                "2",
                "--ipc-idle-timeout",
                "60",
                "--parallel",
                "1",
                "--queue-size",
                "2",
                "--ctx-size",
                "32768",
                "--request-timeout",
                "3",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        },
    );
    let long = |id| veritas_vocab::ipc::Request {
        id,
        op: Op::Generate(GenerateRequest {
            prompt: "long".into(),
            max_tokens: 30000,
            ..Default::default()
        }),
    };
    let mut busy: Vec<_> = (0..2)
        .map(|i| {
            use std::io::Write;
            let mut s = connect(&d);
            s.write_all(&veritas_vocab::ipc::encode(&long(i))).unwrap();
            s
        })
        .collect();
    wait_for("both requests in flight", Duration::from_secs(20), || {
        metric_value(&d.scrape(), m::INFLIGHT_REQUESTS, &[]).filter(|v| *v >= 2.0)
    });
    let mut third = connect(&d);
    let v = read_answer(&mut third);
    assert_eq!(v["outcome"]["error"]["code"], "E3003", "{v}");
    assert!(
        v["outcome"]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("too many connections"),
        "{v}"
    );
    // Their answers (the request timeout) leave both connections idle and open.
    for s in busy.iter_mut() {
        let v = read_answer(s);
        assert_eq!(v["outcome"]["error"]["code"], "E1002", "{v}");
    }
    let mut fourth = connect(&d);
    let v = call(&mut fourth, 9, Op::Live);
    assert!(v["outcome"]["ok"].is_object(), "{v}");
}

/// Issue 21 §3.11: a FIFO put where manifest.json was is refused at once (E2002 saying what
/// it is); reading it would block the daemon's async thread and every probe behind it.
#[test]
fn a_fifo_in_place_of_the_manifest_is_refused_without_stalling_the_daemon() {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let manifest = reg.path().join("manifest.json");
    std::fs::remove_file(&manifest).unwrap();
    let c = std::ffi::CString::new(manifest.to_str().unwrap()).unwrap();
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let started = std::time::Instant::now();
    let v = expect_error(&d, &["models", "list"], "E2002");
    assert!(
        v["detail"].as_str().unwrap().contains("not a regular file"),
        "{v}"
    );
    let (status, body) = http(d.http, "GET", "/v1/models", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http(d.http, "GET", "/live", None).0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command name (in parentheses, which may hold spaces): state, ppid.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Starts a daemon whose workers each hold `hold_secs` before loading, asks it to load `model`,
/// and SIGKILLs the serving worker while the new one holds; returns once the runtime says
/// not ready (within 3 s, well inside the hold), with the killed pid and the load's outcome.
fn kill_the_served_worker_during_a_load(
    reg: &Registry,
    model: &'static str,
    hold_secs: &str,
) -> (Daemon, u32, std::thread::JoinHandle<std::process::Output>) {
    let d = Daemon::start(
        reg,
        DaemonOptions {
            extra: ["--enable-fault-injection", "--fault-slow-load", hold_secs]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let served = d.worker_pid();
    let socket = d.socket.clone();
    let loader = std::thread::spawn(move || cli(&socket, &["models", "load", model, "--json"]));
    wait_for("the second worker", Duration::from_secs(10), || {
        (children(d.pid()).len() >= 2).then_some(())
    });
    // SAFETY: a signal to the worker this test's daemon started.
    assert_eq!(unsafe { libc::kill(served as i32, libc::SIGKILL) }, 0);
    wait_for("not ready", Duration::from_secs(3), || {
        (!d.cli(&["ready"]).status.success()).then_some(())
    });
    (d, served, loader)
}

/// Issue 21 §3.11: the serving worker dying while another model loads is taken at once, not
/// when the load ends (the runtime said ready, with no worker behind it, until then); the
/// load, once done, serves.
#[test]
fn the_serving_worker_dying_during_another_load_is_not_ready_at_once() {
    let reg = Registry::new();
    reg.add_healthy("other", "1.0.0", 7);
    // Each worker waits 6 s before loading: the second load is in progress long enough.
    let (d, _, loader) = kill_the_served_worker_during_a_load(&reg, "other", "6");
    let loaded = loader.join().unwrap();
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(d.cli(&["ready"]).status.success());
    let (_, health) = d.cli_json(&["health", "--verbose"]);
    assert_eq!(health["model"]["name"], "other", "{health}");
}

/// The same race with a load that fails: the served model, whose worker died meanwhile, is
/// restarted once the load has failed, and serves again.
#[test]
fn the_served_model_is_restarted_when_the_load_it_waited_for_fails() {
    let reg = Registry::new();
    reg.add_corrupt(
        "alien",
        veritas_fixtures::corrupt::Corruption::UnknownArchitecture,
    );
    let (d, served, loader) = kill_the_served_worker_during_a_load(&reg, "alien", "4");
    let failed = loader.join().unwrap();
    assert!(!failed.status.success(), "{}", stdout(&failed));
    assert!(stdout(&failed).contains("E2001"), "{}", stdout(&failed));
    // The restart waits out its backoff and the 4 s hold before it loads.
    wait_for("ready again", Duration::from_secs(30), || {
        d.cli(&["ready"]).status.success().then_some(())
    });
    let (_, health) = d.cli_json(&["health", "--verbose"]);
    assert_eq!(health["model"]["name"], MODEL, "{health}");
    assert_ne!(d.worker_pid(), served);
    assert!(d
        .cli(&["generate", "back", "--max-tokens", "3"])
        .status
        .success());
}
