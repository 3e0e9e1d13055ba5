//! The HTTP listener (`globals.metrics_listen`): `/metrics`, `/health` and `/ready`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::readiness::ready_body;
use super::Metrics;
use crate::clock::SharedClock;

/// Serves `/metrics`, `/health` and `/ready` on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move |metrics: State<Arc<Metrics>>| metrics_handler(metrics, clock.clone())),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready_handler))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>, clock: SharedClock) -> Response {
    let text = metrics.encode(clock.now_ms());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ready_handler(State(metrics): State<Arc<Metrics>>) -> Response {
    let (status, body) = ready_body(&metrics);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
