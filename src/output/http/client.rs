//! The HTTP side shared by the `http` (webhook) and `splunk_hec` outputs: the reqwest client
//! (TLS verified against the configured roots, optional client certificate, no redirects), the
//! cutting of a batch into requests, and one request's retries.
//!
//! ## What a response means
//! - 2xx: the request is confirmed (for HEC with acknowledgement, only accepted: see `hec`).
//! - 429 and 5xx, and transport failures (refused, reset, timeout): retried with a jittered
//!   backoff, waiting at least the server's `Retry-After` (seconds), [`RequestTuning::attempts`]
//!   tries in all; then the batch fails (the outputs fan-out and the next cycle retry it).
//! - 413 and 400: the request is split in halves, each sent on its own ([`post_batch`]), until
//!   the event(s) the receiver refuses are alone; the batch's other events are sent. An event
//!   refused alone is reported ([`OutputError::Refused`]): a retry gets the same answer, so the
//!   fan-out sets it aside for this output after a few tries. When the first few events tried
//!   alone are all refused and none was accepted, the receiver (or this output's settings)
//!   refuses everything: the batch fails as a whole instead, and nothing is set aside.
//! - 3xx: a failure naming the new location. Following it would turn a POST into a GET for
//!   301/302/303 (reqwest and python-requests both do) and confirm a batch nobody received.
//! - Any other 4xx: the batch fails with the status and the start of the body.
//!
//! Secrets: header values are marked sensitive, and errors carry the URL without its query
//! ([`shown_url`]): a webhook URL may hold a token there.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backoff::{Backoff, Jitter};
use crate::event::Event;
use crate::output::OutputError;

/// Bytes of a response body quoted in an error.
const BODY_EXCERPT: usize = 200;

/// Largest response body read (HEC answers are tiny; a webhook's is ignored beyond its status).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// TLS settings of an HTTP output; the keys mean what they mean for `devo_platform`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpTls {
    /// CA certificates the server must chain to (`chain`).
    pub chain: Option<PathBuf>,
    /// More CA certificates (`ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Also trust the operating system's store (`system_trust_store`).
    pub system_trust_store: bool,
    /// Client certificate and key (`cert`, `key`), both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl HttpTls {
    /// Whether any root was configured; without one the built-in Mozilla roots are used (a
    /// webhook or Splunk Cloud has a public certificate), unlike the syslog outputs.
    fn has_roots(&self) -> bool {
        self.chain.is_some() || self.ca_file.is_some() || self.system_trust_store
    }
}

/// Request body compression (`compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// The settings both HTTP outputs share. `Debug` shows the URL without its query.
#[derive(Clone)]
pub struct HttpClientConfig {
    pub url: url::Url,
    pub tls: HttpTls,
    /// Limit for one request, answer included (`request_timeout_in_seconds`, default 60 as
    /// iso2web's `--timeout`).
    pub request_timeout: Duration,
    /// Limit for the TCP connect and TLS handshake (`connect_timeout_in_seconds`).
    pub connect_timeout: Duration,
    pub compression: Compression,
    /// Events per request at most (`max_events_per_request`).
    pub max_events_per_request: usize,
    /// Uncompressed body bytes per request at most (`max_body_bytes`); a single larger event
    /// is sent alone.
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for HttpClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientConfig")
            .field("url", &shown_url(&self.url))
            .field("tls", &self.tls)
            .field("compression", &self.compression)
            .field("max_events_per_request", &self.max_events_per_request)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Defaults of [`HttpClientConfig`].
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// 100 MB: Splunk's default `max_content_length` (limits.conf, `[http_input]`) is 800 MB, and
/// webhook receivers vary; a 413 splits a request anyway.
pub const DEFAULT_MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

/// Retry settings no configuration key reaches (tests may choose others).
#[derive(Clone, Debug)]
pub struct RequestTuning {
    /// Tries per request within one delivery (at least 1).
    pub attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RequestTuning {
    fn default() -> Self {
        RequestTuning {
            attempts: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The secrets of `url` (its password and query values) and `values` (a token, header values:
/// whole, and each word of eight characters or more, as `Bearer <token>` may be echoed as the
/// token alone), for [`Poster::secrets`].
pub fn secrets_of(url: &url::Url, values: &[&str]) -> Vec<String> {
    let mut secrets: Vec<String> = url.password().map(str::to_owned).into_iter().collect();
    secrets.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    for value in values {
        secrets.push((*value).to_owned());
        secrets.extend(
            value
                .split_whitespace()
                .filter(|w| w.len() >= 8)
                .map(str::to_owned),
        );
    }
    // Longest first: a secret inside a longer one must not break the longer one's match.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The URL as it may be shown: scheme, host, port and path, never the query or user info.
pub fn shown_url(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Builds the client: roots from `chain` + `ca_file` + system store, or the built-in roots
/// when none is given; the client certificate if set; no proxy and no redirects.
pub fn build_client(output: &str, cfg: &HttpClientConfig) -> Result<reqwest::Client, OutputError> {
    let peer = |reason: String| OutputError::Peer {
        output: output.to_owned(),
        reason,
    };
    let mut roots = crate::trust::Roots {
        builtin: !cfg.tls.has_roots(),
        system: cfg.tls.system_trust_store,
        files: Vec::new(),
    };
    if let Some(chain) = &cfg.tls.chain {
        roots.files.push(("chain", chain.as_path()));
    }
    if let Some(ca) = &cfg.tls.ca_file {
        roots.files.push(("ca_file", ca.as_path()));
    }
    let store = crate::trust::root_store(&roots).map_err(|e| peer(e.to_string()))?;
    let tls = match &cfg.tls.client {
        None => crate::trust::client_config(store),
        Some((cert, key)) => {
            let chain = crate::output::net::tls::read_certs(output, cert, "cert")?;
            let key_der = crate::output::net::tls::read_key(output, key)?;
            let c = crate::output::net::connect::client_config(store, chain, key_der, true)
                .map_err(|e| {
                    peer(format!(
                        "TLS setup with cert {} and key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            Arc::new(c)
        }
    };
    reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        .connect_timeout(cfg.connect_timeout)
        .user_agent(concat!("isolation-collector/", env!("CARGO_PKG_VERSION")))
        .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| peer(format!("HTTP client setup: {e}")))
}

/// A 2xx answer: its status and (the start of) its body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// How one request ended after its retries.
#[derive(Debug)]
pub enum Sent {
    Accepted(Answer),
    /// 413: the caller splits.
    TooLarge,
    /// 400, with the reason (status and redacted body): the caller splits, to find the
    /// event(s) refused.
    Refused(String),
}

/// One request's failure, before the retry decision.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

/// Where and how to POST; shared by the outputs.
pub struct Poster {
    pub output: String,
    pub client: reqwest::Client,
    pub tuning: RequestTuning,
    /// Ends a wait between tries (a shutdown request).
    pub stop_retries: CancellationToken,
    /// Explains a 401/403 for this kind of receiver.
    pub auth_hint: &'static str,
    /// Shows a refusal's body in an error ([`body_excerpt`], or HEC's text and code).
    pub describe_body: fn(&[u8]) -> String,
    /// The output's secrets (token, header values, URL credentials), removed from every answer
    /// before it is quoted ([`Poster::excerpt`]).
    pub secrets: Vec<String>,
}

impl Poster {
    /// The start of an answer's body for an error: the secrets removed first, then cut
    /// ([`body_excerpt`]), so that a secret straddling the cut cannot show its start.
    pub fn excerpt(&self, body: &[u8]) -> String {
        body_excerpt(&crate::secret::redact(body, &self.secrets))
    }

    pub fn peer_error(&self, reason: String) -> OutputError {
        OutputError::Peer {
            output: self.output.clone(),
            reason,
        }
    }

    /// POSTs `body` to `url` with `headers`, retrying 429, 5xx and transport failures.
    ///
    /// # Errors
    /// [`OutputError::Peer`] with the last failure (status and the start of the body).
    pub async fn post(
        &self,
        url: &url::Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Sent, OutputError> {
        let mut backoff = Backoff::new(self.tuning.backoff_initial, self.tuning.backoff_max)
            .jitter(Jitter::UpperHalf);
        loop {
            let failure = match self.post_once(url, headers, body.clone()).await {
                Ok(sent) => return Ok(sent),
                Err(f) => f,
            };
            if !failure.retryable || backoff.attempts() + 1 >= self.tuning.attempts.max(1) {
                return Err(self.peer_error(failure.reason));
            }
            let wait = backoff.next_wait_after(failure.retry_after);
            warn!(
                output = %self.output,
                error = %failure.reason,
                attempt = backoff.attempts(),
                wait_ms = wait.as_millis() as u64,
                "Request not confirmed; retrying."
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop_retries.cancelled() => return Err(self.peer_error(failure.reason)),
            }
        }
    }

    async fn post_once(
        &self,
        url: &url::Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Sent, Failure> {
        let request = self
            .client
            .post(url.clone())
            .headers(headers.clone())
            .body(body);
        let (status, body, retry_after, location) = exchange(url, request).await?;
        let shown = shown_url(url);
        classify(&shown, status, &body, retry_after, location, self)
    }
}

/// A response: status, body (its start), `Retry-After`, `Location`.
type Exchanged = (StatusCode, Bytes, Option<Duration>, Option<String>);

/// Sends `request` and reads its answer; a transport failure is retryable.
pub async fn exchange(
    url: &url::Url,
    request: reqwest::RequestBuilder,
) -> Result<Exchanged, Failure> {
    let shown = shown_url(url);
    let resp = request
        .send()
        .await
        .map_err(|e| transport_failure(&shown, &e.without_url()))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_answer(resp)
        .await
        .map_err(|e| transport_failure(&shown, &e.without_url()))?;
    Ok((status, body, retry_after, location))
}

/// What a status means (see the module documentation).
fn classify(
    shown: &str,
    status: StatusCode,
    body: &Bytes,
    retry_after: Option<Duration>,
    location: Option<String>,
    poster: &Poster,
) -> Result<Sent, Failure> {
    let auth_hint = poster.auth_hint;
    let excerpt = (poster.describe_body)(&crate::secret::redact(body, &poster.secrets));
    let fail = |reason: String, retryable: bool| Failure {
        reason,
        retryable,
        retry_after,
    };
    match status.as_u16() {
        200..=299 => Ok(Sent::Accepted(Answer {
            status,
            body: body.clone(),
        })),
        413 => Ok(Sent::TooLarge),
        400 => Ok(Sent::Refused(format!(
            "{shown} answered {status}: {excerpt}"
        ))),
        429 | 500..=599 => Err(fail(format!("{shown} answered {status}: {excerpt}"), true)),
        300..=399 => Err(fail(
            format!(
                "{shown} answered {status} (redirect to {}); set url to the final address: a \
                 redirected POST may arrive as a GET without the events",
                location.as_deref().map_or("?".into(), redact_query)
            ),
            false,
        )),
        401 | 403 => Err(fail(
            format!("{shown} refused the credentials ({status}: {excerpt}); {auth_hint}"),
            false,
        )),
        _ => Err(fail(format!("{shown} answered {status}: {excerpt}"), false)),
    }
}

/// A location without its query.
fn redact_query(location: &str) -> String {
    location.split('?').next().unwrap_or("").to_owned()
}

fn transport_failure(shown: &str, e: &reqwest::Error) -> Failure {
    // The chain of sources says what happened (refused, reset, the TLS error).
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(reason) = tls_problem(&detail) {
        // A certificate problem does not go away by retrying.
        return Failure {
            reason: format!("{shown}: {reason}"),
            retryable: false,
            retry_after: None,
        };
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Failure {
        reason: format!("{shown}: {kind}: {detail}"),
        retryable: true,
        retry_after: None,
    }
}

/// A certificate problem in an error chain's text, said with its fix; `None` for others.
///
/// Read from rustls' messages ("invalid peer certificate: UnknownIssuer", "received fatal
/// alert: CertificateRequired") because hyper and reqwest box the rustls error on its way up,
/// where a downcast no longer reaches it. The TLS tests pin these texts.
fn tls_problem(detail: &str) -> Option<String> {
    let after = |marker: &str| {
        detail.find(marker).map(|i| {
            detail[i + marker.len()..]
                .split([':', ' ', ')'])
                .next()
                .unwrap_or("")
                .to_owned()
        })
    };
    if let Some(what) = after("invalid peer certificate: ") {
        if what.starts_with("NotValidForName") {
            return Some(format!(
                "the server certificate is not valid for this host name ({what}); fix `url`"
            ));
        }
        return Some(format!(
            "the server certificate is not trusted ({what}); give the CA that issued it as \
             `ca_file` (or `chain`): without either only the built-in Mozilla roots are trusted"
        ));
    }
    let alert = after("received fatal alert: ")?;
    let client_cert = [
        "CertificateRequired",
        "BadCertificate",
        "UnknownCA",
        "CertificateUnknown",
        "AccessDenied",
        "UnsupportedCertificate",
        "CertificateExpired",
        "CertificateRevoked",
    ];
    client_cert.contains(&alert.as_str()).then(|| {
        format!(
            "the receiver rejected our client certificate, or wants one (TLS alert {alert}); \
             check `cert` and `key`"
        )
    })
}

async fn read_answer(mut resp: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(Bytes::from(body))
}

/// The start of a body for an error: lossy UTF-8, one line, at most [`BODY_EXCERPT`] bytes.
pub fn body_excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT)];
    let text: String = String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    match (text.is_empty(), body.len() > BODY_EXCERPT) {
        (true, _) => "(empty body)".to_owned(),
        (false, true) => format!("{text}..."),
        (false, false) => text.to_owned(),
    }
}

/// The content headers of a body: its type and, if compressed, its encoding.
pub fn content_headers(headers: &mut HeaderMap, content_type: &'static str, c: Compression) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if c == Compression::Gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
}

/// The body as sent: as is, or gzipped.
pub fn compress(body: Vec<u8>, c: Compression) -> Bytes {
    match c {
        Compression::None => Bytes::from(body),
        Compression::Gzip => {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 8),
                flate2::Compression::fast(),
            );
            enc.write_all(&body).expect("writing to a Vec cannot fail");
            Bytes::from(enc.finish().expect("writing to a Vec cannot fail"))
        }
    }
}

/// Cuts `events` into ranges of at most `max_events` events and (estimated by `event_bytes`)
/// `max_bytes` body bytes; an event larger than `max_bytes` gets a range of its own.
pub fn cut_requests(
    events: &[Event],
    max_events: usize,
    max_bytes: usize,
    event_bytes: impl Fn(&Event) -> usize,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let n = event_bytes(e);
        if i > start && (i - start >= max_events.max(1) || bytes + n > max_bytes) {
            ranges.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < events.len() {
        ranges.push(start..events.len());
    }
    ranges
}

/// A batch's requests stopped by a failure: the error, and the events (indices, ascending)
/// the requests before it got a 2xx for.
#[derive(Debug)]
pub struct Stopped {
    pub error: OutputError,
    pub accepted: Vec<usize>,
}

/// Events refused alone, with none accepted, after which the receiver is taken to refuse
/// everything (a wrong index, format or path) rather than those events.
const REFUSED_ALONE_WITHOUT_ANY_ACCEPTED: usize = 3;

/// Sends the requests of `ranges` in order, splitting a range in halves on 413 or 400 until
/// the refused events are alone. `send` posts one range (building its body) and reports what
/// came back; `accepted` takes each 2xx answer with its range.
///
/// # Errors
/// The first failure of another kind, with the events accepted before it; else, when events
/// were refused alone, [`OutputError::Refused`] naming them (every other event was accepted).
pub async fn post_batch<S, Fut>(
    mut ranges: Vec<Range<usize>>,
    poster: &Poster,
    mut send: S,
    mut accepted: impl FnMut(Range<usize>, Answer) -> Result<(), OutputError>,
) -> Result<(), Stopped>
where
    S: FnMut(Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<(Sent, usize), OutputError>>,
{
    ranges.reverse(); // a stack: the next range is last
    let mut done = Vec::new();
    let mut refused = Vec::new();
    while let Some(r) = ranges.pop() {
        let answer = send(r.clone()).await.and_then(|(sent, bytes)| match sent {
            Sent::Accepted(answer) => accepted(r.clone(), answer).map(|()| None),
            Sent::TooLarge => Ok(Some((too_large(bytes), Some(bytes)))),
            Sent::Refused(reason) => Ok(Some((reason, None))),
        });
        let (reason, too_large_bytes) = match answer {
            Ok(None) => {
                done.extend(r);
                continue;
            }
            Ok(Some(refusal)) => refusal,
            Err(error) => {
                return Err(Stopped {
                    error,
                    accepted: done,
                })
            }
        };
        if r.len() <= 1 {
            refused.push((r.start, reason));
            if done.is_empty() && refused.len() >= REFUSED_ALONE_WITHOUT_ANY_ACCEPTED {
                let error = refuses_everything(poster, &refused);
                return Err(Stopped {
                    error,
                    accepted: done,
                });
            }
            continue;
        }
        if let Some(bytes) = too_large_bytes {
            warn!(
                output = %poster.output,
                events = r.len(),
                bytes,
                "The receiver refused a request as too large (413); sending it in halves."
            );
        } else {
            warn!(
                output = %poster.output,
                events = r.len(),
                answer = %reason,
                "The receiver refused a request (400); sending it in halves to find the event(s) it refuses."
            );
        }
        let mid = r.start + r.len() / 2;
        ranges.push(mid..r.end);
        ranges.push(r.start..mid);
    }
    if refused.is_empty() {
        return Ok(());
    }
    let error = OutputError::Refused {
        output: poster.output.clone(),
        events: refused,
    };
    Err(Stopped {
        error,
        accepted: done,
    })
}

/// Why a single event was refused with 413.
fn too_large(bytes: usize) -> String {
    format!(
        "the receiver refused a single event of {bytes} body bytes as too large (413); raise \
         its request size limit"
    )
}

/// The error when every event tried alone was refused and none accepted.
fn refuses_everything(poster: &Poster, refused: &[(usize, String)]) -> OutputError {
    poster.peer_error(format!(
        "the receiver refused each of {} events sent alone and accepted none ({}): its \
         configuration or this output's (url, index, format) is the likely cause, not the \
         events; nothing is set aside",
        refused.len(),
        refused.last().map_or("", |(_, reason)| reason.as_str())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(len: usize) -> Event {
        Event {
            date_ms: 0,
            key: [0; 32],
            json: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn requests_are_cut_by_count_and_by_bytes() {
        let events: Vec<Event> = [10, 10, 10, 50, 10, 10].into_iter().map(ev).collect();
        let len = |e: &Event| e.json.len();
        assert_eq!(cut_requests(&events, 2, 1000, len), [0..2, 2..4, 4..6]);
        // 30 bytes fit, the 50-byte event is alone (over the limit by itself).
        assert_eq!(cut_requests(&events, 100, 30, len), [0..3, 3..4, 4..6]);
        assert!(cut_requests(&[], 2, 10, len).is_empty());
    }

    #[test]
    fn statuses_are_classified() {
        let b = Bytes::from_static(b"{\"text\":\"Server is busy\",\"code\":9}");
        let poster = poster();
        let c = |s: u16| {
            let status = StatusCode::from_u16(s).unwrap();
            classify("u", status, &b, None, None, &poster)
        };
        assert!(matches!(c(200), Ok(Sent::Accepted(_))));
        assert!(matches!(c(204), Ok(Sent::Accepted(_))));
        assert!(matches!(c(413), Ok(Sent::TooLarge)));
        for s in [429, 500, 503] {
            let f = c(s).unwrap_err();
            assert!(f.retryable, "{s}");
            assert!(f.reason.contains("Server is busy"), "{}", f.reason);
        }
        assert!(matches!(c(400), Ok(Sent::Refused(r)) if r.contains("Server is busy")));
        for s in [301, 401, 404] {
            assert!(!c(s).unwrap_err().retryable, "{s}");
        }
        assert!(c(403).unwrap_err().reason.ends_with("; hint"));
    }

    fn poster() -> Poster {
        Poster {
            output: "o".into(),
            client: reqwest::Client::new(),
            tuning: RequestTuning::default(),
            stop_retries: CancellationToken::new(),
            auth_hint: "hint",
            describe_body: body_excerpt,
            secrets: Vec::new(),
        }
    }

    /// Posts 20 events in requests of 10 to a receiver that answers 413 to any request holding
    /// an event of `refused`; returns what `post_batch` said and the ranges sent.
    async fn post_refusing(refused: &[usize]) -> (Result<(), Stopped>, Vec<Range<usize>>) {
        let mut sent = Vec::new();
        let result = post_batch(
            vec![0..10, 10..20],
            &poster(),
            |r: Range<usize>| {
                sent.push(r.clone());
                let too_large = refused.iter().any(|i| r.contains(i));
                let answer = Answer {
                    status: StatusCode::OK,
                    body: Bytes::new(),
                };
                let sent = if too_large {
                    Sent::TooLarge
                } else {
                    Sent::Accepted(answer)
                };
                async move { Ok((sent, 100)) }
            },
            |_, _| Ok(()),
        )
        .await;
        (result, sent)
    }

    #[tokio::test]
    async fn an_event_refused_alone_is_named_and_every_other_event_sent() {
        let (result, sent) = post_refusing(&[3]).await;
        let stopped = result.unwrap_err();
        let others: Vec<usize> = (0..20).filter(|&i| i != 3).collect();
        assert_eq!(stopped.accepted, others, "sent: {sent:?}");
        let refused = stopped.error.refused();
        assert_eq!(refused.len(), 1, "{:?}", stopped.error);
        assert_eq!(refused[0].0, 3);
        assert!(refused[0].1.contains("too large (413)"), "{}", refused[0].1);
        // Bisected: 0..10, 0..5, 0..2, 2..5, 2..3, 3..5, 3..4, 4..5, 5..10, then 10..20.
        assert_eq!(sent.len(), 10, "{sent:?}");
    }

    #[tokio::test]
    async fn a_receiver_refusing_every_event_fails_the_batch_and_names_no_event() {
        let all: Vec<usize> = (0..20).collect();
        let (result, sent) = post_refusing(&all).await;
        let stopped = result.unwrap_err();
        assert!(stopped.error.refused().is_empty(), "{:?}", stopped.error);
        assert!(
            stopped
                .error
                .to_string()
                .contains("refused each of 3 events"),
            "{}",
            stopped.error
        );
        assert!(sent.len() < 10, "{sent:?}");
    }

    #[test]
    fn certificate_problems_are_named_with_their_fix() {
        let untrusted =
            tls_problem("client error (Connect): invalid peer certificate: UnknownIssuer");
        assert!(untrusted
            .unwrap()
            .contains("not trusted (UnknownIssuer); give the CA"));
        let name = tls_problem("x: invalid peer certificate: NotValidForNameContext { .. }");
        assert!(name.unwrap().contains("not valid for this host name"));
        let alert = tls_problem("x: received fatal alert: UnknownCA");
        assert!(alert.unwrap().contains("rejected our client certificate"));
        assert_eq!(tls_problem("x: received fatal alert: DecodeError"), None);
        assert_eq!(tls_problem("connection refused"), None);
    }

    #[test]
    fn shown_urls_hide_query_and_user_info() {
        let u = url::Url::parse("https://user:pw@hook.example:8443/in?token=s3cret").unwrap();
        assert_eq!(shown_url(&u), "https://hook.example:8443/in");
        assert_eq!(redact_query("/next?sig=abc"), "/next");
        assert_eq!(body_excerpt(b""), "(empty body)");
        assert_eq!(body_excerpt(&[b'a'; 300]).len(), BODY_EXCERPT + 3);
    }
}
