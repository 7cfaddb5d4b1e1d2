//! The raw loop answers the benchmark's line protocol on a generated model: greedy,
//! deterministic, the requested number of tokens, and it exits cleanly at end of input.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn answers_one_line_per_request_and_exits_at_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    veritas_fixtures::write_model_dir(
        dir.path(),
        "tiny",
        "1.0.0",
        &veritas_fixtures::TinyModelSpec::default(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_veritas-bench-raw"))
        .arg("--model")
        .arg(dir.path().join("tiny.gguf"))
        .args(["--threads", "1", "--ctx-size", "256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["ready"], true, "{line}");

    let mut ask = |max: u32| {
        writeln!(stdin, r#"{{"prompt":"Hello","max_tokens":{max}}}"#).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    for max in [1u64, 16, 128] {
        let a = ask(max as u32);
        let generated = a["generated"].as_u64().unwrap();
        // Greedy on this model never meets an end-of-generation token this early; if the
        // generator changes so that it does, the counts would no longer be comparable.
        assert_eq!(generated, max, "{a}");
        assert!(a["prompt_tokens"].as_u64().unwrap() >= 2, "{a}");
        assert!(a["us"].as_u64().unwrap() > 0, "{a}");
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
