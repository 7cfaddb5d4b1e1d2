//! Real llama.cpp inference (the worker's `veritas_engine::Engine`) under every sandbox layer.
//!
//! This is what keeps the seccomp allow-list and the Landlock read paths honest: if a
//! llama.cpp update starts using a syscall or a file the sandbox forbids, the confined run dies
//! of SIGSYS or fails to load, and this test says which syscall.
//!
//! `harness = false`: `confine()` needs a single-threaded process, and libtest runs tests on
//! worker threads, so the test re-executes this binary as a plain child. It speaks enough of
//! libtest's command line for `cargo test` and `cargo nextest` (`--list --format terse`).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use veritas_sandbox::{confine, describe_violation, SandboxConfig, SandboxMode};

const NAME: &str = "llama_inference_under_full_confinement";
const CHILD_ENV: &str = "VERITAS_SANDBOX_LLAMA_CHILD";
const PROMPT: &str = "hello sandbox";
const MAX_TOKENS: u32 = 16;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("{NAME}: test");
        }
        return;
    }
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode, Path::new(&args[0]));
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let exact = args.iter().any(|a| a == "--exact");
    if !filters.is_empty()
        && !filters.iter().any(|f| {
            if exact {
                f.as_str() == NAME
            } else {
                NAME.contains(f.as_str())
            }
        })
    {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n");
        return;
    }
    println!("\nrunning 1 test");
    let outcome = std::panic::catch_unwind(parent);
    match outcome {
        Ok(()) => println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"),
        Err(_) => {
            println!("test {NAME} ... FAILED\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n");
            std::process::exit(101);
        }
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = dir.path().join("tiny.gguf");
    veritas_fixtures::write_gguf(&model, &veritas_fixtures::TinyModelSpec::default())
        .expect("write fixture model");

    let run = |mode: &str| -> Value {
        let out = Command::new(std::env::current_exe().unwrap())
            .arg(&model)
            .env(CHILD_ENV, mode)
            .output()
            .expect("spawn child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(v) = describe_violation(&out.status, &stderr) {
            panic!("llama.cpp inference under the sandbox ({mode}) hit a seccomp violation: {v}\n{stderr}");
        }
        assert!(
            out.status.success(),
            "{mode} child failed: {:?}\n{stderr}",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };

    let free = run("off");
    let confined = run("required");
    for layer in confined["report"]["layers"].as_array().unwrap() {
        assert_eq!(layer["state"], "active", "{confined}");
    }
    assert!(
        confined["generated_tokens"].as_u64().unwrap() > 0,
        "{confined}"
    );
    assert_eq!(
        confined["text"], free["text"],
        "greedy output must not change under the sandbox"
    );
    eprintln!("confined generation: {}", confined["text"]);
}

fn child(mode: &str, model: &Path) {
    let mode: SandboxMode = mode.parse().unwrap();
    let mut cfg = SandboxConfig::new(mode, model.parent().unwrap(), -1);
    cfg.memory_limit_bytes = Some(2 << 30);
    let report = confine(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let opts = veritas_engine::EngineOptions {
        n_ctx: 128,
        threads: 2,
    };
    let engine =
        veritas_engine::Engine::load(model, opts).unwrap_or_else(|e| panic!("load: {e:?}"));
    let g = engine
        .generate(PROMPT, MAX_TOKENS)
        .unwrap_or_else(|e| panic!("generate: {e:?}"));
    println!(
        "{}",
        json!({ "report": report, "text": g.text, "generated_tokens": g.generated_tokens })
    );
}
