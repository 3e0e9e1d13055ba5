//! What one output has confirmed of the windows not yet committed.
//!
//! A window commits only when every output confirmed it. Until then, an output that did confirm
//! (the whole batch, or a part of it before a later request failed) must not be given those
//! events again, whatever the others do: [`Confirmed`] remembers them across `deliver` calls,
//! cycles and `request_period` waits, until the puller commits.
//!
//! The memory is keyed by event identity (`date`, `key`) as a *multiset*, as the dedup memory
//! is (see `pipeline::dedup`): two byte-identical events are two copies, and an output that
//! confirmed one copy still gets the other. It is not keyed by window bounds: the next cycle
//! may plan the re-fetched window with other bounds, and the API may have added late events,
//! which an output then gets and the others do not get twice.
//!
//! It also counts, per event identity, how often this output refused the event sent alone
//! ([`Confirmed::refused`]): the fan-out sets such an event aside for this output after a few
//! refusals, counted across cycles until the window commits.
//!
//! Bound: one entry (48 bytes of key and count, plus the map's overhead) per distinct event of
//! the uncommitted window, per output: at most `max_events_per_window` entries each, about
//! 80 bytes each with the table's overhead (e.g. 8 MB per output for 100,000 events).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::Position;
use crate::event::{Event, UNDATED};
use crate::pipeline::dedup::KeyHasher;
use crate::timestamp::Millis;

type Counts = HashMap<(Millis, [u8; 32]), u32, BuildHasherDefault<KeyHasher>>;

/// Copies of events one output confirmed, and the position it confirmed last.
#[derive(Debug, Default)]
pub struct Confirmed {
    copies: Counts,
    /// Per event identity, the times this output refused it sent alone (400/413).
    refusals: Counts,
    /// The position returned with the last confirmation, for a batch that holds nothing new for
    /// this output (its position must still be committed).
    position: Option<Position>,
}

impl Confirmed {
    /// The events of `batch` this output has not confirmed, in order: per identity, the copies
    /// beyond the number already confirmed.
    pub fn pending(&self, batch: &[Event]) -> Vec<Event> {
        if self.copies.is_empty() {
            return batch.to_vec();
        }
        let mut left = self.copies.clone();
        batch
            .iter()
            .filter(|e| match left.get_mut(&(e.date_ms, e.key)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .cloned()
            .collect()
    }

    /// Remembers `events` as confirmed, with the position confirmed with them (if any).
    pub fn record<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            *self.copies.entry((e.date_ms, e.key)).or_default() += 1;
        }
    }

    /// Counts one more refusal of `event` sent alone; returns the refusals so far.
    pub fn refused(&mut self, event: &Event) -> u32 {
        let n = self.refusals.entry((event.date_ms, event.key)).or_default();
        *n += 1;
        *n
    }

    /// Remembers the position the output confirmed with.
    pub fn set_position(&mut self, position: Option<Position>) {
        if position.is_some() {
            self.position = position;
        }
    }

    /// The position of the last confirmation since the memory was last cleared.
    pub fn position(&self) -> Option<Position> {
        self.position.clone()
    }

    /// The window ending at `window_end` committed with `batch` delivered: its events are
    /// forgotten (one copy each), and so is anything dated before the window's end, which no
    /// later window of the cycle asks for again.
    pub fn committed(&mut self, batch: &[Event], window_end: Millis) {
        for e in batch {
            let id = (e.date_ms, e.key);
            if let Some(n) = self.copies.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.copies.remove(&id);
                }
            }
        }
        let later =
            |(date, _): &(Millis, [u8; 32]), _: &mut u32| *date == UNDATED || *date >= window_end;
        self.copies.retain(later);
        self.refusals.retain(later);
        self.position = None;
    }

    /// Forgets everything (the output was rewound to its committed position).
    pub fn clear(&mut self) {
        self.copies.clear();
        self.refusals.clear();
        self.position = None;
    }

    /// Distinct identities remembered.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn ev(date_ms: i64, k: u8) -> Event {
        Event {
            date_ms,
            key: [k; 32],
            json: Bytes::from(format!("{{\"k\":{k}}}")),
        }
    }

    #[test]
    fn a_confirmed_copy_is_not_pending_but_its_twin_is() {
        let mut c = Confirmed::default();
        c.record(&[ev(1, 1), ev(2, 2)]);
        // A re-fetch with other bounds: a late event (3), and a genuine twin of event 1.
        let batch = [ev(1, 1), ev(1, 1), ev(2, 2), ev(3, 3)];
        let pending = c.pending(&batch);
        assert_eq!(pending, [ev(1, 1), ev(3, 3)]);
    }

    #[test]
    fn refusals_are_counted_per_event_until_the_commit() {
        let mut c = Confirmed::default();
        assert_eq!(c.refused(&ev(1, 1)), 1);
        assert_eq!(c.refused(&ev(1, 1)), 2);
        assert_eq!(c.refused(&ev(2, 2)), 1);
        c.committed(&[], 2);
        // Event 1 is older than the committed window's end: forgotten; event 2 is not.
        assert_eq!(c.refused(&ev(1, 1)), 1);
        assert_eq!(c.refused(&ev(2, 2)), 2);
        c.clear();
        assert_eq!(c.refused(&ev(2, 2)), 1);
    }

    #[test]
    fn a_commit_forgets_its_events_and_everything_dated_before_its_end() {
        let mut c = Confirmed::default();
        c.record(&[ev(1, 1), ev(5, 2), ev(20, 3)]);
        c.set_position(Some(Position::of_length(7)));
        c.committed(&[ev(1, 1)], 10);
        // Event 5 was not in the committed batch, but it is older than the window's end.
        assert_eq!(c.len(), 1);
        assert_eq!(c.pending(&[ev(20, 3), ev(5, 2)]), [ev(5, 2)]);
        assert_eq!(c.position(), None);
    }
}
