//! When to poll a pending job: a schedule fitted to the job latency the service has measured on
//! its own jobs, instead of a fixed doubling.
//!
//! The vendor's job latency is unknown and may be tens of seconds (isolation-api.md §4). A fixed
//! schedule that doubles from 2 s polls at 2, 6, 14, 30 s: a 10 s job is picked up 4 s late, a
//! 15 s job 15 s late, up to half the latency lost. Here every time is counted from the job's
//! creation, and [`PollSchedule::next_poll`] is a pure function of the last poll's time and the
//! [`LatencyEstimate`]:
//!
//! - **No estimate yet** (the service's first job): the first poll at
//!   `job_poll_initial_interval_in_seconds` (2 s by default), then each poll 1.25× the time of
//!   the previous one. A job that took L ≥ 2 s is picked up less than 25% of L late (a job
//!   shorter than the first poll, at the first poll); a 30 s job takes 13 pending polls (2, 2.5,
//!   3.1, ... 29.1 s), a 10 s job 8.
//! - **With an estimate E**: the first poll at E minus one dense step, then a poll every dense
//!   step (5% of E, e.g. 0.5 s for a 10 s latency) up to 1.5 E: a job as slow as usual is picked
//!   up at most one step late, usually after two or three polls. A job that runs past 1.5 E
//!   backs off as without an estimate (each poll 1.25× the previous one's time), so a job far
//!   slower than usual costs few polls and is still picked up less than 25% late.
//! - Every gap is at least the floor (the smaller of `job_poll_initial` and 250 ms) and at most
//!   `job_poll_max_interval_in_seconds` (30 s), the wait from the creation to the first poll
//!   included. A job created ahead (`max_concurrent_jobs`) and polled only at its turn is
//!   polled at once if its time has come, like any late poll.
//!
//! Each completed job teaches the estimate the bracket of its real latency: after the last poll
//! that found it pending, at or before the poll that found it complete. The bracket's midpoint
//! goes into an exponentially weighted mean (weight 1/2, so that a change of latency is followed
//! within a few jobs). A job complete at its first poll only says it took less than that poll's
//! time, so the estimate becomes 3/4 of that time: after jobs got faster it shrinks by a quarter
//! with each job until polls find them pending again (30 s to 2 s within a dozen jobs); unless
//! that first poll came late (a job created ahead, polled at its turn), which says nothing
//! about the latency.
//!
//! The estimate is one per service (its API client owns it, from the client's start): jobs of
//! very different sizes, whose latency differs (a whole-range job, then the windows it was
//! split into), share it. `job_poll_max` bounds what a job much shorter than the estimate can
//! lose, and the estimate follows within a few jobs.
//!
//! Time lost after the job was ready, and pending polls, with the defaults (2 s, 30 s), as the
//! unit test `figures_before_and_after` computes them from this function:
//!
//! | latency | fixed 2 s doubling | no estimate | 2nd job | 5th job |
//! |---|---|---|---|---|
//! | 0 s | 2.00 s, 0 | 2.00 s, 0 | 1.25 s, 0 | 0.00 s, 0 |
//! | 2 s | 0.00 s, 0 | 0.00 s, 0 | 0.00 s, 3 | 0.19 s, 2 |
//! | 5 s | 1.00 s, 1 | 1.10 s, 5 | 0.22 s, 0 | 0.04 s, 2 |
//! | 10 s | 4.00 s, 2 | 1.92 s, 8 | 0.19 s, 0 | 0.39 s, 3 |
//! | 20 s | 10.00 s, 3 | 3.28 s, 11 | 0.95 s, 1 | 0.18 s, 1 |
//! | 30 s | 0.00 s, 3 | 6.38 s, 13 | 0.00 s, 0 | 0.57 s, 3 |
//!
//! The schedule only decides when a poll is due: each poll is still an API request, paced by
//! `requests_per_second` and `requests_limits` like any other.

use std::time::Duration;

/// Without an estimate, and past the dense polls, each poll comes this many times the previous
/// poll's time since creation: a job is picked up less than 25% of its latency late.
const BACKOFF_RATIO: f64 = 1.25;

/// The dense step around the estimate, as a fraction of it.
const DENSE_STEP: f64 = 0.05;

/// Polls are dense up to this many times the estimate; past it, they back off.
const DENSE_UNTIL: f64 = 1.5;

/// The smallest gap between polls, unless `job_poll_initial` is smaller still (tests and the
/// benchmark poll every 10 ms).
const FLOOR: Duration = Duration::from_millis(250);

/// An estimate that proved too long (a job complete at its first poll) becomes this fraction of
/// that poll's time.
const SHRINK: f64 = 0.75;

/// The weight of a new job's latency in the estimate.
const NEW_SAMPLE_WEIGHT: f64 = 0.5;

/// A service's poll schedule: its `job_poll_initial` and `job_poll_max`.
#[derive(Clone, Copy, Debug)]
pub struct PollSchedule {
    /// The first poll without an estimate.
    first: Duration,
    /// The longest gap between two polls.
    max_gap: Duration,
}

impl PollSchedule {
    pub fn new(job_poll_initial: Duration, job_poll_max: Duration) -> PollSchedule {
        PollSchedule {
            first: job_poll_initial,
            max_gap: job_poll_max,
        }
    }

    /// When to poll a job next, as a time since its creation: `last_poll` is the previous
    /// poll's (None: not polled yet), `estimate` the latency learnt so far. A time already
    /// past means at once.
    pub fn next_poll(&self, last_poll: Option<Duration>, estimate: Option<Duration>) -> Duration {
        match (last_poll, estimate) {
            // `job_poll_max` bounds the wait from the creation too: a job far shorter than the
            // estimate (a window after a whole-range job) is not waited for much past it.
            (None, None) => self.first.min(self.max_gap),
            (None, Some(estimate)) => self.first_poll_at(estimate).min(self.max_gap),
            (Some(last), None) => last + self.backoff_gap(last),
            (Some(last), Some(estimate)) => {
                let step = self.dense_step(estimate);
                if last < estimate.mul_f64(DENSE_UNTIL) {
                    last + step
                } else {
                    last + self.backoff_gap(last).max(step)
                }
            }
        }
    }

    /// The first poll of a job, as planned (the time a first poll that completed the job must
    /// not be much later than to teach anything, [`LatencyEstimate::learn`]).
    pub fn first_poll(&self, estimate: Option<Duration>) -> Duration {
        self.next_poll(None, estimate)
    }

    fn first_poll_at(&self, estimate: Duration) -> Duration {
        estimate.saturating_sub(self.dense_step(estimate))
    }

    fn dense_step(&self, estimate: Duration) -> Duration {
        self.gap(estimate.mul_f64(DENSE_STEP))
    }

    fn backoff_gap(&self, last: Duration) -> Duration {
        self.gap(last.mul_f64(BACKOFF_RATIO - 1.0))
    }

    /// `gap` within the floor and `job_poll_max`.
    fn gap(&self, gap: Duration) -> Duration {
        gap.max(self.first.min(FLOOR)).min(self.max_gap)
    }
}

/// The job latency a service has measured on its own completed jobs (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyEstimate {
    mean: Option<Duration>,
}

/// What a completed job's polls tell of its latency, in times since its creation.
#[derive(Clone, Copy, Debug)]
pub struct Bracket {
    /// The last poll that found the job pending; None: the first poll found it complete.
    pub pending: Option<Duration>,
    /// The poll that found it complete.
    pub completed: Duration,
    /// When its first poll was planned ([`PollSchedule::first_poll`]).
    pub planned_first: Duration,
}

impl LatencyEstimate {
    /// The estimate; None before the first job that taught anything.
    pub fn get(&self) -> Option<Duration> {
        self.mean
    }

    /// Learns from one completed job.
    pub fn learn(&mut self, bracket: Bracket) {
        let Some(pending) = bracket.pending else {
            // Complete at its first poll: it took less than that. A first poll that came late
            // (a job created ahead, polled at its turn) says nothing about the latency; one on
            // time says the estimate was too long: it becomes 3/4 of that poll's time outright.
            // (Halving it instead overshoots: a first estimate a little too long would be
            // followed by a job polled densely from half its latency on.)
            if bracket.completed <= bracket.planned_first.mul_f64(BACKOFF_RATIO) + FLOOR {
                let sample = bracket.completed.mul_f64(SHRINK);
                self.mean = Some(self.mean.map_or(sample, |mean| mean.min(sample)));
            }
            return;
        };
        let sample = (pending + bracket.completed) / 2;
        self.mean = Some(match self.mean {
            None => sample,
            Some(mean) => mean.mul_f64(1.0 - NEW_SAMPLE_WEIGHT) + sample.mul_f64(NEW_SAMPLE_WEIGHT),
        });
    }
}

#[cfg(test)]
mod tests;
