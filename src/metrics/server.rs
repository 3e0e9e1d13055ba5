//! The HTTP listener (`globals.metrics_listen`): `/metrics`, `/health`, `/ready`, `/status` and
//! the status page at `/` (`super::page`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use super::page::{self, PageQuery, RawPageQuery};
use super::readiness::ready_body;
use super::Metrics;
use crate::clock::SharedClock;

/// Serves `/metrics`, `/health`, `/ready`, `/status` and the page `/` on `listener` until
/// `cancel`; `replica` is this process's name, as `/status` and the page show it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    replica: String,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let status_clock = clock.clone();
    let page_clock = clock.clone();
    let page_replica = replica.clone();
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
        .route(
            "/",
            get(
                move |metrics: State<Arc<Metrics>>, query: Query<RawPageQuery>| {
                    page_handler(metrics, query, page_clock.clone(), page_replica.clone())
                },
            ),
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

/// The status page: `/status`'s report as HTML, or a 400 naming each bad query parameter.
async fn page_handler(
    State(metrics): State<Arc<Metrics>>,
    Query(raw): Query<RawPageQuery>,
    clock: SharedClock,
    replica: String,
) -> Response {
    let (status, markup) = match PageQuery::parse(&raw) {
        Ok(query) => {
            let report = metrics.status_report(clock.now_ms(), &replica);
            (StatusCode::OK, page::render(&report, &query))
        }
        Err(problems) => (StatusCode::BAD_REQUEST, page::render_bad_query(&problems)),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Every load is the state now; a cached page would show an old one.
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}
