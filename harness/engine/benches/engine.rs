//! Engine overhead per step: dispatching a step through the step library (a `note`, which does
//! no I/O, so what is measured is the engine itself), checking a command's output against an
//! expectation, and parsing + validating a scenario file.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;
use std::time::Duration;
use veritas_harness::context::Context;
use veritas_harness::expect::{check, CommandOutput};
use veritas_scenario::{Expect, NoteStep, Step};

fn engine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ctx = Context::new("BENCH", PathBuf::from("/bin/true"), None, None, 1).unwrap();
    ctx.vars.insert("spark.socket".into(), "/tmp/x.sock".into());
    let step = Step::Note(NoteStep {
        text: "socket ${spark.socket} in ${work}".into(),
    });
    c.bench_function("step_dispatch_note", |b| {
        b.iter(|| {
            rt.block_on(veritas_harness::execute(
                &mut ctx,
                &step,
                Duration::from_secs(1),
                Duration::from_secs(1),
            ))
            .unwrap()
        })
    });

    let expect = Expect {
        exit: Some(veritas_scenario::ExitExpect::Code(1)),
        code: Some("E2001".into()),
        output: vec!["sha256 mismatch".into(), "(?i)SHA256SUM".into()],
        not_output: vec!["panicked".into()],
        words: Vec::new(),
        not_words: Vec::new(),
        json: Default::default(),
        snapshot: None,
        reason: None,
    };
    let out = CommandOutput {
        exit: Some(1),
        stdout: String::new(),
        stderr: "E2001 MODEL_LOAD_FAILED: sha256 mismatch for tiny.gguf\n\nNext steps:\n  sha256sum /models/tiny.gguf\n".repeat(4),
        timed_out: false,
    };
    let red = ctx.redactions();
    c.bench_function("expect_check", |b| {
        b.iter(|| assert!(check(&expect, &out, &red).is_empty()))
    });

    let text =
        std::fs::read_to_string(veritas_harness::repo_root().join("scenarios/E2001.yaml")).unwrap();
    c.bench_function("scenario_parse_validate", |b| {
        b.iter(|| veritas_scenario::parse(&text, Some("E2001")).unwrap())
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
