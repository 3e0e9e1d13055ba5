//! The spool: one large API job consumed as many budget-sized windows.
//!
//! A window whose job turns out to hold more events than one window may (its first page's
//! `total` above the planner's cap, or, without a `total`, its events passing the cap) is not
//! abandoned: its pages go on being downloaded, and their events are written to a spool file,
//! bucketed by event `date` into K time buckets over the job's range `[from, to]` (K from the
//! events and the window cap, with headroom: twice as many buckets as `events / cap`). The
//! buckets are then delivered one window after the other, in time order, through the usual
//! delivery path (sort, dedup plan, obfuscation, outputs, commit). So the job is created once
//! and the API's job latency is paid once, and the first job's `total` sizes the windows.
//!
//! Memory: each bucket has a small buffer; a full one is appended to the file as a chunk, and
//! the bucket records its chunks' (offset, len). What the spool holds in memory is K buffers
//! (taken from the window budget with the page in hand), whatever the job's size. A bucket is
//! read back whole into one buffer (its bytes reserved in the budget, as a window's are) and its
//! events are sliced out of it without a copy (the buffers of the last two windows are reused
//! once their events are dropped). Consecutive small buckets are read as one window, up to 80%
//! of the window cap, as the planner's windows. A bucket with more events than the cap (a burst) is re-bucketed: its
//! chunks are read one by one and written again as finer buckets over its own time range,
//! appended to the same file. A bucket that cannot be split further (its span at the planner's
//! narrowest) is delivered whole if it fits the service's share of the budget, else it is the
//! usual `WindowOverBudget` error.
//!
//! Records hold what rebuilding an [`Event`] needs without parsing or hashing it again: `date`
//! (ms, little-endian i64), the 32-byte dedup key, the JSON's length (u32) and bytes. Undated
//! events go to the first bucket (they are delivered first in their window, as always).
//!
//! The file: `tempfile::tempfile_in(spool_directory)`, a file with no name (or unlinked at
//! once). A `kill -9` therefore leaves nothing on disk and needs no clean-up code, and two
//! replicas on one host never collide. The file is freed when the spool is dropped: after its
//! last window, or when the cycle fails, is cancelled, or hands the lease over. Nothing in it is
//! needed after a crash: a window commits only once every output confirmed it, and the next
//! cycle starts at the last committed window's end (the API is the buffer, as for any window).
//!
//! Failures lose nothing: a write error (a full disk) or a spool past `spool_max_size_in_mb`
//! makes the caller drop the spool and fall back to splitting the window, as without a spool.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};

pub use crate::config::SpoolSettings;

use crate::event::{Event, UNDATED};
use crate::pipeline::budget::Reservation;
use crate::pipeline::window::{Window, MIN_SPAN};
use crate::state::dead_letter::DeadLetter;
use crate::timestamp::Millis;

/// A record's fixed part: date (8), key (32), JSON length (4).
const HEADER: usize = 8 + 32 + 4;

/// The most buckets one spool (or one re-bucketed burst) is cut into.
const MAX_BUCKETS: usize = 512;

/// The bounds of a bucket's in-memory buffer.
const MIN_BUFFER: usize = 4 * 1024;
const MAX_BUFFER: usize = 64 * 1024;

/// The spool file's storage: positional writes and reads (a seam for the full-disk tests).
pub(super) trait Storage: Send + Sync {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Storage for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A file that holds at most `room` bytes, then fails as a full disk does (ENOSPC): the
/// full-disk tests' storage (only in tests and the tests' build).
#[cfg(any(test, feature = "test-hooks"))]
pub(super) struct Cramped {
    pub file: File,
    pub room: u64,
}

#[cfg(any(test, feature = "test-hooks"))]
impl Storage for Cramped {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.room {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        FileExt::write_all_at(&self.file, buf, offset)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// Opens an unnamed spool file in `dir`. In a build with the cargo feature `test-hooks` only,
/// `ISOLATION_COLLECTOR_SPOOL_ROOM_BYTES` makes it hold at most that many bytes (a full disk).
fn open_storage(dir: &Path) -> io::Result<Box<dyn Storage>> {
    std::fs::create_dir_all(dir)?;
    let file = tempfile::tempfile_in(dir)?;
    #[cfg(feature = "test-hooks")]
    if let Some(room) = std::env::var("ISOLATION_COLLECTOR_SPOOL_ROOM_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Ok(Box::new(Cramped { file, room }));
    }
    Ok(Box::new(file))
}

/// Why a spool could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the spool would pass spool_max_size_in_mb ({0} bytes)")]
    TooBig(u64),
    /// The API lost the job (expired, or not found) before its last page was spooled.
    #[error("the API lost the job before its last page ({0})")]
    JobLost(String),
}

impl SpoolError {
    /// What an operator can do about it.
    pub fn fix(&self) -> &'static str {
        match self {
            SpoolError::Io(_) => "Free space there, or set globals.spool_directory to a directory with room.",
            SpoolError::TooBig(_) => "Raise globals.spool_max_size_in_mb to spool jobs this big.",
            SpoolError::JobLost(_) => "The API's jobs expire before a job this big is downloaded; nothing to do, smaller windows each get a job of their own.",
        }
    }
}

/// One time bucket: `[from, to)` (the last one includes the job's `to`).
#[derive(Debug)]
struct Bucket {
    from: Millis,
    to: Millis,
    /// Records not written yet.
    buf: Vec<u8>,
    /// Its chunks in the file: (offset, len).
    chunks: Vec<(u64, u32)>,
    events: usize,
    /// The bytes its events hold once read back (JSON and struct), as a window counts them.
    held: u64,
}

impl Bucket {
    fn new(from: Millis, to: Millis) -> Bucket {
        Bucket {
            from,
            to,
            buf: Vec::new(),
            chunks: Vec::new(),
            events: 0,
            held: 0,
        }
    }
}

/// The time buckets `[from, to]` is cut into: `k` of about equal spans (at least one).
fn cut(from: Millis, to: Millis, k: usize) -> Vec<Bucket> {
    let span = (to - from).max(1) as i128;
    let k = k.max(1) as i128;
    let bound = |i: i128| (from as i128 + span * i / k) as Millis;
    (0..k)
        .map(|i| Bucket::new(bound(i), if i == k - 1 { to } else { bound(i + 1) }))
        .collect()
}

/// How many buckets `events` are cut into with windows of `cap`: twice `events / cap` (so a
/// bucket holds about half a window when the events are spread evenly), at least two, at most
/// [`MAX_BUCKETS`].
pub(super) fn bucket_count(events: u64, cap: usize) -> usize {
    let k = (2 * events).div_ceil(cap.max(1) as u64);
    (k as usize).clamp(2, MAX_BUCKETS)
}

/// The index of the bucket that takes an event dated `date` (undated: the first).
fn bucket_of(buckets: &[Bucket], date: Millis) -> usize {
    if date == UNDATED {
        return 0;
    }
    // Buckets after the first whose start is at or before `date`.
    buckets[1..].partition_point(|b| b.from <= date)
}

/// One large job's events on disk, bucketed by time, delivered bucket by bucket.
pub(super) struct Spool {
    storage: Box<dyn Storage>,
    /// Bytes written to the file so far, and the most it may hold.
    len: u64,
    max_bytes: u64,
    buffer: usize,
    /// The buffers that may be filled at once (the buckets it was cut into at first).
    max_buffers: usize,
    /// The buckets not delivered yet, in time order.
    buckets: VecDeque<Bucket>,
    /// Events written.
    pub(super) events: u64,
    /// When the job was created (every window of the spool carries it).
    pub(super) created: Millis,
    /// The job's unreadable events' letters: set aside with the first window delivered.
    pub(super) unreadable: Vec<DeadLetter>,
    /// The buffers' bytes in the budget while the job is downloaded.
    pub(super) held: Reservation,
    /// The buffers of the last windows read back, reused once their events are all dropped
    /// (the window delivered): reading a window back then neither allocates nor faults in
    /// fresh pages. At most [`SPARE_BUFFERS`], each at most a window's bytes.
    spare: VecDeque<Bytes>,
}

/// The read-back buffers kept for reuse: the window delivered and the one read meanwhile.
const SPARE_BUFFERS: usize = 2;

impl Spool {
    /// A spool in `settings.directory` for the job of `w`, cut into `k` buckets, each
    /// buffering up to `window_bytes / (4k)` bytes (4 to 64 KiB) before it is written: the
    /// buffers take about a quarter of a window's bytes.
    pub(super) fn create(
        settings: &SpoolSettings,
        w: Window,
        k: usize,
        window_bytes: u64,
    ) -> io::Result<Spool> {
        let storage = open_storage(&settings.directory)?;
        Ok(Spool::with_storage(storage, settings, w, k, window_bytes))
    }

    pub(super) fn with_storage(
        storage: Box<dyn Storage>,
        settings: &SpoolSettings,
        w: Window,
        k: usize,
        window_bytes: u64,
    ) -> Spool {
        let buffer = (window_bytes / (4 * k.max(1) as u64)) as usize;
        Spool {
            storage,
            len: 0,
            max_bytes: settings.max_bytes,
            buffer: buffer.clamp(MIN_BUFFER, MAX_BUFFER),
            max_buffers: k.max(1),
            buckets: cut(w.from, w.to, k).into(),
            events: 0,
            created: 0,
            unreadable: Vec::new(),
            held: Reservation::default(),
            spare: VecDeque::new(),
        }
    }

    /// The memory its buffers may take while the job is downloaded.
    pub(super) fn buffer_bytes(&self) -> u64 {
        (self.buffer + HEADER) as u64 * self.buckets.len() as u64
    }

    /// Writes `events` into their buckets (a full buffer goes to the file).
    pub(super) fn push_all(&mut self, events: Vec<Event>) -> Result<(), SpoolError> {
        for e in events {
            self.push(&e)?;
        }
        Ok(())
    }

    fn push(&mut self, e: &Event) -> Result<(), SpoolError> {
        self.push_into(e, self.buckets.len())
    }

    /// Appends bucket `i`'s buffer to the file as a chunk.
    fn flush(&mut self, i: usize) -> Result<(), SpoolError> {
        let bucket = &mut self.buckets[i];
        if bucket.buf.is_empty() {
            return Ok(());
        }
        let len = bucket.buf.len() as u64;
        if self.len + len > self.max_bytes {
            return Err(SpoolError::TooBig(self.max_bytes));
        }
        self.storage.write_all_at(&bucket.buf, self.len)?;
        bucket.chunks.push((self.len, len as u32));
        bucket.buf.clear();
        self.len += len;
        Ok(())
    }

    /// Every event is in: the buffers go to the file and their memory is released.
    pub(super) fn finish(&mut self) -> Result<(), SpoolError> {
        for i in 0..self.buckets.len() {
            self.flush(i)?;
            self.buckets[i].buf = Vec::new();
        }
        self.held = Reservation::default();
        Ok(())
    }

    /// Whether every bucket was taken.
    pub(super) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The next window's bounds, events and held bytes, without reading it: the first bucket
    /// and those after it that fit with it in 80% of `cap` events and of `window_bytes` (the
    /// planner's windows aim at 80% of the cap too: the memory bound is measured with them). A first bucket
    /// over `cap` or `window_bytes` that can still be split is re-bucketed first. `None` when
    /// none is left. A first bucket that cannot be split comes whole: the caller checks its
    /// bytes against the service's share.
    pub(super) fn plan_next(
        &mut self,
        cap: usize,
        window_bytes: u64,
    ) -> Result<Option<(Window, usize, u64, usize)>, SpoolError> {
        loop {
            let Some(first) = self.buckets.front() else {
                return Ok(None);
            };
            let over = first.events > cap || first.held > window_bytes;
            if over && first.to - first.from > MIN_SPAN {
                self.rebucket(cap)?;
                continue;
            }
            let (mut n, mut events, mut held) = (1, first.events, first.held);
            let (fill_events, fill_bytes) = (cap * 4 / 5, window_bytes / 5 * 4);
            while let Some(b) = self.buckets.get(n) {
                if events + b.events > fill_events || held + b.held > fill_bytes {
                    break;
                }
                (events, held) = (events + b.events, held + b.held);
                n += 1;
            }
            let w = Window {
                from: first.from,
                to: self.buckets[n - 1].to,
            };
            return Ok(Some((w, events, held, n)));
        }
    }

    /// Reads the first `n` buckets (as [`plan_next`](Self::plan_next) planned them) and removes
    /// them: their events, sliced out of one buffer.
    pub(super) fn take(&mut self, n: usize) -> Result<Vec<Event>, SpoolError> {
        let taken: Vec<Bucket> = self.buckets.drain(..n).collect();
        let size: usize = taken
            .iter()
            .flat_map(|b| &b.chunks)
            .map(|&(_, len)| len as usize)
            .sum::<usize>()
            + taken.iter().map(|b| b.buf.len()).sum::<usize>();
        let mut data = self.read_buffer(size);
        let mut at = 0;
        for b in &taken {
            for &(offset, len) in &b.chunks {
                let len = len as usize;
                self.storage
                    .read_exact_at(&mut data[at..at + len], offset)?;
                at += len;
            }
            // Not flushed (only before `finish`, in tests).
            data[at..at + b.buf.len()].copy_from_slice(&b.buf);
            at += b.buf.len();
        }
        let events = taken.iter().map(|b| b.events).sum();
        // The whole buffer is kept (its headroom too), the events slice its first `size` bytes.
        let data = data.freeze();
        if self.spare.len() == SPARE_BUFFERS {
            self.spare.pop_front();
        }
        self.spare.push_back(data.clone());
        decode(data.slice(..size), events)
    }

    /// A buffer of at least `size` bytes to read a window into: a spare one big enough whose
    /// window is gone, or a new one.
    fn read_buffer(&mut self, size: usize) -> BytesMut {
        let unused = self
            .spare
            .iter()
            .position(|b| b.len() >= size && b.is_unique());
        if let Some(Ok(buf)) = unused
            .and_then(|i| self.spare.remove(i))
            .map(Bytes::try_into_mut)
        {
            return buf; // not truncated: its length is what the next reuse compares
        }
        // A quarter of headroom: windows differ a little in size, and a spare only a few bytes
        // short of the next window would not be reused (and a new buffer faults its pages in).
        BytesMut::zeroed(size + size / 4)
    }

    /// Cuts the first bucket (a burst of more than `cap` events) into finer buckets over its own
    /// span, reading its chunks one at a time and appending the new ones to the file.
    fn rebucket(&mut self, cap: usize) -> Result<(), SpoolError> {
        let burst = self.buckets.pop_front().expect("a first bucket");
        // No more buffers than the spool was cut into at first (its memory); a burst still too
        // big is cut again at its turn.
        let k = bucket_count(burst.events as u64, cap).min(self.max_buffers.max(2));
        let finer: Vec<Bucket> = cut(burst.from, burst.to, k);
        for b in finer.into_iter().rev() {
            self.buckets.push_front(b);
        }
        for &(offset, len) in &burst.chunks {
            let mut chunk = vec![0u8; len as usize];
            self.storage.read_exact_at(&mut chunk, offset)?;
            let count = count_records(&chunk);
            self.events -= count as u64;
            for e in decode(Bytes::from(chunk), count)? {
                self.push_into(&e, k)?;
            }
        }
        let unflushed = burst.buf.len();
        if unflushed > 0 {
            let count = count_records(&burst.buf);
            self.events -= count as u64;
            for e in decode(Bytes::from(burst.buf), count)? {
                self.push_into(&e, k)?;
            }
        }
        for i in 0..k {
            self.flush(i)?;
            self.buckets[i].buf = Vec::new();
        }
        Ok(())
    }

    /// [`push`](Self::push) among the first `k` buckets only (a re-bucketed burst's).
    fn push_into(&mut self, e: &Event, k: usize) -> Result<(), SpoolError> {
        let i = bucket_of(&self.buckets.make_contiguous()[..k], e.date_ms);
        let bucket = &mut self.buckets[i];
        if !bucket.buf.is_empty() && bucket.buf.len() + HEADER + e.json.len() > self.buffer {
            self.flush(i)?;
        }
        let bucket = &mut self.buckets[i];
        if bucket.buf.capacity() == 0 {
            // Its whole buffer at once: it never grows (and leaves no freed blocks behind).
            bucket.buf.reserve_exact(self.buffer);
        }
        append_record(&mut bucket.buf, e);
        bucket.events += 1;
        bucket.held += held_bytes(e.json.len());
        self.events += 1;
        if bucket.buf.len() >= self.buffer {
            // A record bigger than a buffer: written alone.
            self.flush(i)?;
        }
        Ok(())
    }
}

/// The bytes an event of `json_len` holds in a window read back: its struct and its record
/// (JSON and header) in the window's buffer.
fn held_bytes(json_len: usize) -> u64 {
    (json_len + HEADER + std::mem::size_of::<Event>()) as u64
}

fn append_record(buf: &mut Vec<u8>, e: &Event) {
    buf.extend_from_slice(&e.date_ms.to_le_bytes());
    buf.extend_from_slice(&e.key);
    buf.extend_from_slice(&(e.json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&e.json);
}

/// The records in `data`.
fn count_records(data: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[at + 40..at + 44].try_into().expect("4 bytes"));
        at += HEADER + len as usize;
        n += 1;
    }
    n
}

/// The `expected` events of `data`, each one's JSON a slice of it (no copy).
fn decode(data: Bytes, expected: usize) -> Result<Vec<Event>, SpoolError> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "the spool file is corrupt");
    let mut events = Vec::with_capacity(expected);
    let mut at = 0;
    while at < data.len() {
        let header = data.get(at..at + HEADER).ok_or_else(corrupt)?;
        let date_ms = i64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let key: [u8; 32] = header[8..40].try_into().expect("32 bytes");
        let len = u32::from_le_bytes(header[40..44].try_into().expect("4 bytes")) as usize;
        let start = at + HEADER;
        if start + len > data.len() {
            return Err(corrupt().into());
        }
        events.push(Event {
            date_ms,
            key,
            json: data.slice(start..start + len),
        });
        at = start + len;
    }
    Ok(events)
}

#[cfg(test)]
mod tests;
