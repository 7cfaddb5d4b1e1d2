//! Decision throughput: one `decide` call on a canary mid-promotion with an analysis sample
//! (the most work a pass does), and a whole promotion history through the in-memory model.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use veritas_controller::decide::{analysis_due, decide};
use veritas_controller::sim::{healthy, spec, World};
use veritas_crds::Step;

fn bench(c: &mut Criterion) {
    let mut s = spec(10);
    s.promotion.steps = vec![
        Step {
            weight: 30,
            pause: None,
        },
        Step {
            weight: 60,
            pause: None,
        },
    ];
    let mut w = World::new(s);
    w.settle(5);
    w.advance(30);
    w.pass(Some(healthy()));
    w.advance(30);
    let obs = w.observe(Some(healthy()));
    c.bench_function("decide/one pass with analysis", |b| {
        b.iter(|| {
            decide(
                "spark",
                black_box(&w.spec),
                w.status.as_ref(),
                black_box(&obs),
            )
        })
    });
    let idle = w.observe(None);
    c.bench_function("decide/one idle pass", |b| {
        b.iter(|| decide("spark", &w.spec, w.status.as_ref(), black_box(&idle)))
    });
    c.bench_function("decide/full promotion 10%->100% (model)", |b| {
        b.iter(|| {
            let mut w = World::new(w.spec.clone());
            w.settle(5);
            while w
                .status
                .as_ref()
                .is_some_and(|s| s.phase != veritas_crds::Phase::Succeeded)
            {
                w.advance(30);
                let due = analysis_due(&w.spec, w.status.as_ref(), w.now);
                w.pass(due.then(healthy));
            }
            black_box(w.passes)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
