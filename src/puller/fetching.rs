//! Fetching windows: the current window's job (created ahead, or under a permit of the
//! process-wide job cap), its pages collected into memory within the window budget
//! ([`super::collecting`]), and the window cap learnt from the bytes per event. The puller
//! ([`super`]) delivers what this fetches.
//!
//! A job that holds more than one window (a first backfill's whole-range job) is not thrown
//! away: its events are spooled to disk and its windows come from the spool next
//! ([`super::spool`]), each one bucket (or a few consecutive ones) of the job's range, so the
//! first job's `total` sizes the first windows and its latency is paid once. The planner is told
//! each spooled window's completion, so that its density and the rest of the range after the
//! job's end go on as for any window. Without a spool (off, a full disk, a job over
//! `spool_max_size_in_mb` or lost by the API), a too-big window is given up and the planner
//! splits it into windows of their own jobs, created ahead ([`super::lookahead`]).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::collecting::{window_cap, Collecting, Limits, Stop, Unreadable};
use super::spool::{Spool, SpoolError};
use super::PullError;
use crate::api::client::{ApiClient, CreatedJob, FetchError};
use crate::api::job_cap::{JobCap, JobPermit};
use crate::clock::SharedClock;
use crate::config::{ServiceConfig, SpoolSettings};
use crate::event::Event;
use crate::metrics::{JobFault, ServiceMetrics};
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
    /// Where and how much a job too big for one window is spooled.
    pub(super) spooling: &'a SpoolSettings,
    /// The spooled job whose windows come next, if any (dropped with the cycle: its file is
    /// freed whether the cycle completes, fails, is cancelled or hands the lease over).
    pub(super) spool: Option<Spool>,
    /// Spooling failed in this cycle (a full disk): too-big windows are split from now on.
    pub(super) spool_failed: bool,
    pub(super) metrics: &'a ServiceMetrics,
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

    /// Fetches the next window whole: the spool's next one while a spooled job has some left,
    /// else the planner's next (shrinking windows that turn out too big, spooling a job that
    /// holds many windows), or `None` when the cycle's range is covered.
    pub(super) async fn next_window(
        &mut self,
        planner: &mut WindowPlanner,
        ahead: &mut LookAhead,
    ) -> Result<Option<Fetched>, PullError> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(PullError::Cancelled);
            }
            if let Some(fetched) = self.next_spooled(planner).await? {
                return Ok(Some(fetched));
            }
            let Some(planned) = planner.next_window() else {
                return Ok(None);
            };
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
            // Too big: the planner shrank it, or its job was spooled.
        }
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
                match self.collect(w, job, created, planner).await {
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
            .collect(w, job, created, planner)
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

    /// Polls and pages `job`, the job of window `w` (created at `created`), holding its
    /// events and their bytes in the budget. `None` if the window is too big: split (the
    /// planner shrank it), or spooled (its windows come from [`Fetching::spool`] next).
    async fn collect(
        &mut self,
        w: Window,
        job: CreatedJob,
        created: Millis,
        planner: &mut WindowPlanner,
    ) -> Result<Option<Collected>, FetchError> {
        // Waits with nothing else of this window in hand (see pipeline::budget).
        let held = tokio::select! {
            held = self.budget.reserve(self.expected_bytes(w, planner)) => held,
            _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
        };
        let limits = Limits {
            max: self.svc.max_events_per_window,
            window_bytes: self.window_bytes(),
            share: self.budget.share(),
            budget: self.budget,
            spooling: (self.spooling.enabled() && !self.spool_failed).then_some(self.spooling),
        };
        let unreadable = Unreadable::new(self.svc, self.clock);
        let mut c = Collecting::new(w, limits, held, unreadable);
        let bytes_per_event = &mut *self.bytes_per_event;
        let finished = self
            .client
            .finish_job(job, |page| c.on_page(page, planner, bytes_per_event))
            .await;
        match finished {
            Err(e) if e.is_lost_job() && c.spool.is_some() => {
                let lost = SpoolError::JobLost(e.to_string());
                return Ok(self.give_up_spooling(w, planner, lost));
            }
            finished => finished?,
        };
        let spooled = match (c.stop.take(), c.spool.take()) {
            (Some(Stop::OverBudget), _) => {
                self.client.job_fault(JobFault::WindowOverBudget);
                return Err(FetchError::WindowOverBudget {
                    from: format_iso(w.from),
                    to: format_iso(w.to),
                    share: c.limits.share,
                    held: c.bytes,
                    events: c.events.len(),
                });
            }
            (Some(Stop::TooBig), _) => {
                info!(
                    "The window {} to {} holds more than {} events; splitting it.",
                    format_iso(w.from),
                    format_iso(w.to),
                    planner.cap()
                );
                return Ok(None);
            }
            (Some(Stop::SpoolFailed(e)), _) => return Ok(self.give_up_spooling(w, planner, e)),
            (None, Some(mut spool)) => match spool.finish() {
                Ok(()) => Some(spool),
                Err(e) => return Ok(self.give_up_spooling(w, planner, e)),
            },
            (None, None) => None,
        };
        if c.undated > 0 {
            warn!("{} event(s) from {} to {} have no valid `date`; they are delivered first in their window.", c.undated, format_iso(w.from), format_iso(w.to));
        }
        let letters = c.unreadable.letters;
        if let Some(mut spool) = spooled {
            spool.created = created;
            spool.unreadable = letters;
            self.metrics.spooled_events(spool.events);
            self.spool = Some(spool);
            return Ok(None);
        }
        Ok(Some((c.events, letters, c.held)))
    }

    /// Spooling window `w`'s job failed (a full disk): one warning, and the window is split as
    /// without a spool, for the rest of the cycle. Nothing was delivered from the spool.
    fn give_up_spooling(
        &mut self,
        w: Window,
        planner: &WindowPlanner,
        e: SpoolError,
    ) -> Option<Collected> {
        warn!(
            "The job for {} to {} could not spool its events to {}: {e}. Splitting it into windows of {} events instead (one job each); nothing is lost. {}",
            format_iso(w.from),
            format_iso(w.to),
            self.spooling.directory.display(),
            planner.cap(),
            e.fix()
        );
        self.spool_failed = true;
        None
    }

    /// The next window of the spool (its first buckets, up to the window cap), read back
    /// within the budget; `None` (and the spool dropped, its file freed) when none is left.
    async fn next_spooled(
        &mut self,
        planner: &mut WindowPlanner,
    ) -> Result<Option<Fetched>, PullError> {
        let (window_bytes, share) = (self.window_bytes(), self.budget.share());
        let Some(spool) = self.spool.as_mut() else {
            return Ok(None);
        };
        let Some((w, _, bytes, n)) = spool.plan_next(planner.cap(), window_bytes)? else {
            self.spool = None;
            return Ok(None);
        };
        if bytes > share {
            // A burst at the narrowest span, over the service's share: the rest of the range
            // is split as without a spool, whose window for this burst is given up with the
            // usual error after holding at most a share (never the whole burst).
            self.spool = None;
            self.spool_failed = true;
            return Ok(None);
        }
        // Waits with nothing else of this window in hand (see pipeline::budget).
        let held = tokio::select! {
            held = self.budget.reserve(bytes) => held,
            _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
        };
        let events = spool.take(n)?;
        let (created, unreadable) = (spool.created, std::mem::take(&mut spool.unreadable));
        if spool.is_empty() {
            self.spool = None;
        }
        planner.complete(w, events.len());
        *self.density = planner.density();
        Ok(Some(Fetched {
            window: w,
            events,
            unreadable,
            created,
            _held: held,
        }))
    }
}

/// A collected window: its events, its unreadable events' letters, its bytes in the budget.
type Collected = (Vec<Event>, Vec<DeadLetter>, Reservation);

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
