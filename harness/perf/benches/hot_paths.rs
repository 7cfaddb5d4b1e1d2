//! Instruction counts (callgrind, through gungraun) of the hot paths: IPC frame encode and
//! decode, metrics rendering, request admission, the controller's decision, and a scenario
//! step's dispatch. Each benchmark runs once; its setup is not counted.
//!
//! `ci/perf/check.sh` compares the counts with `ci/perf/baseline.json`.

use gungraun::{library_benchmark, library_benchmark_group, main};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use veritas_vocab::ipc::{self, GenerateRequest, Op, Request};

// The daemon is a binary crate: its metrics and admission modules are compiled in here as
// they are in the daemon (both depend only on veritas-vocab, prometheus and tokio).
#[allow(dead_code, unused_imports)]
#[path = "../../../runtime/spark/src/daemon/admission.rs"]
mod admission;
#[allow(dead_code, unused_imports)]
#[path = "../../../runtime/spark/src/daemon/metrics.rs"]
mod metrics;

fn generate_request() -> Request {
    Request {
        id: 42,
        op: Op::Generate(GenerateRequest {
            prompt: "Explain the canary rollout of the runtime in one short paragraph.".into(),
            max_tokens: 128,
            model: Some("tiny@1.0.0".into()),
            ..Default::default()
        }),
    }
}

fn encoded_request() -> Vec<u8> {
    ipc::encode(&generate_request())
}

#[library_benchmark]
#[bench::generate(generate_request())]
fn ipc_encode(req: Request) -> Vec<u8> {
    black_box(ipc::encode(black_box(&req)))
}

#[library_benchmark]
#[bench::generate(encoded_request())]
fn ipc_decode(frame: Vec<u8>) -> Request {
    let payload = ipc::read_frame(&mut black_box(&frame[..]), ipc::DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    black_box(ipc::decode::<Request>(&payload).unwrap())
}

/// A daemon's metrics after some traffic: successes in several buckets, a few failures.
fn busy_metrics() -> metrics::Metrics {
    let m = metrics::Metrics::new("stable");
    for i in 0..200u32 {
        m.record_success(0.001 * f64::from(i % 40), 5, 16);
    }
    for code in [
        veritas_vocab::ErrorCode::ResourceLimitExceeded,
        veritas_vocab::ErrorCode::ContextOverflow,
    ] {
        m.record_failure(0.002, code);
    }
    m.set_model_state("tiny", veritas_vocab::ipc::ModelState::Ready);
    m
}

#[library_benchmark]
#[bench::after_traffic(busy_metrics())]
fn metrics_render(m: metrics::Metrics) -> String {
    black_box(m.render())
}

fn permits() -> (Arc<tokio::sync::Semaphore>, admission::Bound) {
    let bound = admission::Bound {
        parallel: 2,
        queue_size: 16,
    };
    (
        Arc::new(tokio::sync::Semaphore::new(bound.capacity() as usize)),
        bound,
    )
}

// One request admitted and its permit released, as every request does.
#[library_benchmark]
#[bench::free_slot(permits())]
fn request_admission(p: (Arc<tokio::sync::Semaphore>, admission::Bound)) -> bool {
    let permit = admission::admit(black_box(&p.0), false, p.1);
    black_box(permit.is_ok())
}

// A canary mid-promotion with an analysis sample: the most work one pass decides.
fn canary_mid_promotion() -> (
    veritas_controller::sim::World,
    veritas_controller::decide::Observed,
) {
    use veritas_controller::sim::{healthy, spec, World};
    let mut s = spec(10);
    s.promotion.steps = vec![
        veritas_crds::Step {
            weight: 30,
            pause: None,
        },
        veritas_crds::Step {
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
    (w, obs)
}

#[library_benchmark]
#[bench::analysis_pass(canary_mid_promotion())]
fn analysis_decision(
    input: (
        veritas_controller::sim::World,
        veritas_controller::decide::Observed,
    ),
) -> veritas_controller::decide::Decision {
    let (w, obs) = input;
    black_box(veritas_controller::decide::decide(
        "spark",
        black_box(&w.spec),
        w.status.as_ref(),
        black_box(&obs),
    ))
}

// A `note` step (no I/O): what is counted is the step library dispatch and substitution.
fn note_step() -> (
    tokio::runtime::Runtime,
    veritas_harness::context::Context,
    veritas_scenario::Step,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ctx =
        veritas_harness::context::Context::new("BENCH", PathBuf::from("/bin/true"), None, None, 1)
            .unwrap();
    ctx.vars
        .insert("spark.socket".into(), "/tmp/veritas-bench.sock".into());
    let step = veritas_scenario::Step::Note(veritas_scenario::NoteStep {
        text: "socket ${spark.socket} in ${work}".into(),
    });
    (rt, ctx, step)
}

#[library_benchmark]
#[bench::note(note_step())]
fn scenario_step_dispatch(
    input: (
        tokio::runtime::Runtime,
        veritas_harness::context::Context,
        veritas_scenario::Step,
    ),
) -> bool {
    let (rt, mut ctx, step) = input;
    let out = rt.block_on(veritas_harness::execute(
        &mut ctx,
        &step,
        Duration::from_secs(1),
        Duration::from_secs(1),
    ));
    black_box(out.is_ok())
}

library_benchmark_group!(
    name = runtime;
    benchmarks = ipc_encode, ipc_decode, metrics_render, request_admission
);
library_benchmark_group!(
    name = control;
    benchmarks = analysis_decision, scenario_step_dispatch
);
main!(library_benchmark_groups = runtime, control);
