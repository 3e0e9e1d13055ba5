//! The sealed per-hour digests of the delivered events (`pipeline::ledger::sketch`), kept for
//! the API's retention so that `audit --repair` can tell which events an hour lacks.
//!
//! An hour's digest lives in the state while the hour is pending, and is *sealed* into the
//! store once no normal collection adds to it (`puller::checkpoint`): the store keeps one entry
//! per (hour, seal id), written before the state drops it, so a crash between the two writes
//! the same entry again. The digest of an hour is the sum of its sealed entries and of the
//! pending one whose seal id is not among them ([`StateStore::delivered_digest`]).
//!
//! Where, by the state's store: a file per UTC day beside the state file,
//! `<key>.digests.<YYYY-MM-DD>.json` (`{"<hour ISO>/<seal hex>": "<base64>"}`, written
//! atomically under the state directory's lock; when a seal begins a new day, the files of
//! the days beyond [`KEEP_DAYS`] are removed); a Redis hash per day (`state::redis`'s
//! `digests`, fenced by the lease, expiring after 31 days); or memory, for the life of the
//! process (days beyond the retention dropped).
//!
//! Cost, for a service with events in every hour (an hour without events has no digest), a
//! digest being 944 bytes:
//! - on disk: about 1,310 bytes an hour (base64 in JSON with its name), 31 KB a day, 975 KB
//!   for the 31 days kept; 2,000 services (1,000 tenants): about 2 GB;
//! - in Redis: 26,720 bytes for a day's hash of 24 digests (`MEMORY USAGE ... SAMPLES 0`,
//!   `tests/it/digests.rs`), 1,113 bytes an hour, 830 KB a service for 31 days;
//! - in the state (memory and document): one pending digest at a time in a backfill (at most
//!   two for a daemon, whose lookback keeps the previous hour open), 1,415 bytes more in the
//!   document per pending digest (a 100,000-event backfill through the commits: 2,228 bytes
//!   at most with it, 813 without; the test `a_backfill_keeps_at_most_two_digests_in_the_state`),
//!   and about 1.2 KB in memory each;
//! - CPU: 0.045 µs more per committed event (Criterion, `benches/hot_path.rs`:
//!   `ledger_count_only` 0.005 µs/event, `ledger_count_and_digest` 0.050; the whole
//!   parse-dedup-format path is 0.85 µs/event in `docs/performance.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{StateError, StateStore};
use crate::pipeline::ledger::sketch::Sketch;
use crate::pipeline::ledger::{hour_of, AuditLedger, PendingDigest, HOUR_MS};
use crate::timestamp::{format_iso, Millis};

/// Days of sealed digests kept: the API's 30 days and one more.
pub const KEEP_DAYS: i64 = 31;

/// The UTC day (`YYYY-MM-DD`) of `t`.
fn day_of(t: Millis) -> String {
    format_iso(t)[..10].to_owned()
}

/// The entry's name of a sealed digest: `<hour ISO>/<seal hex>`.
fn field(hour: Millis, seal: u64) -> String {
    format!("{}/{seal:016x}", format_iso(hour))
}

/// The seal id of an entry named `field`, if it is of `hour`.
fn seal_of(field: &str, hour: Millis) -> Option<u64> {
    let (at, seal) = field.split_once('/')?;
    (at == format_iso(hour)).then(|| u64::from_str_radix(seal, 16).ok())?
}

impl StateStore {
    /// Writes the digests `sealed` (by hour) of the service `key` into the store, durably; in
    /// Redis only while `lease` holds the service's lease.
    pub async fn seal_digests(
        &self,
        key: &str,
        sealed: &[(Millis, PendingDigest)],
        lease: Option<&str>,
    ) -> Result<(), StateError> {
        let mut by_day: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (hour, d) in sealed {
            let entry = (field(*hour, d.seal), d.sketch.to_bytes());
            by_day.entry(day_of(*hour)).or_default().push(entry);
        }
        for (day, entries) in by_day {
            match self {
                StateStore::Memory(_) => memory_seal(key, &day, entries),
                StateStore::Filesystem { directory } => file_seal(directory, key, &day, entries)?,
                StateStore::Redis(r) => r.seal_digests(key, &day, &entries, lease).await?,
            }
        }
        Ok(())
    }

    /// The sealed digests of the hour starting at `hour` of the service `key`, by seal id. An
    /// entry that does not read is left out (the hour's digest then falls short of its count,
    /// and the repair refuses the hour).
    pub async fn sealed_digests(
        &self,
        key: &str,
        hour: Millis,
    ) -> Result<BTreeMap<u64, Sketch>, StateError> {
        let hour = hour_of(hour);
        let day = day_of(hour);
        let entries = match self {
            StateStore::Memory(_) => memory_day(key, &day),
            StateStore::Filesystem { directory } => file_day(directory, key, &day)?,
            StateStore::Redis(r) => r.sealed_digests(key, &day).await?,
        };
        Ok(entries
            .iter()
            .filter_map(|(f, bytes)| Some((seal_of(f, hour)?, Sketch::from_bytes(bytes)?)))
            .collect())
    }

    /// The digest of every copy of the hour starting at `hour` that the service `key` delivered:
    /// its sealed entries and the pending one in `ledger` (unless it is sealed already).
    pub async fn delivered_digest(
        &self,
        key: &str,
        ledger: &AuditLedger,
        hour: Millis,
    ) -> Result<Sketch, StateError> {
        let sealed = self.sealed_digests(key, hour).await?;
        let mut sum = Sketch::new();
        sealed.values().for_each(|s| sum.add(s));
        if let Some(pending) = ledger.pending(hour) {
            if !sealed.contains_key(&pending.seal) {
                sum.add(&pending.sketch);
            }
        }
        Ok(sum)
    }
}

/// The memory store's digests: (key, day) -> field -> bytes, for the life of the process.
type MemoryDigests = std::sync::Mutex<BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>>;

fn memory() -> &'static MemoryDigests {
    static DIGESTS: std::sync::OnceLock<MemoryDigests> = std::sync::OnceLock::new();
    DIGESTS.get_or_init(Default::default)
}

fn memory_seal(key: &str, day: &str, entries: Vec<(String, Vec<u8>)>) {
    let mut all = memory().lock().expect("digests lock");
    all.entry((key.to_owned(), day.to_owned()))
        .or_default()
        .extend(entries);
    // A `--no-save-state` daemon runs for months: its days beyond the retention go.
    let oldest = day_of(oldest_kept(day));
    all.retain(|(k, d), _| k != key || *d >= oldest);
}

/// The start of the oldest day kept when `day` is written: [`KEEP_DAYS`] before it.
fn oldest_kept(day: &str) -> Millis {
    let start = crate::timestamp::parse_user_time(&format!("{day}T00:00:00Z"))
        .map_or(0, |t| t.timestamp_millis());
    start - KEEP_DAYS * 24 * HOUR_MS
}

fn memory_day(key: &str, day: &str) -> BTreeMap<String, Vec<u8>> {
    let all = memory().lock().expect("digests lock");
    let day = all.get(&(key.to_owned(), day.to_owned()));
    day.cloned().unwrap_or_default()
}

/// The digests file of `key` for the UTC day `day` in `directory`.
pub fn path(directory: &Path, key: &str, day: &str) -> PathBuf {
    directory.join(format!("{key}.digests.{day}.json"))
}

/// A day's file: field -> base64 digest; none yet is empty.
fn file_day(
    directory: &Path,
    key: &str,
    day: &str,
) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
    let path = path(directory, key, day);
    let text: BTreeMap<String, String> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
            location: format!("file {}", path.display()),
            reason: e.into(),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    Ok(text
        .into_iter()
        .filter_map(|(f, t)| Some((f, Sketch::from_text(&t)?.to_bytes())))
        .collect())
}

fn file_seal(
    directory: &Path,
    key: &str,
    day: &str,
    entries: Vec<(String, Vec<u8>)>,
) -> Result<(), StateError> {
    let mut all = file_day(directory, key, day)?;
    let new_day = all.is_empty();
    all.extend(entries);
    let text: BTreeMap<String, String> = all
        .into_iter()
        .filter_map(|(f, bytes)| Some((f, Sketch::from_bytes(&bytes)?.to_text())))
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&text).expect("digests serialise");
    bytes.push(b'\n');
    super::filesystem::write_atomically(directory, &path(directory, key, day), &bytes)?;
    if new_day {
        remove_old_days(directory, key, day);
    }
    Ok(())
}

/// Removes `key`'s digest files of the days that fell out of the retention when `day` began
/// (best effort: a file left behind costs a few kilobytes). By name, the ten days before the
/// oldest kept: no listing of a directory that may hold thousands of services' files; a
/// service that sealed nothing for longer than that leaves its older files behind.
fn remove_old_days(directory: &Path, key: &str, day: &str) {
    let oldest = oldest_kept(day);
    for back in 1..=10 {
        let gone = day_of(oldest - back * 24 * HOUR_MS);
        let _ = std::fs::remove_file(path(directory, key, &gone));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ledger::sketch::element_id;

    const T0: Millis = 1_780_000_000_000 / HOUR_MS * HOUR_MS;

    fn ledger_with(n: u8, hour: Millis) -> AuditLedger {
        let mut ledger = AuditLedger::tracking_from(T0 - 60 * 24 * HOUR_MS);
        for i in 0..n {
            ledger.record_copy(hour + i64::from(i), &[i; 32], 1);
        }
        ledger
    }

    /// Sealing twice (a crash before the state dropped the digest) keeps one entry, the pending
    /// copy of a sealed digest is not counted twice, and files older than the retention go.
    #[tokio::test]
    async fn a_day_file_keeps_one_entry_per_seal_and_old_days_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().to_owned());
        let mut ledger = ledger_with(4, T0);
        let sealed = ledger.pending_before(T0 + HOUR_MS);
        store.seal_digests("k", &sealed, None).await.unwrap();
        store.seal_digests("k", &sealed, None).await.unwrap();
        assert_eq!(store.sealed_digests("k", T0).await.unwrap().len(), 1);
        assert_eq!(
            store
                .delivered_digest("k", &ledger, T0)
                .await
                .unwrap()
                .elements(),
            4
        );
        ledger.sealed(T0, sealed[0].1.seal);
        ledger.record_copy(T0 + 9, &[0; 32], 2);
        let digest = store.delivered_digest("k", &ledger, T0).await.unwrap();
        assert_eq!(digest.elements(), 5);
        // Another hour of the same day is another entry, not mixed in.
        let other = ledger_with(2, T0 + HOUR_MS).pending_before(T0 + 2 * HOUR_MS);
        store.seal_digests("k", &other, None).await.unwrap();
        assert_eq!(
            store.delivered_digest("k", &ledger, T0).await.unwrap(),
            digest
        );
        // A seal 32 days later removes the first day's file.
        let first = path(dir.path(), "k", &day_of(T0));
        assert!(first.exists());
        let later = T0 + 32 * 24 * HOUR_MS;
        let far = ledger_with(1, later).pending_before(later + HOUR_MS);
        store.seal_digests("k", &far, None).await.unwrap();
        assert!(!first.exists());
        assert!(path(dir.path(), "k", &day_of(later)).exists());
    }

    #[tokio::test]
    async fn the_memory_store_keeps_sealed_digests_for_the_process() {
        let store = StateStore::memory();
        let ledger = ledger_with(3, T0);
        let sealed = ledger.pending_before(T0 + HOUR_MS);
        store
            .seal_digests("digests-memory", &sealed, None)
            .await
            .unwrap();
        let back = store.sealed_digests("digests-memory", T0).await.unwrap();
        assert_eq!(back.get(&sealed[0].1.seal), Some(&sealed[0].1.sketch));
        let mut one = back[&sealed[0].1.seal].clone();
        one.subtract(&ledger_with(2, T0).pending(T0).unwrap().sketch);
        let found = one.decode().unwrap();
        assert_eq!(found.left_only, vec![element_id(T0 + 2, &[2; 32], 1)]);
    }

    /// A 100,000-event backfill through the checkpoint's commits (10 hours of event time, a
    /// window every 5 minutes): the state holds at most two pending digests at any time (the
    /// others are sealed as the horizon passes their hour), every hour's sealed digest holds its
    /// count, and the document's size with and without the digests is printed (the module
    /// doc's figures: `--nocapture`).
    #[tokio::test]
    async fn a_backfill_keeps_at_most_two_digests_in_the_state() {
        use crate::clock::SharedClock;
        use crate::event::Event;
        use crate::metrics::Metrics;
        use crate::pipeline::window::Window;
        use crate::puller::checkpoint::Checkpoint;
        use sha2::{Digest, Sha256};
        use std::sync::Arc;
        let now = SharedClock::system().now_ms();
        let start = hour_of(now) - 12 * HOUR_MS;
        let text = format!("globals: {{persistence: {{type: memory}}}}\noutputs: {{c: {{type: console}}}}\ninputs:\n  proofpoint_isolation:\n    id: \"digests-backfill\"\n    credentials: {{api_key: k}}\n    services:\n      url_isolation: {{start_time_in_utc: \"{}\"}}\n", format_iso(start));
        let config = crate::config::Config::parse(
            &text,
            Path::new("."),
            &|_| None,
            SharedClock::system().now(),
        )
        .unwrap();
        // As `backfill` runs it: no lookback, so each window settles as it commits.
        let mut svc = config.inputs[0].services[0].clone();
        svc.lookback = std::time::Duration::ZERO;
        let svc = &svc;
        let store = Arc::new(StateStore::memory());
        let key = "digests-backfill".to_owned();
        let metrics = Arc::new(Metrics::new()).service("digests-backfill", svc.service);
        let mut checkpoint = Checkpoint::new(store.clone(), key.clone(), svc, metrics);
        checkpoint.restore(svc, now).await.unwrap();
        let (window, total) = (5 * 60_000, 100_000i64);
        let windows = 10 * HOUR_MS / window;
        let per_window = total / windows;
        let (mut most_pending, mut largest, mut largest_without) = (0, 0, 0);
        for n in 0..windows {
            let w = Window {
                from: start + n * window,
                to: start + (n + 1) * window,
            };
            let events: Vec<Event> = (0..per_window)
                .map(|i| {
                    let date = w.from + i * window / per_window;
                    let json = format!("{{\"n\":{n},\"i\":{i}}}");
                    Event {
                        date_ms: date,
                        key: Sha256::digest(json.as_bytes()).into(),
                        json: json.into(),
                    }
                })
                .collect();
            let plan = checkpoint.state().dedup.plan(&events, w.to);
            checkpoint
                .commit(w, w.to + 60_000, plan, Vec::new(), svc)
                .await
                .unwrap();
            let mut without = checkpoint.state().clone();
            let pending = without.ledger.pending_before(Millis::MAX);
            for (hour, d) in &pending {
                without.ledger.sealed(*hour, d.seal);
            }
            most_pending = most_pending.max(pending.len());
            largest = largest.max(crate::state::encode(checkpoint.state()).len());
            largest_without = largest_without.max(crate::state::encode(&without).len());
        }
        assert!(most_pending <= 2, "{most_pending} digests pending at once");
        for h in 0..9 {
            let hour = start + h * HOUR_MS;
            let sealed = store.sealed_digests(&key, hour).await.unwrap();
            let elements: i64 = sealed.values().map(Sketch::elements).sum();
            let count = checkpoint.state().ledger.delivered(hour).unwrap();
            assert_eq!(elements, count as i64, "hour {h}");
        }
        println!(
            "100,000 events over 10 hours: state document at most {largest} bytes with the pending digests, {largest_without} without ({} more); at most {most_pending} digests pending",
            largest - largest_without
        );
    }
}
