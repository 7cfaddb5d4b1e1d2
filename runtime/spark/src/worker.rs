//! The inference worker: a child process of the daemon that owns llama.cpp.
//!
//! Whatever a model or a prompt does to llama.cpp (an abort, a crash) ends this process,
//! never the daemon: the daemon answers the in-flight requests with `E4001` and starts a
//! new worker. Commands and events travel as IPC frames over an inherited socketpair.

use crate::cli::WorkerArgs;
use std::collections::{HashSet, VecDeque};
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use veritas_engine::{
    Batch, Budget, Engine, EngineOptions, Event, Generation, Prompt, MAX_SEQUENCES,
};
use veritas_sandbox::{SandboxConfig, SandboxMode};
use veritas_vocab::ipc::{self, ChatTurn, Decoding, FaultKind, WorkerCommand, WorkerEvent};
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
        let limit = args.event_limit;
        move |ev: &WorkerEvent| {
            let frame = bounded_frame(ev, limit);
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            // A write error means the daemon is gone; the read loop will see EOF and exit.
            let _ = std::io::Write::write_all(&mut *w, &frame);
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
    // The descriptor the daemon verified: loading through it means a file replaced at
    // `model_path` since verification is not what gets loaded.
    let load_path = match args.model_fd {
        Some(fd) => std::path::PathBuf::from(format!("/proc/self/fd/{fd}")),
        None => args.model_path.clone(),
    };
    if args.load_delay_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(args.load_delay_ms));
    }
    let engine = match Engine::load(&load_path, opts) {
        Ok(e) => Arc::new(e),
        Err(mut error) => {
            // Name the file as operators know it, not by its descriptor.
            error.detail = error.detail.replace(
                &load_path.display().to_string(),
                &args.model_path.display().to_string(),
            );
            let size = std::fs::metadata(&load_path).map(|m| m.len()).unwrap_or(0);
            // Under RLIMIT_AS llama.cpp reports a failed allocation as a failed load; the
            // ceiling is named as the cause only when it is really in force and the model
            // does not fit the address space it leaves. Anything else (an unknown
            // architecture, a bad tensor) keeps llama.cpp's own cause, E2001.
            if let Some(limit) = ceiling_in_force() {
                let need = size.saturating_add(LOAD_ALLOWANCE);
                if !reserve(need) {
                    error = ErrorBody::new(
                        ErrorCode::ResourceLimitExceeded,
                        format!(
                            "llama.cpp could not load {} within the worker's memory ceiling: loading needs about {need} bytes (model file {size} bytes), the ceiling is {limit} bytes and not enough of it is free",
                            args.model_path.display()
                        ),
                    );
                }
            }
            send(&WorkerEvent::LoadFailed { error });
            return EXIT_LOAD_FAILED;
        }
    };
    let jobs: Arc<JobQueue> = Arc::default();
    // Requests queued or running, and those the daemon gave up on (skipped if still queued,
    // stopped within a token if running). An id leaves both when its job answers, and a
    // cancel for an id no longer active is dropped, so neither set outlives its requests.
    let tracked: Arc<Mutex<Tracked>> = Arc::default();
    let parallel = args.parallel.clamp(1, MAX_SEQUENCES);
    // The inference thread creates the batch's context first and says whether it could.
    let (created_tx, created_rx) = std::sync::mpsc::sync_channel(1);
    let spawned = {
        let jobs = jobs.clone();
        let engine = engine.clone();
        let send = send.clone();
        let memory_limit = args.memory_limit;
        let tracked = tracked.clone();
        std::thread::Builder::new()
            .name("batch".into())
            .stack_size(SCHEDULER_STACK_BYTES)
            .spawn(move || {
                let created = within_ceiling(&engine, parallel, memory_limit)
                    .and_then(|()| engine.batch(parallel));
                match created {
                    Ok(batch) => {
                        let _ = created_tx.send(Ok(()));
                        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            serve(batch, &jobs, &tracked, &send)
                        }));
                        // A worker whose only inference thread is gone would stay Ready and
                        // answer nothing: it ends, so the daemon fails what was in flight
                        // (E4001) and restarts it.
                        if served.is_err() {
                            std::process::abort();
                        }
                    }
                    Err(error) => {
                        let _ = created_tx.send(Err(error));
                    }
                }
            })
    };
    let scheduler = match spawned {
        Ok(thread) => thread,
        // Under a memory ceiling the model may load and the inference thread still not get
        // its stack (EAGAIN): the load failed for want of memory, said before Ready, so the
        // daemon never serves a worker that cannot infer.
        Err(e) => {
            let error = ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!(
                    "the model loaded but the inference thread could not start: {e}; it needs about {SCHEDULER_STACK_BYTES} bytes of stack, and the worker's memory ceiling ({}) leaves no room for it",
                    args.memory_limit.map_or("none set".to_string(), |l| format!("{l} bytes")),
                ),
            );
            send(&WorkerEvent::LoadFailed { error });
            return EXIT_LOAD_FAILED;
        }
    };
    // A context the ceiling cannot hold fails the load (E3003 naming --parallel), before
    // Ready: the daemon never serves a worker whose every request would be refused.
    let created = created_rx.recv().unwrap_or_else(|_| {
        Err(ErrorBody::new(
            ErrorCode::InferenceFailed,
            "the inference thread ended before it created the batch's context",
        ))
    });
    if let Err(error) = created {
        send(&WorkerEvent::LoadFailed { error });
        return EXIT_LOAD_FAILED;
    }
    send(&WorkerEvent::Ready {
        n_ctx: engine.n_ctx(),
        n_vocab: engine.n_vocab(),
        sandbox: serde_json::to_value(&report).ok(),
    });

    // Buffered: a command that arrived whole is one `recv`, not one for the header and one
    // for the payload.
    let mut reader = std::io::BufReader::new(stream);
    // Ends when the daemon goes away (end of stream or a broken frame) or says Shutdown;
    // queued work is finished either way.
    loop {
        let payload = match ipc::read_frame(&mut reader, args.max_frame) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // The daemon never sends a frame above this limit (it checks before queueing),
            // so this is a broken channel, not a client's request.
            Err(e) => {
                tracing::error!(error = %e, "worker command channel broken; exiting");
                break;
            }
        };
        match ipc::decode::<WorkerCommand>(&payload) {
            Ok(WorkerCommand::Generate {
                id,
                prompt,
                max_tokens,
                fit_context,
                stream,
                messages,
                decoding,
            }) => {
                tracked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .active
                    .insert(id);
                let budget = if fit_context {
                    Budget::Fit(max_tokens)
                } else {
                    Budget::AtMost(max_tokens)
                };
                jobs.push(Job {
                    id,
                    prompt,
                    messages,
                    decoding,
                    budget,
                    stream,
                });
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
            Ok(WorkerCommand::Fault { kind }) => inject(kind, &writer),
            Ok(WorkerCommand::Cancel { id }) => {
                let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
                if t.active.contains(&id) {
                    t.cancelled.insert(id);
                }
            }
            Ok(WorkerCommand::Shutdown) => break,
            Err(e) => tracing::warn!(error = %e, "worker ignored a malformed command"),
        }
    }
    jobs.close();
    let _ = scheduler.join();
    0
}

/// The inference loop: admits queued requests while the batch has room and steps the batch
/// while anything is in flight, so requests join and leave between tokens. The batch's
/// context is created once, before Ready, so a request pays for decoding, not for
/// allocating a KV cache and compute buffers.
fn serve(
    mut batch: Batch<'_>,
    jobs: &JobQueue,
    tracked: &Mutex<Tracked>,
    send: &dyn Fn(&WorkerEvent),
) {
    // Requests whose text went out piece by piece.
    let mut streamed: HashSet<u64> = HashSet::new();
    let answer = |id: u64, result: Result<Generation, ErrorBody>, stream: bool| {
        {
            let mut t = tracked.lock().unwrap_or_else(|p| p.into_inner());
            t.active.remove(&id);
            t.cancelled.remove(&id);
        }
        send(&match result {
            Ok(g) => WorkerEvent::Generated {
                id,
                // A streamed answer's text went out piece by piece: repeating it whole could
                // exceed the event limit, and nobody reads it.
                text: if stream { String::new() } else { g.text },
                prompt_tokens: g.prompt_tokens,
                generated_tokens: g.generated_tokens,
                finish_reason: g.finish_reason.to_string(),
            },
            Err(error) => WorkerEvent::Failed { id, error },
        });
    };
    let is_cancelled = |id: u64| {
        tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancelled
            .contains(&id)
    };
    let any_cancelled = || {
        !tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cancelled
            .is_empty()
    };
    loop {
        let busy = !batch.is_idle();
        if batch.has_room() {
            // Wait for work only when nothing is in flight.
            let job = if busy { jobs.try_pop() } else { jobs.pop() };
            match job {
                Some(job) => {
                    let (id, stream) = (job.id, job.stream);
                    if is_cancelled(id) {
                        answer(id, Err(cancelled_before_start()), stream);
                        continue;
                    }
                    let prompt = if job.messages.is_empty() {
                        Prompt::Text(&job.prompt)
                    } else {
                        Prompt::Chat(&job.messages)
                    };
                    match batch.admit(id, prompt, job.budget, &job.decoding, stream) {
                        Ok(()) if stream => {
                            streamed.insert(id);
                        }
                        Ok(()) => {}
                        Err(error) => answer(id, Err(error), stream),
                    }
                    continue;
                }
                // Closed, and nothing left to finish.
                None if !busy => return,
                None => {}
            }
        }
        batch.step(&is_cancelled, &mut |id, event| match event {
            Event::Piece(text) => send(&WorkerEvent::Piece { id, text }),
            Event::Done(result) => {
                let stream = streamed.remove(&id);
                answer(id, result, stream)
            }
        });
        // Requests given up on while waiting for a full batch are answered (and their prompts
        // freed) now, not whenever a sequence frees. Looked for only when a cancel is pending:
        // this runs after every step.
        if !batch.has_room() && any_cancelled() {
            for job in jobs.take_where(|j| is_cancelled(j.id)) {
                answer(job.id, Err(cancelled_before_start()), job.stream);
            }
        }
    }
}

fn cancelled_before_start() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::IpcTimeout,
        "generation cancelled before it started: the request timed out",
    )
}

/// The frame of `ev`, or, when it is larger than the daemon reads (`limit`), the frame of a
/// refusal for the same request: an oversize answer would be unreadable for the daemon (and
/// one it stops reading would block this worker's writes for good).
fn bounded_frame(ev: &WorkerEvent, limit: u32) -> Vec<u8> {
    let frame = ipc::encode(ev);
    let len = frame.len() - ipc::HEADER_LEN;
    if len <= limit as usize {
        return frame;
    }
    let refusal = |id: u64, what: String| WorkerEvent::Failed {
        id,
        error: ErrorBody::new(ErrorCode::ResourceLimitExceeded, what),
    };
    let refused = match ev {
        WorkerEvent::Generated {
            id,
            generated_tokens,
            ..
        } => refusal(
            *id,
            format!(
                "the generated text of {generated_tokens} tokens encodes to {len} bytes, above the {limit}-byte limit of one answer from the inference worker; ask for fewer tokens (max_tokens) or raise --max-frame"
            ),
        ),
        WorkerEvent::Piece { id, .. } => refusal(
            *id,
            format!(
                "one streamed piece encodes to {len} bytes, above the {limit}-byte limit of one event from the inference worker; raise --max-frame"
            ),
        ),
        // Never this large in practice (probes, a load error); still never sent oversize.
        _ => {
            tracing::error!(len, limit, "worker event too large to send; dropped");
            return Vec::new();
        }
    };
    ipc::encode(&refused)
}

/// Stack of the inference thread (Rust's default, stated: the E3003 message names it).
const SCHEDULER_STACK_BYTES: usize = 2 << 20;

/// One generation request, as the inference thread takes it.
struct Job {
    id: u64,
    prompt: String,
    /// A conversation for the chat template, or empty (then `prompt` is the text).
    messages: Vec<ChatTurn>,
    decoding: Decoding,
    budget: Budget,
    stream: bool,
}

/// Jobs waiting for the inference thread, which waits on it only when it has nothing in
/// flight.
#[derive(Default)]
struct JobQueue {
    state: Mutex<Queued>,
    ready: Condvar,
}

#[derive(Default)]
struct Queued {
    jobs: VecDeque<Job>,
    /// No job will come any more: what is queued is finished, then the thread stops.
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Takes the queued jobs `f` picks, leaving the others in order.
    fn take_where(&self, f: impl Fn(&Job) -> bool) -> Vec<Job> {
        let mut q = self.lock();
        let (taken, kept): (VecDeque<Job>, VecDeque<Job>) =
            std::mem::take(&mut q.jobs).into_iter().partition(f);
        q.jobs = kept;
        taken.into()
    }

    /// The next job if one is queued.
    fn try_pop(&self) -> Option<Job> {
        self.lock().jobs.pop_front()
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Generation requests the worker holds, and which of them were cancelled.
#[derive(Default)]
struct Tracked {
    active: HashSet<u64>,
    cancelled: HashSet<u64>,
}

/// Chaos faults, reachable only through a daemon started with fault injection enabled.
fn inject(kind: FaultKind, writer: &Mutex<UnixStream>) {
    match kind {
        // A header announcing a frame above any limit: the daemon cannot read past it.
        FaultKind::UnreadableEvent => {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = std::io::Write::write_all(&mut *w, &ipc::encode_header(u32::MAX));
        }
        // Outside the seccomp allow-list: the sandbox kills the worker with SIGSYS.
        // SAFETY: a plain syscall; its result is irrelevant.
        FaultKind::SandboxViolation => unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        },
        FaultKind::WorkerAbort => std::process::abort(),
    }
}

/// Under a memory ceiling, checks that the address space the batch's context needs is still
/// free, so a context too large fails with E3003 instead of crashing inside llama.cpp.
fn within_ceiling(
    engine: &Engine,
    parallel: u32,
    memory_limit: Option<u64>,
) -> Result<(), ErrorBody> {
    let Some(limit) = memory_limit else {
        return Ok(());
    };
    let need = engine.batch_memory_estimate(parallel);
    if reserve(need) {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!(
                "the context for --parallel {parallel} requests of {} tokens each needs about {need} bytes of address space; the worker's memory ceiling is {limit} bytes and not enough of it is free",
                engine.n_ctx()
            ),
        ))
    }
}

/// Address space llama.cpp needs beyond the mapped file to load a model (its buffers,
/// thread stacks, the backend).
const LOAD_ALLOWANCE: u64 = 16 << 20;

/// The address-space ceiling (RLIMIT_AS) in force in this process, if any: `None` when the
/// sandbox did not apply one (`--sandbox off`, rlimits layer disabled or unavailable).
fn ceiling_in_force() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(rl.rlim_cur)
}

/// Whether `bytes` of address space can still be reserved (RLIMIT_AS counts reservations).
fn reserve(bytes: u64) -> bool {
    // SAFETY: an anonymous PROT_NONE reservation, released at once.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            false
        } else {
            libc::munmap(p, bytes as usize);
            true
        }
    }
}
