//! Devo's `requests_limits`: "at most N requests per period", for several periods at once.
//!
//! A [`RequestLimits`] holds one sliding window per configured limit; a request may start only
//! when every window has room, and then counts in all of them. Sliding windows, not fixed ones:
//! a fixed window lets 2×N requests through around a boundary (N at the end of one window, N at
//! the start of the next), while a user who writes "5 per second" expects no second anywhere
//! to see more than 5 requests, and that is what the tests measure at the simulator.
//!
//! Written here rather than taken from `governor`: GCRA (governor's algorithm) with a burst of N
//! lets up to 2×N requests into a span of one period, and governor has no way to check several
//! quotas and consume from all of them atomically. The window is a log of request times grouped
//! into at most ~1,000 buckets per window. A bucket takes the requests of one span of
//! `period / 1000` measured from its *first* request, so it closes, and a new one opens, at
//! least every thousandth of the period, however close the requests come; it expires with its
//! *latest* request, so no earlier than any request in it: the count can only be
//! over-estimated, by at most one bucket's span, never under. That bounds memory for limits
//! such as "9,999,999 per year" while costing at most 0.1% of a window's length in throughput.
//! (A bucket measured from its latest request would chain for as long as requests came closer
//! than its span and never close: nothing would ever leave the window.)
//!
//! With Redis persistence the input's level is counted in Redis instead, for every replica at
//! once ([`input_quota`]); the service's levels stay in the process.
//!
//! The clock is injected: the pure core takes `now`, and the async [`SharedLimits::acquire`]
//! uses `tokio::time::Instant`, which `tokio::time::pause` controls in tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub mod input_quota;
use input_quota::{Decision, InputQuota};

pub use crate::config::Limit;
use crate::config::ServiceConfig;

/// How many buckets a window keeps at most (see the module doc).
const BUCKETS_PER_WINDOW: u32 = 1000;

/// Requests counted together: those within a window's granularity of `first`.
#[derive(Debug)]
struct Bucket {
    first: Instant,
    /// The bucket leaves the window one period after this.
    latest: Instant,
    requests: u32,
}

/// A sliding window of one limit.
#[derive(Debug)]
struct Window {
    limit: Limit,
    max: u32,
    /// A bucket takes the requests of this span from its first one.
    granularity: Duration,
    /// Oldest first.
    buckets: VecDeque<Bucket>,
    count: u32,
}

impl Window {
    fn new(limit: Limit, max: u32) -> Window {
        Window {
            granularity: limit.period / BUCKETS_PER_WINDOW,
            limit,
            max,
            buckets: VecDeque::new(),
            count: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(b) = self.buckets.front() {
            if b.latest + self.limit.period > now {
                break;
            }
            self.count -= b.requests;
            self.buckets.pop_front();
        }
    }

    /// How long until one more request fits (zero: now).
    fn wait(&mut self, now: Instant) -> Duration {
        self.expire(now);
        if self.count < self.max {
            return Duration::ZERO;
        }
        // Drop buckets, oldest first, until the count is below the maximum.
        let mut freed = 0;
        for b in &self.buckets {
            freed += b.requests;
            if self.count - freed < self.max {
                return (b.latest + self.limit.period).saturating_duration_since(now);
            }
        }
        self.limit.period
    }

    fn record(&mut self, now: Instant) {
        match self.buckets.back_mut() {
            // Measured from the bucket's first request, which never moves: the bucket closes.
            Some(b) if now.saturating_duration_since(b.first) < self.granularity => {
                b.latest = now;
                b.requests += 1;
            }
            _ => self.buckets.push_back(Bucket {
                first: now,
                latest: now,
                requests: 1,
            }),
        }
        self.count += 1;
    }
}

/// All the limits of one level (the input or one service). Unlimited entries hold nothing.
#[derive(Debug, Default)]
pub struct RequestLimits {
    windows: Vec<Window>,
}

impl RequestLimits {
    pub fn new(limits: &[Limit]) -> RequestLimits {
        RequestLimits {
            windows: limits
                .iter()
                .filter_map(|l| l.max_requests.map(|max| Window::new(l.clone(), max)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// How long until a request fits every window, and the limit that makes it wait longest.
    pub fn wait(&mut self, now: Instant) -> (Duration, Option<Limit>) {
        let mut longest = (Duration::ZERO, None);
        for w in &mut self.windows {
            let d = w.wait(now);
            if d > longest.0 {
                longest = (d, Some(w.limit.clone()));
            }
        }
        longest
    }

    /// Counts a request at `now` in every window.
    pub fn record(&mut self, now: Instant) {
        for w in &mut self.windows {
            w.record(now);
        }
    }

    /// Takes a slot if every window has one now; otherwise says how long to wait.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), (Duration, Option<Limit>)> {
        match self.wait(now) {
            (d, _) if d.is_zero() => {
                self.record(now);
                Ok(())
            }
            longest => Err(longest),
        }
    }
}

/// Limits of several levels that all hold at once: the input's (shared by its services, which
/// use one API key) and the service's own.
#[derive(Clone, Debug, Default)]
pub struct SharedLimits {
    /// Narrowest last.
    levels: Vec<Level>,
    /// With Redis persistence: the input's level, counted in Redis by every replica. Its local
    /// level still counts this process's requests, and holds them alone if Redis refuses.
    quota: Option<InputQuota>,
}

#[derive(Clone, Debug)]
struct Level {
    /// The level's name for the log (`inputs.proofpoint_isolation`, `services.<name>`).
    name: String,
    limits: Arc<Mutex<RequestLimits>>,
    /// The input's level (counted in Redis when there is a quota).
    input: bool,
}

/// Waits at least this long are logged (at INFO, once per wait); shorter ones are pacing.
pub const LOG_WAIT_THRESHOLD: Duration = Duration::from_secs(1);

/// The level name of the input's limits in the log.
const INPUT_LEVEL: &str = "inputs.proofpoint_isolation";

/// How long a request must wait, for which limit (none: Redis is not answering) of which level.
type Wait<'a> = (Duration, Option<Limit>, &'a str);

/// An input's limiter: one for all its services, because they share one API key (the vendor's
/// quota is per key). Built once per tenant when it starts, never held by the config.
pub type InputLimiter = Arc<Mutex<RequestLimits>>;

/// A new limiter for an input's `requests_limits`.
pub fn input_limiter(limits: &[Limit]) -> InputLimiter {
    Arc::new(Mutex::new(RequestLimits::new(limits)))
}

impl SharedLimits {
    /// Every limiter a service's requests must pass: its input's (`input`, shared) and its own.
    pub fn for_service(input: &InputLimiter, svc: &ServiceConfig) -> SharedLimits {
        SharedLimits::default().with_input(input.clone()).with(
            &format!("services.{}", svc.service),
            input_limiter(&svc.pacing.requests_limits),
        )
    }

    /// Adds a level unless it limits nothing.
    pub fn with(self, level: &str, limits: Arc<Mutex<RequestLimits>>) -> SharedLimits {
        self.push(level, limits, false)
    }

    /// Adds the input's level (`inputs.proofpoint_isolation`) unless it limits nothing.
    pub fn with_input(self, limits: Arc<Mutex<RequestLimits>>) -> SharedLimits {
        self.push(INPUT_LEVEL, limits, true)
    }

    /// Counts the input's level in Redis (see [`input_quota`]), when `quota` is one.
    pub fn counted_in(mut self, quota: Option<InputQuota>) -> SharedLimits {
        self.quota = quota.filter(|_| self.levels.iter().any(|l| l.input));
        self
    }

    fn push(mut self, name: &str, limits: Arc<Mutex<RequestLimits>>, input: bool) -> Self {
        let empty = limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if !empty {
            self.levels.push(Level {
                name: name.to_owned(),
                limits,
                input,
            });
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Takes a slot in every level at once, or says how long to wait and for which limit. The
    /// locks are taken in level order (input before service), so two services cannot deadlock.
    fn try_acquire(&self, now: Instant) -> Option<Wait<'_>> {
        let mut guards: Vec<_> = self
            .levels
            .iter()
            .map(|l| l.limits.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mut longest = (Duration::ZERO, None, "");
        for (g, level) in guards.iter_mut().zip(&self.levels) {
            let (d, limit) = g.wait(now);
            if d > longest.0 {
                longest = (d, limit, level.name.as_str());
            }
        }
        if longest.0.is_zero() {
            for g in &mut guards {
                g.record(now);
            }
            return None;
        }
        Some(longest)
    }

    /// Counts a request in every level.
    fn record(&self, now: Instant) {
        for level in &self.levels {
            (level.limits.lock())
                .unwrap_or_else(PoisonError::into_inner)
                .record(now);
        }
    }

    /// Whether this process's levels (the service's) have room, without taking it.
    fn local_wait(&self, now: Instant) -> Option<Wait<'_>> {
        let mut longest = (Duration::ZERO, None, "");
        for level in self.levels.iter().filter(|l| !l.input) {
            let (d, limit) = level
                .limits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wait(now);
            if d > longest.0 {
                longest = (d, limit, level.name.as_str());
            }
        }
        (!longest.0.is_zero()).then_some(longest)
    }

    /// With a quota in Redis: this process's levels first (no round trip while they are full),
    /// then Redis, which counts the request for every replica; then the local levels count it.
    async fn try_acquire_counted(&self, quota: &InputQuota) -> Option<Wait<'_>> {
        if let Some(wait) = self.local_wait(Instant::now()) {
            return Some(wait);
        }
        match quota.take().await {
            Decision::Counted => {
                // Counted for every replica: the local levels count it too (the service's had
                // room, and only this task uses them; the input's keeps this process's own
                // requests for a fallback).
                self.record(Instant::now());
                None
            }
            Decision::Wait(wait, limit) => Some((wait, limit, INPUT_LEVEL)),
            Decision::CountAlone => self.try_acquire(Instant::now()),
        }
    }

    /// Waits until every level has room, then counts the request in all of them. Only the
    /// locks' own brief holds are shared; the waiting happens unlocked. Never fails: the
    /// caller's cancellation drops this future.
    pub async fn acquire(&self) {
        loop {
            let wait = match &self.quota {
                Some(quota) => self.try_acquire_counted(quota).await,
                None => self.try_acquire(Instant::now()),
            };
            let Some((wait, limit, level)) = wait else {
                return;
            };
            if wait >= LOG_WAIT_THRESHOLD {
                if let Some(limit) = limit {
                    tracing::info!(
                        "Request limit reached ({limit}, {level} requests_limits); waiting {:.3} seconds before the next request.",
                        wait.as_secs_f64()
                    );
                }
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests;
