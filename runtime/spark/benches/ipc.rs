//! IPC health round trip on the runtime's Unix socket (target: p50 under 30 µs), beside a
//! liveness round trip (the same path, the smallest answer).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use veritas_vocab::ipc::{self, Op, Request};

/// Answers are read through a buffer: one `recv` for a frame that arrived whole.
type Conn = BufReader<UnixStream>;

fn call(s: &mut Conn, id: u64, op: Op) {
    ipc::write_frame(s.get_mut(), &Request { id, op }).unwrap();
    let payload = ipc::read_frame(s, u32::MAX).unwrap().unwrap();
    assert!(payload.len() > 10);
}

fn round_trip(s: &mut Conn, id: u64) {
    call(s, id, Op::Health { verbose: false })
}

/// p50 and p99 of `n` individual calls, µs (criterion's mean does not show percentiles).
fn percentiles(n: u64, mut one: impl FnMut(u64)) -> (f64, f64) {
    let mut samples: Vec<u128> = (0..n)
        .map(|i| {
            let t = Instant::now();
            one(i);
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    (pct(0.50), pct(0.99))
}

fn bench(c: &mut Criterion) {
    let reg = Registry::new();
    let d = Daemon::start(&reg, DaemonOptions::default());
    let mut s = BufReader::new(UnixStream::connect(&d.socket).unwrap());
    let mut id = 0;
    c.bench_function("ipc_health_round_trip", |b| {
        b.iter(|| {
            id += 1;
            round_trip(&mut s, id)
        })
    });
    let (p50, p99) = percentiles(20_000, |i| round_trip(&mut s, 1_000_000 + i));
    println!(
        "ipc_health_round_trip over 20000 calls: p50 {p50:.1} µs, p99 {p99:.1} µs (target p50 < 30 µs)"
    );
    // The same path with the smallest answer: what the health report itself costs is the
    // difference.
    let (p50, p99) = percentiles(20_000, |i| call(&mut s, 2_000_000 + i, Op::Live));
    println!("ipc_live_round_trip over 20000 calls: p50 {p50:.1} µs, p99 {p99:.1} µs");
}

criterion_group!(benches, bench);
criterion_main!(benches);
