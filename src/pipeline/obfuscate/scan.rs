//! A strict, allocation-free reader of one compact JSON value: it validates the value and
//! finds the members of an object (or the items of a list) as byte ranges, for the fast path
//! ([`super::fast`]).
//!
//! Why not serde_json or [`crate::event`]'s page scanner: serde_json's borrowed members cost a
//! vector and a full parse per rule and event (most of obfuscation's 2.6 µs), and the page
//! scanner reads whole pages, not one event already taken out of one. This reader is
//! deliberately *stricter* than serde_json, never laxer: whatever it accepts, serde_json
//! accepts with the same structure; anything else (whitespace between tokens, a member name
//! holding an escape, nesting deeper than [`MAX_DEPTH`], malformed JSON) makes it return
//! `None`, and the caller falls back to the serde_json path, which decides as before.

use std::ops::Range;

/// Below serde_json's own recursion limit (128): deeper values go the serde_json way.
const MAX_DEPTH: usize = 100;

/// A member of an object: byte ranges of the text read.
#[derive(Clone, Debug)]
pub(super) struct Member {
    /// The name, inside the quotes (never holding an escape: see [`members`]).
    pub(super) key: Range<usize>,
    /// The value as written.
    pub(super) value: Range<usize>,
}

/// Reads `text`, which must be exactly one JSON object, into `out` (emptied first), in
/// document order. `None` when the text is not one or when a member name holds an escape
/// (whose decoded text the caller would need).
pub(super) fn members(text: &str, out: &mut Vec<Member>) -> Option<()> {
    out.clear();
    let b = text.as_bytes();
    let mut r = Reader { b, i: 0 };
    r.expect(b'{')?;
    if r.eat(b'}') {
        return r.at_end();
    }
    loop {
        let key_start = r.i + 1;
        if r.string()? {
            return None;
        }
        let key = key_start..r.i - 1;
        r.expect(b':')?;
        let start = r.i;
        r.value(1)?;
        out.push(Member {
            key,
            value: start..r.i,
        });
        if !r.eat(b',') {
            r.expect(b'}')?;
            return r.at_end();
        }
    }
}

/// Reads `text`, which must be exactly one JSON list, into its items' ranges (emptied first).
pub(super) fn items(text: &str, out: &mut Vec<Range<usize>>) -> Option<()> {
    out.clear();
    let mut r = Reader {
        b: text.as_bytes(),
        i: 0,
    };
    r.expect(b'[')?;
    if r.eat(b']') {
        return r.at_end();
    }
    loop {
        let start = r.i;
        r.value(1)?;
        out.push(start..r.i);
        if !r.eat(b',') {
            r.expect(b']')?;
            return r.at_end();
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Whether the whole text was read.
    fn at_end(&self) -> Option<()> {
        (self.i == self.b.len()).then_some(())
    }

    /// Steps over `byte` if it comes next; whether it did.
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() != Some(byte) {
            return false;
        }
        self.i += 1;
        true
    }

    /// Steps over `byte`, or `None` when something else comes next.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// One value of any kind, nested at most [`MAX_DEPTH`] deep.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.i += 1;
                if self.eat(b'}') {
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.value(depth + 1)?;
                    if !self.eat(b',') {
                        return self.expect(b'}');
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    if !self.eat(b',') {
                        return self.expect(b']');
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// JSON's number grammar exactly: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        if !self.eat(b'0') {
            matches!(self.peek()?, b'1'..=b'9').then_some(())?;
            self.digits();
        }
        if self.eat(b'.') {
            self.digits().then_some(())?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.digits().then_some(())?;
        }
        Some(())
    }

    /// Skips ASCII digits; whether there was one.
    fn digits(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i > start
    }

    /// A string (at its opening quote), past its closing quote; whether it holds an escape.
    /// Escapes are checked as serde_json checks them when it skips a string: a known letter,
    /// or `u` and four hex digits (a lone surrogate is text it skips too).
    fn string(&mut self) -> Option<bool> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            self.i = skip_plain(self.b, self.i);
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character, which JSON strings must escape.
                _ => return None,
            }
        }
    }
}

/// The index of the first byte at or after `i` that ends a run of plain string content (a
/// quote, a backslash or a control character), or the length. Eight bytes at a time: string
/// bodies are most of an event's bytes.
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (n <= 128). A borrow can also mark bytes
    // above a marked one, never below it: the lowest mark is exact.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let marks = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if marks != 0 {
            return i + (marks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&byte) = b.get(i) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        i += 1;
    }
    i
}
