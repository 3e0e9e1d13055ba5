//! Receivers for the HTTP outputs, started per test on a free port: a webhook (what iso2web
//! posts to) and a stand-in for Splunk's HTTP Event Collector. Splunk cannot be installed here,
//! so the HEC receiver follows Splunk's documented behaviour ("Getting Data In": Format events
//! for HEC, About HEC Indexer Acknowledgment, Troubleshoot HEC status codes):
//!
//! - `Authorization: Splunk <token>`: missing 401 `{"text":"Token is required","code":2}`, not
//!   `Splunk ...` 401 code 3 "Invalid authorization", unknown 403 `{"text":"Invalid
//!   token","code":4}` (the documented status is 403 Forbidden).
//! - `/services/collector/event`: concatenated event objects (gzip if `Content-Encoding: gzip`);
//!   empty 400 code 5 "No data"; unparsable 400 code 6 "Invalid data format", no `event` 400
//!   code 12 "Event field is required", both with `invalid-event-number`; the request is then
//!   refused whole (nothing indexed).
//! - With acknowledgement on the token: the channel (`X-Splunk-Request-Channel` or `?channel=`)
//!   is required (400 code 10 "Data channel is missing", code 11 "Invalid data channel" if not
//!   a GUID); each accepted request gets `"ackId"`, counted per channel from 0.
//!   `/services/collector/ack` answers `{"acks":{"<id>":bool}}`; an id reported `true` is
//!   released (later queries say `false`). Without acknowledgement the ack endpoint answers
//!   400 code 14 "ACK is disabled".
//! - `/services/collector/health`: 200 `{"text":"HEC is healthy","code":17}`, or 503 code 18.
//! - Scripted answers for the next event requests: 503 code 9 "Server is busy", a status with
//!   `Retry-After`, an acknowledgement that comes late, one that never comes (the events
//!   indexed, or lost).

// The receiver measures real time for late acknowledgements.
#![allow(clippy::disallowed_methods)]
// A refusal is the HTTP response itself; boxing it would only add noise to a test receiver.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::rsyslog::CertFiles;

/// What the next event request gets instead of the normal answer.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// This status (and body), with `Retry-After` seconds if given; nothing indexed.
    Status(u16, &'static str, Option<u64>),
    /// Accepted; the events are indexed and acknowledged only after this long.
    AckLate(Duration),
    /// Accepted with an ackId that never turns true; the events are indexed (`true`) or lost.
    AckNever { indexed: bool },
    /// The normal answer (to script a failure of a later request).
    Normal,
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    pub events: usize,
    pub at: Instant,
    pub headers: HeaderMap,
    /// The request carried no event and asked for no acknowledgement: a check (`validate`'s,
    /// or `run`'s at start), not a delivery.
    pub check: bool,
}

/// One indexed HEC event: its metadata and the `event` member's bytes.
#[derive(Clone, Debug, Deserialize)]
pub struct Indexed {
    /// As sent (text), to compare exactly.
    pub time: Option<Box<RawValue>>,
    pub host: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub index: Option<String>,
    pub event: Option<Box<RawValue>>,
}

struct PendingAck {
    events: Vec<Indexed>,
    ready_at: Option<Instant>,
    /// Whether the events are indexed when the ack is ready (or already, for AckNever).
    index: bool,
}

#[derive(Default)]
struct Inner {
    token: String,
    ack_enabled: bool,
    unhealthy: bool,
    /// Requests with a larger (uncompressed) body get 413.
    max_body_bytes: Option<usize>,
    /// Until then, every webhook request gets 503 (a receiver that is down).
    down_until: Option<Instant>,
    /// Requests whose body holds this text get 400, whatever else they hold (a receiver that
    /// cannot take one event; HEC answers "Invalid data format", code 6, indexing nothing).
    refuse_containing: Option<String>,
    /// Answers to deliveries (requests that carry events, and acknowledgement queries).
    script: VecDeque<Scripted>,
    /// Answers to checks (see [`Seen::check`]).
    check_script: VecDeque<Scripted>,
    seen: Vec<Seen>,
    /// HEC: indexed events; webhook: received events (as raw JSON text).
    indexed: Vec<Indexed>,
    hook_events: Vec<String>,
    /// Per channel: next ack id and the open acks.
    channels: BTreeMap<String, (u64, BTreeMap<u64, PendingAck>)>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running receiver (webhook at `/hook`, HEC under `/services/collector`).
pub struct Receiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver on a free port; HEC accepts `token`, with acknowledgement if `ack`.
    pub async fn start(token: &str, ack: bool) -> Receiver {
        let state: Shared = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            ack_enabled: ack,
            ..Inner::default()
        }));
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            scheme: "http",
            state,
            task,
        }
    }

    /// Like [`Receiver::start`], over HTTPS with `server`'s certificate; with `client_ca`, a
    /// client certificate issued by it is required (mutual TLS).
    pub async fn start_tls(
        token: &str,
        ack: bool,
        server: &CertFiles,
        client_ca: Option<&Path>,
    ) -> Receiver {
        let mut r = Receiver::start(token, ack).await;
        r.task.abort();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r.addr = listener.local_addr().unwrap();
        r.scheme = "https";
        let tls = server_tls(server, client_ca);
        let app = router(r.state.clone());
        r.task = tokio::spawn(serve_tls(listener, app, tls));
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Scripts the answers to the next deliveries; checks do not take them.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Scripts the answers to the next checks (requests without events; see [`Seen::check`]).
    pub fn script_checks(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().check_script.extend(answers);
    }

    /// The deliveries seen: every request but the checks.
    pub fn deliveries(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| !s.check).collect()
    }

    pub fn set_max_body_bytes(&self, n: Option<usize>) {
        self.state.lock().unwrap().max_body_bytes = n;
    }

    /// The webhook answers every request with 503 for `period` from now.
    /// Answers 400 to every webhook or HEC event request whose body contains `needle`.
    pub fn refuse_requests_containing(&self, needle: &str) {
        self.state.lock().unwrap().refuse_containing = Some(needle.to_owned());
    }

    pub fn set_down_for(&self, period: Duration) {
        self.state.lock().unwrap().down_until = Some(Instant::now() + period);
    }

    pub fn set_unhealthy(&self, unhealthy: bool) {
        self.state.lock().unwrap().unhealthy = unhealthy;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The webhook's received events, as the JSON text of each.
    pub fn hook_events(&self) -> Vec<String> {
        self.state.lock().unwrap().hook_events.clone()
    }

    /// HEC's indexed events (late acknowledgements that are due are indexed first).
    pub fn indexed(&self) -> Vec<Indexed> {
        let mut s = self.state.lock().unwrap();
        flush_due(&mut s);
        s.indexed.clone()
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/hook", post(hook))
        .route("/services/collector/event", post(hec_event))
        .route("/services/collector/ack", post(hec_ack))
        .route("/services/collector/health", get(hec_health))
        .with_state(state)
}

/// The server's TLS: its certificate, and client certificates of `client_ca` required if set.
fn server_tls(server: &CertFiles, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let certs = rustls_pemfile::certs(&mut pem(&server.cert).as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut pem(&server.key).as_slice())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem(ca).as_slice()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}

/// tokio-rustls' accept loop with hyper's HTTP/1 driver (axum's `serve` is plain TCP only), as
/// the API simulator does; a failed handshake ends only its connection.
async fn serve_tls(listener: tokio::net::TcpListener, app: Router, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
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

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

fn answer(code: u16, body: Value) -> Response {
    (
        status_of(code),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Splunk's member order: `text`, `code`, then the rest (serde_json would sort them).
fn hec_error(code: u16, text: &str, hec_code: u32) -> Response {
    hec_answer(code, text, hec_code, "")
}

fn hec_answer(code: u16, text: &str, hec_code: u32, rest: &str) -> Response {
    let body = format!("{{\"text\":{},\"code\":{hec_code}{rest}}}", json!(text));
    (
        status_of(code),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

fn record(
    s: &mut Inner,
    (path, check): (&str, bool),
    status: u16,
    events: usize,
    headers: &HeaderMap,
) {
    s.seen.push(Seen {
        path: path.to_owned(),
        status,
        events,
        at: Instant::now(),
        headers: headers.clone(),
        check,
    });
}

fn body_text(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    if !gzip {
        return body.to_vec();
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// A scripted status, if the script says so (consumed): from the checks' script for a check.
fn scripted_status(s: &mut Inner, check: bool) -> Option<Response> {
    let script = match check {
        true => &mut s.check_script,
        false => &mut s.script,
    };
    if matches!(script.front(), Some(Scripted::Normal)) {
        script.pop_front();
        return None;
    }
    if !matches!(script.front(), Some(Scripted::Status(..))) {
        return None;
    }
    let Some(Scripted::Status(code, body, retry_after)) = script.pop_front() else {
        unreachable!()
    };
    let mut resp = (status_of(code), body.to_owned()).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    Some(resp)
}

/// Whether the receiver refuses a body holding `refuse_containing`.
fn refuses(s: &Inner, text: &[u8]) -> bool {
    (s.refuse_containing.as_ref()).is_some_and(|n| text.windows(n.len()).any(|w| w == n.as_bytes()))
}

async fn hook(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let text = body_text(&headers, &body);
    // An empty batch (`[]`, or no ndjson line): a check.
    let at = ("/hook", text.iter().all(|b| b"[] \t\r\n".contains(b)));
    let mut s = state.lock().unwrap();
    if let Some(max) = s.max_body_bytes.filter(|m| text.len() > *m) {
        record(&mut s, at, 413, 0, &headers);
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {max} bytes"),
        )
            .into_response();
    }
    if s.down_until.is_some_and(|t| Instant::now() < t) {
        record(&mut s, at, 503, 0, &headers);
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    if refuses(&s, &text) {
        record(&mut s, at, 400, 0, &headers);
        return (
            StatusCode::BAD_REQUEST,
            "field 'url' too long for our index",
        )
            .into_response();
    }
    if let Some(resp) = scripted_status(&mut s, at.1) {
        record(&mut s, at, resp.status().as_u16(), 0, &headers);
        return resp;
    }
    let ndjson = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-ndjson");
    let events: Vec<String> = if ndjson {
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<&RawValue>(l)
                    .unwrap()
                    .get()
                    .to_owned()
            })
            .collect()
    } else {
        match serde_json::from_slice::<Vec<&RawValue>>(&text) {
            Ok(v) => v.into_iter().map(|r| r.get().to_owned()).collect(),
            Err(e) => {
                record(&mut s, at, 400, 0, &headers);
                return (StatusCode::BAD_REQUEST, format!("not a JSON array: {e}")).into_response();
            }
        }
    };
    record(&mut s, at, 200, events.len(), &headers);
    s.hook_events.extend(events);
    (StatusCode::OK, "ok").into_response()
}

/// The token check of every HEC endpoint but health.
fn check_token(s: &Inner, headers: &HeaderMap) -> Result<(), Response> {
    let Some(auth) = headers.get("authorization") else {
        return Err(hec_error(401, "Token is required", 2));
    };
    let auth = auth.to_str().unwrap_or("");
    let Some(token) = auth.strip_prefix("Splunk ") else {
        return Err(hec_error(401, "Invalid authorization", 3));
    };
    if token != s.token {
        return Err(hec_error(403, "Invalid token", 4));
    }
    Ok(())
}

/// The request's channel (header or query); required with acknowledgement.
fn channel(
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
) -> Result<Option<String>, Response> {
    let c = headers
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("channel").cloned());
    match c {
        Some(c) if uuid::Uuid::parse_str(&c).is_err() => {
            Err(hec_error(400, "Invalid data channel", 11))
        }
        c => Ok(c),
    }
}

/// Parses HEC's batch format; a bad event refuses the request.
fn parse_events(text: &[u8]) -> Result<Vec<Indexed>, Response> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(hec_error(400, "No data", 5));
    }
    let mut events = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(text)
        .into_iter::<Indexed>()
        .enumerate()
    {
        let bad = |text: &str, code: u32| {
            hec_answer(400, text, code, &format!(",\"invalid-event-number\":{i}"))
        };
        match item {
            Err(_) => return Err(bad("Invalid data format", 6)),
            Ok(e) if e.event.is_none() => return Err(bad("Event field is required", 12)),
            Ok(e) if e.event.as_ref().is_some_and(|r| r.get() == "\"\"") => {
                return Err(bad("Event field cannot be blank", 13))
            }
            Ok(e) => events.push(e),
        }
    }
    Ok(events)
}

async fn hec_event(
    State(state): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = body_text(&headers, &body);
    // Parsed outside the lock (and once); answered in Splunk's order of checks below.
    let parsed = parse_events(&text);
    let n = parsed.as_ref().map_or(0, Vec::len);
    let check = text.iter().all(u8::is_ascii_whitespace);
    let mut s = state.lock().unwrap();
    let parsed = match parsed {
        Ok(_) if refuses(&s, &text) => Err(hec_answer(400, "Invalid data format", 6, "")),
        parsed => parsed,
    };
    let resp = hec_event_answer(&mut s, &query, &headers, text.len(), parsed, check);
    let n = if resp.status().is_success() { n } else { 0 };
    record(
        &mut s,
        ("/services/collector/event", check),
        resp.status().as_u16(),
        n,
        &headers,
    );
    resp
}

fn hec_event_answer(
    s: &mut Inner,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body_len: usize,
    parsed: Result<Vec<Indexed>, Response>,
    check: bool,
) -> Response {
    if let Err(r) = check_token(s, headers) {
        return r;
    }
    let channel = match channel(headers, query) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(max) = s.max_body_bytes.filter(|m| body_len > *m) {
        return hec_error(
            413,
            &format!(
                "Content-Length of {} too large (maximum is {max})",
                body_len
            ),
            27,
        );
    }
    if let Some(resp) = scripted_status(s, check) {
        return resp;
    }
    let events = match parsed {
        Ok(e) => e,
        Err(r) => return r,
    };
    if !s.ack_enabled {
        s.indexed.extend(events);
        return hec_error(200, "Success", 0);
    }
    let Some(channel) = channel else {
        return hec_error(400, "Data channel is missing", 10);
    };
    let pending = match s.script.pop_front() {
        Some(Scripted::AckLate(d)) => PendingAck {
            events,
            ready_at: Some(Instant::now() + d),
            index: true,
        },
        Some(Scripted::AckNever { indexed }) => {
            if indexed {
                s.indexed.extend(events);
            }
            PendingAck {
                events: Vec::new(),
                ready_at: None,
                index: false,
            }
        }
        Some(Scripted::Status(..)) => unreachable!("taken above"),
        None | Some(Scripted::Normal) => PendingAck {
            events,
            ready_at: Some(Instant::now()),
            index: true,
        },
    };
    let (next, open) = s.channels.entry(channel).or_default();
    let id = *next;
    *next += 1;
    open.insert(id, pending);
    flush_due(s);
    hec_answer(200, "Success", 0, &format!(",\"ackId\":{id}"))
}

/// Indexes the events whose acknowledgement is due.
fn flush_due(s: &mut Inner) {
    let now = Instant::now();
    let mut due = Vec::new();
    for (_, open) in s.channels.values_mut() {
        for p in open.values_mut() {
            if p.index && p.ready_at.is_some_and(|t| t <= now) {
                p.index = false;
                due.append(&mut p.events);
            }
        }
    }
    s.indexed.extend(due);
}

#[derive(Deserialize)]
struct AckQuery {
    acks: Vec<u64>,
}

async fn hec_ack(
    State(state): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    // A query on a channel that never carried events: a check.
    let check = channel(&headers, &query)
        .ok()
        .flatten()
        .is_none_or(|c| !s.channels.contains_key(&c));
    let resp = hec_ack_answer(&mut s, &query, &headers, &body);
    record(
        &mut s,
        ("/services/collector/ack", check),
        resp.status().as_u16(),
        0,
        &headers,
    );
    resp
}

fn hec_ack_answer(
    s: &mut Inner,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Err(r) = check_token(s, headers) {
        return r;
    }
    if !s.ack_enabled {
        return hec_error(400, "ACK is disabled", 14);
    }
    let channel = match channel(headers, query) {
        Ok(Some(c)) => c,
        Ok(None) => return hec_error(400, "Data channel is missing", 10),
        Err(r) => return r,
    };
    let Ok(q) = serde_json::from_slice::<AckQuery>(body) else {
        return hec_error(400, "Invalid data format", 6);
    };
    flush_due(s);
    let now = Instant::now();
    let open = &mut s.channels.entry(channel).or_default().1;
    let mut acks = serde_json::Map::new();
    for id in q.acks {
        let done = open
            .get(&id)
            .is_some_and(|p| p.ready_at.is_some_and(|t| t <= now));
        if done {
            open.remove(&id); // released once reported
        }
        acks.insert(id.to_string(), done.into());
    }
    answer(200, json!({ "acks": acks }))
}

async fn hec_health(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    let resp = if s.unhealthy {
        hec_error(503, "HEC is unhealthy, queues are full", 18)
    } else {
        hec_error(200, "HEC is healthy", 17)
    };
    record(
        &mut s,
        ("/services/collector/health", true),
        resp.status().as_u16(),
        0,
        &headers,
    );
    resp
}
