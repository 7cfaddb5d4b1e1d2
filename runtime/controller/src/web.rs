//! `/metrics`, `/healthz` (the process answers and its watches have not been failing for more
//! than a minute) and `/readyz` (the API server and the CRD were reachable at start and the
//! controller loop is running or standing by).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::telemetry::{Metrics, WatchHealth};

#[derive(Clone)]
pub struct WebState {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<WebState>| async move { s.metrics.render() }),
        )
        .route(
            "/healthz",
            get(|State(s): State<WebState>| async move {
                match s
                    .metrics
                    .watch
                    .check(std::time::Instant::now(), WatchHealth::GRACE)
                {
                    Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy: {why}\n"),
                    ),
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(s): State<WebState>| async move {
                if s.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(state)
}
