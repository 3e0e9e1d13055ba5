//! The one-pass page scanner: validates a usage-data response and finds, in the same pass, the
//! envelope's scalars, every event's span and every event's top-level members.
//!
//! Why hand-written and not a crate: the page is already UTF-8-checked (simdutf8, vectorised),
//! the grammar is JSON's small one, and what we need from it is spans, not values. serde_json
//! does the same work in two passes (the envelope into `Vec<&RawValue>`, then every event again
//! into members) at 1.9 µs/event, and a validation-only serde_json pass alone costs 0.28
//! µs/event. The SIMD JSON crates were weighed (issue 23): `simd-json` parses in place, which
//! would break the events' zero-copy `Bytes` slices of the body; `sonic-rs`'s lazy iterators give
//! raw slices, but its fast skip over the values it does not parse is not a full validation
//! unless asked (`skip_strict`), and members per event would be a second pass over each event.
//! Neither keeps the contract below for less work than this scanner does.
//!
//! This scanner skips string bodies eight bytes at a time ([`Scanner::skip_plain`], SWAR) and
//! records spans into reused vectors, so a page costs no allocation per event. Measured (issue
//! 23, callgrind on the benchmark's page): about 6,600 instructions per event besides SHA-256,
//! most of them the scanner's; its cost is per token (an event has about 20 members, 40
//! strings), not per byte, so wider string steps do not change it much (a sixteen-byte vector
//! form was slower, see `skip_plain`). A structural index that finds every token of a 64-byte
//! block at once (simdjson's first stage) is what would: not done yet.
//!
//! It is deliberately *stricter* than serde_json, never laxer: anything it does not accept
//! (malformed or truncated JSON, a duplicate envelope member, an element of `data` that is not an
//! object, a lone surrogate escape, nesting deeper than [`MAX_DEPTH`] in the envelope) makes it
//! return `None`, and [`super::parse_page`] then runs the serde_json parser, which gives the
//! page or the same clear [`super::PageError`] as before. Correctness is serde_json's; speed is
//! this module's. The property tests `fast_path_agrees_with_serde` and
//! `long_strings_agree_with_serde` (stops at every offset of a block, bodies cut anywhere) in
//! `super::tests` check both give the same page.
//!
//! It needs no UTF-8: it only looks at ASCII bytes, and any byte from 0x80 up is plain string
//! content to it, so it finds the events of a body with a stray byte; the caller checks each
//! event's bytes. An event nested deeper than [`MAX_DEPTH`] is found by its brackets alone and
//! reported as unusual: serde_json then reads that event alone, with its own limit (128), so an
//! event too deep for it costs that event, not the page.

use std::ops::Range;

/// Deeper than serde_json's own recursion limit (128) is an error there; below it we stop early
/// and let serde_json decide.
const MAX_DEPTH: usize = 100;

/// A top-level member of an event: byte ranges of the page body.
#[derive(Clone, Debug)]
pub(super) struct Member {
    /// The name, inside the quotes.
    pub(super) key: Range<usize>,
    /// The value as written.
    pub(super) value: Range<usize>,
}

/// One event as found by the scanner.
pub(super) struct EventSpan<'m> {
    /// From `{` to `}`.
    pub(super) span: Range<usize>,
    /// The top-level members, in document order.
    pub(super) members: &'m mut Vec<Member>,
    /// Whether the event has insignificant whitespace or a member name with escapes (it then
    /// takes the per-event serde_json path, which compacts and unescapes).
    pub(super) unusual: bool,
}

/// The envelope's scalars, as raw JSON text (ranges of the body).
#[derive(Default)]
pub(super) struct Envelope {
    pub(super) job_id: Option<Range<usize>>,
    pub(super) status: Option<Range<usize>>,
    pub(super) page_token: Option<Range<usize>>,
    pub(super) total: Option<Range<usize>>,
}

/// Scans `body`, calling `on_event` for every element of `data` in order. `None` when the body
/// is not something this scanner accepts (see the module docs); events already passed to
/// `on_event` must then be discarded.
pub(super) fn scan_page(
    body: &[u8],
    members: &mut Vec<Member>,
    mut on_event: impl FnMut(EventSpan<'_>),
) -> Option<Envelope> {
    let mut s = Scanner {
        b: body,
        i: 0,
        too_deep: false,
    };
    let mut envelope = Envelope::default();
    let mut seen_data = false;
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.eat(b'}') {
        return s.end().then_some(envelope);
    }
    loop {
        let key = s.string()?;
        if key.escaped {
            return None; // a member name with escapes: rare, let serde_json unescape it
        }
        s.ws();
        s.expect(b':')?;
        s.ws();
        let slot = match &body[key.range] {
            b"jobId" => Some(&mut envelope.job_id),
            b"status" => Some(&mut envelope.status),
            b"pageToken" => Some(&mut envelope.page_token),
            b"total" => Some(&mut envelope.total),
            b"data" => {
                if std::mem::replace(&mut seen_data, true) {
                    return None; // serde: duplicate field
                }
                s.data(members, &mut on_event)?;
                None
            }
            _ => {
                s.value(1)?;
                None
            }
        };
        if let Some(slot) = slot {
            let start = s.i;
            s.value(1)?;
            if slot.replace(start..s.i).is_some() {
                return None; // serde: duplicate field
            }
        }
        s.ws();
        if s.eat(b'}') {
            return s.end().then_some(envelope);
        }
        s.expect(b',')?;
        s.ws();
    }
}

/// A string's content range and whether it holds escapes.
struct Str {
    range: Range<usize>,
    escaped: bool,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The last `None` came from nesting deeper than [`MAX_DEPTH`] (not from a syntax error).
    too_deep: bool,
}

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of every zero byte of `x` (and possibly of bytes above the lowest zero byte: the
/// lowest flagged byte is exact), before masking with `splat(0x80)`.
const fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(splat(1)) & !x
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.i += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    /// Skips whitespace; true if there was any.
    fn ws(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        self.i != start
    }

    /// [`ws`](Self::ws) where compact JSON has none (between an event's tokens): one compare
    /// when the next byte is above a space, as every byte that is not whitespace there is.
    fn gap(&mut self) -> bool {
        match self.peek() {
            Some(c) if c > b' ' => false,
            _ => self.ws(),
        }
    }

    /// Only whitespace left.
    fn end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The `data` array: each element must be an object (serde_json's path reports the index of
    /// one that is not).
    fn data(
        &mut self,
        members: &mut Vec<Member>,
        on_event: &mut impl FnMut(EventSpan<'_>),
    ) -> Option<()> {
        if self.b[self.i..].starts_with(b"null") {
            self.i += 4;
            return Some(());
        }
        self.expect(b'[')?;
        self.ws();
        if self.eat(b']') {
            return Some(());
        }
        loop {
            let start = self.i;
            let unusual = match self.event(members) {
                Some(unusual) => unusual,
                None if std::mem::take(&mut self.too_deep) => {
                    self.i = start;
                    self.skip_nested()?;
                    true // serde_json reads it alone, with its own depth limit
                }
                None => return None,
            };
            on_event(EventSpan {
                span: start..self.i,
                members,
                unusual,
            });
            self.ws();
            if self.eat(b']') {
                return Some(());
            }
            self.expect(b',')?;
            self.ws();
        }
    }

    /// One event object, its top-level members recorded; returns whether it is unusual.
    fn event(&mut self, members: &mut Vec<Member>) -> Option<bool> {
        members.clear();
        self.expect(b'{')?;
        let mut unusual = self.ws();
        if self.eat(b'}') {
            return Some(unusual);
        }
        loop {
            let key = self.string()?;
            unusual |= key.escaped | self.gap();
            self.expect(b':')?;
            unusual |= self.gap();
            let start = self.i;
            unusual |= self.value(3)?;
            members.push(Member {
                key: key.range,
                value: start..self.i,
            });
            unusual |= self.gap();
            if self.eat(b'}') {
                return Some(unusual);
            }
            self.expect(b',')?;
            unusual |= self.gap();
        }
    }

    /// Any JSON value at nesting `depth`; returns whether it held insignificant whitespace.
    fn value(&mut self, depth: usize) -> Option<bool> {
        match self.peek()? {
            b'"' => self.string().map(|_| false),
            b'{' => self.container(depth, b'}', true),
            b'[' => self.container(depth, b']', false),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<bool> {
        self.b[self.i..].starts_with(word).then(|| {
            self.i += word.len();
            false
        })
    }

    /// An object (`keyed`) or array, after its opening bracket is seen.
    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Option<bool> {
        if depth > MAX_DEPTH {
            self.too_deep = true;
            return None;
        }
        self.i += 1;
        let mut spaced = self.ws();
        if self.eat(close) {
            return Some(spaced);
        }
        loop {
            if keyed {
                self.string()?;
                spaced |= self.ws();
                self.expect(b':')?;
                spaced |= self.ws();
            }
            spaced |= self.value(depth + 1)?;
            spaced |= self.ws();
            if self.eat(close) {
                return Some(spaced);
            }
            self.expect(b',')?;
            spaced |= self.ws();
        }
    }

    /// Skips a container by its brackets alone (strings still read as strings, so a bracket
    /// inside one does not count), without checking what is between them; the scanner is at
    /// its opening bracket. For an event deeper than [`MAX_DEPTH`], which serde_json then reads.
    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        self.i += 1;
                        return Some(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<bool> {
        self.eat(b'-');
        if !self.eat(b'0') {
            self.digits()?;
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.digits()?;
        }
        Some(false)
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// A string; the scanner is at its opening quote.
    fn string(&mut self) -> Option<Str> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return None, // a control character
            }
        }
        let range = start..self.i;
        self.i += 1;
        Some(Str { range, escaped })
    }

    /// Skips string bytes that need no attention: everything but `"`, `\\` and control
    /// characters. Eight bytes at a time (SWAR), and in the chunk that holds the stop, straight
    /// to it: the lowest flagged byte of each SWAR test is exact (a borrow only flags bytes
    /// *above* a true hit), so no byte-by-byte loop after it. Byte by byte only near the end.
    ///
    /// Why not the `memchr` crate: `memchr2` finds `"` and `\\` but not the control characters
    /// JSON forbids in strings (a second pass over the same bytes), and most strings here are
    /// shorter than its vector width. With the byte loop after each chunk, this function was
    /// 13% of a backfill's CPU. A sixteen-byte vector form (the tests written as array code the
    /// compiler turns into SSE2 compares, no `unsafe`) ran fewer instructions but was slower in
    /// the benchmark (issue 23: `parse_page` 0.818 against 0.742 µs/event): its mask goes through
    /// memory to reach the scalar registers, once per string.
    fn skip_plain(&mut self) {
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let control = x.wrapping_sub(splat(0x20)) & !x;
            let stops = (control | zero_bytes(x ^ splat(b'"')) | zero_bytes(x ^ splat(b'\\')))
                & splat(0x80);
            if stops != 0 {
                self.i += stops.trailing_zeros() as usize / 8;
                return;
            }
            self.i += 8;
        }
        while matches!(self.peek(), Some(c) if c >= 0x20 && c != b'"' && c != b'\\') {
            self.i += 1;
        }
    }

    /// An escape sequence; the scanner is at its backslash.
    fn escape(&mut self) -> Option<()> {
        self.i += 1;
        match self.peek()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 1;
                Some(())
            }
            b'u' => match self.hex4()? {
                0xD800..=0xDBFF => {
                    // A leading surrogate must be followed by a trailing one.
                    self.expect(b'\\')?;
                    matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
                }
                0xDC00..=0xDFFF => None,
                _ => Some(()),
            },
            _ => None,
        }
    }

    /// `u` and four hex digits; the scanner is at the `u`.
    fn hex4(&mut self) -> Option<u16> {
        self.expect(b'u')?;
        let digits = self.b.get(self.i..self.i + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u16::from_str_radix(text, 16).ok()
    }
}
