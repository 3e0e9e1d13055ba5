//! What a status line says of a service's recent past, beyond its counters: why its last
//! attempt failed (until the next success), the events it delivered in the last minute and hour,
//! and which other replica holds its lease. Fed by the same call sites as the families; read by
//! [`Metrics::status_report`] at the time it is given (never the wall clock).

use super::{lock, Metrics, ServiceId, ServiceMetrics};
use crate::timestamp::Millis;

/// Slots of a [`Ring`]: the window is 60 of its units.
const SLOTS: usize = 60;

/// Events counted per unit of time (a second, a minute) over the last [`SLOTS`] units: a slot
/// per unit, reused when its unit comes round again. 480 bytes, whatever the rate.
#[derive(Clone, Debug)]
pub(super) struct Ring {
    unit: Millis,
    /// (unit number since the epoch, events in it); `u32` both: units fit until 2106, and a
    /// second or a minute of one service does not hold 4 billion events.
    slots: [(u32, u32); SLOTS],
}

impl Ring {
    fn new(unit: Millis) -> Ring {
        Ring {
            unit,
            slots: [(0, 0); SLOTS],
        }
    }

    fn unit_of(&self, at: Millis) -> u32 {
        u32::try_from(at.max(0) / self.unit).unwrap_or(u32::MAX)
    }

    /// `n` events at `at`.
    fn add(&mut self, at: Millis, n: u64) {
        let unit = self.unit_of(at);
        let slot = &mut self.slots[unit as usize % SLOTS];
        if slot.0 != unit {
            *slot = (unit, 0);
        }
        slot.1 = slot.1.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// The events of the unit of `now` and the 59 before it: the last 60 units, counted to the
    /// unit (a count leaves the window when the 60th unit after its own begins). Counts stamped
    /// after `now` are left out.
    fn sum(&self, now: Millis) -> u64 {
        let now = self.unit_of(now);
        self.slots
            .iter()
            .filter(|(unit, _)| *unit <= now && now - unit < SLOTS as u32)
            .map(|&(_, n)| u64::from(n))
            .sum()
    }
}

/// One service's recent past (about 1 KiB, allocated at its first report).
#[derive(Clone, Debug)]
pub(super) struct Recent {
    /// Why its setup check failed last (masked), until one passes.
    pub(super) setup_failure: Option<String>,
    /// Why its last pull cycle (or `pre_pull`) failed (masked), until a window commits or a
    /// cycle succeeds.
    pub(super) failure: Option<String>,
    /// While standing by: the replica that holds its lease, if the last try to take it said.
    pub(super) other_holder: Option<String>,
    /// Events of committed windows, per second and per minute.
    seconds: Ring,
    minutes: Ring,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            setup_failure: None,
            failure: None,
            other_holder: None,
            seconds: Ring::new(1_000),
            minutes: Ring::new(60_000),
        }
    }
}

impl Recent {
    /// Events delivered in the last 60 s and the last 60 minutes, at `now`.
    pub(super) fn delivered(&self, now: Millis) -> (u64, u64) {
        (self.seconds.sum(now), self.minutes.sum(now))
    }
}

impl Metrics {
    /// Changes (or starts) the recent past of `id`.
    pub(super) fn recent(&self, id: ServiceId, change: impl FnOnce(&mut Recent)) {
        change(lock(&self.recent).entry(id).or_default());
    }
}

impl ServiceMetrics {
    /// A pull cycle (or the `pre_pull` before it) failed, for `why` (masked, as logged): the
    /// status line fails until a window commits or a cycle succeeds.
    pub fn pull_failed(&self, why: String) {
        self.metrics.recent(self.id(), |r| r.failure = Some(why));
    }

    /// A window of `events` new events was committed at `at`: every output confirmed them.
    pub fn window_committed(&self, events: usize, at: Millis) {
        self.metrics.recent(self.id(), |r| {
            r.failure = None;
            r.seconds.add(at, events as u64);
            r.minutes.add(at, events as u64);
        });
    }

    /// While standing by: the replica that holds the lease (`<host>:<pid>`), or `None` when
    /// nobody does (it expired) or it is not known.
    pub fn lease_holder(&self, replica: Option<&str>) {
        let holder = replica.map(str::to_owned);
        self.metrics.recent(self.id(), |r| r.other_holder = holder);
    }
}
