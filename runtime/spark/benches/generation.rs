//! Generation tokens/s through the daemon (socket → confined worker process → llama.cpp)
//! against the same decode loop called in-process (target ratio ≥ 0.90), and with the
//! sandbox on against off (target ≥ 0.95), all measured in the same run.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use veritas_vocab::ipc::{self, GenerateRequest, Op, Outcome, Reply, Request, Response};

const PROMPT: &str = "The quick brown fox";
const TOKENS: u32 = 128;

fn via_daemon(s: &mut UnixStream) -> u32 {
    let op = Op::Generate(GenerateRequest {
        prompt: PROMPT.into(),
        max_tokens: TOKENS,
        model: None,
        ..Default::default()
    });
    ipc::write_frame(s, &Request { id: 1, op }).unwrap();
    let payload = ipc::read_frame(s, u32::MAX).unwrap().unwrap();
    match ipc::decode::<Response>(&payload).unwrap().outcome {
        Outcome::Ok(Reply::Generated(g)) => g.generated_tokens,
        other => panic!("generation failed: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let reg = Registry::new();
    let start = |sandbox: &str| {
        let extra = ["--threads", "1", "--sandbox", sandbox]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Daemon::start(
            &reg,
            DaemonOptions {
                extra,
                ..Default::default()
            },
        )
    };
    let d = start("required");
    let unconfined = start("off");
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut s_off = UnixStream::connect(&unconfined.socket).unwrap();
    let engine = veritas_engine::Engine::load(
        &reg.path().join("tiny.gguf"),
        veritas_engine::EngineOptions {
            n_ctx: 0,
            threads: 1,
        },
    )
    .unwrap();
    assert_eq!(via_daemon(&mut s), TOKENS);

    let mut g = c.benchmark_group("generation");
    g.throughput(Throughput::Elements(TOKENS as u64));
    g.sample_size(20);
    g.bench_function("daemon", |b| b.iter(|| via_daemon(&mut s)));
    g.bench_function("direct_llama_cpp", |b| {
        b.iter(|| engine.generate(PROMPT, TOKENS).unwrap().generated_tokens)
    });
    g.bench_function("daemon_sandbox_off", |b| b.iter(|| via_daemon(&mut s_off)));
    g.finish();

    // Interleaved runs so both sides see the same machine load.
    let (mut daemon_s, mut direct_s, mut off_s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        let n = via_daemon(&mut s_off);
        off_s.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let n = via_daemon(&mut s);
        daemon_s.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let n = engine.generate(PROMPT, TOKENS).unwrap().generated_tokens;
        direct_s.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b, off) = (
        median(&mut daemon_s),
        median(&mut direct_s),
        median(&mut off_s),
    );
    println!(
        "generation tokens/s: daemon {a:.0}, direct {b:.0}, ratio {:.3} (target >= 0.90)",
        a / b
    );
    println!("generation tokens/s: sandbox on {a:.0}, sandbox off {off:.0}, ratio {:.3} (target >= 0.95)", a / off);
}

criterion_group!(benches, bench);
criterion_main!(benches);
