//! HTTP front (:8080: probes and inference) and the metrics endpoint (:9090).

use super::Runtime;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use veritas_vocab::ipc::{GenerateRequest, HealthStatus};
use veritas_vocab::{ErrorBody, ErrorCode};

pub fn api_router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/v1/generate", post(generate))
        .route("/v1/completions", post(super::openai::completions))
        .route(
            "/v1/chat/completions",
            post(super::openai::chat_completions),
        )
        .route("/v1/models", get(super::openai::models))
        // The generate handler reads its body under the IPC frame limit itself.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(rt)
}

pub fn metrics_router(rt: Arc<Runtime>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(rt)
}

/// HTTP status for each error code.
pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        ResourceLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ContextOverflow | TokenizerError | IpcProtocolError => StatusCode::UNPROCESSABLE_ENTITY,
        ModelNotFound => StatusCode::NOT_FOUND,
        ModelVersionMismatch => StatusCode::CONFLICT,
        HealthCheckFailed => StatusCode::SERVICE_UNAVAILABLE,
        IpcTimeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: ErrorBody) -> Response {
    (status_for(e.code), Json(e)).into_response()
}

async fn health(State(rt): State<Arc<Runtime>>) -> Response {
    let report = rt.health(true);
    let code = if report.status == HealthStatus::Critical {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report)).into_response()
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    let r = rt.readiness();
    let code = if r.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

/// Reads a request body under the IPC frame limit (whatever the HTTP front admits, the
/// worker channel carries: see `supervisor::worker_frame_limit`) and within `--http-timeout`
/// (a client trickling its body would hold its connection for good). The error is E1003,
/// with 413 or 408 for the caller to answer.
pub async fn read_body(
    rt: &Runtime,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, (StatusCode, ErrorBody)> {
    let limit = rt.cfg.max_frame as usize;
    let timeout = rt.cfg.http_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorBody::new(
                ErrorCode::IpcProtocolError,
                format!("request body exceeds the maximum of {limit} bytes (--max-frame) or could not be read: {e}"),
            ),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            ErrorBody::new(
                ErrorCode::IpcProtocolError,
                format!(
                    "request body not received within {:.0}s (--http-timeout)",
                    timeout.as_secs_f64()
                ),
            ),
        )),
    }
}

/// What one HTTP listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; one more is answered 503 and closed at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, which is also how long a keep-alive
    /// connection may sit idle between requests.
    pub header_timeout: std::time::Duration,
}

/// Serves `router` on `listener` until `stop` turns true: at most `limits.max_connections`
/// connections (a client cannot exhaust the daemon's descriptors, which a worker restart
/// needs), each given `limits.header_timeout` to send its headers. Returns when every
/// connection has finished its requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before accept: the
                    // listener stays; a short pause keeps a persistent error from spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream, limits.max_connections));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Stop listening before the connections drain: a new client is refused at once instead
    // of waiting in the backlog for an answer that never comes.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// A connection beyond the cap: told why in one response (503, `Retry-After`), then closed,
/// so its descriptor is free again at once.
async fn refuse_connection(mut stream: tokio::net::TcpStream, cap: usize) {
    use tokio::io::AsyncWriteExt;
    let e = ErrorBody::new(
        ErrorCode::ResourceLimitExceeded,
        format!("too many HTTP connections (--max-http-connections {cap}); retry shortly"),
    );
    let body = serde_json::to_string(&e).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Lingering close: the request the client already sent is read and dropped before the
    // close (closing with unread bytes resets the connection, and the client would see a
    // reset instead of the answer). A second at most, whatever the client does.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        use tokio::io::AsyncReadExt;
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn generate(State(rt): State<Arc<Runtime>>, body: axum::body::Body) -> Response {
    let body = match read_body(&rt, body).await {
        Ok(b) => b,
        Err((status, e)) => {
            rt.metrics.count_error(e.code);
            return (status, Json(e)).into_response();
        }
    };
    let req: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            rt.metrics.count_error(ErrorCode::IpcProtocolError);
            return error_response(ErrorBody::new(
                ErrorCode::IpcProtocolError,
                format!("invalid request body: {e}"),
            ));
        }
    };
    // An option out of range is the client's request, not a server failure.
    if let Some((field, why)) = req.decoding.invalid_field() {
        let e = ErrorBody::new(
            ErrorCode::InferenceFailed,
            format!("invalid `{field}`: {why}"),
        );
        rt.metrics.count_error(e.code);
        return (StatusCode::BAD_REQUEST, Json(e)).into_response();
    }
    match rt.generate(req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(e),
    }
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    rt.refresh_memory();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.metrics.render(),
    )
        .into_response()
}
