//! The runtime socket: framed requests from the operator CLI and local clients.

use super::supervisor::read_async_frame;
use super::Runtime;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use veritas_vocab::ipc::{self, FrameError, Op, Outcome, Reply, Request, Response};
use veritas_vocab::{ErrorBody, ErrorCode};

/// Binds the socket. A stale socket file left by a dead process is replaced; one a live
/// process still answers on is never taken over.
pub fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create socket directory {}: {e}", dir.display())
        })?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!(
                "{}: another runtime is serving on {} (check: pgrep -a veritas-spark); refusing to take over its socket",
                ErrorBody::new(ErrorCode::IpcConnectionFailed, "socket in use").code,
                path.display()
            ),
            Err(_) => {
                tracing::warn!(socket = %path.display(), "replacing stale socket left by a dead process");
                std::fs::remove_file(path)?;
            }
        }
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(connection(rt.clone(), stream)); }
                Err(e) => tracing::warn!(error = %e, "accept failed on the runtime socket"),
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(rt: Arc<Runtime>, stream: UnixStream) {
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    loop {
        let payload = match read_async_frame(&mut rd, rt.cfg.max_frame).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
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
        // Requests on one connection run concurrently; answers carry their id.
        let rt = rt.clone();
        let wr = wr.clone();
        tokio::spawn(async move {
            let _answering = rt.answers.read().await;
            let outcome = dispatch(&rt, req.op).await;
            let frame = ipc::encode(&Response {
                id: req.id,
                outcome,
            });
            let _ = wr.lock().await.write_all(&frame).await;
        });
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
    let _ = wr.lock().await.write_all(&frame).await;
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
