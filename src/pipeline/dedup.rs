//! Exactly-once across re-queried overlaps: a multiset of delivered events.
//!
//! Events carry no id, so an event is known by its `date` and the SHA-256 of its canonical form.
//! Two genuinely distinct events can be byte-identical (same user, URL and millisecond), so the
//! memory counts *copies* per key instead of holding a set: when a query returns `n` copies of a
//! key and `m` were already delivered, the last `n - m` are new. A re-query of the same data
//! therefore delivers nothing, a query that finds a late copy delivers exactly that copy, and
//! identical twins are never collapsed.
//!
//! The memory only needs to cover the dates that a later query can return again, which are those
//! at or after the puller's *settled* horizon (see `window.rs`); older entries are pruned.
//!
//! [`DedupMemory::plan`] does not change the memory: the caller applies the returned
//! [`DedupPlan`] only once every output has confirmed the batch, together with the checkpoint.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::event::{Event, UNDATED};
use crate::timestamp::Millis;

/// Hashes dedup keys by their first eight SHA-256 bytes mixed with the date. SHA-256 output
/// is already uniformly distributed, so SipHash's work (about 3% of the whole pipeline's CPU on
/// a backfill) buys nothing here; equality still compares the whole key, and an attacker who
/// could aim collisions at this would need SHA-256 preimages.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.write_u64(u64::from_le_bytes(word));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type KeyMap<V> = HashMap<(Millis, [u8; 32]), V, BuildHasherDefault<KeyHasher>>;

/// Copies delivered per (date, key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DedupMemory {
    entries: KeyMap<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    count: u32,
    /// Pruned once the horizon passes this: the date for dated events; for events without a
    /// date, the end of the window they came in (no later query can return them again).
    expires: Millis,
}

/// What a window's events mean against the memory.
#[derive(Debug, Default)]
pub struct DedupPlan {
    /// Indices (into the window's events) of the copies to deliver, in order.
    pub deliver: Vec<usize>,
    /// How many of the window's events were already delivered.
    pub duplicates: usize,
    updates: Vec<((Millis, [u8; 32]), Entry)>,
}

impl DedupMemory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides which of `events` (one query window's, in delivery order) are new.
    /// `window_end` is the window's query end, the expiry of events without a date.
    pub fn plan(&self, events: &[Event], window_end: Millis) -> DedupPlan {
        let mut seen_in_window: KeyMap<u32> =
            KeyMap::with_capacity_and_hasher(events.len(), Default::default());
        let mut plan = DedupPlan {
            deliver: Vec::with_capacity(events.len()),
            ..DedupPlan::default()
        };
        for (i, e) in events.iter().enumerate() {
            let k = (e.date_ms, e.key);
            let n = seen_in_window.entry(k).or_insert(0);
            *n += 1;
            let delivered_before = self.entries.get(&k).map_or(0, |entry| entry.count);
            if *n > delivered_before {
                plan.deliver.push(i);
            } else {
                plan.duplicates += 1;
            }
        }
        plan.updates = seen_in_window
            .into_iter()
            .filter_map(|(k, n)| {
                let old = self.entries.get(&k).map_or(0, |entry| entry.count);
                let expires = if k.0 == UNDATED { window_end } else { k.0 };
                (n > old).then_some((k, Entry { count: n, expires }))
            })
            .collect();
        plan
    }

    /// The copies a confirmed `plan` delivers for the first time, as `(date, key, copy)`:
    /// copy `n` is the `n`-th identical event of that date (1-based). Undated events have the
    /// date [`UNDATED`]. Read before [`DedupMemory::apply`] (the audit ledger counts them).
    pub fn new_copies<'a>(
        &'a self,
        plan: &'a DedupPlan,
    ) -> impl Iterator<Item = (Millis, &'a [u8; 32], u32)> + 'a {
        plan.updates.iter().flat_map(move |(k, entry)| {
            let old = self.entries.get(k).map_or(0, |e| e.count);
            (old + 1..=entry.count).map(move |copy| (k.0, &k.1, copy))
        })
    }

    /// Records a confirmed plan.
    pub fn apply(&mut self, plan: DedupPlan) {
        for (k, entry) in plan.updates {
            self.entries.insert(k, entry);
        }
    }

    /// Forgets what no later query can return again.
    pub fn prune(&mut self, horizon: Millis) {
        self.entries.retain(|_, e| e.expires >= horizon);
    }

    /// The entries as `(date or None, key, count, expires)`, sorted, for the state file.
    pub fn to_records(&self) -> Vec<DedupRecord> {
        self.records_where(|_| true)
    }

    /// The records of the entries whose expiry `keep` accepts, sorted (a part of the memory,
    /// stored apart: Redis keeps it in buckets by expiry).
    pub fn records_where(&self, keep: impl Fn(Millis) -> bool) -> Vec<DedupRecord> {
        let mut v: Vec<DedupRecord> = self
            .entries()
            .filter(|entry| keep(entry.3))
            .map(|(date, key, count, expires)| {
                DedupRecord(
                    (date != UNDATED).then_some(date),
                    hex::encode(key),
                    count,
                    expires,
                )
            })
            .collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    }

    /// Every entry as `(date, key, copies, expires)`, in no order (the date may be [`UNDATED`]).
    pub fn entries(&self) -> impl Iterator<Item = (Millis, &[u8; 32], u32, Millis)> {
        self.entries
            .iter()
            .map(|((date, key), e)| (*date, key, e.count, e.expires))
    }

    /// Rebuilds the memory from state records; bad records are skipped and counted.
    pub fn from_records(records: &[DedupRecord]) -> (Self, usize) {
        let mut memory = DedupMemory::new();
        let mut bad = 0;
        for DedupRecord(date, key, count, expires) in records {
            let mut k = [0u8; 32];
            if hex::decode_to_slice(key, &mut k).is_err() || *count == 0 {
                bad += 1;
                continue;
            }
            memory.entries.insert(
                (date.unwrap_or(UNDATED), k),
                Entry {
                    count: *count,
                    expires: *expires,
                },
            );
        }
        (memory, bad)
    }
}

/// One entry in the state file: `[date_ms | null, "sha256 hex", copies, expires_ms]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupRecord(pub Option<Millis>, pub String, pub u32, pub Millis);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn ev(date: i64, id: u8) -> Event {
        Event {
            date_ms: date,
            key: [id; 32],
            json: Bytes::from(format!("{{\"id\":{id}}}")),
        }
    }

    /// Delivers a query's result the way the puller does: plan, then apply.
    fn deliver(memory: &mut DedupMemory, events: &[Event]) -> Vec<Event> {
        let plan = memory.plan(events, 1_000);
        let out = plan.deliver.iter().map(|&i| events[i].clone()).collect();
        memory.apply(plan);
        out
    }

    #[test]
    fn identical_twins_are_both_delivered_once() {
        let mut m = DedupMemory::new();
        let q = vec![ev(1, 7), ev(1, 7), ev(2, 8)];
        assert_eq!(deliver(&mut m, &q).len(), 3);
        assert_eq!(deliver(&mut m, &q).len(), 0);
        // A third copy turns up late: exactly it is delivered.
        let q2 = vec![ev(1, 7), ev(1, 7), ev(1, 7)];
        assert_eq!(deliver(&mut m, &q2).len(), 1);
    }

    #[test]
    fn an_unapplied_plan_changes_nothing() {
        let m = DedupMemory::new();
        let q = vec![ev(1, 1)];
        let _ = m.plan(&q, 10);
        assert!(m.is_empty());
    }

    #[test]
    fn prune_keeps_the_horizon_and_undated_until_their_window_ends() {
        let mut m = DedupMemory::new();
        deliver(&mut m, &[ev(5, 1), ev(10, 2), ev(UNDATED, 3)]);
        m.prune(10);
        assert_eq!(m.len(), 2); // date 10 and the undated one (expires at 1000)
        m.prune(1_001);
        assert!(m.is_empty());
    }

    #[test]
    fn records_round_trip() {
        let mut m = DedupMemory::new();
        deliver(&mut m, &[ev(5, 1), ev(5, 1), ev(UNDATED, 3)]);
        let records = m.to_records();
        let json = serde_json::to_string(&records).unwrap();
        let back: Vec<DedupRecord> = serde_json::from_str(&json).unwrap();
        assert_eq!(DedupMemory::from_records(&back), (m, 0));
    }

    proptest! {
        /// Whatever overlapping sub-ranges of a data set are queried, in any order and any number
        /// of times, the delivered multiset is exactly the multiset of the data that was queried.
        #[test]
        fn replays_deliver_the_exact_multiset(
            data in proptest::collection::vec((0i64..50, 0u8..6), 0..200),
            queries in proptest::collection::vec((0i64..50, 0i64..50), 1..20),
        ) {
            let events: Vec<Event> = data.iter().map(|&(d, id)| ev(d, id)).collect();
            let mut memory = DedupMemory::new();
            let mut delivered: Vec<(i64, [u8; 32])> = Vec::new();
            let mut covered = std::collections::BTreeSet::new();
            for (a, b) in queries {
                let (a, b) = (a.min(b), a.max(b));
                let mut window: Vec<Event> = events.iter().filter(|e| e.date_ms >= a && e.date_ms <= b).cloned().collect();
                window.sort_by_key(|e| e.date_ms);
                delivered.extend(deliver(&mut memory, &window).iter().map(|e| (e.date_ms, e.key)));
                covered.extend(a..=b);
            }
            let mut want: Vec<(i64, [u8; 32])> = events.iter().filter(|e| covered.contains(&e.date_ms)).map(|e| (e.date_ms, e.key)).collect();
            want.sort();
            delivered.sort();
            prop_assert_eq!(delivered, want);
        }
    }
}
