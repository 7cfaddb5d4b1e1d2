//! The runtime socket: framed requests from the operator CLI and local clients.

use super::Runtime;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use veritas_vocab::ipc::{self, FrameError, Op, Outcome, Reply, Request, Response};
use veritas_vocab::{ErrorBody, ErrorCode};

/// What to do with whatever already sits at the socket path.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing there.
    Free,
    /// A socket nobody listens on (its process died): safe to replace.
    Stale,
    /// Anything else: a live socket (ours to leave alone, whoever owns it), a socket we may
    /// not connect to (another user's), a regular file or a directory. Never deleted.
    Refuse(String),
}

/// Decides from the file type and the outcome of a connect attempt; only a socket that
/// refused the connection (ECONNREFUSED: no listener) is stale.
pub fn classify_existing(
    file_type: Option<std::fs::FileType>,
    connect: impl FnOnce() -> std::io::Result<()>,
) -> Existing {
    use std::os::unix::fs::FileTypeExt;
    let Some(ft) = file_type else {
        return Existing::Free;
    };
    if !ft.is_socket() {
        return Existing::Refuse("it is not a socket (a regular file or directory is in the way; remove it by hand if it is not needed)".into());
    }
    match connect() {
        Ok(()) => Existing::Refuse(
            "another runtime is serving on it (check: pgrep -a veritas-spark); refusing to take over its socket".into(),
        ),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Existing::Stale,
        Err(e) => Existing::Refuse(format!(
            "cannot tell whether it is in use ({e}); it may belong to another user's live runtime (check: ls -la and pgrep -a veritas-spark)"
        )),
    }
}

/// Binds the socket. A stale socket file left by a dead process is replaced; a live one,
/// one we cannot probe, or anything that is not a socket is never deleted.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create socket directory {}: {e}", dir.display())
        })?;
    }
    let file_type = std::fs::symlink_metadata(path).ok().map(|m| m.file_type());
    match classify_existing(file_type, || {
        std::os::unix::net::UnixStream::connect(path).map(drop)
    }) {
        Existing::Free => {}
        Existing::Stale => {
            tracing::warn!(socket = %path.display(), "replacing stale socket left by a dead process");
            std::fs::remove_file(path)?;
        }
        Existing::Refuse(why) => anyhow::bail!(
            "{}: {} is in use: {why}",
            ErrorCode::IpcConnectionFailed.code(),
            path.display()
        ),
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

pub async fn serve(
    rt: Arc<Runtime>,
    listener: UnixListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(rt.cfg.max_connections as usize));
    let open: Arc<OpenConnections> = Arc::default();
    // Accept errors (EMFILE, ENFILE, ENOBUFS) persist until something is released: back
    // off instead of spinning on them.
    let mut backoff = Duration::from_millis(10);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    let (rt, connections, open) = (rt.clone(), connections.clone(), open.clone());
                    tokio::spawn(async move {
                        // At the cap, an idle connection (nothing in flight, no frame begun)
                        // is closed to make room, as a web server drops idle keep-alive
                        // connections first; refused only when every one is busy.
                        let permit = match connections.clone().try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) if open.evict_one_idle() => tokio::time::timeout(
                                Duration::from_secs(1),
                                connections.acquire_owned(),
                            )
                            .await
                            .ok()
                            .and_then(Result::ok),
                            Err(_) => None,
                        };
                        match permit {
                            Some(permit) => {
                                let state = open.register();
                                connection(rt, stream, &state).await;
                                open.unregister(&state);
                                drop(permit);
                            }
                            None => refuse(rt, stream).await,
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed on the runtime socket; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// One open connection as the accept loop sees it: whether it sits idle, and how to close it.
#[derive(Default)]
struct ConnState {
    /// Waiting for the first byte of a frame.
    reading: std::sync::atomic::AtomicBool,
    /// Requests of this connection being answered.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Told to close if it is still idle.
    evict: tokio::sync::Notify,
}

impl ConnState {
    fn idle(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.reading.load(SeqCst) && self.in_flight.load(SeqCst) == 0
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct OpenConnections(std::sync::Mutex<Vec<Arc<ConnState>>>);

impl OpenConnections {
    fn register(&self) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        self.0.lock().unwrap().push(state.clone());
        state
    }

    fn unregister(&self, state: &Arc<ConnState>) {
        self.0.lock().unwrap().retain(|s| !Arc::ptr_eq(s, state));
    }

    /// Tells the oldest idle connection to close; false when none is idle.
    fn evict_one_idle(&self) -> bool {
        match self.0.lock().unwrap().iter().find(|s| s.idle()) {
            Some(s) => {
                s.evict.notify_waiters();
                true
            }
            None => false,
        }
    }
}

/// Over the connection cap: one E3003 answer, then the connection is closed.
async fn refuse(rt: Arc<Runtime>, stream: UnixStream) {
    rt.metrics.count_error(ErrorCode::ResourceLimitExceeded);
    let body = ErrorBody::new(
        ErrorCode::ResourceLimitExceeded,
        format!(
            "too many connections to the runtime socket ({} at most, --max-connections); retry later",
            rt.cfg.max_connections
        ),
    );
    let frame = ipc::encode(&Response {
        id: 0,
        outcome: Outcome::Error(body),
    });
    let mut stream = stream;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
}

/// Why a connection's read side ended.
enum ReadEnd {
    Frame(Vec<u8>),
    Closed,
    Idle,
    Error(FrameError),
}

/// Reads the next frame. Waiting for its first byte is idle time, limited only while
/// nothing is in flight on the connection; once it has begun, the whole frame must arrive
/// within the idle timeout (a client that stops mid-frame holds nothing for long).
async fn next_frame(rd: &mut ConnReader, max: u32, idle: Duration, state: &ConnState) -> ReadEnd {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::AsyncReadExt;
    let busy = || state.in_flight.load(SeqCst) > 0;
    let mut first = [0u8; 1];
    state.reading.store(true, SeqCst);
    let first_byte = loop {
        let read = tokio::select! {
            r = tokio::time::timeout(idle, rd.read(&mut first)) => r,
            // Evicted to admit a new connection: closed if still idle (a request may have
            // been answered or arrived meanwhile; then the eviction is ignored).
            _ = state.evict.notified() => {
                if state.idle() {
                    break ReadEnd::Idle;
                }
                continue;
            }
        };
        match read {
            Ok(Ok(0)) => break ReadEnd::Closed,
            Ok(Ok(_)) => break ReadEnd::Frame(Vec::new()),
            Ok(Err(e)) => break ReadEnd::Error(e.into()),
            Err(_) if busy() => continue,
            Err(_) => break ReadEnd::Idle,
        }
    };
    state.reading.store(false, SeqCst);
    if !matches!(first_byte, ReadEnd::Frame(_)) {
        return first_byte;
    }
    let rest = async {
        let mut header = [0u8; ipc::HEADER_LEN];
        header[0] = first[0];
        rd.read_exact(&mut header[1..])
            .await
            .map_err(eof_truncated)?;
        let h = ipc::decode_header(&header, max)?;
        let mut payload = vec![0u8; h.len as usize];
        rd.read_exact(&mut payload).await.map_err(eof_truncated)?;
        Ok::<_, FrameError>(payload)
    };
    match tokio::time::timeout(idle, rest).await {
        Ok(Ok(p)) => ReadEnd::Frame(p),
        Ok(Err(e)) => ReadEnd::Error(e),
        Err(_) => ReadEnd::Idle,
    }
}

/// The read half, buffered: a frame that arrived whole (the usual case) costs one `read`
/// syscall instead of three (first byte, header, payload).
type ConnReader = tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>;

/// Operations answered on the connection's own task: they only read in-memory state, so a
/// spawned task and its hand-off would cost more than the answer (a health call is the
/// probe every supervisor and load balancer sends).
fn answered_inline(op: &Op) -> bool {
    matches!(
        op,
        Op::Health { .. } | Op::Live | Op::Ready | Op::MetricsSummary | Op::TelemetryStatus
    )
}

fn eof_truncated(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    }
}

async fn connection(rt: Arc<Runtime>, stream: UnixStream, state: &Arc<ConnState>) {
    use std::sync::atomic::Ordering::SeqCst;
    let (rd, wr) = stream.into_split();
    let mut rd = ConnReader::new(rd);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    // Requests in flight on this connection: at the cap, the next frame is not read until
    // one is answered (backpressure on the client instead of unbounded tasks).
    let pipelined = Arc::new(Semaphore::new(rt.cfg.max_pipelined as usize));
    loop {
        let payload =
            match next_frame(&mut rd, rt.cfg.max_frame, rt.cfg.ipc_idle_timeout, state).await {
                ReadEnd::Frame(p) => p,
                ReadEnd::Closed => return,
                ReadEnd::Idle => {
                    tracing::debug!("closing an idle runtime-socket connection");
                    return;
                }
                ReadEnd::Error(e) => {
                    protocol_error(&rt, &wr, 0, &e).await;
                    if !e.stream_usable() {
                        return;
                    }
                    continue;
                }
            };
        let req: Request = match ipc::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                // Echo the id when the payload is JSON with one, so the client can match it.
                let id = serde_json::from_slice::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64())
                    .unwrap_or(0);
                protocol_error(&rt, &wr, id, &e).await;
                continue;
            }
        };
        if answered_inline(&req.op) {
            answer(&rt, &wr, req).await;
            continue;
        }
        let Ok(slot) = pipelined.clone().acquire_owned().await else {
            return;
        };
        // Requests on one connection run concurrently; answers carry their id.
        state.in_flight.fetch_add(1, SeqCst);
        let (rt, wr, state) = (rt.clone(), wr.clone(), state.clone());
        tokio::spawn(async move {
            answer(&rt, &wr, req).await;
            state.in_flight.fetch_sub(1, SeqCst);
            drop(slot);
        });
    }
}

/// Runs one request and writes its answer (shutdown waits for answers being written).
async fn answer(
    rt: &Runtime,
    wr: &tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    req: Request,
) {
    let _answering = rt.answers.read().await;
    let outcome = dispatch(rt, req.op).await;
    let frame = ipc::encode(&Response {
        id: req.id,
        outcome,
    });
    write_answer(rt, wr, &frame).await;
}

/// Writes one answer, within the idle timeout: a client that stops reading cannot hold the
/// task (and the connection's write lock) for good; its connection is shut down instead.
async fn write_answer(
    rt: &Runtime,
    wr: &tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    frame: &[u8],
) {
    let mut wr = wr.lock().await;
    if tokio::time::timeout(rt.cfg.ipc_idle_timeout, wr.write_all(frame))
        .await
        .is_err()
    {
        tracing::warn!(
            "a runtime-socket client did not read its answer in time; closing its connection"
        );
        let _ = wr.shutdown().await;
    }
}

async fn protocol_error(
    rt: &Runtime,
    wr: &tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    id: u64,
    e: &FrameError,
) {
    rt.metrics.count_error(ErrorCode::IpcProtocolError);
    tracing::warn!(error = %e, "IPC protocol error");
    let body = ErrorBody::new(ErrorCode::IpcProtocolError, e.to_string());
    let frame = ipc::encode(&Response {
        id,
        outcome: Outcome::Error(body),
    });
    write_answer(rt, wr, &frame).await;
}

/// The operations behind every front.
pub async fn dispatch(rt: &Runtime, op: Op) -> Outcome {
    let result: Result<Reply, ErrorBody> = match op {
        Op::Health { verbose } => Ok(Reply::Health(rt.health(verbose))),
        Op::Live => Ok(Reply::Probe(ipc::ProbeReport {
            ok: true,
            detail: "alive".into(),
        })),
        Op::Ready => Ok(Reply::Probe(rt.readiness())),
        Op::ModelsList => rt.models().map(Reply::Models),
        Op::ModelsLoad { name, version } => {
            let r = match version {
                Some(v) => format!("{name}@{v}"),
                None => name,
            };
            rt.load_model(&r).await.map(Reply::ModelLoaded)
        }
        Op::MetricsSummary => Ok(Reply::MetricsSummary(rt.metrics_summary())),
        Op::TelemetryStatus => Ok(Reply::Telemetry(rt.telemetry())),
        Op::Generate(g) => rt.generate(g).await.map(Reply::Generated),
        Op::SandboxSelftest => rt.sandbox_selftest().await.map(Reply::Selftest),
        Op::Fault { kind } => rt
            .inject_fault(kind)
            .map(|()| Reply::FaultInjected { kind }),
    };
    match result {
        Ok(r) => Outcome::Ok(r),
        Err(e) => Outcome::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ft(path: &Path) -> Option<std::fs::FileType> {
        std::fs::symlink_metadata(path).ok().map(|m| m.file_type())
    }

    /// Finding 7 of issue 9: only a socket that refuses connections is replaced.
    #[test]
    fn only_a_socket_nobody_listens_on_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("regular");
        std::fs::write(&file, b"precious").unwrap();
        let refused = || Err(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let denied = || Err(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(classify_existing(None, refused), Existing::Free);
        assert!(
            matches!(classify_existing(ft(&file), refused), Existing::Refuse(w) if w.contains("not a socket"))
        );
        let sock = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        assert_eq!(classify_existing(ft(&sock), refused), Existing::Stale);
        // Another user's live socket answers EACCES: never deleted.
        assert!(
            matches!(classify_existing(ft(&sock), denied), Existing::Refuse(w) if w.contains("another user"))
        );
        assert!(
            matches!(classify_existing(ft(&sock), || Ok(())), Existing::Refuse(w) if w.contains("another runtime"))
        );
    }
}
