//! One service's puller: setup, `pre_pull` (state), then pull cycles.
//!
//! A cycle plans its range (`pipeline::window`), and for each window: runs an API job, holds
//! the window's events (bounded by `max_events_per_window`), sorts them by `date`, drops what the
//! dedup memory says was delivered, obfuscates the rest (`obfuscation_data`), delivers them to
//! every output ([`Outputs`]: retrying only the unconfirmed), and only when every output has
//! confirmed, applies the dedup plan, moves the cursors and writes the state
//! atomically. A failure anywhere before that leaves the state as it was: the window is asked
//! for again (the API keeps 30 days and is the buffer), and outputs that keep positions (files)
//! are rewound to the last committed one.
//!
//! The log lines follow Devo's collector (devo-platform.md §3.2–3.4) so that existing
//! dashboards and runbooks keep working.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::config::{InputConfig, ServiceConfig};
use crate::event::Event;
use crate::isolation::client::{ApiClient, FetchError};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::output::{FanOutError, Output, OutputError, Outputs};
use crate::pipeline::environment::Environment;
use crate::pipeline::obfuscate::Obfuscator;
use crate::pipeline::window::{plan_cycle, Window, WindowPlanner};
use crate::service::RETENTION;
use crate::state::{correct, ServiceState, StateError, StateStore};
use crate::time::{format_iso, from_millis, Millis};

/// Why a cycle stopped early. The state is unchanged past the last completed window.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("delivery failed, the window will be delivered again: {0}")]
    Output(#[from] OutputError),
    #[error("the state could not be written, so the checkpoint did not move: {0}")]
    State(#[from] StateError),
    #[error("stopped by a shutdown request")]
    Cancelled,
}

impl From<FanOutError> for PullError {
    fn from(e: FanOutError) -> Self {
        match e {
            FanOutError::Output(e) => PullError::Output(e),
            FanOutError::Cancelled => PullError::Cancelled,
        }
    }
}

/// Totals of one cycle, for Devo's statistics line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleStats {
    pub requests: u64,
    pub received: u64,
    pub duplicates: u64,
    pub sent: u64,
    pub windows: u64,
    pub bytes: u64,
    /// Events left out because they are not JSON text and could not be obfuscated.
    pub obfuscation_failures: u64,
}

/// The puller of one service.
pub struct Puller {
    svc: ServiceConfig,
    client: ApiClient,
    outputs: Outputs,
    store: Arc<StateStore>,
    key: String,
    state: ServiceState,
    /// Outputs must be told the committed positions before the next delivery (after a start or
    /// a failed window).
    needs_resume: bool,
    /// The state in memory may be ahead of the one on disk (a failed write): reload it.
    needs_reload: bool,
    density: Option<f64>,
    cancel: CancellationToken,
    metrics: ServiceMetrics,
    /// The service's `obfuscation_data`, applied to each batch before delivery.
    obfuscator: Obfuscator,
    /// The input's `environment`, added to each delivered event after obfuscation.
    environment: Option<Environment>,
    /// Devo's thread name of this puller, which some of Devo's lines repeat in the message.
    thread: String,
    /// A fixed end of every cycle instead of now (a backfill's `to`).
    cycle_end: Option<Millis>,
    /// Called after each delivered window.
    progress: Option<Progress>,
    /// The wall clock (cycle, window, dedup and correction times; the setup check).
    clock: SharedClock,
}

/// Called after each delivered window with the window's end and the cycle's totals so far.
pub type Progress = Box<dyn FnMut(Millis, &CycleStats) + Send>;

/// Devo's thread name of a service's puller, which some of Devo's lines repeat in the message.
pub fn puller_thread(input: &InputConfig, svc: &ServiceConfig) -> String {
    crate::telemetry::DevoThread::Puller {
        input: input.name.clone(),
        input_id: input.id.clone(),
        service: svc.service.to_string(),
    }
    .name()
}

/// The earliest time the API still serves, with a margin for the time a job takes.
fn earliest_available(now: Millis) -> Millis {
    now - RETENTION.as_millis() as Millis + 10 * 60_000
}

impl Puller {
    pub fn new(
        input: &InputConfig,
        svc: ServiceConfig,
        outputs: Vec<Output>,
        store: Arc<StateStore>,
        cancel: CancellationToken,
        clock: SharedClock,
    ) -> Result<Puller, reqwest::Error> {
        let thread = puller_thread(input, &svc);
        let client = ApiClient::new(
            &svc,
            input.api_key.clone(),
            input.key_placement,
            input.request_interval(&svc),
            cancel.clone(),
        )?
        .with_limits(input.limits_for(&svc));
        let key = StateStore::key(&input.id, svc.service.name());
        let start = svc.start_time.map_or(0, |t| t.timestamp_millis());
        let metrics = ServiceMetrics::detached(svc.service);
        Ok(Puller {
            outputs: Outputs::new(outputs, metrics.clone(), cancel.clone()),
            state: ServiceState::new(svc.start_time_text.clone(), start),
            obfuscator: Obfuscator::new(svc.obfuscation.clone()),
            environment: input.environment.as_deref().map(Environment::new),
            svc,
            client,
            store,
            key,
            needs_resume: true,
            needs_reload: false,
            density: None,
            cancel,
            metrics,
            cycle_end: None,
            progress: None,
            thread,
            clock,
        })
    }

    /// Cycles end at `to` instead of now (minus the service's offset, which a caller that
    /// wants exactly `to` sets to zero).
    pub fn with_cycle_end(mut self, to: Millis) -> Puller {
        self.cycle_end = Some(to);
        self
    }

    /// Calls `progress` after each delivered window.
    pub fn with_progress(mut self, progress: Progress) -> Puller {
        self.progress = Some(progress);
        self
    }

    /// Counts into `metrics` (the served registry) instead of a private one.
    pub fn with_metrics(mut self, metrics: &Arc<Metrics>) -> Puller {
        self.metrics = metrics.service(self.svc.service);
        self.client.set_metrics(self.metrics.clone());
        self.outputs.set_metrics(self.metrics.clone());
        self
    }

    /// Writes `state`, counting a failure.
    fn save(&self, state: &ServiceState) -> Result<(), StateError> {
        let result = self.store.save(&self.key, state);
        if result.is_err() {
            self.metrics.state_write_failed();
        }
        result
    }

    /// The setup check ("Making sample request to test authentication.").
    pub async fn setup(&mut self) -> Result<(), FetchError> {
        warn!("The token/header/authentication has not been created yet");
        info!("Making sample request to test authentication.");
        match self.client.check_auth(self.clock.now()).await {
            Ok(()) => self.metrics.setup(Ok(())),
            Err(FetchError::Cancelled) => return Err(FetchError::Cancelled),
            Err(e) => {
                self.metrics.setup(Err(e.to_string()));
                return Err(e);
            }
        }
        info!("Authentication successful.");
        info!("Setup for module <IsolationPuller> has been successfully executed");
        Ok(())
    }

    /// The configured start, clamped to the API's retention.
    fn start_ms(&self, now: Millis) -> Millis {
        let earliest = earliest_available(now);
        match self.svc.start_time {
            None => earliest,
            Some(t) if t.timestamp_millis() < earliest => {
                warn!(
                    "start_time_in_utc {} is older than the API's 30-day retention; starting at {} instead.",
                    self.svc.start_time_text.as_deref().unwrap_or_default(),
                    format_iso(earliest)
                );
                earliest
            }
            Some(t) => t.timestamp_millis(),
        }
    }

    /// Devo's `pre_pull`: load, upgrade, correct, reset, save if changed.
    pub fn pre_pull(&mut self) -> Result<(), StateError> {
        // Devo's lines name the puller inside the message too.
        info!("{} Starting the execution of pre_pull()", self.thread);
        for line in &self.svc.overrides {
            info!("{line}");
        }
        info!("Reading persisted data");
        let now = self.clock.now_ms();
        let loaded = self.store.load(&self.key)?;
        let mut state = match loaded {
            None => {
                info!("Persistence will be overridden due to the retrieved state is empty");
                None
            }
            Some((state, report)) => {
                info!("Data retrieved from the persistence: {}", state.summary());
                info!("Running the persistence upgrade steps");
                if let Some(v) = report.upgraded_from {
                    warn!("Upgraded the persistence from @persistence_version {v}; events at the last checkpoint's second may be delivered again once.");
                }
                Some((state, report.upgraded_from.is_some()))
            }
        };
        info!("Running the persistence corrections steps");
        let mut changed = state.as_ref().is_none_or(|(_, upgraded)| *upgraded);
        if let Some((s, _)) = state.as_mut() {
            for change in correct(s, now, earliest_available(now)) {
                warn!("Correction: {change}.");
                changed = true;
            }
        }
        // The reset step: a different start_time_in_utc restarts the persistence (Devo).
        info!("Running the persistence corrections steps");
        if let Some((s, _)) = &state {
            if s.start_time_in_utc != self.svc.start_time_text {
                warn!(
                    "start_time_in_utc changed from {:?} to {:?}: the persistence is restarted and events are collected again from the new start.",
                    s.start_time_in_utc.as_deref().unwrap_or("default"),
                    self.svc.start_time_text.as_deref().unwrap_or("default")
                );
                state = None;
                changed = true;
            }
        }
        let previous = state.as_ref().map(|(s, _)| s.summary());
        let fresh = || ServiceState::new(self.svc.start_time_text.clone(), self.start_ms(now));
        let state = state.map_or_else(fresh, |(s, _)| s);
        if changed {
            warn!(
                "Some changes have been detected and the persistence needs to be updated. Previous content: {} New content: {}",
                previous.unwrap_or_else(|| "{}".into()),
                state.summary()
            );
            self.save(&state)?;
            info!("Persistence has been updated successfully");
        } else {
            info!("No changes were detected in the persistence");
        }
        self.metrics.checkpoint(state.cursors.checkpoint);
        self.state = state;
        self.needs_resume = true;
        info!("{} Finalizing the execution of pre_pull()", self.thread);
        Ok(())
    }

    /// The current state (tests and `state show`).
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// Runs the setup check until it passes. Authentication failures are errors an operator
    /// must fix; they are logged and retried every period rather than ending the process, so a
    /// key fixed in the console is picked up without a restart.
    pub async fn setup_until_ready(&mut self) -> Result<(), PullError> {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        loop {
            match self.setup().await {
                Ok(()) => return Ok(()),
                Err(FetchError::Cancelled) => return Err(PullError::Cancelled),
                Err(e) => {
                    // An auth failure waits a period (the backoff still advances).
                    let backoff_wait = backoff.next_wait();
                    let wait_now = if e.is_auth() {
                        self.svc.request_period.max(Duration::from_secs(60))
                    } else {
                        backoff_wait
                    };
                    error!(
                        "Setup failed: {e}. Retrying in {} seconds.",
                        wait_now.as_secs()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait_now) => {}
                        _ = self.cancel.cancelled() => return Err(PullError::Cancelled),
                    }
                }
            }
        }
    }

    /// How long to wait after a successful cycle that took `elapsed`: until the next time slot
    /// (`use_time_slots_for_retrievals`), else the rest of the period.
    fn wait_after_cycle(&self, elapsed: Duration) -> Duration {
        if self.svc.use_time_slots {
            let rest = until_next_slot(self.clock.now_ms(), self.svc.request_period);
            info!("Data collection completed. Elapsed time: {:.3} seconds. Waiting for {:.3} second(s) until the next time slot", elapsed.as_secs_f64(), rest.as_secs_f64());
            return rest;
        }
        match self.svc.request_period.checked_sub(elapsed) {
            Some(rest) => {
                info!("Data collection completed. Elapsed time: {:.3} seconds. Waiting for {:.3} second(s) until the next one", elapsed.as_secs_f64(), rest.as_secs_f64());
                rest
            }
            None => {
                info!("Last retrieval took too much time, no wait will be applied in this loop");
                Duration::ZERO
            }
        }
    }

    /// The daemon loop: a cycle every `request_period_in_seconds` until cancelled.
    pub async fn run_forever(&mut self) {
        info!(
            "Starting data collection every {} seconds",
            self.svc.request_period.as_secs()
        );
        // Back off on repeated failures, but never longer than a period: new data keeps arriving
        // and an output may come back at any moment.
        let mut failures = Backoff::new(
            self.svc.retry_initial.saturating_mul(2),
            self.svc.request_period,
        );
        loop {
            let started = Instant::now();
            let wait = match self.pull().await {
                Ok(_) => {
                    failures.reset();
                    self.wait_after_cycle(started.elapsed())
                }
                Err(PullError::Cancelled) => break,
                Err(e) => {
                    let wait = failures.next_wait();
                    error!("Pull failed: {e}. Retrying collector puller: {}/∞. Sleeping {:.3} seconds before next retry", failures.attempts(), wait.as_secs_f64());
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => break,
            }
        }
        info!("Retrieving loop has been interrupted due to a controlled stopping action has been activated");
    }

    /// One pull cycle: catch up from the cursors to `now - offset`.
    pub async fn pull(&mut self) -> Result<CycleStats, PullError> {
        if self.needs_reload {
            if let Some((s, _)) = self.store.load(&self.key)? {
                self.state = s;
            }
            self.needs_reload = false;
        }
        let pulling_id = self.clock.now_ms();
        info!("Pull Started");
        let before = self.client.stats;
        let mut stats = CycleStats::default();
        let clock = Instant::now();
        let result = self
            .pull_windows(pulling_id, &mut stats, clock, before.requests)
            .await;
        stats.requests = self.client.stats.requests - before.requests;
        stats.bytes = self.client.stats.bytes - before.bytes;
        info!(
            "{}",
            statistics_line(false, pulling_id, &stats, clock.elapsed())
        );
        match result {
            Ok(()) => {
                info!("The data is up to date!");
                self.metrics.pull_succeeded(self.clock.now_ms());
                Ok(stats)
            }
            Err(e) => {
                // Rewind outputs that keep positions to the committed ones.
                self.needs_resume = true;
                Err(e)
            }
        }
    }

    async fn pull_windows(
        &mut self,
        pulling_id: Millis,
        stats: &mut CycleStats,
        clock: Instant,
        requests_before: u64,
    ) -> Result<(), PullError> {
        let now = self.clock.now_ms();
        let end = self.cycle_end.unwrap_or(now);
        let Some(range) = plan_cycle(
            &self.state.cursors,
            end,
            self.svc.window_offset.as_millis() as Millis,
            self.svc.lookback.as_millis() as Millis,
            self.svc.sweep_interval.as_millis() as Millis,
        ) else {
            return Ok(());
        };
        info!(
            "Fetching all {} event(s) from {} to {}.{}",
            self.svc.service,
            format_iso(range.from),
            format_iso(range.to),
            if range.sweep {
                " (late-arrival sweep)"
            } else {
                ""
            }
        );
        if self.needs_resume {
            self.resume_outputs().await?;
        }
        let mut planner = WindowPlanner::new(range, self.svc.max_events_per_window, self.density);
        while let Some(w) = planner.next_window() {
            if self.cancel.is_cancelled() {
                return Err(PullError::Cancelled);
            }
            let created = self.clock.now_ms();
            let Some(events) = self.fetch_window(w, &mut planner).await? else {
                continue; // too big: the planner shrank it
            };
            let received = events.len();
            self.deliver_window(w, events, created, stats).await?;
            stats.received += received as u64;
            stats.windows += 1;
            planner.complete(w, received);
            self.density = planner.density();
            if let Some(progress) = self.progress.as_mut() {
                progress(w.to, stats);
            }
            if planner.next_window().is_some() {
                let partial = CycleStats {
                    requests: self.client.stats.requests - requests_before,
                    ..*stats
                };
                info!(
                    "{}",
                    statistics_line(true, pulling_id, &partial, clock.elapsed())
                );
            }
        }
        if range.sweep {
            self.state.cursors.last_sweep = Some(now);
            self.save(&self.state)?;
        }
        Ok(())
    }

    /// Runs one window's job. `None` if the window is too big and was abandoned.
    async fn fetch_window(
        &mut self,
        w: Window,
        planner: &mut WindowPlanner,
    ) -> Result<Option<Vec<Event>>, PullError> {
        let cap = self.svc.max_events_per_window;
        let mut events: Vec<Event> = Vec::new();
        let mut first = true;
        let mut too_big = false;
        let mut undated = 0;
        self.client
            .run_job(from_millis(w.from), from_millis(w.to), |page| {
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
                events.extend(page.events);
                if events.len() > cap && planner.observe_total(w, events.len() as u64) {
                    too_big = true;
                    return false;
                }
                true
            })
            .await
            .map_err(|e| match e {
                FetchError::Cancelled => PullError::Cancelled,
                e => PullError::Fetch(e),
            })?;
        if too_big {
            info!(
                "The window {} to {} holds more than {cap} events; splitting it.",
                format_iso(w.from),
                format_iso(w.to)
            );
            return Ok(None);
        }
        if undated > 0 {
            warn!("{undated} event(s) from {} to {} have no valid `date`; they are delivered first in their window.", format_iso(w.from), format_iso(w.to));
        }
        Ok(Some(events))
    }

    async fn resume_outputs(&mut self) -> Result<(), PullError> {
        let table = &self.svc.table;
        let positions = &self.state.positions;
        let committed = |output: &str| positions.get(output)?.get(table).copied();
        let new_positions = self.outputs.resume(table, committed).await?;
        if !new_positions.is_empty() {
            self.record_positions(new_positions);
            self.save(&self.state)?;
        }
        self.needs_resume = false;
        Ok(())
    }

    /// Stores outputs' positions in this service's table, to be saved with the next state.
    fn record_positions(&mut self, positions: Vec<(String, u64)>) {
        for (output, p) in positions {
            self.state
                .positions
                .entry(output)
                .or_default()
                .insert(self.svc.table.clone(), p);
        }
    }

    /// Applies `obfuscation_data` to a batch about to be delivered, counting what it did.
    fn obfuscate(&self, batch: &mut Vec<Event>, stats: &mut CycleStats) {
        if self.obfuscator.is_empty() {
            return;
        }
        let report = self.obfuscator.apply_batch(batch);
        debug!(
            "Obfuscated {} of {} event(s); values replaced per rule: {:?}; path not found per rule: {:?}.",
            report.changed,
            batch.len() + report.failed as usize,
            report.replaced,
            report.missing
        );
        // Values a rule could not read were masked whole and their events delivered; the
        // obfuscator warns once per rule, the metric counts every event.
        for (i, &n) in report.fallbacks.iter().enumerate() {
            self.metrics
                .obfuscation_fallbacks(self.obfuscator.label(i), n);
        }
        if report.failed > 0 {
            // Bytes that are not JSON text (impossible for events parsed from the API):
            // nothing can be masked in them, and they are never delivered in clear. They
            // count as delivered for dedup, or the window would fail again on every retry.
            error!(
                "{} event(s) are not JSON text and could not be obfuscated; they were not delivered (lost) to keep their fields private.",
                report.failed
            );
            stats.obfuscation_failures += report.failed;
        }
    }

    async fn deliver_window(
        &mut self,
        w: Window,
        mut events: Vec<Event>,
        created: Millis,
        stats: &mut CycleStats,
    ) -> Result<(), PullError> {
        // Stable: events with equal dates keep the server's order.
        events.sort_by_key(|e| e.date_ms);
        let plan = self.state.dedup.plan(&events, w.to);
        let mut batch: Vec<Event> = plan.deliver.iter().map(|&i| events[i].clone()).collect();
        drop(events);
        stats.duplicates += plan.duplicates as u64;
        self.metrics.duplicates_filtered(plan.duplicates);
        // Obfuscate after the dedup plan and before any output: the plan (and the dedup memory
        // it feeds) stays keyed on the vendor's originals, so a re-read is still recognised, and
        // only events that are about to be delivered cost a rewrite.
        self.obfuscate(&mut batch, stats);
        if let Some(env) = &self.environment {
            env.apply_batch(&mut batch);
        }
        let positions = self.outputs.deliver(&self.svc.table, &batch).await?;
        stats.sent += batch.len() as u64;
        // Every output confirmed: commit.
        info!("Updating the persistence");
        self.state.dedup.apply(plan);
        self.record_positions(positions);
        self.advance_cursors(w, created);
        if let Err(e) = self.save(&self.state) {
            self.needs_reload = true;
            return Err(e.into());
        }
        self.metrics.checkpoint(self.state.cursors.checkpoint);
        Ok(())
    }

    /// Moves the cursors past the delivered window `w` (whose job was created at `created`) and
    /// forgets dedup records behind the new horizon.
    fn advance_cursors(&mut self, w: Window, created: Millis) {
        let c = &mut self.state.cursors;
        if w.from <= c.settled {
            let settled_by_now = created - self.svc.lookback.as_millis() as Millis;
            c.settled = c.settled.max(w.to.min(settled_by_now));
        }
        c.checkpoint = c.checkpoint.max(w.to);
        let horizon = c.horizon();
        self.state.dedup.prune(horizon);
    }
}

/// `use_time_slots_for_retrievals`: the time from `now` to the next wall-clock multiple of
/// `period` (counted from the Unix epoch, so slots of 60 s start at :00 of each minute). A cycle
/// that ran past its slot waits for the next one rather than starting off the grid.
fn until_next_slot(now: Millis, period: Duration) -> Duration {
    let period_ms = (period.as_millis() as Millis).max(1);
    let next = (now.div_euclid(period_ms) + 1) * period_ms;
    Duration::from_millis((next - now) as u64)
}

/// Devo's per-pull statistics line (no space after the colon, as in the original).
pub fn statistics_line(
    partial: bool,
    pulling_id: Millis,
    s: &CycleStats,
    elapsed: Duration,
) -> String {
    let eps = if elapsed.as_secs_f64() > 0.0 {
        s.sent as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    format!(
        "{}Statistics for this pull cycle (@devo_pulling_id={pulling_id}):Number of requests made: {}; Number of events received: {}; Number of duplicated events filtered out: {}; Number of events generated and sent: {}; Average of events per second: {eps:.3}.",
        if partial { "(Partial) " } else { "" },
        s.requests,
        s.received,
        s.duplicates,
        s.sent,
    )
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn the_next_slot_is_the_next_multiple_of_the_period() {
        let p = Duration::from_secs(60);
        assert_eq!(until_next_slot(120_000, p), p);
        assert_eq!(until_next_slot(120_001, p), Duration::from_millis(59_999));
        assert_eq!(until_next_slot(179_999, p), Duration::from_millis(1));
        assert_eq!(
            until_next_slot(5_500, Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }
}
