//! HTTP layer: routes, authentication, fault application, and turning a [`Reply`] into a
//! response. The job logic itself is synchronous and lives in `state.rs`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;

use super::config::AuthFailureMode;
use super::faults::{self, Fault, FaultTarget};
use super::params::Params;
use super::state::{Counters, Reply, Shared};
use super::RequestRecord;

/// The routes of one simulated host: the v2 path with and without a trailing slash, and the
/// legacy path without `v2` that S5 called.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v2/reporting/usage-data", get(usage_data))
        .route("/api/v2/reporting/usage-data/", get(usage_data))
        .route("/api/reporting/usage-data", get(usage_data))
        .route("/api/reporting/usage-data/", get(usage_data))
        .with_state(shared)
}

/// The key from `Authorization: Bearer <key>` (scheme case-insensitive), else from `?key=`. The
/// header wins when both are present ([U] in §2; the header is what Proofpoint's own tools send).
fn presented_key(headers: &HeaderMap, params: &Params) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let key = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim().to_string(),
            _ => value,
        };
        return Some(key);
    }
    params.key.clone()
}

fn auth_failure(mode: AuthFailureMode, key: &str) -> Response {
    let message = format!("API Key {key} is not valid.");
    match mode {
        AuthFailureMode::Forbidden403Text => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain")],
            message,
        )
            .into_response(),
        AuthFailureMode::Unauthorized401Json => {
            let body = serde_json::json!({"error": "unauthorized", "message": message});
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

fn into_response(shared: &Shared, reply: Reply) -> Response {
    Counters::add(&shared.stats.events_served, reply.events);
    Counters::add(&shared.stats.bytes_served, reply.body.len() as u64);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

async fn usage_data(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let stats = &shared.stats;
    Counters::add(&stats.requests, 1);
    let params = Params::parse(query.as_deref().unwrap_or(""));
    let mut record = RequestRecord {
        at: Utc::now(),
        kind: None,
        page_size: params.page_size.as_deref().and_then(|p| p.parse().ok()),
    };

    let key = presented_key(&headers, &params);
    if key.as_deref() != Some(shared.cfg.api_key.as_str()) {
        Counters::add(&stats.auth_failures, 1);
        shared.log_request(record);
        return auth_failure(shared.cfg.auth_failure, key.as_deref().unwrap_or(""));
    }

    let kind = shared.classify(&params);
    record.kind = Some(kind);
    shared.log_request(record);
    match kind {
        FaultTarget::Poll => Counters::add(&stats.polls, 1),
        FaultTarget::Page => Counters::add(&stats.page_requests, 1),
        FaultTarget::Create | FaultTarget::Any => {}
    }
    let fault = shared.lock().faults.take(kind);
    if fault.is_some() {
        Counters::add(&stats.errors_injected, 1);
    }
    let mut force_error = false;
    let mut truncate = false;
    match fault {
        None => {}
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Status(code)) => return faults::status_response(code),
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            return faults::too_many_requests(retry_after_secs)
        }
        Some(Fault::Malformed) => return faults::malformed(params.job_id.as_deref()),
        Some(Fault::Truncate) => truncate = true,
        Some(Fault::JobError) => force_error = true,
    }

    let reply = shared.handle(&params, Utc::now().timestamp_millis(), force_error);
    if reply.status == 400 {
        Counters::add(&stats.bad_requests, 1);
    }
    if truncate {
        Counters::add(&stats.bytes_served, (reply.body.len() / 2) as u64);
        return faults::truncated(reply.body, reply.content_type);
    }
    into_response(&shared, reply)
}
