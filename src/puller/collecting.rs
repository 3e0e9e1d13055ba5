//! One window's pages as they arrive: held in memory within the window budget while the window
//! fits one window's cap; once its job shows it holds more (its first page's `total`, or its
//! events so far), written to a spool ([`super::spool`]) to be delivered as many windows, or
//! given up (the planner splits the window) when spooling is off, failed, or the job would pass
//! `spool_max_size_in_mb`.

use tracing::info;

use super::spool::{bucket_count, Spool, SpoolError};
use crate::clock::SharedClock;
use crate::config::{ServiceConfig, SpoolSettings};
use crate::event::{Event, Page};
use crate::pipeline::budget::{Reservation, WindowBudget};
use crate::pipeline::window::{Window, WindowPlanner, MIN_SPAN};
use crate::state::dead_letter::DeadLetter;
use crate::timestamp::format_iso;

/// Why a window's collection stopped before its job's last page.
pub(super) enum Stop {
    /// The window is too big and is given up (the planner shrank it).
    TooBig,
    /// The window cannot be split and holds more than the service's share.
    OverBudget,
    /// Writing the spool failed: the window is given up (and split) instead.
    SpoolFailed(SpoolError),
}

/// The limits a window's collection works within.
pub(super) struct Limits<'a> {
    /// `max_events_per_window`.
    pub(super) max: usize,
    /// The bytes one window may hold.
    pub(super) window_bytes: u64,
    /// The service's share of the budget: what a window that cannot be split may hold.
    pub(super) share: u64,
    pub(super) budget: &'a WindowBudget,
    /// Where a too-big job is spooled; `None`: it is split instead.
    pub(super) spooling: Option<&'a SpoolSettings>,
}

/// The state of one window's collection, fed page by page ([`Collecting::on_page`]).
pub(super) struct Collecting<'a> {
    pub(super) w: Window,
    pub(super) limits: Limits<'a>,
    pub(super) held: Reservation,
    pub(super) events: Vec<Event>,
    pub(super) unreadable: Unreadable<'a>,
    /// The job's events go here once it showed it holds more than one window.
    pub(super) spool: Option<Spool>,
    /// Bytes of the events held.
    pub(super) bytes: u64,
    /// Bytes and count of every event seen (the bytes per event).
    learnt: (u64, usize),
    pub(super) undated: usize,
    first: bool,
    pub(super) stop: Option<Stop>,
}

impl<'a> Collecting<'a> {
    pub(super) fn new(
        w: Window,
        limits: Limits<'a>,
        held: Reservation,
        unreadable: Unreadable<'a>,
    ) -> Self {
        Collecting {
            w,
            limits,
            held,
            events: Vec::new(),
            unreadable,
            spool: None,
            bytes: 0,
            learnt: (0, 0),
            undated: 0,
            first: true,
            stop: None,
        }
    }

    /// Takes the next page; `false` stops the job's paging (see [`Collecting::stop`]).
    pub(super) fn on_page(
        &mut self,
        page: Page,
        planner: &mut WindowPlanner,
        bytes_per_event: &mut Option<f64>,
    ) -> bool {
        let page_bytes: u64 = page.events.iter().map(held_bytes).sum();
        self.learnt = (
            self.learnt.0 + page_bytes,
            self.learnt.1 + page.events.len(),
        );
        if self.learnt.1 > 0 {
            *bytes_per_event = Some(self.learnt.0 as f64 / self.learnt.1 as f64);
            // The first page already sizes the window: it says the bytes per event.
            planner.set_cap(window_cap(
                self.limits.window_bytes,
                self.limits.max,
                *bytes_per_event,
            ));
        }
        self.undated += page.undated;
        self.unreadable.add(&page);
        if let Some(spool) = self.spool.as_mut() {
            return match spool.push_all(page.events) {
                Ok(()) => true,
                Err(e) => self.stop(Stop::SpoolFailed(e)),
            };
        }
        self.bytes += page_bytes;
        // Taken only if free: a window never waits with bytes in hand. Beyond its
        // reservation it is bounded by the planner's cap, checked below.
        if self.bytes > self.held.bytes() {
            self.held
                .grow(self.limits.budget, self.bytes - self.held.bytes());
        }
        let cap = planner.cap();
        if std::mem::take(&mut self.first) {
            if let Some(total) = page.total {
                if planner.observe_total(self.w, total) {
                    return self.too_big(total, page.events, planner, *bytes_per_event);
                }
                self.events.reserve(total.min(cap as u64) as usize);
            }
        }
        self.events.extend(page.events);
        let n = self.events.len();
        if n > cap && planner.observe_total(self.w, n as u64) {
            return self.too_big(n as u64, Vec::new(), planner, *bytes_per_event);
        }
        if self.bytes > self.limits.share && planner.is_narrowest(self.w) {
            return self.stop(Stop::OverBudget);
        }
        true
    }

    fn stop(&mut self, why: Stop) -> bool {
        self.stop = Some(why);
        false
    }

    /// The window holds `events` events, more than the cap: spooled (with `page`'s events and
    /// those in hand) if it may be, else given up.
    fn too_big(
        &mut self,
        events: u64,
        page: Vec<Event>,
        planner: &WindowPlanner,
        bytes_per_event: Option<f64>,
    ) -> bool {
        let Some(settings) = self.limits.spooling else {
            return self.stop(Stop::TooBig);
        };
        // On disk an event takes about what it takes in memory (its JSON and 44 bytes).
        let size = events as f64 * bytes_per_event.unwrap_or(0.0);
        if size > settings.max_bytes as f64 {
            info!(
                "The job for {} to {} holds {events} events, about {} MB, more than spool_max_size_in_mb; splitting it instead of spooling it.",
                format_iso(self.w.from),
                format_iso(self.w.to),
                size as u64 / 1_000_000
            );
            return self.stop(Stop::TooBig);
        }
        let span = self.w.to - self.w.from;
        let k = bucket_count(events, planner.cap()).min((span / MIN_SPAN).max(1) as usize);
        let created = Spool::create(settings, self.w, k, self.limits.window_bytes);
        let mut spool = match created {
            Ok(spool) => spool,
            Err(e) => return self.stop(Stop::SpoolFailed(e.into())),
        };
        info!(
            "The job for {} to {} holds {events} events, more than one window of {}; spooling it to {} in about {} windows.",
            format_iso(self.w.from),
            format_iso(self.w.to),
            planner.cap(),
            settings.directory.display(),
            events.div_ceil(planner.cap().max(1) as u64)
        );
        // The buffers' memory, with the page in hand, from the budget (only if free, as a
        // window grows).
        let want = spool.buffer_bytes() + self.bytes;
        if want > self.held.bytes() {
            self.held.grow(self.limits.budget, want - self.held.bytes());
        }
        let in_hand = std::mem::take(&mut self.events);
        let pushed = spool.push_all(in_hand).and_then(|()| spool.push_all(page));
        self.bytes = 0;
        self.spool = Some(spool);
        match pushed {
            Ok(()) => true,
            Err(e) => self.stop(Stop::SpoolFailed(e)),
        }
    }
}

/// The letters of a window's unreadable events, each with its position (job, page, index).
pub(super) struct Unreadable<'a> {
    table: &'a str,
    clock: &'a SharedClock,
    pages: usize,
    pub(super) letters: Vec<DeadLetter>,
}

impl<'a> Unreadable<'a> {
    pub(super) fn new(svc: &'a ServiceConfig, clock: &'a SharedClock) -> Self {
        Unreadable {
            table: &svc.table,
            clock,
            pages: 0,
            letters: Vec::new(),
        }
    }

    /// Takes the next page's unreadable events.
    fn add(&mut self, page: &Page) {
        self.pages += 1;
        for u in &page.unreadable {
            self.letters.push(DeadLetter::new(
                self.table,
                None,
                format!("cannot be read: {}", u.reason),
                format!("job {} page {} event {}", page.job_id, self.pages, u.index),
                &u.raw,
                self.clock.now_ms(),
            ));
        }
    }
}

/// The events a window may hold: those that fit `window_bytes` at `bytes_per_event` (when
/// known), at most `max_events_per_window`.
pub(super) fn window_cap(
    window_bytes: u64,
    max_events_per_window: usize,
    bytes_per_event: Option<f64>,
) -> usize {
    match bytes_per_event {
        Some(bpe) if bpe > 0.0 => ((window_bytes as f64 / bpe) as usize).min(max_events_per_window),
        _ => max_events_per_window,
    }
}

/// The bytes an event holds in a window: its vendor bytes and its own struct.
pub(super) fn held_bytes(e: &Event) -> u64 {
    (e.json.len() + std::mem::size_of::<Event>()) as u64
}
