//! Which time ranges to query, and how to cut them into windows that fit in memory.
//!
//! ## Cursors
//! - `checkpoint`: the end of the last confirmed window. Every event with a date before it that
//!   the API showed at query time has been delivered.
//! - `settled`: every event with a date before it has been delivered, *including* events the API
//!   published up to `late_arrival_lookback` after their date. It trails `checkpoint`.
//!
//! ## Cycles
//! A normal cycle queries `[checkpoint, now - offset]`: cheap, low latency. Every
//! `late_arrival_sweep_interval` a *sweep* cycle queries from `settled` instead, so that events
//! the API filled in late are found; the dedup memory (which covers everything from `settled`
//! on) keeps the re-queried overlap from being delivered again. A window whose query started at
//! or before `settled` moves it to `min(window end, job creation time - lookback)`: by then
//! every event of those dates has had `lookback` to appear.
//!
//! Cost: an event is downloaded once by the live cycle and about `lookback / sweep_interval`
//! more times by sweeps (35 / 15 by default: 3.3 downloads per event), and a sweep replaces a
//! live cycle, so it adds pages but no jobs.
//!
//! ## Windows
//! Each window's query starts [`EDGE_OVERLAP`] before the previous one ended. Whether the API
//! treats `from`/`to` as inclusive is unknown (isolation-api.md §3), and some servers truncate
//! to the second; the overlap makes either reading safe, and dedup absorbs the repeat.
//! A window's events are held in memory (to be sorted), so the planner keeps each window under a
//! cap of events: `max_events_per_window`, or fewer when the service's share of the window
//! memory budget (`pipeline::budget`) holds fewer at the bytes per event seen so far (the
//! puller sets it with [`WindowPlanner::set_cap`]). It learns the event density from the jobs'
//! `total`s. A window that turned out too big is consumed from its one job as many windows
//! through a spool (`puller::spool`: the first job's `total` sizes those windows, each reported
//! with [`WindowPlanner::complete`]), or, without a spool, shrunk before any of it is delivered.

use crate::timestamp::Millis;

/// How far each query reaches back before the previous window's end.
pub const EDGE_OVERLAP: Millis = 1_000;

/// The narrowest window the planner makes (wider than the overlap, so every window makes
/// progress); a burst denser than the cap within it is taken whole, up to the service's share
/// of the window memory budget (beyond it, the puller gives the window up: `puller/fetching.rs`).
pub const MIN_SPAN: Millis = 2 * EDGE_OVERLAP;

/// The persisted cursors of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursors {
    pub checkpoint: Millis,
    pub settled: Millis,
    /// When the last completed sweep cycle started.
    pub last_sweep: Option<Millis>,
}

impl Cursors {
    pub fn new(start: Millis) -> Self {
        Cursors {
            checkpoint: start,
            settled: start,
            last_sweep: None,
        }
    }

    /// Where the dedup memory must reach back to: no query starts earlier.
    pub fn horizon(&self) -> Millis {
        self.settled.saturating_sub(EDGE_OVERLAP)
    }
}

/// The range one cycle queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CycleRange {
    pub from: Millis,
    pub to: Millis,
    pub sweep: bool,
}

/// Plans a cycle. `None` when there is nothing new to ask for (`now - offset` is not past the
/// checkpoint, e.g. just after a catch-up, or the clock went back).
pub fn plan_cycle(
    c: &Cursors,
    now: Millis,
    offset: Millis,
    lookback: Millis,
    sweep_interval: Millis,
) -> Option<CycleRange> {
    let to = now - offset;
    let sweep = lookback > 0
        && c.settled < c.checkpoint
        && c.last_sweep
            .is_none_or(|last| now - last >= sweep_interval || now < last);
    if to <= c.checkpoint && !sweep {
        return None;
    }
    let from = if sweep { c.settled } else { c.checkpoint };
    Some(CycleRange {
        from,
        to: to.max(c.checkpoint),
        sweep,
    })
}

/// Cuts a cycle's range into windows, adapting their span to the event density.
#[derive(Debug)]
pub struct WindowPlanner {
    /// Start of the range: the first window's query starts here.
    range_from: Millis,
    to: Millis,
    /// End of the last completed window (`None` before the first).
    done_until: Option<Millis>,
    cap: usize,
    /// Events per millisecond, learnt from the jobs' totals.
    density: Option<f64>,
}

/// One window to query: `[from, to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Millis,
    pub to: Millis,
}

impl WindowPlanner {
    pub fn new(range: CycleRange, cap: usize, density: Option<f64>) -> Self {
        WindowPlanner {
            range_from: range.from,
            to: range.to,
            done_until: None,
            cap,
            density,
        }
    }

    /// The most events a window may hold from now on (at least one; the memory budget's share
    /// divided by the bytes per event, capped by `max_events_per_window`).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// The most events a window may hold.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The density learnt so far, to seed the next cycle's planner.
    pub fn density(&self) -> Option<f64> {
        self.density
    }

    /// The next window, or `None` when the range is covered.
    pub fn next_window(&self) -> Option<Window> {
        self.window_after(self.done_until)
    }

    /// The window that would follow `prev` if `prev` completes as planned, with the density
    /// known now: a job for it can be created ahead. `None` when `prev` reaches the range's end,
    /// or while the density is unknown (the first window spans the whole range, which is
    /// likely too big: a window planned after it would be a guess).
    pub fn window_ahead(&self, prev: Window) -> Option<Window> {
        self.density?;
        self.window_after(Some(prev.to))
    }

    /// The window starting where a window ending at `done_until` leaves off.
    fn window_after(&self, done_until: Option<Millis>) -> Option<Window> {
        let from = match done_until {
            None => self.range_from,
            Some(end) if end >= self.to => return None,
            Some(end) => (end - EDGE_OVERLAP).max(self.range_from),
        };
        let span = match self.density {
            // Aim at 80% of the cap, so that a density estimate a little low still fits.
            Some(d) if d > 0.0 => ((self.cap as f64 * 0.8 / d) as Millis).max(MIN_SPAN),
            _ => Millis::MAX,
        };
        Some(Window {
            from,
            to: from.saturating_add(span).min(self.to),
        })
    }

    /// The server said the window holds `total` events. Returns `true` if it is too big and
    /// must be abandoned (the next call of [`next_window`](Self::next_window) gives a smaller one).
    pub fn observe_total(&mut self, w: Window, total: u64) -> bool {
        let span = (w.to - w.from).max(1);
        self.learn(total, span);
        total as usize > self.cap && span > MIN_SPAN
    }

    /// Whether `w` is as narrow as windows get: too many events in it cannot be split off.
    pub fn is_narrowest(&self, w: Window) -> bool {
        w.to - w.from <= MIN_SPAN
    }

    /// The window's events are all in hand (it is delivered while the next one is fetched; if
    /// its delivery fails, the cycle ends and the next cycle plans from the checkpoint).
    pub fn complete(&mut self, w: Window, events: usize) {
        self.learn(events as u64, (w.to - w.from).max(1));
        self.done_until = Some(w.to);
    }

    /// Updates the density estimate. An empty window says little (the data may simply start
    /// later, as in a backfill whose start predates the first event), so it only lets the next
    /// window grow to four times its span rather than jumping to the whole range, which could
    /// then be too big and cost an abandoned job.
    fn learn(&mut self, events: u64, span: Millis) {
        let observed = if events == 0 {
            let at_most = self.cap as f64 * 0.8 / (4.0 * span as f64);
            self.density.map_or(at_most, |d| d.min(at_most))
        } else {
            events as f64 / span as f64
        };
        self.density = Some(observed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A planner over `0..to` (not a sweep) for pages of 100 events.
    fn planner_from_zero(to: Millis) -> WindowPlanner {
        let range = CycleRange {
            from: 0,
            to,
            sweep: false,
        };
        WindowPlanner::new(range, 100, None)
    }

    #[test]
    fn live_cycles_start_at_the_checkpoint_and_sweeps_at_settled() {
        let mut c = Cursors::new(0);
        c.checkpoint = 100_000;
        c.settled = 40_000;
        c.last_sweep = Some(110_000);
        let live = plan_cycle(&c, 120_000, 0, 60_000, 15_000).unwrap();
        assert_eq!(
            live,
            CycleRange {
                from: 100_000,
                to: 120_000,
                sweep: false
            }
        );
        let sweep = plan_cycle(&c, 126_000, 0, 60_000, 15_000).unwrap();
        assert_eq!(
            sweep,
            CycleRange {
                from: 40_000,
                to: 126_000,
                sweep: true
            }
        );
        assert_eq!(plan_cycle(&Cursors::new(100), 100, 0, 0, 1), None);
        // A clock that went back does not query backwards.
        let mut c = Cursors::new(500);
        c.last_sweep = Some(500);
        assert_eq!(plan_cycle(&c, 300, 0, 60_000, 15_000), None);
        // The offset lags the end.
        assert_eq!(
            plan_cycle(&Cursors::new(0), 10_000, 4_000, 0, 1)
                .unwrap()
                .to,
            6_000
        );
    }

    #[test]
    fn a_window_that_is_too_big_is_shrunk() {
        let mut p = planner_from_zero(1_000_000);
        let w = p.next_window().unwrap();
        assert_eq!(
            w,
            Window {
                from: 0,
                to: 1_000_000
            }
        );
        assert!(p.observe_total(w, 1_000));
        let w2 = p.next_window().unwrap();
        assert_eq!(w2.from, 0);
        assert!(w2.to - w2.from <= 80_000, "{w2:?}");
    }

    /// Regression: an empty window (a backfill starting before the first event) used to set
    /// the density to zero, so the next window spanned the whole rest of the range, was too
    /// big, and was abandoned: every other job was wasted.
    #[test]
    fn an_empty_window_grows_the_next_one_gradually() {
        let mut p = planner_from_zero(100_000_000);
        let w = p.next_window().unwrap();
        assert!(p.observe_total(w, 10_000));
        let w = p.next_window().unwrap();
        let span = w.to - w.from;
        assert!(!p.observe_total(w, 0));
        p.complete(w, 0);
        let next = p.next_window().unwrap();
        assert!(
            next.to - next.from <= 4 * span + EDGE_OVERLAP,
            "{next:?} after a span of {span}"
        );
        assert!(next.to - next.from > span, "{next:?}");
    }

    /// A smaller cap (a memory budget's share) makes the windows narrower at the same density,
    /// and a window over the new cap is split.
    #[test]
    fn a_smaller_cap_sizes_the_next_windows_to_it() {
        let mut p = planner_from_zero(10_000_000);
        let w = p.next_window().unwrap();
        assert!(p.observe_total(w, 100_000)); // 0.01 events/ms
        let w = p.next_window().unwrap();
        assert_eq!(w.to - w.from, 8_000); // 80% of 100 events
        p.set_cap(50);
        assert_eq!(p.cap(), 50);
        let w = p.next_window().unwrap();
        assert_eq!(w.to - w.from, 4_000);
        assert!(p.observe_total(w, 60));
        assert!(!p.observe_total(w, 50));
        p.set_cap(0);
        assert_eq!(p.cap(), 1, "a window holds at least one event");
    }

    proptest! {
        /// Windows cover the whole range with no gap, each overlapping the previous one by at
        /// most EDGE_OVERLAP, never reaching before the range, whatever the totals are.
        #[test]
        fn windows_cover_the_range_without_gaps(
            from in 0i64..10_000_000,
            len in 0i64..10_000_000,
            cap in 1usize..100_000,
            totals in proptest::collection::vec(0u64..1_000_000, 1..400),
        ) {
            let range = CycleRange { from, to: from + len, sweep: false };
            let mut p = WindowPlanner::new(range, cap, None);
            let mut covered_until: Option<i64> = None;
            let mut totals = totals.into_iter().cycle();
            let mut steps = 0;
            while let Some(w) = p.next_window() {
                steps += 1;
                prop_assert!(steps < 1_000_000, "the planner does not progress");
                prop_assert!(w.from >= from && w.to <= range.to && w.from <= w.to);
                if let Some(end) = covered_until {
                    prop_assert!(w.from <= end, "gap between {} and {}", end, w.from);
                    prop_assert!(end - w.from <= EDGE_OVERLAP);
                } else {
                    prop_assert_eq!(w.from, from);
                }
                let total = totals.next().unwrap();
                if p.observe_total(w, total) {
                    continue;
                }
                p.complete(w, total as usize);
                prop_assert!(covered_until.is_none_or(|e| w.to > e) || w.to == range.to);
                covered_until = Some(w.to);
            }
            prop_assert_eq!(covered_until.unwrap_or(from), range.to.max(from));
        }
    }
}
