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
