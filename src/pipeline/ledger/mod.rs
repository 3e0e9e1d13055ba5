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
//! Hours before `tracked_from` are not audited: a new state tracks from its start; a state
//! written by a build without the ledger tracks from its checkpoint at the upgrade (everything
//! after it was not delivered yet, so is counted from then on).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::timestamp::{format_iso, parse_user_time, Millis};

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
}

impl AuditLedger {
    /// A ledger that counts every event from `tracked_from` on.
    pub fn tracking_from(tracked_from: Millis) -> Self {
        AuditLedger {
            tracked_from,
            first_hour: hour_of(tracked_from),
            counts: VecDeque::new(),
        }
    }

    /// From when events are counted.
    pub fn tracked_from(&self) -> Millis {
        self.tracked_from
    }

    /// Counts one delivered event (copy) of `date`.
    pub fn record(&mut self, date: Millis) {
        let hour = hour_of(date);
        if date < self.tracked_from {
            return;
        }
        if self.counts.is_empty() {
            self.first_hour = hour;
        }
        if hour < self.first_hour {
            let missing = ((self.first_hour - hour) / HOUR_MS) as usize;
            if self.counts.len() + missing > MAX_HOURS {
                return; // older than anything the ledger keeps
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
    }

    /// The document form (`audit` in the state document).
    pub fn to_doc(&self) -> LedgerDoc {
        LedgerDoc {
            tracked_from_in_utc: format_iso(self.tracked_from),
            first_hour_in_utc: format_iso(self.first_hour),
            delivered_per_hour: self.counts.iter().copied().collect(),
        }
    }

    /// From the document form; `None` when one of its times does not parse.
    pub fn from_doc(doc: &LedgerDoc) -> Option<Self> {
        let time = |s: &str| parse_user_time(s).map(|t| t.timestamp_millis());
        let mut counts: VecDeque<u32> = doc.delivered_per_hour.iter().copied().collect();
        counts.truncate(MAX_HOURS);
        Some(AuditLedger {
            tracked_from: time(&doc.tracked_from_in_utc)?,
            first_hour: hour_of(time(&doc.first_hour_in_utc)?),
            counts,
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
}

#[cfg(test)]
mod tests;
