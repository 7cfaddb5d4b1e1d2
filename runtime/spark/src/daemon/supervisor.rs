//! Owns the inference worker process: spawns it for the model to serve, waits for it to be
//! ready, forwards requests, answers the requests of a worker that died with `E4001`, and
//! restarts it with backoff.

use std::collections::HashMap;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use veritas_engine::Budget;
use veritas_vocab::ipc::{self, ChatTurn, Decoding, WorkerCommand, WorkerEvent};
use veritas_vocab::{ErrorBody, ErrorCode};

/// A finished generation as the worker reports it.
#[derive(Debug)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub finish_reason: String,
}

/// Requests the worker holds: where to send each answer, and the admission permit the
/// request occupies until the worker has really finished with it (answered, or died), even
/// when the caller stopped waiting (a timeout): the queue bound counts work, not waiters.
type Pending = Arc<Mutex<HashMap<u64, PendingRequest>>>;

struct PendingRequest {
    answer: oneshot::Sender<Result<Generated, ErrorBody>>,
    /// Where the pieces of a streamed request go as the worker decodes them.
    pieces: Option<mpsc::UnboundedSender<String>>,
    _permit: Option<OwnedSemaphorePermit>,
}
/// Callers waiting for a sandbox self-test: the probes and whether all found what they expected.
type SelftestWaiters = Arc<Mutex<Vec<oneshot::Sender<(Vec<serde_json::Value>, bool)>>>>;

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Where the model lives (for messages); the worker loads `model_file`.
    pub model_path: PathBuf,
    /// The file as verified: the worker inherits this very descriptor and loads through it,
    /// so a file replaced after verification is never the one loaded.
    pub model_file: Arc<std::fs::File>,
    pub model_dir: PathBuf,
    pub ctx_size: u32,
    pub threads: u32,
    pub parallel: u32,
    pub max_frame: u32,
    pub sandbox: String,
    pub sandbox_layers: String,
    pub memory_limit: Option<u64>,
    /// Chaos: how long the worker waits before loading.
    pub load_delay: Duration,
}

/// How a worker ended, and what that means for its requests.
#[derive(Debug)]
pub struct WorkerExit {
    pub pid: u32,
    pub status: std::process::ExitStatus,
    /// E3002 for a seccomp kill, E3003 for an allocation failure, E4001 otherwise.
    pub error: ErrorBody,
    /// The syscall, when the sandbox stopped one.
    pub violation: Option<String>,
}

/// Room for a command's envelope (type, id, max_tokens, JSON escapes of a prompt sent
/// unescaped by an HTTP client) on top of the largest request the fronts admit.
const COMMAND_ENVELOPE: u32 = 64 * 1024;

/// Largest command frame the worker accepts: above whatever the fronts admit (`max_frame`),
/// so no admitted request can make the worker's read loop fail (which would end the worker
/// and every request it holds).
pub fn worker_frame_limit(max_frame: u32) -> u32 {
    max_frame.saturating_add(COMMAND_ENVELOPE)
}

/// Largest event frame the daemon reads from a worker; the worker is told, and refuses to
/// send a larger one (a generation whose text would not fit is answered with E3003).
pub fn worker_event_limit(max_frame: u32) -> u32 {
    max_frame.max(ipc::DEFAULT_MAX_FRAME)
}

/// Last bytes of the worker's stderr kept for diagnosing its death.
const STDERR_TAIL: usize = 8 * 1024;

fn classify_exit(
    pid: u32,
    status: std::process::ExitStatus,
    tail: &str,
    memory_limit: Option<u64>,
) -> WorkerExit {
    let why = describe_exit(&status);
    if let Some(v) = veritas_sandbox::describe_violation(&status, tail) {
        let syscall = v
            .syscall_name
            .clone()
            .or_else(|| v.syscall_nr.map(|n| n.to_string()));
        return WorkerExit {
            pid,
            status,
            error: ErrorBody::new(
                ErrorCode::SandboxViolation,
                format!("inference worker (pid {pid}) stopped by its sandbox: {v}; the worker is being restarted"),
            ),
            violation: Some(syscall.unwrap_or_else(|| "unknown".into())),
        };
    }
    if let Some(r) = veritas_sandbox::describe_resource_exhaustion(&status, tail) {
        let requested = r
            .requested_bytes
            .map(|b| format!("{b} bytes requested"))
            .unwrap_or_else(|| r.detail.clone());
        let ceiling = memory_limit
            .map(|m| format!("the worker's memory ceiling is {m} bytes"))
            .unwrap_or_else(|| "no ceiling configured".into());
        return WorkerExit {
            pid,
            status,
            error: ErrorBody::new(
                ErrorCode::ResourceLimitExceeded,
                format!("inference worker (pid {pid}) ran out of memory: {requested}, {ceiling}; the worker is being restarted"),
            ),
            violation: None,
        };
    }
    WorkerExit {
        pid,
        status,
        error: ErrorBody::new(
            ErrorCode::InferenceFailed,
            format!("inference worker (pid {pid}) ended during the request: {why}; it is being restarted"),
        ),
        violation: None,
    }
}

/// What a freshly started worker said first.
pub enum Startup {
    Ready {
        n_ctx: u32,
        n_vocab: u32,
        sandbox: Option<serde_json::Value>,
    },
    Failed(ErrorBody),
    /// Exited without a word; its [`WorkerExit`] tells why.
    Died,
}

/// A running worker: send it work, learn when it exits.
pub struct Worker {
    pub pid: u32,
    /// Encoded command frames, each checked against `frame_limit` before it is queued.
    commands: mpsc::UnboundedSender<Vec<u8>>,
    frame_limit: u32,
    pending: Pending,
    selftests: SelftestWaiters,
    next_id: std::sync::atomic::AtomicU64,
    /// Asks the task that owns the child process to kill it: that task alone knows whether
    /// the process was already reaped, so no signal can reach a recycled (or zero) pid.
    kill: Mutex<Option<oneshot::Sender<()>>>,
}

/// Why a worker process ended, for E4001 details and logs.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s} ({})", signal_name(s)),
        _ => "unknown exit".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

impl Worker {
    /// Spawns a worker and waits for its first word. The returned receiver resolves when the
    /// process has exited.
    pub async fn spawn(
        spec: &WorkerSpec,
        load_timeout: Duration,
    ) -> Result<(Arc<Worker>, Startup, oneshot::Receiver<WorkerExit>), ErrorBody> {
        let (ours, theirs) = StdUnixStream::pair()
            .map_err(|e| start_failed("cannot create worker socketpair", &e))?;
        let exe = std::env::current_exe().map_err(|e| {
            ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!("cannot find own executable: {e}"),
            )
        })?;
        const CHILD_FD: i32 = 3;
        let their_fd = theirs.as_raw_fd();
        // The verified model file, duplicated above the descriptors dup2 targets below so
        // neither overwrites the other; the child inherits it (close-on-exec cleared there).
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the result is owned below.
        let model_fd =
            unsafe { libc::fcntl(spec.model_file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if model_fd < 0 {
            return Err(start_failed(
                "cannot pass the model file to the worker",
                &std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `model_fd` was just created and nothing else owns it.
        let model_fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(model_fd) };
        let model_raw = model_fd.as_raw_fd();
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("worker")
            .arg("--ipc-fd")
            .arg(CHILD_FD.to_string())
            .arg("--model-path")
            .arg(&spec.model_path)
            .arg("--model-fd")
            .arg(model_raw.to_string())
            .arg("--ctx-size")
            .arg(spec.ctx_size.to_string())
            .arg("--threads")
            .arg(spec.threads.to_string())
            .arg("--parallel")
            .arg(spec.parallel.to_string())
            .arg("--max-frame")
            .arg(worker_frame_limit(spec.max_frame).to_string())
            .arg("--event-limit")
            .arg(worker_event_limit(spec.max_frame).to_string())
            .arg("--model-dir")
            .arg(&spec.model_dir)
            .arg("--sandbox")
            .arg(&spec.sandbox)
            .arg("--sandbox-layers")
            .arg(&spec.sandbox_layers)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(limit) = spec.memory_limit {
            cmd.arg("--memory-limit").arg(limit.to_string());
        }
        if !spec.load_delay.is_zero() {
            cmd.arg("--load-delay-ms")
                .arg(spec.load_delay.as_millis().to_string());
        }
        // Fewer glibc malloc arenas: each reserves 64 MiB of address space, which RLIMIT_AS counts.
        cmd.env("MALLOC_ARENA_MAX", "2");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 clears close-on-exec on the target descriptor; when the socket
                // already is that descriptor, dup2 does nothing and the flag is cleared here.
                if their_fd == CHILD_FD {
                    if libc::fcntl(CHILD_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(their_fd, CHILD_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::fcntl(model_raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The worker must not outlive the daemon.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| start_failed("cannot start inference worker", &e))?;
        drop(theirs);
        drop(model_fd);
        let pid = child.id().unwrap_or(0);
        // The worker's stderr: forwarded to our log, its tail kept to explain its death.
        let tail = Arc::new(Mutex::new(String::new()));
        let stderr_task = child.stderr.take().map(|stderr| {
            let tail = tail.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(target: "veritas_spark::worker", worker_pid = pid, "{line}");
                    let mut t = tail.lock().unwrap();
                    t.push_str(&line);
                    t.push('\n');
                    if t.len() > STDERR_TAIL {
                        let cut = t.len() - STDERR_TAIL;
                        let cut = (cut..t.len())
                            .find(|&i| t.is_char_boundary(i))
                            .unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            })
        });
        ours.set_nonblocking(true).expect("nonblocking socketpair");
        let stream = UnixStream::from_std(ours).expect("register socketpair with tokio");
        let (mut rd, mut wr) = stream.into_split();

        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(frame) = cmd_rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });

        let pending: Pending = Arc::default();
        let selftests: SelftestWaiters = Arc::default();
        let reader_selftests = selftests.clone();
        let (first_tx, first_rx) = oneshot::channel::<Startup>();
        let (exit_tx, exit_rx) = oneshot::channel();
        let max = worker_event_limit(spec.max_frame);
        let reader_pending = pending.clone();
        // Told when the worker's events can no longer be read (a frame or message the daemon
        // cannot decode): the worker is then killed and restarted, never left holding its
        // requests (and their admission permits) with nobody reading its answers.
        let (broken_tx, broken_rx) = oneshot::channel::<ipc::FrameError>();
        let reader = tokio::spawn(async move {
            let mut first = Some(first_tx);
            loop {
                let payload = match read_async_frame(&mut rd, max).await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = broken_tx.send(e);
                        break;
                    }
                };
                let ev = match ipc::decode::<WorkerEvent>(&payload) {
                    Ok(ev) => ev,
                    Err(e) => {
                        let _ = broken_tx.send(e);
                        break;
                    }
                };
                match ev {
                    WorkerEvent::Ready {
                        n_ctx,
                        n_vocab,
                        sandbox,
                    } => {
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Startup::Ready {
                                n_ctx,
                                n_vocab,
                                sandbox,
                            });
                        }
                    }
                    WorkerEvent::LoadFailed { error } => {
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Startup::Failed(error));
                        }
                    }
                    WorkerEvent::Piece { id, text } => {
                        let pending = reader_pending.lock().unwrap();
                        if let Some(tx) = pending.get(&id).and_then(|p| p.pieces.as_ref()) {
                            // A receiver that is gone (the client left) is not an error:
                            // the request finishes and is answered as usual.
                            let _ = tx.send(text);
                        }
                    }
                    WorkerEvent::Generated {
                        id,
                        text,
                        prompt_tokens,
                        generated_tokens,
                        finish_reason,
                    } => {
                        let tx = reader_pending.lock().unwrap().remove(&id);
                        if let Some(tx) = tx {
                            let _ = tx.answer.send(Ok(Generated {
                                text,
                                prompt_tokens,
                                generated_tokens,
                                finish_reason,
                            }));
                        }
                    }
                    WorkerEvent::Failed { id, error } => {
                        let tx = reader_pending.lock().unwrap().remove(&id);
                        if let Some(tx) = tx {
                            let _ = tx.answer.send(Err(error));
                        }
                    }
                    WorkerEvent::Selftest { probes, all_ok } => {
                        if let Some(tx) = reader_selftests.lock().unwrap().pop() {
                            let _ = tx.send((probes, all_ok));
                        }
                    }
                }
            }
        });
        let waiter_pending = pending.clone();
        let memory_limit = spec.memory_limit;
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // Why the daemon stopped reading the worker, when the stream was still intact
            // (the worker said something unreadable, rather than dying mid-frame).
            let mut unreadable = None;
            let exited = tokio::select! {
                s = child.wait() => Some(s),
                Ok(()) = kill_rx => None,
                Ok(e) = broken_rx => {
                    if !matches!(e, ipc::FrameError::Io(_) | ipc::FrameError::Truncated) {
                        unreadable = Some(e);
                    }
                    None
                }
            };
            let status = match exited {
                Some(s) => s,
                None => {
                    // Not reaped yet (only this task waits the child): safe to signal.
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0));
            // Read whatever the worker said before it died, then fail the rest.
            let _ = reader.await;
            if let Some(t) = stderr_task {
                let _ = t.await;
            }
            let mut exit = classify_exit(pid, status, &tail.lock().unwrap(), memory_limit);
            if let Some(e) = unreadable {
                tracing::error!(worker_pid = pid, error = %e, "inference worker sent an unreadable event; killed it");
                exit.error = ErrorBody::new(
                    ErrorCode::InferenceFailed,
                    format!("inference worker (pid {pid}) sent an event the daemon cannot read ({e}); it was stopped and is being restarted"),
                );
            }
            let orphans: Vec<_> = waiter_pending.lock().unwrap().drain().collect();
            for (_, tx) in orphans {
                let _ = tx.answer.send(Err(exit.error.clone()));
            }
            let _ = exit_tx.send(exit);
        });

        let worker = Arc::new(Worker {
            pid,
            commands: cmd_tx,
            frame_limit: worker_frame_limit(spec.max_frame),
            pending,
            selftests,
            next_id: 1.into(),
            kill: Mutex::new(Some(kill_tx)),
        });
        let startup = match tokio::time::timeout(load_timeout, first_rx).await {
            Ok(Ok(s)) => s,
            // The worker died before saying anything; the exit watcher knows why.
            Ok(Err(_)) => Startup::Died,
            Err(_) => Startup::Failed(ErrorBody::new(
                ErrorCode::ModelLoadFailed,
                format!(
                    "model load did not finish within {}s",
                    load_timeout.as_secs()
                ),
            )),
        };
        Ok((worker, startup, exit_rx))
    }

    /// Sends one generation to the worker. `permit` (the request's admission) is held until
    /// the worker answers; if this future is dropped first (the caller timed out), the
    /// worker is told to cancel the request, and the permit is released only once it has.
    ///
    /// With `pieces`, the worker streams the text as it decodes it; the pieces arrive on
    /// that channel before this future returns the whole generation.
    pub async fn generate(
        &self,
        work: Work,
        budget: Budget,
        permit: Option<OwnedSemaphorePermit>,
        pieces: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Generated, ErrorBody> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (max_tokens, fit_context) = match budget {
            Budget::AtMost(n) => (n, false),
            Budget::Fit(n) => (n, true),
        };
        let frame = self.frame(&WorkerCommand::Generate {
            id,
            prompt: work.prompt,
            max_tokens,
            fit_context,
            stream: pieces.is_some(),
            messages: work.messages,
            decoding: work.decoding,
        })?;
        self.pending.lock().unwrap().insert(
            id,
            PendingRequest {
                answer: tx,
                pieces,
                _permit: permit,
            },
        );
        if self.commands.send(frame).is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(ErrorBody::new(
                ErrorCode::InferenceFailed,
                "inference worker is not running",
            ));
        }
        let cancel = CancelOnDrop { worker: self, id };
        let answer = rx.await;
        std::mem::forget(cancel);
        answer.unwrap_or_else(|_| {
            Err(ErrorBody::new(
                ErrorCode::InferenceFailed,
                "inference worker went away",
            ))
        })
    }

    /// Runs the sandbox self-test inside the worker.
    pub async fn selftest(&self) -> Result<(Vec<serde_json::Value>, bool), ErrorBody> {
        let (tx, rx) = oneshot::channel();
        self.selftests.lock().unwrap().push(tx);
        let frame = self.frame(&WorkerCommand::Selftest)?;
        if self.commands.send(frame).is_err() {
            return Err(ErrorBody::new(
                ErrorCode::InferenceFailed,
                "inference worker is not running",
            ));
        }
        rx.await.map_err(|_| {
            ErrorBody::new(
                ErrorCode::InferenceFailed,
                "inference worker ended during the self-test",
            )
        })
    }

    pub fn inject(&self, kind: veritas_vocab::ipc::FaultKind) {
        if let Ok(f) = self.frame(&WorkerCommand::Fault { kind }) {
            let _ = self.commands.send(f);
        }
    }

    /// Asks the worker to finish its queued requests and exit.
    pub fn shutdown(&self) {
        if let Ok(f) = self.frame(&WorkerCommand::Shutdown) {
            let _ = self.commands.send(f);
        }
    }

    /// Encodes a command, refusing (for this request only) one the worker would reject: an
    /// oversize frame would end the worker's read loop and with it every request it holds.
    fn frame(&self, cmd: &WorkerCommand) -> Result<Vec<u8>, ErrorBody> {
        let frame = ipc::encode(cmd);
        let len = frame.len() - ipc::HEADER_LEN;
        if len > self.frame_limit as usize {
            return Err(ErrorBody::new(
                ErrorCode::IpcProtocolError,
                format!(
                    "request encodes to {len} bytes for the inference worker, above its limit of {} bytes",
                    self.frame_limit
                ),
            ));
        }
        Ok(frame)
    }

    /// Kills the worker process (a no-op once it has exited).
    pub fn kill(&self) {
        if let Some(tx) = self.kill.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Tells the worker to stop a request whose caller stopped waiting for it.
struct CancelOnDrop<'a> {
    worker: &'a Worker,
    id: u64,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.worker.pending.lock().unwrap().contains_key(&self.id) {
            if let Ok(f) = self.worker.frame(&WorkerCommand::Cancel { id: self.id }) {
                let _ = self.worker.commands.send(f);
            }
        }
    }
}

/// Reads one frame from an async stream; `Ok(None)` is a clean end of stream.
pub async fn read_async_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, ipc::FrameError> {
    let mut header = [0u8; ipc::HEADER_LEN];
    let mut filled = 0;
    while filled < ipc::HEADER_LEN {
        match r.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(ipc::FrameError::Truncated),
            n => filled += n,
        }
    }
    let h = ipc::decode_header(&header, max)?;
    let mut payload = vec![0u8; h.len as usize];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ipc::FrameError::Truncated,
            _ => ipc::FrameError::Io(e),
        })?;
    Ok(Some(payload))
}

/// What one generation asks of the worker besides its length.
#[derive(Debug, Default)]
pub struct Work {
    /// The text to continue (empty for a conversation).
    pub prompt: String,
    /// A conversation for the model's chat template.
    pub messages: Vec<ChatTurn>,
    pub decoding: Decoding,
}

/// A worker that could not be started: out of descriptors, processes or memory is the
/// daemon's state (E3003, retried by a restart), anything else is E2001.
fn start_failed(what: &str, e: &std::io::Error) -> ErrorBody {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!("{what}: {e} (the daemon is out of file descriptors, processes or memory; check open connections and ulimit -n / -u)"),
        ),
        _ => ErrorBody::new(ErrorCode::ModelLoadFailed, format!("{what}: {e}")),
    }
}
