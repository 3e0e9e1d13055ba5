//! HTTP layer: routes, authentication (which key, so which tenant), fault application, and turning a [`Reply`] into a
//! response; HTTPS serving. The job logic itself is synchronous and lives in `state.rs`.

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
    let Some(tenant) = shared.tenant_of(key.as_deref()) else {
        Counters::add(&stats.auth_failures, 1);
        shared.log_request(record);
        return auth_failure(shared.cfg.auth_failure, key.as_deref().unwrap_or(""));
    };

    let kind = shared.classify(tenant, &params, Utc::now().timestamp_millis());
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
        Some(Fault::Refuse { status, body }) => return faults::refusal(status, body),
        Some(Fault::Truncate) => truncate = true,
        Some(Fault::JobError) => force_error = true,
    }

    if kind == FaultTarget::Page && !shared.cfg.page_latency.is_zero() {
        tokio::time::sleep(shared.cfg.page_latency).await;
    }
    let reply = shared.handle(tenant, &params, Utc::now().timestamp_millis(), force_error);
    if reply.status == 400 {
        Counters::add(&stats.bad_requests, 1);
    }
    if truncate {
        Counters::add(&stats.bytes_served, (reply.body.len() / 2) as u64);
        return faults::truncated(reply.body, reply.content_type);
    }
    into_response(&shared, reply)
}

/// The TLS server configuration from PEM files: a certificate chain and its key.
pub(crate) fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |what: &str, path: &std::path::Path, why: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} {}: {why}", path.display()),
        )
    };
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
        .ok_or_else(|| invalid("key", key, "no PEM private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| invalid("certificate", cert, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Serves `app` over HTTPS until `stopped`. axum's `serve` speaks plain TCP only, so this is
/// the accept loop of tokio-rustls with hyper's HTTP/1 connection driver, one task per
/// connection. A failed handshake (a client that does not trust the certificate) ends only
/// that connection.
pub(crate) async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    tracing::warn!(%error, "Simulator accept failed.");
                    // Out of descriptors, say: don't spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
