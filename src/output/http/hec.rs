//! The `splunk_hec` output: Splunk's HTTP Event Collector, with indexer acknowledgement.
//!
//! Each event becomes one HEC event object, the objects of a request concatenated (HEC's batch
//! format), POSTed to `/services/collector/event` with `Authorization: Splunk <token>`:
//!
//! `{"time":1700000000.123,"host":H,"source":S,"sourcetype":T,"index":I,"event":<vendor event>}`
//!
//! `time` is the event's `date` in epoch seconds with milliseconds (left out for an event
//! without a usable date: Splunk then uses the time it received it); `index` is left out unless
//! configured (the token's default index). The vendor's event is embedded byte for byte.
//!
//! ## Indexer acknowledgement (`use_ack`, default true)
//! A 200 from HEC only says the request was parsed; the events may still be lost before they
//! are indexed. With acknowledgement every request carries `X-Splunk-Request-Channel` (a random
//! UUID per output instance, i.e. per output and service) and its answer an `ackId`. After the
//! last request of a batch the output polls `/services/collector/ack` with the open ids until
//! every one is `true`; only then is the batch confirmed. An id still open after
//! `ack_timeout_in_seconds` fails the batch: the requests whose ids were acknowledged are
//! reported confirmed ([`OutputError::Partly`]) and not sent again; the others are sent again
//! (new ids), so events of requests that were indexed but whose acknowledgement never came are
//! duplicated, and no event is lost. A request refused after others were accepted waits for
//! their acknowledgements first, for the same reason. Without `use_ack` a 200 confirms (HEC's
//! own "at most once" gap remains).
//!
//! A shutdown request or a reload does not end a started acknowledgement wait: the events
//! are at Splunk, and abandoning the wait would send them again after the restart. The wait
//! ends within `ack_timeout_in_seconds`, and the shutdown within its grace period.
//!
//! A 2xx without `ackId` while `use_ack` is on means the token has acknowledgement off: a
//! configuration error. Splunk indexed that request, and would index every re-sent copy, so the
//! output stops: the error (with its fix) is logged once, every later delivery is refused
//! without sending, and the service stalls, without duplicates, until the configuration is
//! fixed and reloaded.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::client::{
    body_excerpt, build_client, compress, content_headers, cut_requests, exchange, post_batch,
    secrets_of, shown_url, HttpClientConfig, Poster, RequestTuning, Sent,
};
use super::hec_answer::{ack_query, acknowledged, EventAnswer};
use crate::backoff::Backoff;
use crate::event::{Event, UNDATED};
use crate::output::builder::{Healthcheck, OutputBuilder, OutputContext};
use crate::output::OutputError;
use crate::secret::redact;

/// The channel header of indexer acknowledgement.
const CHANNEL_HEADER: &str = "x-splunk-request-channel";

/// First wait before asking for acknowledgements; doubled up to [`ACK_POLL_MAX`].
const ACK_POLL_FIRST: Duration = Duration::from_millis(100);
const ACK_POLL_MAX: Duration = Duration::from_secs(2);

/// Default `ack_timeout_in_seconds`.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Configuration of a `splunk_hec` output (`outputs.<name>.config`).
#[derive(Clone)]
pub struct HecOutputConfig {
    /// HEC's base URL (`https://splunk.example:8088`); the paths are appended.
    pub client: HttpClientConfig,
    /// The HEC token (a secret: never shown).
    pub token: String,
    pub index: Option<String>,
    /// Overrides the per-table default ([`default_sourcetype`]).
    pub sourcetype: Option<String>,
    /// Overrides the default: the table (`tap.proofpoint.isolation.url_isolation`).
    pub source: Option<String>,
    /// Overrides the system host name.
    pub host: Option<String>,
    pub use_ack: bool,
    pub ack_timeout: Duration,
}

impl std::fmt::Debug for HecOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HecOutputConfig")
            .field("url", &shown_url(&self.client.url))
            .field("token", &"****")
            .field("index", &self.index)
            .field("use_ack", &self.use_ack)
            .finish_non_exhaustive()
    }
}

/// The sourcetype of a table's events unless configured: `proofpoint:isolation:` and the
/// table's last part (the service's tag suffix), e.g. `proofpoint:isolation:url_isolation` and
/// `proofpoint:isolation:browser_and_email`. One per service, so that field extractions can
/// differ (the two services' events have different fields).
pub fn default_sourcetype(table: &str) -> String {
    let suffix = table.rsplit('.').next().unwrap_or(table);
    format!("proofpoint:isolation:{suffix}")
}

/// HEC's base URL from the configured one: a trailing `/services/collector[/event]` is
/// accepted and removed, so both the base and the full event URL work.
pub fn base_url(url: &url::Url) -> url::Url {
    let mut base = url.clone();
    let path = url.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/services/collector/event")
        .or_else(|| path.strip_suffix("/services/collector"))
        .unwrap_or(path);
    base.set_path(path);
    base.set_query(None);
    base
}

fn endpoint(base: &url::Url, tail: &str) -> url::Url {
    let mut u = base.clone();
    let path = format!(
        "{}/services/collector/{tail}",
        base.path().trim_end_matches('/')
    );
    u.set_path(&path);
    u
}

/// A `splunk_hec` output. See the module documentation.
pub struct SplunkHecOutput {
    poster: Poster,
    event_url: url::Url,
    ack_url: url::Url,
    health_url: url::Url,
    headers: HeaderMap,
    config: HecOutputConfig,
    host: String,
    /// The metadata members of the last table's events (`,"host":…,"event":`).
    fields: Option<(String, String)>,
    /// Set by a configuration error found while delivering (acknowledgement off for the token
    /// with `use_ack`): the output then refuses every delivery without sending.
    stopped: Option<String>,
}

impl SplunkHecOutput {
    /// Builds the output and its client.
    ///
    /// # Errors
    /// Unreadable TLS files; a token that cannot be a header value.
    pub fn from_config(name: String, config: &HecOutputConfig) -> Result<Self, OutputError> {
        Self::with_tuning(name, config, RequestTuning::default())
    }

    /// [`SplunkHecOutput::from_config`] with other retry settings.
    ///
    /// # Errors
    /// As [`SplunkHecOutput::from_config`].
    pub fn with_tuning(
        name: String,
        config: &HecOutputConfig,
        tuning: RequestTuning,
    ) -> Result<Self, OutputError> {
        let client = build_client(&name, &config.client)?;
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::try_from(format!("Splunk {}", config.token)).map_err(|_| {
            OutputError::Peer {
                output: name.clone(),
                reason: "the token holds characters a header cannot carry".into(),
            }
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        if config.use_ack {
            let channel = uuid::Uuid::new_v4().to_string();
            headers.insert(
                HeaderName::from_static(CHANNEL_HEADER),
                HeaderValue::try_from(channel).expect("a UUID is a header value"),
            );
        }
        let base = base_url(&config.client.url);
        Ok(SplunkHecOutput {
            poster: Poster {
                output: name,
                client,
                tuning,
                stop_retries: CancellationToken::new(),
                auth_hint: "check `token` (or `token_file`): Splunk answers code 4 for an unknown token, 1 for a disabled one",
                describe_body: describe_answer,
                secrets: secrets_of(&config.client.url, &[&config.token]),
            },
            event_url: endpoint(&base, "event"),
            ack_url: endpoint(&base, "ack"),
            health_url: endpoint(&base, "health"),
            headers,
            host: config
                .host
                .clone()
                .unwrap_or_else(crate::output::net::format::system_hostname),
            config: config.clone(),
            fields: None,
            stopped: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.poster.output
    }

    /// Waits between tries (and between acknowledgement polls) end when `cancel` fires.
    pub fn stop_retries_on(&mut self, cancel: CancellationToken) {
        self.poster.stop_retries = cancel;
    }

    /// The members every event of `table` carries besides `time` and `event`, ending in
    /// `"event":`.
    fn fields_for(&mut self, table: &str) -> String {
        if let Some((t, f)) = &self.fields {
            if t == table {
                return f.clone();
            }
        }
        let c = &self.config;
        let s = |v: &str| serde_json::to_string(v).expect("a string");
        let mut f = format!(
            "\"host\":{},\"source\":{},\"sourcetype\":{},",
            s(&self.host),
            s(c.source.as_deref().unwrap_or(table)),
            s(&c.sourcetype
                .clone()
                .unwrap_or_else(|| default_sourcetype(table))),
        );
        if let Some(index) = &c.index {
            f.push_str(&format!("\"index\":{},", s(index)));
        }
        f.push_str("\"event\":");
        self.fields = Some((table.to_owned(), f.clone()));
        f
    }

    /// Sends `events` of `table`, then (with `use_ack`) waits for every acknowledgement.
    ///
    /// # Errors
    /// [`OutputError::Peer`]: a refused request (status and Splunk's text), acknowledgements
    /// missing after `ack_timeout_in_seconds`, or the output stopped for a configuration error
    /// (a 2xx without `ackId` with `use_ack`). When a request failed after others were
    /// accepted (and, with `use_ack`, acknowledged), the error is [`OutputError::Partly`] with
    /// their events.
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        if let Some(reason) = &self.stopped {
            // Never sent again: Splunk indexed what it got, and would index it again.
            return Err(self.poster.peer_error(reason.clone()));
        }
        let fields = self.fields_for(table);
        let c = &self.config.client;
        let ranges = cut_requests(events, c.max_events_per_request, c.max_body_bytes, |e| {
            e.json.len() + fields.len() + 32
        });
        let this = &*self;
        let fields = fields.as_str();
        // Per open ackId, the events of its request.
        let mut open = BTreeMap::new();
        let mut no_ack_id = None;
        let posted = post_batch(
            ranges,
            &self.poster,
            |r| async move {
                let body = encode(fields, &events[r]);
                let bytes = body.len();
                let body = compress(body, this.config.client.compression);
                let mut headers = this.headers.clone();
                content_headers(
                    &mut headers,
                    "application/json",
                    this.config.client.compression,
                );
                let sent = this.poster.post(&this.event_url, &headers, body).await?;
                Ok((sent, bytes))
            },
            |r, answer| {
                if !this.config.use_ack {
                    return Ok(());
                }
                match EventAnswer::parse(&answer.body).and_then(|a| a.ack_id) {
                    Some(id) => {
                        open.insert(id, r);
                        Ok(())
                    }
                    None => {
                        let reason = this.ack_off(&answer.body);
                        no_ack_id = Some((r, reason.clone()));
                        Err(this.poster.peer_error(reason))
                    }
                }
            },
        )
        .await;
        if let Some((r, reason)) = no_ack_id {
            return Err(self.stop(reason, r.end));
        }
        let mut confirmed = Vec::new();
        let stopped = match posted {
            Ok(()) => None,
            Err(s) if !self.config.use_ack => return Err(s.error.after_confirming(s.accepted)),
            Err(s) => Some(s.error),
        };
        if self.config.use_ack {
            let acks = self.wait_for_acks(&mut open, &mut confirmed).await;
            if let Some(error) = stopped.or(acks.err()) {
                confirmed.sort_unstable();
                return Err(error.after_confirming(confirmed));
            }
        }
        Ok(None)
    }

    /// What a 2xx without `ackId` with `use_ack` means: indexer acknowledgement is off for the
    /// token, a configuration error.
    fn ack_off(&self, body: &[u8]) -> String {
        format!(
            "HEC accepted the events but sent no ackId ({}): indexer acknowledgement is off for \
             this token; set use_ack: false for outputs.{}, or turn indexer acknowledgement on \
             for the token, then reload; this output sends nothing until then",
            self.poster.excerpt(body),
            self.name()
        )
    }

    /// Stops the output for a configuration error (`reason`, logged once): every later
    /// delivery is refused without sending. The first `indexed` events of the batch were
    /// accepted (2xx) and are reported confirmed, so they are never sent again.
    fn stop(&mut self, reason: String, indexed: usize) -> OutputError {
        error!("Output {} stopped: {reason}", self.name());
        self.stopped = Some(format!("stopped: {reason}"));
        self.poster
            .peer_error(reason)
            .after_confirming((0..indexed).collect())
    }

    /// The configuration error that stopped this output, if any (shown by `/ready`).
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Polls `/services/collector/ack` until every id in `open` is acknowledged, moving the
    /// events of each acknowledged request into `confirmed`.
    async fn wait_for_acks(
        &self,
        open: &mut BTreeMap<u64, Range<usize>>,
        confirmed: &mut Vec<usize>,
    ) -> Result<(), OutputError> {
        let started = Instant::now();
        let deadline = started + self.config.ack_timeout;
        let mut backoff = Backoff::new(ACK_POLL_FIRST, ACK_POLL_MAX);
        let mut headers = self.headers.clone();
        content_headers(&mut headers, "application/json", Default::default());
        while !open.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.poster.peer_error(format!(
                    "Splunk did not acknowledge {} request(s) (ackId {}) within {} s \
                     (ack_timeout_in_seconds); the batch is sent again",
                    open.len(),
                    open.keys()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.config.ack_timeout.as_secs_f64()
                )));
            }
            // Not ended by a shutdown request: Splunk has the events, and an abandoned wait
            // sends them again after the restart. The wait is bounded by `ack_timeout`, and
            // the shutdown by its grace period, as a started TLS delivery is.
            tokio::time::sleep(backoff.next_wait().min(deadline - now)).await;
            let ids: Vec<u64> = open.keys().copied().collect();
            let body = ack_query(&ids).into();
            match self.poster.post(&self.ack_url, &headers, body).await? {
                Sent::Accepted(a) => match acknowledged(&a.body) {
                    Some(done) => {
                        for id in done {
                            confirmed.extend(open.remove(&id).into_iter().flatten());
                        }
                    }
                    None => {
                        return Err(self.poster.peer_error(format!(
                            "unexpected answer to the acknowledgement query: {}",
                            self.poster.excerpt(&a.body)
                        )))
                    }
                },
                Sent::TooLarge => {
                    return Err(self
                        .poster
                        .peer_error("the acknowledgement query was refused as too large".into()))
                }
                Sent::Refused(reason) => return Err(self.poster.peer_error(reason)),
            }
        }
        debug!(output = %self.name(), waited_ms = started.elapsed().as_millis() as u64, "Splunk acknowledged the batch.");
        Ok(())
    }

    /// `validate`: the health endpoint, then the token (an empty request: Splunk answers "No
    /// data", code 5, to a token it accepts), then, with `use_ack`, that the token has
    /// indexer acknowledgement (an ack query; "ACK is disabled" is code 14).
    ///
    /// # Errors
    /// [`OutputError::Peer`] naming the step and Splunk's answer.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        let (status, body, ..) = exchange(
            &self.health_url,
            self.poster.client.get(self.health_url.clone()),
        )
        .await
        .map_err(|f| self.poster.peer_error(f.reason))?;
        if !status.is_success() {
            return Err(self.poster.peer_error(format!(
                "HEC health check {}: {status}: {}",
                shown_url(&self.health_url),
                self.poster.excerpt(&body)
            )));
        }
        let request = self
            .poster
            .client
            .post(self.event_url.clone())
            .headers(self.headers.clone());
        let (status, body, ..) = exchange(&self.event_url, request)
            .await
            .map_err(|f| self.poster.peer_error(f.reason))?;
        let answer = EventAnswer::parse(&redact(&body, &self.poster.secrets)).unwrap_or_default();
        match (status.as_u16(), answer.code) {
            (400, Some(5)) | (200, _) => {}
            (401 | 403, _) => {
                return Err(self.poster.peer_error(format!(
                    "Splunk refused the token ({status}: {}); {}",
                    answer.describe(),
                    self.poster.auth_hint
                )))
            }
            _ => {
                return Err(self.poster.peer_error(format!(
                    "{} answered an empty request with {status}: {}",
                    shown_url(&self.event_url),
                    self.poster.excerpt(&body)
                )))
            }
        }
        if self.config.use_ack {
            let request = self
                .poster
                .client
                .post(self.ack_url.clone())
                .headers(self.headers.clone())
                .body(ack_query(&[0]));
            let (status, body, ..) = exchange(&self.ack_url, request)
                .await
                .map_err(|f| self.poster.peer_error(f.reason))?;
            if !status.is_success() {
                let answer =
                    EventAnswer::parse(&redact(&body, &self.poster.secrets)).unwrap_or_default();
                return Err(self.poster.peer_error(format!(
                    "use_ack is true but the acknowledgement query failed ({status}: {}); enable \
                     indexer acknowledgement on the token, or set use_ack: false",
                    answer.describe()
                )));
            }
        }
        if !self.config.use_ack {
            warn!(output = %self.name(), "use_ack is false: a 200 from HEC confirms a batch before Splunk has indexed it.");
        }
        Ok(())
    }
}

/// A refusal's body as Splunk's text and code ("Invalid token (code 4)"), else its start.
fn describe_answer(body: &[u8]) -> String {
    EventAnswer::parse(body)
        .filter(|a| a.text.is_some())
        .map_or_else(|| body_excerpt(body), |a| a.describe())
}

/// The HEC body of `events`: one object per event, each on its own line.
pub fn encode(fields: &str, events: &[Event]) -> Vec<u8> {
    let len: usize = events
        .iter()
        .map(|e| e.json.len() + fields.len() + 32)
        .sum();
    let mut body = Vec::with_capacity(len);
    for e in events {
        body.extend_from_slice(b"{");
        if e.date_ms != UNDATED {
            let secs = e.date_ms.div_euclid(1000);
            let ms = e.date_ms.rem_euclid(1000);
            body.extend_from_slice(format!("\"time\":{secs}.{ms:03},").as_bytes());
        }
        body.extend_from_slice(fields.as_bytes());
        body.extend_from_slice(&e.json);
        body.extend_from_slice(b"}\n");
    }
    body
}

impl OutputBuilder for HecOutputConfig {
    type Output = SplunkHecOutput;

    fn build(&self, name: &str, _: &OutputContext) -> Result<SplunkHecOutput, OutputError> {
        let output = SplunkHecOutput::from_config(name.to_owned(), self)?;
        Ok(output)
    }

    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError> {
        let mut output = self.build(name, cx)?;
        Ok(Box::pin(async move { output.check().await }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn events_are_wrapped_with_time_and_metadata() {
        let ev = |date_ms, json: &str| Event {
            date_ms,
            key: [0; 32],
            json: Bytes::from(json.to_owned()),
        };
        let body = encode(
            "\"host\":\"h\",\"event\":",
            &[
                ev(1_700_000_000_007, r#"{"a":1}"#),
                ev(UNDATED, r#"{"b":2}"#),
            ],
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"time\":1700000000.007,\"host\":\"h\",\"event\":{\"a\":1}}\n{\"host\":\"h\",\"event\":{\"b\":2}}\n"
        );
        assert_eq!(
            default_sourcetype("tap.proofpoint.isolation.url_isolation"),
            "proofpoint:isolation:url_isolation"
        );
    }

    #[test]
    fn the_base_url_takes_either_form() {
        for u in [
            "https://s:8088",
            "https://s:8088/",
            "https://s:8088/services/collector",
            "https://s:8088/services/collector/event?x=1",
        ] {
            let base = base_url(&url::Url::parse(u).unwrap());
            assert_eq!(
                endpoint(&base, "ack").as_str(),
                "https://s:8088/services/collector/ack",
                "{u}"
            );
        }
    }
}
