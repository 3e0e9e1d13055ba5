//! One service's puller: setup, `pre_pull` (the state), then pull cycles: the window loop.
//!
//! A cycle plans its range (`pipeline::window`), and for each window: fetches it (one API job,
//! its events held in memory, sized to the service's share of the window memory budget,
//! `pipeline::budget`, and at most `max_events_per_window`), delivers it (sorted by `date`,
//! minus what the dedup memory says was delivered, obfuscated by `obfuscation_data`, to every
//! output through [`Outputs`], which retries only the unconfirmed), and only when every output has
//! confirmed, commits it ([`Checkpoint::commit`]: dedup plan, cursors and positions, one atomic
//! write). A failure anywhere before that leaves the state as it was: the window is asked for
//! again (the API keeps 30 days and is the buffer), and outputs that keep positions (files) are
//! rewound to the last committed one.
//!
//! The next window is fetched while the current one is delivered (a TLS output waits for its
//! delivery proof meanwhile), so two windows are in hand at once; its events are delivered only
//! after the current window is committed, so windows still commit strictly in order.
//!
//! Fetching a window (its job under the process-wide job cap, its pages within the budget) is in
//! [`fetching`]; a job too big for one window is spooled to disk and delivered as many windows
//! ([`spool`]). The other jobs live beside it: the state's lifecycle in [`crate::puller::checkpoint`], Devo's log
//! wording in [`crate::devo::log_lines`], and Devo's statistics line in [`crate::devo::statistics`].

pub mod checkpoint;
mod collecting;
mod fetching;
pub mod lookahead;
pub mod refused;
pub mod spool;

use fetching::{Fetched, Fetching};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::client::{ApiClient, FetchError};
use crate::api::job_cap::JobCap;
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::config::{InputConfig, ServiceConfig, SpoolSettings, DEFAULT_WINDOW_MEMORY_BUDGET_MB};
use crate::devo::log_lines;
use crate::devo::statistics::{CycleReport, CycleStats};
use crate::event::Event;
use crate::ha::lease::LeaseGate;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::output::{FanOutError, Output, OutputError, Outputs};
use crate::pipeline::budget::WindowBudget;
use crate::pipeline::environment::Environment;
use crate::pipeline::obfuscate::Obfuscator;
use crate::pipeline::window::{plan_cycle, Window, WindowPlanner};
use crate::puller::checkpoint::Checkpoint;
use crate::puller::lookahead::LookAhead;
use crate::state::dead_letter::DeadLetter;
use crate::state::{StateError, StateStore};
use crate::timestamp::{format_iso, Millis};

/// The longest wait between pull cycles while Redis is unreachable.
const PERSISTENCE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The shortest wait after a refused key before the setup check runs again (Devo's collector
/// waits a minute too): an operator fixes the key, no burst of refusals meanwhile.
const AUTH_RETRY_MIN: Duration = Duration::from_secs(60);

/// [`AUTH_RETRY_MIN`], or, in a build with the cargo feature `test-hooks` (the tests' build
/// only), `ISOLATION_COLLECTOR_AUTH_RETRY_SECS` seconds when set: a test of the retry after a
/// refused key then waits seconds, not a minute. A release build never reads the variable.
fn auth_retry_min() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(secs) = std::env::var("ISOLATION_COLLECTOR_AUTH_RETRY_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Duration::from_secs(secs);
    }
    AUTH_RETRY_MIN
}

/// Why a cycle stopped early. The state is unchanged past the last completed window.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("delivery failed, the window will be delivered again: {0}")]
    Output(#[from] OutputError),
    #[error("the state could not be written, so the checkpoint did not move: {0}")]
    State(#[from] StateError),
    #[error("a spooled job's events could not be read back from its spool file ({0}); the next cycle asks the API again from the last committed window")]
    Spool(#[from] spool::SpoolError),
    #[error("stopped by a shutdown request")]
    Cancelled,
    /// A delivery gate other than the lease's refused a turn.
    #[error("the delivery gate refused: {0}")]
    Gate(Box<dyn std::error::Error + Send + Sync>),
    /// The lease is to be handed over (sharding): stopped after a committed window.
    #[error("stopped at a window boundary to hand the lease over")]
    HandingOver,
}

/// Why [`Puller::run_forever`] returned.
#[derive(Debug)]
pub enum Ended {
    /// A shutdown request (the tenure's token).
    Cancelled,
    /// The lease was lost (the caller stands by).
    LeaseLost(StateError),
    /// The coordinator asked for the lease to be handed over, and the last window in flight is
    /// committed (the caller releases the lease).
    HandOver,
    /// The cycles keep failing and another replica is able to pull (sharding's health): the
    /// caller hands the lease over and runs the setup check again before taking it again.
    Unable,
}

impl PullError {
    /// Whether the cycle failed (what the status line shows until the next success), rather
    /// than stopped on request or for a lost lease (standing by is not failing).
    fn is_failure(&self) -> bool {
        match self {
            PullError::Cancelled | PullError::HandingOver => false,
            PullError::State(e) => !e.is_lease_lost(),
            _ => true,
        }
    }

    /// A failed API call; a cancelled one is [`PullError::Cancelled`].
    fn from_fetch(e: FetchError) -> PullError {
        match e {
            FetchError::Cancelled => PullError::Cancelled,
            e => PullError::Fetch(e),
        }
    }
}

impl From<FanOutError> for PullError {
    fn from(e: FanOutError) -> Self {
        match e {
            FanOutError::Output(e) => PullError::Output(e),
            FanOutError::Cancelled => PullError::Cancelled,
            // The only gate that refuses is the lease's (HA), whose refusal is a StateError.
            FanOutError::Lease(refusal) => match refusal.0.downcast::<StateError>() {
                Ok(e) => PullError::State(*e),
                Err(other) => PullError::Gate(other),
            },
        }
    }
}

/// The puller of one service.
pub struct Puller {
    /// The id of the input (tenant) this service belongs to: its metrics' `input` label.
    input_id: String,
    svc: ServiceConfig,
    client: ApiClient,
    outputs: Outputs,
    /// The service's state: what was delivered, and where to go on from.
    checkpoint: Checkpoint,
    /// Outputs must be told the committed positions before the next delivery (after a start or
    /// a failed window).
    needs_resume: bool,
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
    /// The window memory budget this service shares with the others of the process.
    budget: WindowBudget,
    /// The cap on API jobs alive at once this service shares with the others of the process.
    jobs: JobCap,
    /// Where and how much a large job is spooled ([`spool`]); off unless
    /// [`with_spool`](Puller::with_spool) sets it.
    spool: SpoolSettings,
    /// Bytes per event held in a window, learnt from the pages (sizes windows to the budget).
    bytes_per_event: Option<f64>,
    /// The lease's gate (always open without leases), asked by the outputs before each turn; a
    /// fenced write's refusal is recorded in it.
    gate: LeaseGate,
}

/// Called after each delivered window with the window's end and the cycle's totals so far.
pub type Progress = Box<dyn FnMut(Millis, &CycleStats) + Send>;

impl Puller {
    /// The puller of `svc` of `input`, with its API client (built by
    /// [`crate::api::client::build`]) and its outputs.
    pub fn new(
        input: &InputConfig,
        svc: ServiceConfig,
        client: ApiClient,
        outputs: Vec<Output>,
        store: Arc<StateStore>,
        cancel: CancellationToken,
        clock: SharedClock,
    ) -> Puller {
        let thread = log_lines::puller_thread(input, &svc);
        let key = StateStore::key(&input.id, svc.service.name());
        let metrics = ServiceMetrics::detached(svc.service);
        Puller {
            outputs: Outputs::new(outputs, metrics.clone(), cancel.clone()),
            checkpoint: Checkpoint::new(store, key, &svc, metrics.clone()),
            obfuscator: Obfuscator::new(svc.obfuscation.clone()),
            environment: input.environment.as_deref().map(Environment::new),
            input_id: input.id.clone(),
            svc,
            client,
            needs_resume: true,
            density: None,
            cancel,
            metrics,
            cycle_end: None,
            progress: None,
            thread,
            clock,
            budget: WindowBudget::new(DEFAULT_WINDOW_MEMORY_BUDGET_MB * 1024 * 1024, 1),
            jobs: JobCap::default(),
            spool: SpoolSettings::off(),
            bytes_per_event: None,
            gate: LeaseGate::open(),
        }
    }

    /// Pulls under a lease's tenure from now on: `cancel` (the tenure's token) stops it, `gate`
    /// is asked before each delivery, and every state write is fenced by the lease's token.
    /// Call [`Self::pre_pull`] next: the state is read again for each tenure.
    pub fn start_tenure(&mut self, gate: LeaseGate, cancel: CancellationToken) {
        self.client.set_cancel(cancel.clone());
        self.outputs.set_cancel(cancel.clone());
        self.outputs.set_gate(std::sync::Arc::new(gate.clone()));
        self.checkpoint.set_fence(gate.token());
        self.cancel = cancel;
        self.gate = gate;
    }

    /// Shares `budget` (the process's window memory budget) instead of a default one of its own.
    pub fn with_budget(mut self, budget: WindowBudget) -> Puller {
        self.budget = budget;
        self
    }

    /// Shares `jobs` (the process's job cap) instead of a cap of its own.
    pub fn with_job_cap(mut self, jobs: JobCap) -> Puller {
        self.jobs = jobs;
        self
    }

    /// Spools a job too big for one window per `spool` (`globals.spool_directory`,
    /// `globals.spool_max_size_in_mb`) instead of splitting it (see [`spool`]).
    pub fn with_spool(mut self, spool: SpoolSettings) -> Puller {
        self.spool = spool;
        self
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
        self.metrics = metrics.service(&self.input_id, self.svc.service);
        self.client.set_metrics(self.metrics.clone());
        self.outputs.set_metrics(self.metrics.clone());
        self.checkpoint.set_metrics(self.metrics.clone());
        self
    }

    /// The setup check ([`ApiClient::setup_check`]); its answer is what `/ready` says of the
    /// service.
    pub async fn setup(&mut self) -> Result<(), FetchError> {
        let metrics = &self.metrics;
        let answered = |r: &Result<(), FetchError>| {
            metrics.setup(r.as_ref().map(|&()| ()).map_err(ToString::to_string))
        };
        self.client.setup_check(self.clock.now(), answered).await
    }

    /// Devo's `pre_pull`: the state's load, upgrade, correct, reset, save if changed.
    pub async fn pre_pull(&mut self) -> Result<(), StateError> {
        log_lines::pre_pull_started(&self.thread);
        for line in &self.svc.overrides {
            info!("{line}");
        }
        let restored = self
            .checkpoint
            .restore(&self.svc, self.clock.now_ms())
            .await;
        if let Err(e) = &restored {
            // A lost lease (or one left to the others) is standing by, not failing.
            if !e.is_lease_lost() && e.left_to_others().is_none() {
                self.metrics.pull_failed(e.to_string());
            }
        }
        restored?;
        self.needs_resume = true;
        // The state was read again (a new tenure, maybe after another replica's): what the
        // outputs confirmed before may have been committed by someone else.
        self.outputs.forget_all();
        log_lines::pre_pull_finished(&self.thread);
        Ok(())
    }

    /// The tenure ended with the lease going to another holder: the state in memory may be
    /// older than the stored one from now on (see [`Checkpoint::another_holds_it`]).
    pub async fn another_holds_it(&mut self, handed_over: bool) {
        self.checkpoint.another_holds_it(handed_over).await;
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
                        self.svc.request_period.max(auth_retry_min())
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
            log_lines::waiting_for_slot(elapsed, rest);
            return rest;
        }
        match self.svc.request_period.checked_sub(elapsed) {
            Some(rest) => {
                log_lines::waiting_for_period(elapsed, rest);
                rest
            }
            None => {
                log_lines::no_wait();
                Duration::ZERO
            }
        }
    }

    /// The daemon loop: a cycle every `request_period_in_seconds` until cancelled, until the
    /// lease is lost, or until it is to be handed over (at a window boundary, or between cycles).
    pub async fn run_forever(&mut self) -> Ended {
        log_lines::collection_started(self.svc.request_period);
        // Back off on repeated failures, but never longer than a period: new data keeps arriving
        // and an output may come back at any moment.
        let mut failures = Backoff::new(
            self.svc.retry_initial.saturating_mul(2),
            self.svc.request_period,
        );
        // An unreachable Redis is retried within seconds, so that pulling resumes soon after it
        // answers again (its outage is logged once by the store, not per retry).
        let mut outage = Backoff::new(Duration::from_millis(500), PERSISTENCE_RETRY_MAX);
        let gate = self.gate.clone();
        let ended = loop {
            let started = Instant::now();
            let wait = match self.pull().await {
                Ok(_) => {
                    failures.reset();
                    outage.reset();
                    gate.cycle_succeeded();
                    self.wait_after_cycle(started.elapsed())
                }
                Err(PullError::Cancelled) => break Ended::Cancelled,
                Err(PullError::HandingOver) => break Ended::HandOver,
                Err(PullError::State(e)) if e.is_lease_lost() => {
                    self.gate.refused(&e);
                    break Ended::LeaseLost(e);
                }
                Err(PullError::State(e)) if e.is_unavailable() => outage.next_wait(),
                Err(e) => {
                    let wait = failures.next_wait();
                    log_lines::pull_failed(&e, failures.attempts(), wait);
                    if gate.cycle_failed() {
                        break Ended::Unable;
                    }
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.cancel.cancelled() => break Ended::Cancelled,
                _ = gate.hand_over_wanted() => break Ended::HandOver,
            }
        };
        if !matches!(ended, Ended::HandOver | Ended::Unable) {
            log_lines::loop_interrupted();
        }
        ended
    }

    /// One pull cycle: catch up from the cursors to `now - offset`.
    pub async fn pull(&mut self) -> Result<CycleStats, PullError> {
        self.checkpoint.reload_if_behind().await?;
        let pulling_id = self.clock.now_ms();
        log_lines::pull_started();
        let mut report = CycleReport::start(pulling_id, Instant::now(), self.client.stats);
        let job_wait_before = self.client.job_wait;
        let result = self.pull_windows(&mut report).await;
        let stats = report.finish(self.client.stats);
        debug!(
            "Waited {:.3} seconds for API jobs to complete in this cycle.",
            (self.client.job_wait - job_wait_before).as_secs_f64()
        );
        match result {
            Ok(()) => {
                log_lines::up_to_date();
                self.metrics.pull_succeeded(self.clock.now_ms());
                Ok(stats)
            }
            Err(e) => {
                // Rewind outputs that keep positions to the committed ones.
                self.needs_resume = true;
                if e.is_failure() {
                    self.metrics.pull_failed(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// The window loop: plan the cycle's windows, then fetch, deliver and commit each; the next
    /// window is fetched while the current one is delivered ([`deliver_while_fetching`]).
    async fn pull_windows(&mut self, report: &mut CycleReport) -> Result<(), PullError> {
        let now = self.clock.now_ms();
        let end = self.cycle_end.unwrap_or(now);
        let Some(range) = plan_cycle(
            &self.checkpoint.state().cursors,
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
        let mut ahead = LookAhead::new(self.svc.max_concurrent_jobs);
        let gate = self.gate.clone();
        let (mut fetching, mut delivering) = self.split();
        fetching.size_windows(&mut planner);
        let mut next = fetching.next_window(&mut planner, &mut ahead).await?;
        while let Some(current) = next {
            let received = current.events.len() + current.unreadable.len();
            let w = current.window;
            // A hand-over waits for a window boundary: this window, in hand already, is
            // delivered and committed, and nothing after it is fetched.
            let handing_over = gate.hand_over_requested();
            let fetch_next = async {
                match handing_over {
                    true => Ok(None),
                    false => fetching.next_window(&mut planner, &mut ahead).await,
                }
            };
            // Window w + 1's events stay in hand until w is committed; both count in the budget.
            next = deliver_while_fetching(
                delivering.deliver_window(current, &mut report.totals),
                fetch_next,
            )
            .await?;
            report.totals.received += received as u64;
            report.totals.windows += 1;
            if let Some(progress) = delivering.progress.as_mut() {
                progress(w.to, &report.totals);
            }
            if handing_over {
                return Err(PullError::HandingOver);
            }
            if next.is_some() {
                report.log_partial(fetching.client.stats);
            }
        }
        if range.sweep {
            self.checkpoint.swept(now).await?;
        }
        Ok(())
    }

    /// The puller's parts that fetch windows and those that deliver them, borrowed apart so
    /// that both run at once.
    fn split(&mut self) -> (Fetching<'_>, Delivering<'_>) {
        let fetching = Fetching {
            svc: &self.svc,
            client: &mut self.client,
            clock: &self.clock,
            cancel: &self.cancel,
            budget: &self.budget,
            jobs: &self.jobs,
            bytes_per_event: &mut self.bytes_per_event,
            density: &mut self.density,
            spooling: &self.spool,
            spool: None,
            spool_failed: false,
            metrics: &self.metrics,
        };
        let delivering = Delivering {
            svc: &self.svc,
            outputs: &mut self.outputs,
            checkpoint: &mut self.checkpoint,
            obfuscator: &self.obfuscator,
            environment: self.environment.as_ref(),
            metrics: &self.metrics,
            progress: &mut self.progress,
            clock: &self.clock,
        };
        (fetching, delivering)
    }

    /// Tells the outputs the committed positions (those that keep positions rewind to them).
    async fn resume_outputs(&mut self) -> Result<(), PullError> {
        let table = &self.svc.table;
        let checkpoint = &self.checkpoint;
        let committed = |output: &str| checkpoint.position(output, table);
        let new_positions = self.outputs.resume(table, committed).await?;
        if !new_positions.is_empty() {
            self.checkpoint.save_positions(table, new_positions).await?;
        }
        self.needs_resume = false;
        Ok(())
    }
}

/// Delivers and commits the current window (`deliver`) while the next one is fetched (`fetch`),
/// and returns the fetched one. Commits stay in order: the next window's events are only in
/// hand here and are delivered by the caller after this returns. If the delivery fails, the
/// fetch is dropped (its job abandoned, its bytes released) and the delivery's error returned;
/// if the fetch fails, the delivery still finishes and commits first, as when the windows ran
/// one after the other.
async fn deliver_while_fetching<T>(
    deliver: impl Future<Output = Result<(), PullError>>,
    fetch: impl Future<Output = Result<T, PullError>>,
) -> Result<T, PullError> {
    tokio::pin!(deliver, fetch);
    let mut fetched = None;
    loop {
        tokio::select! {
            delivered = &mut deliver => {
                delivered?;
                return match fetched {
                    Some(fetched) => fetched,
                    None => fetch.await,
                };
            }
            result = &mut fetch, if fetched.is_none() => fetched = Some(result),
        }
    }
}

/// What delivering and committing windows needs of the puller.
struct Delivering<'a> {
    svc: &'a ServiceConfig,
    outputs: &'a mut Outputs,
    checkpoint: &'a mut Checkpoint,
    obfuscator: &'a Obfuscator,
    environment: Option<&'a Environment>,
    metrics: &'a ServiceMetrics,
    progress: &'a mut Option<Progress>,
    /// When a letter was set aside.
    clock: &'a SharedClock,
}

impl Delivering<'_> {
    /// Applies `obfuscation_data` to a batch about to be delivered, counting what it did.
    /// Returns the letters of the events it withheld (not JSON text: nothing can be masked in
    /// them), to be set aside.
    fn obfuscate(
        &self,
        w: Window,
        batch: &mut Vec<Event>,
        stats: &mut CycleStats,
    ) -> Vec<DeadLetter> {
        if self.obfuscator.is_empty() {
            return Vec::new();
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
            // nothing can be masked in them, and they are never delivered in clear. They are
            // set aside with the vendor's bytes (the dead-letter store is the state's, mode
            // 0600) and count as delivered for dedup, or the window would fail on every retry.
            error!(
                "{} event(s) are not JSON text and could not be obfuscated; they were set aside in the dead-letter store instead of delivered, to keep their fields private.",
                report.failed
            );
            stats.obfuscation_failures += report.failed;
        }
        let position = format!("window {} to {}", format_iso(w.from), format_iso(w.to));
        let now = self.clock.now_ms();
        report
            .withheld
            .into_iter()
            .map(|(event, why)| {
                let reason = format!("cannot be obfuscated: {why}");
                DeadLetter::new(
                    &self.svc.table,
                    None,
                    reason,
                    position.clone(),
                    &event.json,
                    now,
                )
            })
            .collect()
    }

    /// Sets a window's unreadable events aside (before it commits, so that a crash loses none),
    /// and counts and logs each once.
    async fn set_aside_unreadable(
        &mut self,
        letters: Vec<DeadLetter>,
        stats: &mut CycleStats,
    ) -> Result<(), PullError> {
        stats.dead_lettered += letters.len() as u64;
        let new = self.checkpoint.set_aside(letters).await?;
        if !new.is_empty() {
            self.metrics
                .dead_lettered(&self.svc.table, None, new.len() as u64);
        }
        for letter in &new {
            warn!(
                "An event of {} cannot be read ({}, {}); it was set aside with its raw bytes instead of delivered, and the service goes on. `state show` lists it (id {}), `state dead-letters --export FILE` writes its raw bytes, and `state discard` removes it once handled.",
                letter.table, letter.position, letter.reason, letter.id
            );
        }
        Ok(())
    }

    /// Delivers a fetched window to every output, then commits it. Its bytes are released when
    /// it is dropped here, delivered or not.
    async fn deliver_window(
        &mut self,
        fetched: Fetched,
        stats: &mut CycleStats,
    ) -> Result<(), PullError> {
        let Fetched {
            window: w,
            events: mut batch,
            unreadable,
            created,
            _held,
        } = fetched;
        self.set_aside_unreadable(unreadable, stats).await?;
        // Stable: events with equal dates keep the server's order.
        batch.sort_by_key(|e| e.date_ms);
        let plan = self.checkpoint.state().dedup.plan(&batch, w.to);
        keep_only(&mut batch, &plan.deliver);
        stats.duplicates += plan.duplicates as u64;
        self.metrics.duplicates_filtered(plan.duplicates);
        // Obfuscate after the dedup plan and before any output: the plan (and the dedup memory
        // it feeds) stays keyed on the vendor's originals, so a re-read is still recognised, and
        // only events that are about to be delivered cost a rewrite.
        let withheld = self.obfuscate(w, &mut batch, stats);
        self.set_aside_unreadable(withheld, stats).await?;
        if let Some(env) = self.environment {
            env.apply_batch(&mut batch);
        }
        // Nothing is delivered without a lease that outlasts the delivery: the gate is asked
        // before each output's turn (see `lease` and `Outputs::deliver`).
        let positions = self.outputs.deliver(&self.svc.table, &batch).await?;
        let (table, now) = (&self.svc.table, self.clock.now_ms());
        refused::set_aside_refused(self.outputs, self.checkpoint, self.metrics, table, w, now)
            .await?;
        stats.sent += batch.len() as u64;
        // Every output confirmed: commit.
        let committed = self
            .checkpoint
            .commit(w, created, plan, positions, self.svc)
            .await;
        match committed {
            // Committed: no output is spared these events any more (see `output::confirmed`).
            Ok(()) => {
                self.outputs.committed(&batch, w.to);
                self.metrics
                    .window_committed(batch.len(), self.clock.now_ms());
            }
            // Whether the write landed is unknown (the next cycle reloads the state): what the
            // outputs confirmed may be committed already, and a memory of it could then hide a
            // late twin from them. Forgotten: the window may reach every output again.
            Err(_) => self.outputs.forget_all(),
        }
        committed?;
        Ok(())
    }
}

/// Keeps the events at `indices` (ascending, as the dedup plan lists them), in place: no copy
/// of the batch.
fn keep_only(events: &mut Vec<Event>, indices: &[usize]) {
    if indices.len() == events.len() {
        return; // the plan delivers every event (indices are distinct and ascending)
    }
    let mut wanted = indices.iter().copied().peekable();
    let mut i = 0;
    events.retain(|_| {
        let keep = wanted.peek() == Some(&i);
        if keep {
            wanted.next();
        }
        i += 1;
        keep
    });
}

/// `use_time_slots_for_retrievals`: the time from `now` to the next wall-clock multiple of
/// `period` (counted from the Unix epoch, so slots of 60 s start at :00 of each minute). A cycle
/// that ran past its slot waits for the next one rather than starting off the grid.
fn until_next_slot(now: Millis, period: Duration) -> Duration {
    let period_ms = (period.as_millis() as Millis).max(1);
    let next = (now.div_euclid(period_ms) + 1) * period_ms;
    Duration::from_millis((next - now) as u64)
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

#[cfg(test)]
mod pipeline_tests {
    use super::collecting::window_cap;
    use super::*;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::from_json(format!("{{\"i\":{i}}}").into()).unwrap())
            .collect()
    }

    #[test]
    fn a_window_holds_what_fits_its_bytes_at_most_max_events_per_window() {
        assert_eq!(window_cap(4_000_000, 50_000, Some(400.0)), 10_000);
        assert_eq!(window_cap(40_000_000, 50_000, Some(400.0)), 50_000);
        assert_eq!(window_cap(4_000_000, 50_000, None), 50_000);
        assert_eq!(
            window_cap(100, 50_000, Some(400.0)),
            0,
            "the planner makes it 1"
        );
    }

    #[test]
    fn the_plan_filters_the_batch_in_place() {
        let mut batch = events(6);
        keep_only(&mut batch, &[0, 2, 5]);
        let kept: Vec<&[u8]> = batch.iter().map(|e| &e.json[..]).collect();
        assert_eq!(kept, [&b"{\"i\":0}"[..], b"{\"i\":2}", b"{\"i\":5}"]);
        let mut all = events(3);
        keep_only(&mut all, &[0, 1, 2]);
        assert_eq!(all.len(), 3);
        keep_only(&mut all, &[]);
        assert!(all.is_empty());
    }

    /// The fetch runs while the delivery waits, and its result is returned after the delivery.
    #[tokio::test]
    async fn the_next_window_is_fetched_while_the_current_one_is_delivered() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let deliver = async {
            // Completes only once the fetch has run: they overlap.
            rx.await.unwrap();
            Ok(())
        };
        let fetch = async {
            tx.send(()).unwrap();
            Ok(7)
        };
        assert_eq!(deliver_while_fetching(deliver, fetch).await.unwrap(), 7);
    }

    /// A failed fetch does not stop the delivery: it finishes (and commits) first.
    #[tokio::test]
    async fn a_failed_fetch_lets_the_delivery_finish_first() {
        let mut delivered = false;
        let deliver = async {
            tokio::task::yield_now().await;
            delivered = true;
            Ok(())
        };
        let fetch = async { Err::<(), _>(PullError::Cancelled) };
        let result = deliver_while_fetching(deliver, fetch).await;
        assert!(matches!(result, Err(PullError::Cancelled)));
        assert!(delivered);
    }

    /// A failed delivery drops the fetch at once (its bytes and job are abandoned) and
    /// returns the delivery's error.
    #[tokio::test]
    async fn a_failed_delivery_abandons_the_fetch() {
        let deliver = async { Err(PullError::Cancelled) };
        let fetch = std::future::pending::<Result<(), PullError>>();
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            deliver_while_fetching(deliver, fetch),
        )
        .await
        .expect("the fetch is not waited for");
        assert!(matches!(result, Err(PullError::Cancelled)));
    }
}
