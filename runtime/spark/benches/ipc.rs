//! IPC health round trip on the runtime's Unix socket (target: p50 under 50 µs).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use std::os::unix::net::UnixStream;
use std::time::Instant;
use veritas_vocab::ipc::{self, Op, Request};

fn round_trip(s: &mut UnixStream, id: u64) {
    ipc::write_frame(
        s,
        &Request {
            id,
            op: Op::Health { verbose: false },
        },
    )
    .unwrap();
    let payload = ipc::read_frame(s, u32::MAX).unwrap().unwrap();
    assert!(payload.len() > 10);
}

fn bench(c: &mut Criterion) {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut id = 0;
    c.bench_function("ipc_health_round_trip", |b| {
        b.iter(|| {
            id += 1;
            round_trip(&mut s, id)
        })
    });
    // Percentiles over individual round trips, which criterion's mean does not show.
    let mut samples: Vec<u128> = (0..20_000)
        .map(|i| {
            let t = Instant::now();
            round_trip(&mut s, 1_000_000 + i);
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    println!(
        "ipc_health_round_trip over {} calls: p50 {:.1} µs, p99 {:.1} µs (target p50 < 50 µs)",
        samples.len(),
        pct(0.50),
        pct(0.99)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
