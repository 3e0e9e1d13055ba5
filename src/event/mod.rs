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
//!
//! The page is read in one pass ([`scan`]): a scanner validates the body and finds the envelope,
//! each event's span and each event's top-level members (ranges of the body, in a reused vector);
//! the key is hashed from a reused buffer. Events that are not compact or have escaped member
//! names (rare) take the per-event serde_json path, which compacts and unescapes; a body the
//! scanner does not accept goes to the serde_json parser ([`parse_page_reference`]), which gives
//! the page or the error, so both paths give the same answer for every body.

use bytes::Bytes;

mod scan;

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
/// malformed body is as likely a transport fault as a server bug). One element of `data` that
/// cannot be read is not a page error: it is set aside ([`Page::unreadable`]).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the response is not valid JSON ({0}); it may have been truncated")]
    Json(#[source] serde_json::Error),
    #[error("a member of the response's envelope (`jobId`, `status`, `pageToken` or `total`) is not UTF-8 text")]
    NotUtf8,
    #[error("the response has no `{0}` member")]
    Missing(&'static str),
}

/// An element of a page's `data` that cannot be read as an event: bytes that are not UTF-8,
/// nesting deeper than serde_json's recursion limit (128), or a JSON value that is not an
/// object. The rest of the page is still delivered; this one is set aside with its raw bytes
/// (see [`crate::state::dead_letter`]), as retrying the page would give the same bytes for ever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Its index in `data`.
    pub index: usize,
    /// Its bytes as the vendor sent them, from its first to its last byte.
    pub raw: Bytes,
    /// What is wrong with it: its [`EventError`]'s text, which the dead letter stores as text
    /// (the letter outlives the process; nothing reads the error behind it).
    pub reason: String,
}

/// The elements of a page's `data` as both parsers read them: the events, how many of them are
/// undated, and the unreadable ones with their bytes.
struct Elements {
    events: Vec<Event>,
    undated: usize,
    unreadable: Vec<Unreadable>,
}

impl Elements {
    fn with_capacity(events: usize) -> Self {
        Elements {
            events: Vec::with_capacity(events),
            undated: 0,
            unreadable: Vec::new(),
        }
    }

    /// Files the element at `index` of `data`: its event, or, when it could not be read, its
    /// bytes (`raw`, taken only then) and why.
    fn add(&mut self, index: usize, read: Result<Event, EventError>, raw: impl FnOnce() -> Bytes) {
        match read {
            Ok(event) => {
                self.undated += usize::from(event.date_ms == UNDATED);
                self.events.push(event);
            }
            Err(e) => self.unreadable.push(Unreadable {
                index,
                raw: raw(),
                reason: e.to_string(),
            }),
        }
    }
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
    /// The elements of `data` that are not readable events, in server order (not in `events`).
    pub unreadable: Vec<Unreadable>,
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
fn scalar_text(raw: Option<&str>) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(raw?).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Parses one response body. The events keep referencing `body`.
///
/// One pass over the body ([`scan`]) finds the envelope, every event and its members; only
/// what the scanner does not accept (malformed or truncated bodies, and a few rare shapes) goes
/// to serde_json, which gives the page or the error. An event that cannot be read costs that
/// event, not the page ([`Page::unreadable`]).
pub fn parse_page(body: Bytes) -> Result<Page, PageError> {
    // Validate UTF-8 once for the whole body (simdutf8: AVX2 where the CPU has it, several
    // times std's word-at-a-time check); the scanner and serde_json then work on text known to
    // be UTF-8. When it fails, the scanner (which needs no UTF-8: it only looks at ASCII
    // structure) still finds every event's span, and each event is checked alone, so one stray
    // byte costs one event, not the page.
    let text = simdutf8::basic::from_utf8(&body).ok();
    match parse_page_fast(&body, text) {
        Some(page) => Ok(page),
        None => parse_page_reference(body),
    }
}

/// The one-pass parse; `None` when the scanner does not accept the body. `text` is the body
/// when it is UTF-8 (else each event is checked alone).
fn parse_page_fast(body: &Bytes, text: Option<&str>) -> Option<Page> {
    let mut members = Vec::with_capacity(32);
    let mut keys = CanonicalKeys::default();
    let mut elements = Elements::with_capacity(body.len() / 256);
    let mut index = 0;
    let envelope = scan::scan_page(body, &mut members, |found| {
        let json = body.slice(found.span.clone());
        let event = match (found.unusual, text) {
            (false, Some(_)) => keys.event(json, found.span.start, found.members),
            (true, Some(text)) => Event::from_text(json, &text[found.span.clone()]),
            (unusual, None) => match std::str::from_utf8(&body[found.span.clone()]) {
                Err(_) => Err(EventError::NotUtf8),
                Ok(_) if !unusual => keys.event(json, found.span.start, found.members),
                Ok(text) => Event::from_text(json, text),
            },
        };
        elements.add(index, event, || body.slice(found.span));
        index += 1;
    })?;
    let scalars = [
        &envelope.job_id,
        &envelope.status,
        &envelope.page_token,
        &envelope.total,
    ];
    if text.is_none() && scalars.into_iter().any(|r| not_utf8(body, r.clone())) {
        return None; // serde_json's path names the problem
    }
    let field = |r: Option<std::ops::Range<usize>>| {
        scalar_text(r.and_then(|r| std::str::from_utf8(&body[r]).ok()))
    };
    Some(Page {
        job_id: field(envelope.job_id)?,
        status: field(envelope.status)?,
        page_token: field(envelope.page_token).filter(|t| !t.is_empty()),
        total: field(envelope.total).and_then(|t| t.trim().parse().ok()),
        events: elements.events,
        undated: elements.undated,
        unreadable: elements.unreadable,
    })
}

/// Whether the bytes at `range` (when there is one) are not UTF-8.
fn not_utf8(body: &[u8], range: Option<std::ops::Range<usize>>) -> bool {
    range.is_some_and(|r| std::str::from_utf8(&body[r]).is_err())
}

/// [`parse_page`] by serde_json alone: the reference the one-pass scanner must agree with (the
/// property tests and the fuzz target compare the two; the benchmark shows what it costs).
pub fn parse_page_reference(body: Bytes) -> Result<Page, PageError> {
    match std::str::from_utf8(&body) {
        Ok(text) => parse_page_serde(&body, text),
        Err(_) => parse_page_serde(&body, &utf8_twin(&body)),
    }
}

/// `body` with every byte of an invalid UTF-8 sequence replaced by `?`: the same length and
/// the same JSON structure (such bytes are valid JSON only inside strings, as `?` is; and an
/// ASCII byte is never part of an invalid sequence), so serde_json finds the spans, which then
/// index the original bytes.
fn utf8_twin(body: &[u8]) -> String {
    let mut twin = String::with_capacity(body.len());
    for chunk in body.utf8_chunks() {
        twin.push_str(chunk.valid());
        twin.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    twin
}

/// The serde_json parse: the envelope into raw values, then every event into its members. Slower
/// (two passes, an allocation per event), it is the one that explains what is wrong with a body.
/// `text` is `body`, or its [`utf8_twin`] when `body` is not UTF-8 (an event whose own bytes
/// are not UTF-8 is then unreadable, and so is the page if a scalar of its envelope is not).
fn parse_page_serde(body: &Bytes, text: &str) -> Result<Page, PageError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(PageError::Json)?;
    let base = text.as_ptr() as usize;
    let span = |raw: &serde_json::value::RawValue| {
        let start = raw.get().as_ptr() as usize - base;
        start..start + raw.get().len()
    };
    let scalars = [
        envelope.job_id,
        envelope.status,
        envelope.page_token,
        envelope.total,
    ];
    if scalars.iter().any(|raw| not_utf8(body, raw.map(span))) {
        return Err(PageError::NotUtf8);
    }
    let field = |raw: Option<&serde_json::value::RawValue>| scalar_text(raw.map(|r| r.get()));
    let job_id = field(envelope.job_id).ok_or(PageError::Missing("jobId"))?;
    let status = field(envelope.status).ok_or(PageError::Missing("status"))?;
    let page_token = field(envelope.page_token).filter(|t| !t.is_empty());
    let total = field(envelope.total).and_then(|t| t.trim().parse().ok());
    let raw_events = envelope.data.unwrap_or_default();
    let mut elements = Elements::with_capacity(raw_events.len());
    for (index, raw) in raw_events.into_iter().enumerate() {
        let span = span(raw);
        let json = body.slice(span.clone());
        let event = match std::str::from_utf8(&json) {
            Ok(_) => Event::from_text(json.clone(), &text[span]),
            Err(_) => Err(EventError::NotUtf8),
        };
        elements.add(index, event, || json);
    }
    Ok(Page {
        job_id,
        status,
        page_token,
        total,
        events: elements.events,
        undated: elements.undated,
        unreadable: elements.unreadable,
    })
}

/// Date and dedup key of compact events whose member names have no escapes, from the scanner's
/// member spans, with one reused buffer for the canonical form (no allocation per event).
///
/// The key scheme is unchanged (members sorted by name, each name and value length-prefixed), so
/// the dedup memory of a state written by an older collector stays valid. The vendor sends the
/// same few member lists event after event (one per event kind), so the sort order and the
/// `date` member's place are remembered per list ([`Shape`]) and reused when an event's names
/// match one, in order: a comparison of names instead of a sort (the sort and its `memcmp`s were
/// 11% of a backfill's CPU).
///
/// Is the canonical order worth its cost? Measured (issue 10): on one 10,000-event simulator
/// page, hashing the vendor bytes directly made `parse_page` 0.47 instead of 0.49 of the serde_json
/// reference's time (before the shape cache; inside the run-to-run noise). On the 1,000,000-event
/// backfill with the shape cache, the canonical form is 372 bytes/event against the vendor's 333,
/// 6.48 SHA-256 blocks against 5.80 (+12%); SHA-256 (SHA-NI) is 14% of the backfill's CPU, so the
/// extra hashing is about 0.04 µs/event, and building the form is part of this type's own 6.8%
/// (perf; 3.3k instructions/event under callgrind with the shape lookup and the date, SHA-256
/// apart). At most about 0.2 µs/event of 2.1 would be saved, for a new key scheme and a migration
/// of every state's dedup memory: not worth its risk.
#[derive(Default)]
struct CanonicalKeys {
    scratch: Vec<u8>,
    /// The member lists seen, most recently used first; at most [`MAX_SHAPES`].
    shapes: Vec<Shape>,
}

/// How many member lists [`CanonicalKeys`] remembers. The simulator's datasets have three event
/// kinds (plain, iframe, file download); a few more leave room for the vendor's.
const MAX_SHAPES: usize = 8;

/// One member list: the names in document order, and what the key and date need from it.
struct Shape {
    /// The names joined, each followed by `"` (which an unescaped name cannot hold, so the
    /// joined form is unambiguous).
    names: Vec<u8>,
    /// Member indices in canonical order (sorted by name; names are distinct).
    order: Vec<usize>,
    /// Index of the `date` member.
    date: Option<usize>,
}

impl Shape {
    /// The shape of `members`; `None` when a name repeats (the serde_json path orders such
    /// events as it always has).
    fn of<'p>(members: &[scan::Member], name: impl Fn(&scan::Member) -> &'p [u8]) -> Option<Shape> {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_unstable_by(|&a, &b| name(&members[a]).cmp(name(&members[b])));
        if order
            .windows(2)
            .any(|w| name(&members[w[0]]) == name(&members[w[1]]))
        {
            return None;
        }
        let mut names = Vec::new();
        for m in members {
            names.extend_from_slice(name(m));
            names.push(b'"');
        }
        let date = members.iter().position(|m| name(m) == b"date");
        Some(Shape { names, order, date })
    }

    /// Whether `members` have exactly this shape's names, in the same order.
    fn matches<'p>(
        &self,
        members: &[scan::Member],
        name: impl Fn(&scan::Member) -> &'p [u8],
    ) -> bool {
        if members.len() != self.order.len() {
            return false;
        }
        let mut rest = self.names.as_slice();
        for m in members {
            let n = name(m);
            match rest.strip_prefix(n) {
                Some([b'"', tail @ ..]) => rest = tail,
                _ => return false,
            }
        }
        rest.is_empty()
    }
}

impl CanonicalKeys {
    /// The event `json`, found at `page_start` in its page with the top-level `members` (ranges
    /// of the page).
    fn event(
        &mut self,
        json: Bytes,
        page_start: usize,
        members: &[scan::Member],
    ) -> Result<Event, EventError> {
        let page = |r: &std::ops::Range<usize>| &json[r.start - page_start..r.end - page_start];
        let name = |m: &scan::Member| page(&m.key);
        match self.shapes.iter().position(|s| s.matches(members, name)) {
            Some(hit) => self.shapes[..=hit].rotate_right(1),
            None => {
                let Some(shape) = Shape::of(members, name) else {
                    let text = std::str::from_utf8(&json).map_err(|_| EventError::NotUtf8)?;
                    return Event::from_text(json.clone(), text);
                };
                self.shapes.truncate(MAX_SHAPES - 1);
                self.shapes.insert(0, shape);
            }
        }
        let shape = &self.shapes[0];
        let date_ms = shape
            .date
            .map_or(UNDATED, |d| date_of(page(&members[d].value)));
        let sorted = shape
            .order
            .iter()
            .map(|&i| (name(&members[i]), page(&members[i].value)));
        let key = canonical_key(sorted, &mut self.scratch);
        Ok(Event { date_ms, key, json })
    }
}

/// An event's `date` member (its raw JSON value) in milliseconds, or [`UNDATED`]. A JSON string
/// without escapes is the common case, parsed without allocating.
fn date_of(value: &[u8]) -> crate::timestamp::Millis {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| crate::timestamp::parse_event_date(v.strip_prefix('"')?.strip_suffix('"')?))
        .unwrap_or(UNDATED)
}

/// The dedup key: SHA-256 of the canonical form, the top-level members sorted by name, each name
/// and value length-prefixed so that no two different events give the same byte stream. The
/// vendor's key order and whitespace therefore never change the key. Both parsers call this, so
/// the scheme (which the state's dedup memory depends on) is written once. `scratch` is reused
/// between events on the hot path.
///
/// Why SHA-256 and not a faster, non-cryptographic hash: two events with the same key are one
/// event to the dedup memory, and the second is dropped. Event content is partly chosen by
/// outsiders (a URL a user visits, a file name), so with a hash whose collisions can be computed
/// an attacker could craft a URL whose event collides with another event's key and so hide that
/// event; this is a security tool. `sha2` uses the CPU's SHA extensions (SHA-NI, detected at run
/// time), about 0.25 µs for an event's 372 bytes (the benchmark's
/// `baseline_sha256_canonical_form`). Why one buffer and then one `digest` rather than an
/// `update` per piece: the pieces are small (a name, its length, a value), and each `update`
/// goes through the hasher's block buffer with its own bookkeeping, where the copy into
/// `scratch` is one short `memcpy` per piece and the digest then reads whole blocks in place.
fn canonical_key<'a>(
    sorted_members: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    scratch: &mut Vec<u8>,
) -> [u8; 32] {
    use sha2::Digest;
    scratch.clear();
    for (name, value) in sorted_members {
        for part in [name, value] {
            scratch.extend_from_slice(&(part.len() as u32).to_le_bytes());
            scratch.extend_from_slice(part);
        }
    }
    sha2::Sha256::digest(scratch.as_slice()).into()
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
            .map_or(UNDATED, |(_, v)| date_of(v.get().as_bytes()));
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let sorted = members
            .iter()
            .map(|(k, v)| (k.0.as_bytes(), v.get().as_bytes()));
        let mut scratch = Vec::with_capacity(text.len() + 8 * members.len());
        let key = canonical_key(sorted, &mut scratch);
        Ok(Event { date_ms, key, json })
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

    /// The key scheme is what the states' dedup memory holds: a change would make an upgraded
    /// collector deliver the remembered overlap again. The expected value was computed apart
    /// (Python: SHA-256 over the sorted members, each name and value prefixed by its length as
    /// a little-endian u32), and both parsers, fast and reference, must give it.
    #[test]
    fn the_key_scheme_is_pinned_for_every_parser() {
        let expected = "db50c53004bfabf540cc8f1caf63d545014c9dc77030af26cfc2caa33657a035";
        let event = r#"{"userId":"u1","date":"2025-03-04T10:15:27.412+0000"}"#;
        let body = format!(r#"{{"jobId":"j","status":"COMPLETED","data":[{event}]}}"#);
        let fast = parse_page(Bytes::from(body.clone())).unwrap();
        let reference = parse_page_reference(Bytes::from(body)).unwrap();
        let single = Event::from_json(Bytes::from(event)).unwrap();
        for key in [fast.events[0].key, reference.events[0].key, single.key] {
            assert_eq!(hex::encode(key), expected);
        }
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
            // A stray byte is one event's problem, but a body cut short is the page's.
            b"{\"jobId\":\"j\",\"status\":\"COMPLETED\",\"data\":[{\"a\":\"\xff\"},{\"b\"",
            b"<html>502</html>",
            b"",
        ] {
            assert!(
                parse_page(Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }

    /// A page with an unreadable event at index 1 of 3, both parsers: the other two are
    /// events, the unreadable one keeps its exact bytes.
    fn assert_one_unreadable(body: &[u8], raw: &[u8], reason: &str) {
        for page in [
            parse_page(Bytes::copy_from_slice(body)),
            parse_page_reference(Bytes::copy_from_slice(body)),
        ] {
            let page = page.expect("one unreadable event costs that event, not the page");
            assert_eq!(page.events.len(), 2, "{page:?}");
            assert_eq!(page.unreadable.len(), 1, "{page:?}");
            let u = &page.unreadable[0];
            assert_eq!((u.index, &u.raw[..]), (1, raw));
            assert!(u.reason.contains(reason), "{}", u.reason);
        }
        assert_agree(body);
    }

    fn page_of(bad: &[u8]) -> Vec<u8> {
        let mut body =
            br#"{"jobId":"j","status":"COMPLETED","pageToken":"t","data":[{"a":1},"#.to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(br#",{"date":"2025-03-04T10:15:27.412+0000","b":"\u00e9"}]}"#);
        body
    }

    #[test]
    fn an_event_with_a_stray_byte_is_set_aside_and_the_page_delivered() {
        for bad in [
            &b"{\"userName\":\"ren\xe9\",\"a\":2}"[..],
            b"{\"userName\":\"\xff\"}",
            b"{\"a\":[\"\xc3\"]}",
            b"{\"x\xff\":1}",
            b"{ \"pretty\" : \"\xf0\x9f\" }",
        ] {
            assert_one_unreadable(&page_of(bad), bad, "not UTF-8");
        }
    }

    /// Nesting is no reason to refuse an event: serde_json's recursion limit (128) applies to
    /// values it builds, and the collector builds none below an event's top-level members (they
    /// stay raw), so a deep event is valid JSON that every output can carry. It is delivered,
    /// at any depth, by both parsers, with no recursion on the stack.
    #[test]
    fn an_event_nested_deeper_than_serde_builds_values_is_still_an_event() {
        let nested =
            |depth: usize| format!(r#"{{"n":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        for depth in [99, 110, 130, 100_000] {
            let body = page_of(nested(depth).as_bytes());
            let page = parse_page(Bytes::from(body.clone())).unwrap();
            assert_eq!((page.events.len(), page.unreadable.len()), (3, 0));
            assert_eq!(&page.events[1].json[..], nested(depth).as_bytes());
            assert_agree(&body);
        }
        // With a stray byte elsewhere in the page too (no UTF-8 text for the scanner).
        let mut body = page_of(nested(130).as_bytes());
        body.splice(body.len() - 4..body.len() - 4, *b"\xff");
        let page = parse_page(Bytes::from(body.clone())).unwrap();
        assert_eq!((page.events.len(), page.unreadable.len()), (2, 1));
        assert_agree(&body);
    }

    #[test]
    fn a_value_that_is_not_an_object_is_set_aside() {
        assert_one_unreadable(&page_of(b"[1,2]"), b"[1,2]", "not a JSON object");
        assert_one_unreadable(&page_of(b"\"x\xff\""), b"\"x\xff\"", "UTF-8");
    }

    /// A stray byte in the envelope is no event's: the page is refused (and retried), never
    /// read as the job's end.
    #[test]
    fn a_stray_byte_in_the_envelope_refuses_the_page() {
        let body = page_of(b"{}");
        let at = body.windows(3).position(|w| w == b"\"t\"").unwrap() + 1;
        let mut bad = body.clone();
        bad.insert(at, 0xff);
        assert!(matches!(
            parse_page(Bytes::from(bad.clone())),
            Err(PageError::NotUtf8)
        ));
        assert_agree(&bad);
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

    /// Both parsers' answers, comparable: the page's fields, or the error's text.
    fn outcome(page: Result<Page, PageError>) -> Result<String, String> {
        page.map(|p| format!("{p:?}")).map_err(|e| e.to_string())
    }

    fn assert_agree(body: &[u8]) {
        let fast = outcome(parse_page(Bytes::copy_from_slice(body)));
        let reference = outcome(parse_page_reference(Bytes::copy_from_slice(body)));
        assert_eq!(fast, reference, "{}", String::from_utf8_lossy(body));
    }

    #[test]
    fn the_scanner_takes_ordinary_pages_in_one_pass() {
        let body = Bytes::from_static(PAGE.as_bytes());
        let fast = parse_page_fast(&body, Some(PAGE)).expect("the scanner accepts the page");
        let reference = parse_page_reference(body).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
        assert_eq!(fast.events.len(), 3);
    }

    #[test]
    fn every_truncation_and_corruption_gives_the_reference_answer() {
        for end in 0..PAGE.len() {
            assert_agree(&PAGE.as_bytes()[..end]);
        }
        for at in 0..PAGE.len() {
            for byte in [
                b'"', b'\\', b'}', b']', b',', b':', b'x', b'1', b' ', 0x01, 0xff, 0xc3,
            ] {
                let mut body = PAGE.as_bytes().to_vec();
                body[at] = byte;
                assert_agree(&body);
            }
        }
    }

    #[test]
    fn the_scanner_passes_odd_shapes_to_serde() {
        for body in [
            r#"{"jobId":"j","jobId":"k","status":"COMPLETED","data":[]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":1}],"data":[]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":1},2]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":null}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":{}}"#,
            r#"{"job\u0049d":"j","status":"COMPLETED","data":[]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":"\ud800"}]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":"\ud83d\ude00","\u0061":2}]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"b":1,"a":2,"b":3,"date":"2025-03-04T10:15:27.412+0000"}]}"#,
            r#"{"jobId":1,"status":null,"data":[]}"#,
            r#"{"jobId":"j","status":"COMPLETED","total":"12","pageToken":"","data":[{"a":-0.5e+3,"b":[true,false,null,{}]}]}  "#,
            r#" {"jobId":"j","status":"COMPLETED","data":[]} x"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":01}]}"#,
            r#"{"jobId":"j","status":"COMPLETED","data":[{"a":1.}]}"#,
        ] {
            assert_agree(body.as_bytes());
        }
        let deep = format!(
            r#"{{"jobId":"j","status":"COMPLETED","data":[{{"a":{}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_agree(deep.as_bytes());
    }

    /// The scanner's eight-byte steps stop exactly at a quote, a backslash or a control
    /// character wherever it falls in a step (several steps and a tail here), and near the end
    /// of the body.
    #[test]
    fn strings_end_and_fail_at_every_offset_of_a_chunk() {
        for len in 0..40 {
            for at in 0..=len {
                for stop in [
                    r#"""#, r"\n", r"\u0041", "\u{1}", "\t", "\u{1f}", " ", "\u{7f}", "é",
                ] {
                    let mut text = "x".repeat(len);
                    text.insert_str(at, stop);
                    let body = format!(
                        r#"{{"jobId":"j","status":"COMPLETED","data":[{{"a":"{text}","b":"{text}"}}]}}"#
                    );
                    assert_agree(body.as_bytes());
                    assert_agree(&body.as_bytes()[..body.len() - 3]);
                }
            }
        }
    }

    /// The shape cache must give exactly the key and date a fresh sort gives: member lists that
    /// change mid-page, come back after being evicted, share a count but not the names, hold
    /// a name twice, or differ only in where `date` is.
    #[test]
    fn remembered_member_orders_give_the_keys_of_a_fresh_sort() {
        let date = r#""2025-03-04T10:15:27.412+0000""#;
        let mut events = Vec::new();
        for round in 0..3 {
            for i in 0..(MAX_SHAPES + 3) {
                // A distinct member list per i: more lists than the cache holds.
                let extra = format!(r#","m{i}":{round}"#);
                events.push(format!(r#"{{"b":1,"date":{date},"a":"x"{extra}}}"#));
                events.push(format!(r#"{{"date":{date},"b":1,"a":"x"{extra}}}"#));
                events.push(format!(r#"{{"a":"x","b":1,"date":{date}{extra}}}"#));
                events.push(format!(r#"{{"c":1,"date":{date},"a":"x"{extra}}}"#));
                events.push(format!(r#"{{"b":1,"dat":{date},"a":"x"{extra}}}"#));
                events.push(format!(r#"{{"b":1,"b":2,"a":"x","date":{date}{extra}}}"#));
                // Names that join to the same letters ("bca") but sort differently.
                events.push(r#"{"b":1,"ca":2}"#.to_owned());
                events.push(r#"{"bc":1,"a":2}"#.to_owned());
            }
        }
        let body = format!(
            r#"{{"jobId":"j","status":"COMPLETED","data":[{}]}}"#,
            events.join(",")
        );
        let fast =
            parse_page_fast(&Bytes::from(body.clone()), Some(&body)).expect("scanner accepts it");
        let reference = parse_page_reference(Bytes::from(body)).unwrap();
        assert_eq!(fast.events.len(), events.len());
        assert_eq!(fast.events, reference.events);
        // Same members in another order: same key; a renamed member: another key.
        assert_eq!(fast.events[0].key, fast.events[1].key);
        assert_eq!(fast.events[0].key, fast.events[2].key);
        assert_ne!(fast.events[0].key, fast.events[3].key);
        assert_eq!(fast.events[4].date_ms, UNDATED);
        assert_eq!(fast.events[0].date_ms, 1_741_083_327_412);
        assert_ne!(fast.events[6].key, fast.events[7].key);
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_with_serde(events in proptest::collection::vec(arb_event(), 0..6)) {
            let body = format!(r#"{{"jobId":"j","status":"COMPLETED","data":[{}]}}"#, events.join(","));
            assert_agree(body.as_bytes());
        }
    }

    proptest::proptest! {
        /// Long strings whose stops (quotes, backslashes, escapes, `\\"` pairs, control
        /// characters, bytes from 0x80 up) fall at any offset of the scanner's eight-byte steps,
        /// whole or cut short anywhere.
        #[test]
        fn long_strings_agree_with_serde(
            pieces in proptest::collection::vec(arb_string_piece(), 0..24),
            cut in proptest::num::usize::ANY,
        ) {
            let text: String = pieces.concat();
            let body = format!(
                r#"{{"jobId":"j","status":"COMPLETED","data":[{{"{text}":"{text}","n":1}},{{"a":"{text}"}}]}}"#
            );
            // "¤" (C2 A4) stands for a byte that is not UTF-8: FF A4.
            let body = body.replace('¤', "\u{0}").into_bytes();
            let body: Vec<u8> = body.iter().map(|&b| if b == 0 { 0xff } else { b }).collect();
            assert_agree(&body);
            assert_agree(&body[..cut % (body.len() + 1)]);
        }
    }

    /// A piece of a string's raw JSON text: plain runs of any length, escapes (valid or not),
    /// a stray quote or control character, multi-byte UTF-8, or "¤" for a byte that is not
    /// UTF-8.
    fn arb_string_piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            4 => "[a-z0-9/:.?=&]{0,40}",
            1 => Just(r#"\""#.to_owned()),
            1 => Just(r"\\".to_owned()),
            1 => Just(r#"\\\""#.to_owned()),
            1 => Just(r"\u00e9".to_owned()),
            1 => Just(r"\ud83d\ude00".to_owned()),
            1 => Just(r"\ud83d".to_owned()),
            1 => Just(r"\x".to_owned()),
            1 => Just("\"".to_owned()),
            1 => Just("\u{1}".to_owned()),
            1 => Just("\t".to_owned()),
            1 => Just("é€😀".to_owned()),
            1 => Just("¤".to_owned()),
            1 => Just("\u{7f}".to_owned()),
        ]
    }

    /// An event's text: members in any order (names may repeat), each value compact or pretty.
    fn arb_event() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let date = prop_oneof![
            Just(serde_json::Value::from("2025-03-04T10:15:27.412+0000")),
            arb_json()
        ];
        let name = prop_oneof!["[a-e\"\\\\é ]{0,3}", Just("date".to_owned())];
        let member = (name, prop_oneof![date, arb_json()], any::<bool>());
        (proptest::collection::vec(member, 0..6), any::<bool>()).prop_map(|(members, spaced)| {
            let sep = if spaced { ", " } else { "," };
            let members: Vec<String> = members
                .iter()
                .map(|(k, v, pretty)| {
                    let v = if *pretty {
                        serde_json::to_string_pretty(v)
                    } else {
                        serde_json::to_string(v)
                    };
                    format!("{}:{}", serde_json::to_string(k).unwrap(), v.unwrap())
                })
                .collect();
            format!("{{{}}}", members.join(sep))
        })
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
