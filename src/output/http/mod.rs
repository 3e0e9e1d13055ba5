//! The `http` output: batches of events POSTed to a webhook, as Proofpoint's iso2web does.
//!
//! iso2web (`iso2web add -t URL`, `run`) POSTs its events in chunks of up to 10,000 (`-c`) with
//! python-requests' `json=chunk`: the body is a JSON array of the vendor's event objects, as
//! they came from the API's `data`, with `Content-Type: application/json`, no other header. The
//! default body here is the same array (the events as the vendor sent them, compact, no
//! whitespace between them: requests' `json.dumps` puts a space after each `,` and `:`, which
//! no JSON reader sees). `format: ndjson` sends one event per line instead
//! (`application/x-ndjson`).
//!
//! A batch is confirmed when every request of it got a 2xx ([`client`] for the other answers).
//! The requests of a batch go one after the other; a failed request fails the batch, and the
//! requests before it are reported confirmed ([`OutputError::Partly`]): the fan-out does not
//! send their events to this output again. A 400 or 413 is not such a failure: the request is
//! split until the refused event is alone, the other events are sent, and the refused one is
//! reported ([`OutputError::Refused`]) for the fan-out to set aside after its tries.

pub mod client;
pub mod config;
pub mod hec;
pub mod hec_answer;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::client::{
    build_client, compress, content_headers, cut_requests, post_batch, shown_url, HttpClientConfig,
    Poster, RequestTuning, Sent,
};
use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::OutputError;
use crate::event::Event;

/// The body of a request (`format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON array of the events: what iso2web posts.
    #[default]
    JsonArray,
    /// One event per line, each line ending in `\n`.
    Ndjson,
}

impl BodyFormat {
    fn content_type(self) -> &'static str {
        match self {
            BodyFormat::JsonArray => "application/json",
            BodyFormat::Ndjson => "application/x-ndjson",
        }
    }
}

/// One configured header (`headers`): its value may be a secret and is never shown.
#[derive(Clone)]
pub struct ConfiguredHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl std::fmt::Debug for ConfiguredHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ****", self.name)
    }
}

/// Configuration of an `http` output (`outputs.<name>.config`).
#[derive(Clone, Debug)]
pub struct HttpOutputConfig {
    pub client: HttpClientConfig,
    pub format: BodyFormat,
    pub headers: Vec<ConfiguredHeader>,
}

/// An `http` (webhook) output. See the module documentation.
pub struct HttpOutput {
    poster: Poster,
    url: url::Url,
    headers: HeaderMap,
    config: HttpOutputConfig,
}

impl std::fmt::Debug for HttpOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOutput")
            .field("name", &self.poster.output)
            .field("url", &shown_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl HttpOutput {
    /// Builds the output and its client (TLS files read now).
    ///
    /// # Errors
    /// Unreadable TLS files, a key not matching its certificate.
    pub fn from_config(name: String, config: &HttpOutputConfig) -> Result<Self, OutputError> {
        Self::with_tuning(name, config, RequestTuning::default())
    }

    /// [`HttpOutput::from_config`] with other retry settings.
    ///
    /// # Errors
    /// As [`HttpOutput::from_config`].
    pub fn with_tuning(
        name: String,
        config: &HttpOutputConfig,
        tuning: RequestTuning,
    ) -> Result<Self, OutputError> {
        let client = build_client(&name, &config.client)?;
        let mut headers = HeaderMap::new();
        for h in &config.headers {
            let mut v = h.value.clone();
            v.set_sensitive(true);
            headers.insert(h.name.clone(), v);
        }
        content_headers(
            &mut headers,
            config.format.content_type(),
            config.client.compression,
        );
        Ok(HttpOutput {
            poster: Poster {
                output: name,
                client,
                tuning,
                stop_retries: CancellationToken::new(),
                auth_hint: "check the `headers` of this output (their values come from the config, `${VAR}` or `*_file`)",
                describe_body: client::body_excerpt,
                secrets: client::secrets_of(
                    &config.client.url,
                    &config
                        .headers
                        .iter()
                        .filter_map(|h| h.value.to_str().ok())
                        .collect::<Vec<_>>(),
                ),
            },
            url: config.client.url.clone(),
            headers,
            config: config.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.poster.output
    }

    /// Waits between tries end when `cancel` fires.
    pub fn stop_retries_on(&mut self, cancel: CancellationToken) {
        self.poster.stop_retries = cancel;
    }

    /// POSTs `events` in requests of at most `max_events_per_request` events and
    /// `max_body_bytes` bytes. `Ok` when every request got a 2xx.
    ///
    /// # Errors
    /// [`OutputError::Peer`] with the failed request's status and the start of its body.
    pub async fn deliver(
        &mut self,
        _table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        let c = &self.config.client;
        // `[`, `]` and one `,` (or `\n`) per event.
        let ranges = cut_requests(
            events,
            c.max_events_per_request,
            c.max_body_bytes - 2,
            |e| e.json.len() + 1,
        );
        let this = &*self;
        post_batch(
            ranges,
            &self.poster,
            |r| async move {
                let body = encode(this.config.format, &events[r]);
                let bytes = body.len();
                let body = compress(body, this.config.client.compression);
                let sent = this.poster.post(&this.url, &this.headers, body).await?;
                Ok((sent, bytes))
            },
            |_, _| Ok(()),
        )
        .await
        .map_err(|s| s.error.after_confirming(s.accepted))?;
        Ok(None)
    }

    /// `validate`: POSTs an empty batch (`[]`, or an empty body for ndjson) and expects a 2xx,
    /// which proves the address, TLS and the headers (credentials).
    ///
    /// # Errors
    /// [`OutputError::Peer`] naming what failed.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        let body = compress(
            encode(self.config.format, &[]),
            self.config.client.compression,
        );
        match self.poster.post(&self.url, &self.headers, body).await? {
            Sent::Accepted(a) => {
                debug!(output = %self.name(), status = %a.status, "Webhook reachable.");
                Ok(())
            }
            Sent::TooLarge => Err(self
                .poster
                .peer_error("the receiver answered an empty batch with 413".into())),
            Sent::Refused(reason) => Err(self.poster.peer_error(reason)),
        }
    }
}

/// The body of `events` in `format`.
pub fn encode(format: BodyFormat, events: &[Event]) -> Vec<u8> {
    let len: usize = events.iter().map(|e| e.json.len() + 1).sum();
    let mut body = Vec::with_capacity(len + 2);
    match format {
        BodyFormat::JsonArray => {
            body.push(b'[');
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&e.json);
            }
            body.push(b']');
        }
        BodyFormat::Ndjson => {
            for e in events {
                body.extend_from_slice(&e.json);
                body.push(b'\n');
            }
        }
    }
    body
}

impl OutputBuilder for HttpOutputConfig {
    type Output = HttpOutput;

    fn build(&self, name: &str, _: &OutputContext) -> Result<HttpOutput, OutputError> {
        let output = HttpOutput::from_config(name.to_owned(), self)?;
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

    fn ev(s: &str) -> Event {
        Event {
            date_ms: 0,
            key: [0; 32],
            json: Bytes::from(s.to_owned()),
        }
    }

    #[test]
    fn bodies_are_a_json_array_or_ndjson() {
        let events = [ev(r#"{"a":1}"#), ev(r#"{"b":"x"}"#)];
        assert_eq!(
            encode(BodyFormat::JsonArray, &events),
            br#"[{"a":1},{"b":"x"}]"#
        );
        assert_eq!(
            encode(BodyFormat::Ndjson, &events),
            b"{\"a\":1}\n{\"b\":\"x\"}\n"
        );
        assert_eq!(encode(BodyFormat::JsonArray, &[]), b"[]");
        // What iso2web's receivers parse: the same objects.
        let parsed: Vec<serde_json::Value> =
            serde_json::from_slice(&encode(BodyFormat::JsonArray, &events)).unwrap();
        assert_eq!(parsed[1]["b"], "x");
    }

    #[test]
    fn header_values_are_never_shown() {
        let h = ConfiguredHeader {
            name: HeaderName::from_static("authorization"),
            value: HeaderValue::from_static("Bearer s3cret"),
        };
        assert_eq!(format!("{h:?}"), "authorization: ****");
    }
}
