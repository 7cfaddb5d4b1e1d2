//! The inference worker: a child process of the daemon that owns llama.cpp.
//!
//! Whatever a model or a prompt does to llama.cpp (an abort, a crash) ends this process,
//! never the daemon: the daemon answers the in-flight requests with `E4001` and starts a
//! new worker. Commands and events travel as IPC frames over an inherited socketpair.

use crate::cli::WorkerArgs;
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use veritas_engine::{Engine, EngineOptions};
use veritas_sandbox::{SandboxConfig, SandboxMode};
use veritas_vocab::ipc::{self, FaultKind, WorkerCommand, WorkerEvent};
use veritas_vocab::{ErrorBody, ErrorCode};

/// Exit status of a worker whose model failed to load (it has reported why).
pub const EXIT_LOAD_FAILED: i32 = 3;

/// The sandbox the worker applies to itself, from its arguments.
pub fn sandbox_config(args: &WorkerArgs) -> Result<SandboxConfig, String> {
    let mode: SandboxMode = args
        .sandbox
        .parse()
        .map_err(|e| format!("--sandbox: {e}"))?;
    let mut cfg = SandboxConfig::new(mode, &args.model_dir, args.ipc_fd);
    cfg.layers = args
        .sandbox_layers
        .parse()
        .map_err(|e| format!("--sandbox-layers: {e}"))?;
    cfg.memory_limit_bytes = args.memory_limit;
    Ok(cfg)
}

pub fn run(args: WorkerArgs) -> i32 {
    // Confinement comes first, while this process is still single-threaded.
    let sandbox = sandbox_config(&args).map(|cfg| {
        let applied = veritas_sandbox::confine(&cfg);
        (cfg, applied)
    });
    // SAFETY: the daemon hands us this descriptor and nothing else in the process owns it.
    let stream = unsafe { UnixStream::from_raw_fd(args.ipc_fd) };
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone ipc stream")));
    let send = {
        let writer = writer.clone();
        move |ev: &WorkerEvent| {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            // A write error means the daemon is gone; the read loop will see EOF and exit.
            let _ = ipc::write_frame(&mut *w, ev);
        }
    };
    let (sandbox_cfg, report) = match sandbox {
        Ok((cfg, Ok(report))) => (cfg, report),
        Ok((_, Err(e))) => {
            let error = ErrorBody::new(ErrorCode::SandboxInitFailed, e.to_string());
            send(&WorkerEvent::LoadFailed { error });
            return EXIT_LOAD_FAILED;
        }
        Err(e) => {
            let error = ErrorBody::new(ErrorCode::SandboxInitFailed, e);
            send(&WorkerEvent::LoadFailed { error });
            return EXIT_LOAD_FAILED;
        }
    };
    let opts = EngineOptions {
        n_ctx: args.ctx_size,
        threads: args.threads as i32,
    };
    let engine = match Engine::load(&args.model_path, opts) {
        Ok(e) => Arc::new(e),
        Err(mut error) => {
            if let Some(limit) = args.memory_limit {
                // Under RLIMIT_AS, llama.cpp reports a failed allocation as a failed load.
                let size = std::fs::metadata(&args.model_path)
                    .map(|m| m.len())
                    .unwrap_or(0);
                error = ErrorBody::new(
                    ErrorCode::ResourceLimitExceeded,
                    format!(
                        "llama.cpp could not load {} (model file {size} bytes) within the worker's memory ceiling of {limit} bytes",
                        args.model_path.display()
                    ),
                );
            }
            send(&WorkerEvent::LoadFailed { error });
            return EXIT_LOAD_FAILED;
        }
    };
    send(&WorkerEvent::Ready {
        n_ctx: engine.n_ctx(),
        n_vocab: engine.n_vocab(),
        sandbox: serde_json::to_value(&report).ok(),
    });

    let (jobs_tx, jobs_rx) = mpsc::channel::<(u64, String, u32)>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let pool: Vec<_> = (0..args.parallel.max(1))
        .map(|_| {
            let jobs_rx = jobs_rx.clone();
            let engine = engine.clone();
            let send = send.clone();
            let memory_limit = args.memory_limit;
            std::thread::spawn(move || loop {
                let job = jobs_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((id, prompt, max_tokens)) = job else {
                    return;
                };
                let ev = match within_ceiling(&engine, memory_limit)
                    .and_then(|()| engine.generate(&prompt, max_tokens))
                {
                    Ok(g) => WorkerEvent::Generated {
                        id,
                        text: g.text,
                        prompt_tokens: g.prompt_tokens,
                        generated_tokens: g.generated_tokens,
                        finish_reason: g.finish_reason.to_string(),
                    },
                    Err(error) => WorkerEvent::Failed { id, error },
                };
                send(&ev);
            })
        })
        .collect();

    let mut reader = stream;
    // Ends when the daemon goes away (end of stream or a broken frame) or says Shutdown;
    // queued work is finished either way.
    while let Ok(Some(payload)) = ipc::read_frame(&mut reader, args.max_frame) {
        match ipc::decode::<WorkerCommand>(&payload) {
            Ok(WorkerCommand::Generate {
                id,
                prompt,
                max_tokens,
            }) => {
                let _ = jobs_tx.send((id, prompt, max_tokens));
            }
            Ok(WorkerCommand::Selftest) => {
                let probes = veritas_sandbox::selftest(&sandbox_cfg);
                let all_ok = probes.iter().all(|p| p.ok());
                let probes = probes
                    .iter()
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect();
                send(&WorkerEvent::Selftest { probes, all_ok });
            }
            Ok(WorkerCommand::Fault { kind }) => inject(kind),
            Ok(WorkerCommand::Shutdown) => break,
            Err(e) => tracing::warn!(error = %e, "worker ignored a malformed command"),
        }
    }
    drop(jobs_tx);
    for t in pool {
        let _ = t.join();
    }
    0
}

/// Chaos faults, reachable only through a daemon started with fault injection enabled.
fn inject(kind: FaultKind) {
    match kind {
        // Outside the seccomp allow-list: the sandbox kills the worker with SIGSYS.
        // SAFETY: a plain syscall; its result is irrelevant.
        FaultKind::SandboxViolation => unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        },
        FaultKind::WorkerAbort => std::process::abort(),
    }
}

/// Under a memory ceiling, checks that the address space a request's context needs is still
/// free, so an oversized request fails with E3003 instead of crashing inside llama.cpp.
fn within_ceiling(engine: &Engine, memory_limit: Option<u64>) -> Result<(), ErrorBody> {
    let Some(limit) = memory_limit else {
        return Ok(());
    };
    let need = engine.request_memory_estimate();
    // SAFETY: an anonymous PROT_NONE reservation, released at once; RLIMIT_AS counts it.
    let ok = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            need as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            false
        } else {
            libc::munmap(p, need as usize);
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!(
                "a request context of {} tokens needs about {need} bytes of address space; the worker's memory ceiling is {limit} bytes and not enough of it is free",
                engine.n_ctx()
            ),
        ))
    }
}
