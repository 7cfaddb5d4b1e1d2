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

/// Reads a request body under the IPC frame limit: whatever the HTTP front admits, the
/// worker channel carries (see `supervisor::worker_frame_limit`). The error is E1003, and
/// answered 413 by the caller.
pub async fn read_body(
    rt: &Runtime,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ErrorBody> {
    let limit = rt.cfg.max_frame as usize;
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        ErrorBody::new(
            ErrorCode::IpcProtocolError,
            format!("request body exceeds the maximum of {limit} bytes (--max-frame) or could not be read: {e}"),
        )
    })
}

async fn generate(State(rt): State<Arc<Runtime>>, body: axum::body::Body) -> Response {
    let body = match read_body(&rt, body).await {
        Ok(b) => b,
        Err(e) => {
            rt.metrics.count_error(e.code);
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(e)).into_response();
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
