//! The OpenAI-compatible endpoints driven by the official `openai` Python client (PyPI), the
//! client most users send requests with: `tests/openai_client.py` against a real daemon on
//! a generated model, on loopback. Needs the client: `VERITAS_OPENAI_PYTHON` names a python
//! that imports it (`ci/openai/python-client.sh` makes one; `.ci/run` runs this test).

mod common;

use common::*;

#[test]
#[ignore = "needs VERITAS_OPENAI_PYTHON, a python with the openai package (ci/openai/python-client.sh)"]
fn the_official_python_client_gets_what_it_expects() {
    let python = std::env::var("VERITAS_OPENAI_PYTHON").expect(
        "VERITAS_OPENAI_PYTHON names a python that imports openai (ci/openai/python-client.sh)",
    );
    let reg = Registry::new();
    let d = Daemon::start(
        &reg,
        DaemonOptions {
            extra: ["--ctx-size", "256", "--served-model-name", "gpt-tiny"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = std::process::Command::new(&python)
        .args([
            script,
            &format!("http://127.0.0.1:{}/v1", d.http),
            MODEL,
            "gpt-tiny",
        ])
        .output()
        .expect("run the python client");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let seen: serde_json::Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(seen["errors"], "ok", "{seen}");
    assert!(seen["sampled_distinct"].as_u64() > Some(1), "{seen}");
}
