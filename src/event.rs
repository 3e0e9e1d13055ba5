//! Events as the vendor sent them, and the page parser that is the collector's hot path.
//!
//! An event stays the vendor's JSON bytes from parse to output (unknown fields kept, key order
//! kept). Only three things are extracted: the `date` (for ordering, windows and dedup), the
//! dedup key (SHA-256 of the canonical event) and, when the vendor sent insignificant
//! whitespace, a compacted copy so that every record is one line. Building a map per event would
//! cost about ten times as much (see design.md, "Notes on the hot path").
//!
//! Events borrow their bytes from the page body ([`bytes::Bytes`] slices), so a 10,000-event page
//! costs one allocation for the body plus one `Vec` of small structs.

use bytes::Bytes;

/// Sort date given to an event whose `date` is missing or cannot be parsed. Such events are
/// delivered (nothing is lost), at the start of their window.
pub const UNDATED: i64 = i64::MIN;

/// One usage event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `date` in milliseconds since the Unix epoch (UTC), or [`UNDATED`].
    pub date_ms: i64,
    /// SHA-256 of the canonical form of the event (top-level members sorted by key, compact).
    pub key: [u8; 32],
    /// The event as one line of compact JSON: the vendor's bytes, unchanged where they were
    /// already compact.
    pub json: Bytes,
}

/// Why a page could not be used. Every variant is retried by the caller (a truncated or
/// malformed body is as likely a transport fault as a server bug).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the response is not valid JSON ({0}); it may have been truncated")]
    Json(#[source] serde_json::Error),
    #[error("the response is not UTF-8 text")]
    NotUtf8,
    #[error("the response has no `{0}` member")]
    Missing(&'static str),
    #[error("`data[{index}]` is not a JSON object")]
    NotAnObject { index: usize },
    #[error("`data[{index}]` is not valid JSON: {source}")]
    BadEvent {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A decoded response of the usage-data endpoint.
#[derive(Debug)]
pub struct Page {
    pub job_id: String,
    pub status: String,
    /// `None` when absent, `null` or empty: the only end-of-job signal (isolation-api.md §4).
    pub page_token: Option<String>,
    /// The job's event count, when the server sent one (number or numeric string).
    pub total: Option<u64>,
    /// The events of `data`, in server order.
    pub events: Vec<Event>,
    /// How many of `events` had a missing or unparseable `date`.
    pub undated: usize,
}

impl Page {
    /// Whether the job is done (`COMPLETED`, compared case-insensitively like Proofpoint's tools).
    pub fn is_completed(&self) -> bool {
        self.status.eq_ignore_ascii_case("COMPLETED")
    }

    /// Whether the status word says the job failed for good.
    pub fn is_failed(&self) -> bool {
        [
            "FAILED",
            "ERROR",
            "CANCELLED",
            "CANCELED",
            "EXPIRED",
            "ABORTED",
        ]
        .iter()
        .any(|w| self.status.eq_ignore_ascii_case(w))
    }
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "jobId", borrow)]
    job_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    status: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "pageToken", borrow)]
    page_token: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    total: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    data: Option<Vec<&'a serde_json::value::RawValue>>,
}

/// A scalar of the envelope as text: strings unquoted, numbers as written, `null` as `None`.
fn scalar_text(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    let raw = raw?;
    match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Parses one response body. The events keep referencing `body`.
pub fn parse_page(body: Bytes) -> Result<Page, PageError> {
    // Validate UTF-8 once for the whole body (a vectorised check) and parse from `str`, so that
    // serde_json does not validate every string and raw value again.
    let text = std::str::from_utf8(&body).map_err(|_| PageError::NotUtf8)?;
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(PageError::Json)?;
    let job_id = scalar_text(envelope.job_id).ok_or(PageError::Missing("jobId"))?;
    let status = scalar_text(envelope.status).ok_or(PageError::Missing("status"))?;
    let page_token = scalar_text(envelope.page_token).filter(|t| !t.is_empty());
    let total = scalar_text(envelope.total).and_then(|t| t.trim().parse().ok());
    let raw_events = envelope.data.unwrap_or_default();
    let mut events = Vec::with_capacity(raw_events.len());
    let mut undated = 0;
    let base = body.as_ptr() as usize;
    for (index, raw) in raw_events.into_iter().enumerate() {
        let text = raw.get();
        let start = text.as_ptr() as usize - base;
        let json = body.slice(start..start + text.len());
        let event = Event::from_text(json, text).map_err(|e| match e {
            EventError::NotAnObject | EventError::NotUtf8 => PageError::NotAnObject { index },
            EventError::Json(source) => PageError::BadEvent { index, source },
        })?;
        if event.date_ms == UNDATED {
            undated += 1;
        }
        events.push(event);
    }
    Ok(Page {
        job_id,
        status,
        page_token,
        total,
        events,
        undated,
    })
}

/// Why one event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The members of a JSON object, borrowed, in document order (also used by
/// [`crate::pipeline::obfuscate`] to edit members without re-serialising the event).
pub(crate) struct Members<'a>(pub(crate) Vec<(Key<'a>, &'a serde_json::value::RawValue)>);

/// A member name, borrowed from the input unless it had escapes. (serde's own `Cow<str>`
/// always allocates, which would cost a dozen allocations per event on the hot path.)
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key<'a>(pub(crate) std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(16);
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let value: &'de serde_json::value::RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

impl Event {
    /// Reads one event from its JSON text: compacts it if needed, extracts the date and computes
    /// the dedup key.
    pub fn from_json(json: Bytes) -> Result<Event, EventError> {
        let text = std::str::from_utf8(&json).map_err(|_| EventError::NotUtf8)?;
        Self::from_text(json.clone(), text)
    }

    /// [`from_json`](Self::from_json) for text already known to be UTF-8 (`text` is `json`'s
    /// bytes, borrowed from the page body).
    fn from_text(json: Bytes, text: &str) -> Result<Event, EventError> {
        if is_compact(text.as_bytes()) {
            return Self::from_compact(json, text);
        }
        // Rare: the vendor pretty-printed. Removing ASCII whitespace keeps the text UTF-8.
        let compacted = Bytes::from(compact(text.as_bytes()));
        let owned = compacted.clone();
        let text = std::str::from_utf8(&owned).map_err(|_| EventError::NotUtf8)?;
        Self::from_compact(compacted, text)
    }

    fn from_compact(json: Bytes, text: &str) -> Result<Event, EventError> {
        if !text.starts_with('{') {
            // Still validate it, so that garbage is reported as such and not as a wrong type.
            serde_json::from_str::<serde::de::IgnoredAny>(text)?;
            return Err(EventError::NotAnObject);
        }
        let Members(mut members) = serde_json::from_str(text)?;
        let date_ms = members
            .iter()
            .find(|(k, _)| k.0 == "date")
            .and_then(|(_, v)| {
                let s = v.get();
                // A JSON string without escapes: the common case, parsed without allocating.
                let inner = s.strip_prefix('"')?.strip_suffix('"')?;
                crate::time::parse_event_date(inner)
            })
            .unwrap_or(UNDATED);
        // Canonical form: members sorted by key; each key and value length-prefixed so that no
        // two different events can produce the same byte stream. Key order and whitespace of
        // the vendor's serialisation therefore never change the key.
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = sha2::Sha256::new();
        use sha2::Digest;
        for (k, v) in &members {
            hasher.update((k.0.len() as u32).to_le_bytes());
            hasher.update(k.0.as_bytes());
            hasher.update((v.get().len() as u32).to_le_bytes());
            hasher.update(v.get().as_bytes());
        }
        Ok(Event {
            date_ms,
            key: hasher.finalize().into(),
            json,
        })
    }
}

/// Whether a JSON text has no insignificant whitespace (and so is one line as it is).
/// Whitespace bytes inside strings are always escaped in JSON except the space itself, so a text
/// without tab, CR and LF, whose spaces all sit inside strings, is compact.
fn is_compact(json: &[u8]) -> bool {
    if !json
        .iter()
        .any(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return true;
    }
    let mut scanner = Scanner::default();
    !json.iter().any(|&b| scanner.is_insignificant(b))
}

/// Removes insignificant whitespace, keeping everything else byte for byte.
fn compact(json: &[u8]) -> Vec<u8> {
    let mut scanner = Scanner::default();
    json.iter()
        .copied()
        .filter(|&b| !scanner.is_insignificant(b))
        .collect()
}

/// Tracks whether a JSON text is inside a string, byte by byte.
#[derive(Default)]
struct Scanner {
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    /// Feeds the next byte; true if it is whitespace outside any string (removable).
    fn is_insignificant(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            false
        } else if b == b'"' {
            self.in_string = true;
            false
        } else {
            matches!(b, b' ' | b'\t' | b'\n' | b'\r')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"{"jobId":"j1","status":"COMPLETED","total":"3","pageToken":"t2","data":[
        {"userId":"u1","date":"2025-03-04T10:15:27.412+0000","url":"https://a/"},
        { "date" : "2025-03-04T10:14:03.000+0000", "userId":"u2", "url":"https://b/ c" },
        {"userId":"u3","date":"not a date"}]}"#;

    #[test]
    fn parses_envelope_and_events() {
        let page = parse_page(Bytes::from_static(PAGE.as_bytes())).unwrap();
        assert_eq!(page.job_id, "j1");
        assert!(page.is_completed());
        assert_eq!(page.page_token.as_deref(), Some("t2"));
        assert_eq!(page.total, Some(3));
        assert_eq!(page.events.len(), 3);
        assert_eq!(page.events[0].date_ms, 1_741_083_327_412);
        assert_eq!(
            &page.events[1].json[..],
            br#"{"date":"2025-03-04T10:14:03.000+0000","userId":"u2","url":"https://b/ c"}"#
        );
        assert_eq!(page.events[2].date_ms, UNDATED);
        assert_eq!(page.undated, 1);
    }

    #[test]
    fn key_ignores_order_and_whitespace_but_not_content() {
        let a = Event::from_json(Bytes::from_static(br#"{"a":1,"b":"x y"}"#)).unwrap();
        let b = Event::from_json(Bytes::from_static(b"{ \"b\" : \"x y\",\n\"a\":1 }")).unwrap();
        let c = Event::from_json(Bytes::from_static(br#"{"a":1,"b":"x  y"}"#)).unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        // The bytes delivered stay the vendor's own order.
        assert_eq!(&b.json[..], br#"{"b":"x y","a":1}"#);
    }

    #[test]
    fn bad_pages_are_errors_not_panics() {
        for body in [
            &br#"{"jobId":"j","status":"COMPLETED","data":[{"a":1}"#[..],
            br#"{"status":"PENDING"}"#,
            br#"{"jobId":"j"}"#,
            br#"{"jobId":"j","status":"COMPLETED","data":[1]}"#,
            b"<html>502</html>",
            b"",
        ] {
            assert!(
                parse_page(Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn null_or_empty_page_token_ends_the_job() {
        for tok in [r#","pageToken":null"#, r#","pageToken":"""#, ""] {
            let body = format!(r#"{{"jobId":"j","status":"completed"{tok},"data":[]}}"#);
            let page = parse_page(Bytes::from(body)).unwrap();
            assert!(page.is_completed());
            assert_eq!(page.page_token, None);
        }
    }

    proptest::proptest! {
        #[test]
        fn compaction_keeps_the_value(v in arb_json(), pretty in proptest::bool::ANY) {
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { serde_json::to_string(&v).unwrap() };
            let compacted = compact(text.as_bytes());
            proptest::prop_assert!(is_compact(&compacted));
            proptest::prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&compacted).unwrap(), v.clone());
            proptest::prop_assert_eq!(compacted, serde_json::to_vec(&v).unwrap());
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ a-z\\\\\"\t\n{}:,é]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z \"]{0,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
