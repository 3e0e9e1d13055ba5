//! The HTTP listener (`globals.metrics_listen`): `/metrics`, `/health`, `/ready` and `/status`.

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

/// Serves `/metrics`, `/health`, `/ready` and `/status` on `listener` until `cancel`;
/// `replica` is this process's name, as `/status` shows it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    replica: String,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let status_clock = clock.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |metrics: State<Arc<Metrics>>| metrics_handler(metrics, clock.clone())),
        )
        .route(
            "/status",
            get(move |metrics: State<Arc<Metrics>>| {
                status_handler(metrics, status_clock.clone(), replica.clone())
            }),
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

async fn status_handler(
    State(metrics): State<Arc<Metrics>>,
    clock: SharedClock,
    replica: String,
) -> Response {
    let report = metrics.status_report(clock.now_ms(), &replica);
    let body = serde_json::to_string(&report).expect("a status report always serialises");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
