//! Fetching windows: the current window's job (created ahead, or under a permit of the
//! process-wide job cap), its pages collected into memory within the window budget, and the
//! window cap learnt from the bytes per event. The puller ([`super`]) delivers what this fetches.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::PullError;
use crate::api::client::{ApiClient, CreatedJob, FetchError};
use crate::api::job_cap::{JobCap, JobPermit};
use crate::clock::SharedClock;
use crate::config::ServiceConfig;
use crate::event::{Event, Page};
use crate::metrics::JobFault;
use crate::pipeline::budget::{Reservation, WindowBudget};
use crate::pipeline::window::{Window, WindowPlanner};
use crate::puller::lookahead::{JobAhead, LookAhead};
use crate::state::dead_letter::DeadLetter;
use crate::timestamp::{format_iso, from_millis, Millis};

/// The current window's job: one created ahead for it (with its permit), or the permit to
/// create it under.
enum WindowJob {
    Ahead(Box<JobAhead>),
    New(JobPermit),
}

/// A window whose events are all in hand, waiting for its delivery.
pub(super) struct Fetched {
    pub(super) window: Window,
    pub(super) events: Vec<Event>,
    /// Its events that could not be read, to be set aside before it commits.
    pub(super) unreadable: Vec<DeadLetter>,
    /// When its job was created (the dedup plan and `settled` use it).
    pub(super) created: Millis,
    /// Its bytes in the window memory budget, released when it is dropped (delivered or not).
    pub(super) _held: Reservation,
}

/// What fetching windows needs of the puller.
pub(super) struct Fetching<'a> {
    pub(super) svc: &'a ServiceConfig,
    pub(super) client: &'a mut ApiClient,
    pub(super) clock: &'a SharedClock,
    pub(super) cancel: &'a CancellationToken,
    pub(super) budget: &'a WindowBudget,
    pub(super) jobs: &'a JobCap,
    /// Bytes per event held (vendor bytes and struct), learnt from the pages so far.
    pub(super) bytes_per_event: &'a mut Option<f64>,
    /// The planner's density, kept for the next cycle.
    pub(super) density: &'a mut Option<f64>,
}

impl Fetching<'_> {
    /// The bytes one window may hold: half the service's share of the budget, as two windows
    /// are in hand at once (one delivered, the next fetched).
    fn window_bytes(&self) -> u64 {
        self.budget.share() / 2
    }

    /// Caps the planner's windows to the events that fit [`window_bytes`](Self::window_bytes)
    /// at the bytes per event learnt so far (and to `max_events_per_window`).
    pub(super) fn size_windows(&self, planner: &mut WindowPlanner) {
        let max = self.svc.max_events_per_window;
        planner.set_cap(window_cap(self.window_bytes(), max, *self.bytes_per_event));
    }

    /// Fetches the planner's next window whole (shrinking windows that turn out too big), or
    /// `None` when the cycle's range is covered.
    pub(super) async fn next_window(
        &mut self,
        planner: &mut WindowPlanner,
        ahead: &mut LookAhead,
    ) -> Result<Option<Fetched>, PullError> {
        while let Some(planned) = planner.next_window() {
            if self.cancel.is_cancelled() {
                return Err(PullError::Cancelled);
            }
            let (w, job) = ahead.take(planned);
            let job = match job {
                Some(job) => WindowJob::Ahead(Box::new(job)),
                None => WindowJob::New(self.job_permit(ahead).await?),
            };
            // The next windows' jobs run on the server while this one is polled and delivered.
            ahead
                .top_up(w, planner, self.client, self.clock, self.jobs)
                .await
                .map_err(PullError::from_fetch)?;
            if let Some(fetched) = self.fetch_window(w, job, planner).await? {
                planner.complete(w, fetched.events.len());
                *self.density = planner.density();
                return Ok(Some(fetched));
            }
            // Too big: the planner shrank it.
        }
        Ok(None)
    }

    /// The job cap's permit for the current window's job: a free one, else one of this
    /// service's jobs ahead gives its own back, else it waits its turn (holding none).
    async fn job_permit(&self, ahead: &mut LookAhead) -> Result<JobPermit, PullError> {
        if let Some(permit) = self.jobs.try_acquire().or_else(|| ahead.give_back_last()) {
            return Ok(permit);
        }
        tokio::select! {
            permit = self.jobs.acquire() => Ok(permit),
            _ = self.cancel.cancelled() => Err(PullError::Cancelled),
        }
    }

    /// Runs window `w`'s job: the one created ahead for it, or a new one when there is none or
    /// it failed or expired while it waited. The job's permit is held until it is downloaded.
    /// `None` if the window is too big and was abandoned.
    async fn fetch_window(
        &mut self,
        w: Window,
        job: WindowJob,
        planner: &mut WindowPlanner,
    ) -> Result<Option<Fetched>, PullError> {
        let _permit = match job {
            WindowJob::New(permit) => permit,
            WindowJob::Ahead(ahead) => {
                let JobAhead {
                    created,
                    job,
                    permit,
                    ..
                } = *ahead;
                match self.collect(w, job, planner).await {
                    Err(e) if e.is_lost_job() => warn!(
                        "The job created ahead for {} to {} is lost ({e}); creating it again.",
                        format_iso(w.from),
                        format_iso(w.to)
                    ),
                    result => {
                        return Ok(fetched(w, created, result.map_err(PullError::from_fetch)?))
                    }
                }
                permit
            }
        };
        let created = self.clock.now_ms();
        let job = self
            .client
            .create_job(from_millis(w.from), from_millis(w.to))
            .await
            .map_err(PullError::from_fetch)?;
        let collected = self
            .collect(w, job, planner)
            .await
            .map_err(PullError::from_fetch)?;
        Ok(fetched(w, created, collected))
    }

    /// The bytes to ask the budget for before window `w`'s pages arrive: what the density and
    /// the bytes per event learnt so far expect, with a margin, at most a window's bytes.
    fn expected_bytes(&self, w: Window, planner: &WindowPlanner) -> u64 {
        let limit = self.window_bytes();
        match (planner.density(), *self.bytes_per_event) {
            (Some(d), Some(bpe)) => {
                let expected = d * (w.to - w.from).max(1) as f64 * bpe * 1.25;
                (expected as u64).clamp(1, limit)
            }
            _ => limit,
        }
    }

    /// Polls and pages `job`, the job of window `w`, holding its events and their bytes in the
    /// budget. `None` if the window is too big and was abandoned.
    async fn collect(
        &mut self,
        w: Window,
        job: CreatedJob,
        planner: &mut WindowPlanner,
    ) -> Result<Option<Collected>, FetchError> {
        // Waits with nothing else of this window in hand (see pipeline::budget).
        let mut held = tokio::select! {
            held = self.budget.reserve(self.expected_bytes(w, planner)) => held,
            _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
        };
        let mut events: Vec<Event> = Vec::new();
        let mut unreadable = Unreadable::new(self.svc, self.clock);
        let (mut bytes, mut undated, mut first, mut too_big) = (0u64, 0, true, false);
        // A window that cannot be split holds at most this (and the page that crossed it).
        let (share, mut over_budget) = (self.budget.share(), false);
        let (window_bytes, max) = (self.window_bytes(), self.svc.max_events_per_window);
        let (budget, bytes_per_event) = (self.budget, &mut *self.bytes_per_event);
        let mut learnt = (0u64, 0usize);
        self.client
            .finish_job(job, |page| {
                let page_bytes: u64 = page.events.iter().map(held_bytes).sum();
                learnt = (learnt.0 + page_bytes, learnt.1 + page.events.len());
                if learnt.1 > 0 {
                    *bytes_per_event = Some(learnt.0 as f64 / learnt.1 as f64);
                    // The first page already sizes the window: it says the bytes per event.
                    planner.set_cap(window_cap(window_bytes, max, *bytes_per_event));
                }
                bytes += page_bytes;
                // Taken only if free: a window never waits with bytes in hand. Beyond its
                // reservation it is bounded by the planner's cap, checked below.
                if bytes > held.bytes() {
                    held.grow(budget, bytes - held.bytes());
                }
                let cap = planner.cap();
                if first {
                    first = false;
                    if let Some(total) = page.total {
                        if planner.observe_total(w, total) {
                            too_big = true;
                            return false;
                        }
                        events.reserve(total.min(cap as u64) as usize);
                    }
                }
                undated += page.undated;
                unreadable.add(&page);
                events.extend(page.events);
                if events.len() > cap && planner.observe_total(w, events.len() as u64) {
                    too_big = true;
                    return false;
                }
                if bytes > share && planner.is_narrowest(w) {
                    over_budget = true;
                    return false;
                }
                true
            })
            .await?;
        if over_budget {
            self.client.job_fault(JobFault::WindowOverBudget);
            return Err(FetchError::WindowOverBudget {
                from: format_iso(w.from),
                to: format_iso(w.to),
                share,
                held: bytes,
                events: events.len(),
            });
        }
        if too_big {
            info!(
                "The window {} to {} holds more than {} events; splitting it.",
                format_iso(w.from),
                format_iso(w.to),
                planner.cap()
            );
            return Ok(None);
        }
        if undated > 0 {
            warn!("{undated} event(s) from {} to {} have no valid `date`; they are delivered first in their window.", format_iso(w.from), format_iso(w.to));
        }
        Ok(Some((events, unreadable.letters, held)))
    }
}

/// A collected window: its events, its unreadable events' letters, its bytes in the budget.
type Collected = (Vec<Event>, Vec<DeadLetter>, Reservation);

/// The letters of a window's unreadable events, each with its position (job, page, index).
struct Unreadable<'a> {
    table: &'a str,
    clock: &'a SharedClock,
    pages: usize,
    letters: Vec<DeadLetter>,
}

impl<'a> Unreadable<'a> {
    fn new(svc: &'a ServiceConfig, clock: &'a SharedClock) -> Self {
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

/// A collected window as [`Fetched`].
fn fetched(window: Window, created: Millis, collected: Option<Collected>) -> Option<Fetched> {
    collected.map(|(events, unreadable, held)| Fetched {
        window,
        events,
        unreadable,
        created,
        _held: held,
    })
}

/// The bytes an event holds in a window: its vendor bytes and its own struct.
fn held_bytes(e: &Event) -> u64 {
    (e.json.len() + std::mem::size_of::<Event>()) as u64
}
