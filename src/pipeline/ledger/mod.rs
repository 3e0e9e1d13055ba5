//! The audit ledger: how many events each service delivered per hour of event time, for the
//! API's 30-day retention, kept in the service's state and committed with its checkpoint (so a
//! crash or a takeover never counts a window twice or loses one).
//!
//! `isolation-collector audit` (crate `audit`) compares these counts with what the API holds
//! for each hour now. The counts alone say *how many* events an hour lacks; which ones is told
//! by the per-hour digests of the delivered keys ([`sketch`]), sealed out of the state into the
//! store once their hour can no longer change (see the module `sketch`).
//!
//! Size: one `u32` per hour, at most [`MAX_HOURS`] of them: 3 KiB in memory and about 4 KB in
//! the state document per service, whatever the event rate.
//!
//! What is counted: each delivered copy of an event (two identical events are two, as the dedup
//! memory counts them), by its `date`. Events without a date, and events set aside as
//! unreadable, are not counted (the audit reports the dead-lettered ones apart).
//!
//! Digests: beside each count, the ledger keeps the digest ([`sketch::Sketch`]) of the copies
//! delivered in the hour, but only while the hour is *pending*: a normal collection may still
//! add to it. Once the dedup horizon has passed the hour's end (no query returns its events
//! again), the checkpoint's commit *seals* it: it writes the digest into the store, with the
//! random seal id it was created with, and drops it from the state (see
//! `crate::state::digests`). The state thus holds one or two digests per service (944 bytes
//! each, about 1.4 KB in the document), not 30 days of them. An hour that gets copies after it was
//! sealed (a repair, a late sweep) gets a new pending digest with a new seal id: the store
//! keeps one entry per (hour, seal id) and the hour's digest is their sum.
//!
//! Hours before `tracked_from` are not audited: a new state tracks from its start; a state
//! written by a build without the ledger tracks from its checkpoint at the upgrade (everything
//! after it was not delivered yet, so is counted from then on).

pub mod sketch;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::timestamp::{format_iso, parse_user_time, Millis};
use sketch::{element_id, Sketch};

/// One hour, in milliseconds.
pub const HOUR_MS: Millis = 3_600_000;

/// The API keeps 30 days; the ledger keeps them and one day more (hours at the edge).
pub const MAX_HOURS: usize = 31 * 24;

/// The start of the hour holding `t`.
pub fn hour_of(t: Millis) -> Millis {
    t.div_euclid(HOUR_MS) * HOUR_MS
}

/// Delivered events per hour of event time (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLedger {
    /// Events from here on are counted (see the module doc).
    tracked_from: Millis,
    /// The hour of `counts[0]`.
    first_hour: Millis,
    counts: VecDeque<u32>,
    /// The digests of the hours not sealed into the store yet, by hour (see the module doc).
    pending: BTreeMap<Millis, PendingDigest>,
    /// Repairs that began sending to outputs that cannot take a delivery back, and did not
    /// commit, by hour (`crate::audit::repair`): whether their events arrived is unknown.
    in_flight: BTreeMap<Millis, InFlight>,
}

/// A repair of an hour sent to outputs that cannot undo it, not committed (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// When it began (ms).
    pub since: Millis,
    /// How many events it was sending.
    pub events: u64,
    /// The outputs that may have them.
    pub outputs: Vec<String>,
}

/// The digest of an hour's copies delivered since its last seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDigest {
    /// Names this part of the hour's digest in the store: sealing it twice (a crash between the
    /// store's write and the state's) writes the same entry.
    pub seal: u64,
    pub sketch: Sketch,
}

impl AuditLedger {
    /// A ledger that counts every event from `tracked_from` on.
    pub fn tracking_from(tracked_from: Millis) -> Self {
        AuditLedger {
            tracked_from,
            first_hour: hour_of(tracked_from),
            counts: VecDeque::new(),
            pending: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// From when events are counted.
    pub fn tracked_from(&self) -> Millis {
        self.tracked_from
    }

    /// Counts one delivered copy, the `copy`-th event of `date` with the dedup key `key`, and
    /// adds it to its hour's pending digest (when the hour is counted at all).
    pub fn record_copy(&mut self, date: Millis, key: &[u8; 32], copy: u32) {
        if self.record(date) {
            let digest = self
                .pending
                .entry(hour_of(date))
                .or_insert_with(|| PendingDigest {
                    seal: rand::random(),
                    sketch: Sketch::new(),
                });
            digest.sketch.insert(element_id(date, key, copy));
        }
    }

    /// The pending digest of the hour starting at `hour`, if any.
    pub fn pending(&self, hour: Millis) -> Option<&PendingDigest> {
        self.pending.get(&hour_of(hour))
    }

    /// The pending digests of the hours that end at or before `closed_by`, by hour.
    pub fn pending_before(&self, closed_by: Millis) -> Vec<(Millis, PendingDigest)> {
        let hours = self.pending.range(..=closed_by - HOUR_MS);
        hours.map(|(h, d)| (*h, d.clone())).collect()
    }

    /// Forgets the pending digest of `hour` if it is still the one sealed as `seal`.
    pub fn sealed(&mut self, hour: Millis, seal: u64) {
        if self.pending.get(&hour).is_some_and(|d| d.seal == seal) {
            self.pending.remove(&hour);
        }
    }

    /// The repair of the hour starting at `hour` that began sending and did not commit, if any.
    pub fn in_flight(&self, hour: Millis) -> Option<&InFlight> {
        self.in_flight.get(&hour_of(hour))
    }

    /// Marks (`Some`) or clears (`None`) a repair of the hour starting at `hour` in flight.
    pub fn set_in_flight(&mut self, hour: Millis, repair: Option<InFlight>) {
        match repair {
            Some(r) => self.in_flight.insert(hour_of(hour), r),
            None => self.in_flight.remove(&hour_of(hour)),
        };
    }

    /// Counts one delivered event (copy) of `date`; returns whether it was counted (the ledger
    /// tracks its hour).
    pub fn record(&mut self, date: Millis) -> bool {
        let hour = hour_of(date);
        if date < self.tracked_from {
            return false;
        }
        if self.counts.is_empty() {
            self.first_hour = hour;
        }
        if hour < self.first_hour {
            let missing = ((self.first_hour - hour) / HOUR_MS) as usize;
            if self.counts.len() + missing > MAX_HOURS {
                return false; // older than anything the ledger keeps
            }
            for _ in 0..missing {
                self.counts.push_front(0);
            }
            self.first_hour = hour;
        }
        let index = ((hour - self.first_hour) / HOUR_MS) as usize;
        if index >= MAX_HOURS {
            // The newest hours win: drop the oldest to make room.
            let drop = (index + 1 - MAX_HOURS).min(self.counts.len());
            self.counts.drain(..drop);
            self.first_hour += (index + 1 - MAX_HOURS) as Millis * HOUR_MS;
        }
        let index = ((hour - self.first_hour) / HOUR_MS) as usize;
        if self.counts.len() <= index {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] = self.counts[index].saturating_add(1);
        true
    }

    /// Events delivered in the hour starting at `hour`, or `None` when the ledger did not track
    /// it (it ends before `tracked_from`, or is older than the ledger keeps).
    pub fn delivered(&self, hour: Millis) -> Option<u64> {
        let hour = hour_of(hour);
        if hour + HOUR_MS <= self.tracked_from {
            return None;
        }
        if hour < self.first_hour {
            return (self.counts.len() < MAX_HOURS).then_some(0);
        }
        let index = ((hour - self.first_hour) / HOUR_MS) as usize;
        Some(self.counts.get(index).map_or(0, |&n| u64::from(n)))
    }

    /// Forgets hours that end before `oldest` (the API's retention behind the checkpoint).
    pub fn prune(&mut self, oldest: Millis) {
        while !self.counts.is_empty() && self.first_hour + HOUR_MS <= oldest {
            self.counts.pop_front();
            self.first_hour += HOUR_MS;
        }
        if self.counts.is_empty() {
            self.first_hour = self.first_hour.max(hour_of(oldest));
        }
        self.tracked_from = self.tracked_from.max(hour_of(oldest));
        self.pending.retain(|hour, _| hour + HOUR_MS > oldest);
    }

    /// The document form (`audit` in the state document).
    pub fn to_doc(&self) -> LedgerDoc {
        LedgerDoc {
            tracked_from_in_utc: format_iso(self.tracked_from),
            first_hour_in_utc: format_iso(self.first_hour),
            delivered_per_hour: self.counts.iter().copied().collect(),
            pending_digests: (self.pending.iter())
                .map(|(hour, d)| DigestDoc {
                    hour_in_utc: format_iso(*hour),
                    seal: format!("{:016x}", d.seal),
                    digest: d.sketch.to_text(),
                })
                .collect(),
            repairs_in_flight: (self.in_flight.iter())
                .map(|(hour, r)| InFlightDoc {
                    hour_in_utc: format_iso(*hour),
                    since_in_utc: format_iso(r.since),
                    events: r.events,
                    outputs: r.outputs.clone(),
                })
                .collect(),
        }
    }

    /// From the document form; `None` when one of its times does not parse. A pending digest
    /// that does not read is left out: its hour's digest is then short of the hour's count, and
    /// the repair refuses that hour instead of trusting it.
    pub fn from_doc(doc: &LedgerDoc) -> Option<Self> {
        let time = |s: &str| parse_user_time(s).map(|t| t.timestamp_millis());
        let mut counts: VecDeque<u32> = doc.delivered_per_hour.iter().copied().collect();
        counts.truncate(MAX_HOURS);
        Some(AuditLedger {
            tracked_from: time(&doc.tracked_from_in_utc)?,
            first_hour: hour_of(time(&doc.first_hour_in_utc)?),
            counts,
            pending: doc
                .pending_digests
                .iter()
                .filter_map(DigestDoc::read)
                .collect(),
            in_flight: (doc.repairs_in_flight.iter())
                .map(|r| {
                    Some((
                        hour_of(time(&r.hour_in_utc)?),
                        r.read(time(&r.since_in_utc)?),
                    ))
                })
                .collect::<Option<_>>()?,
        })
    }
}

/// `audit` in the state document: `{"tracked_from_in_utc", "first_hour_in_utc",
/// "delivered_per_hour": [n, ...]}`, the counts of consecutive hours from the first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDoc {
    pub tracked_from_in_utc: String,
    pub first_hour_in_utc: String,
    pub delivered_per_hour: Vec<u32>,
    /// The digests of the hours not sealed into the store yet (see the module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_digests: Vec<DigestDoc>,
    /// Repairs that began sending to outputs that cannot undo it and did not commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs_in_flight: Vec<InFlightDoc>,
}

/// A repair in flight in the document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightDoc {
    pub hour_in_utc: String,
    pub since_in_utc: String,
    pub events: u64,
    pub outputs: Vec<String>,
}

impl InFlightDoc {
    fn read(&self, since: Millis) -> InFlight {
        InFlight {
            since,
            events: self.events,
            outputs: self.outputs.clone(),
        }
    }
}

/// A pending digest in the document: `{"hour_in_utc", "seal": "16 hex", "digest": "base64"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestDoc {
    pub hour_in_utc: String,
    pub seal: String,
    pub digest: String,
}

impl DigestDoc {
    fn read(&self) -> Option<(Millis, PendingDigest)> {
        let hour = parse_user_time(&self.hour_in_utc)?.timestamp_millis();
        let seal = u64::from_str_radix(&self.seal, 16).ok()?;
        let sketch = Sketch::from_text(&self.digest)?;
        Some((hour_of(hour), PendingDigest { seal, sketch }))
    }
}

#[cfg(test)]
mod tests;
