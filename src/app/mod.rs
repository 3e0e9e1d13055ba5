//! Wiring: builds the store, outputs and pullers from a [`Config`] and runs them.
//!
//! Each input of the config is a tenant (`tenant`): [`run`] starts every valid one with
//! [`start_tenant`] under the `supervisor`, which in the daemon applies each reload (SIGHUP,
//! `--watch-config`; [`crate::reload`]) until the shutdown, then joins them. Each enabled
//! service of a tenant runs as its own task (`service_task`) with its own API client and
//! output instances, so services and tenants are independent: one failing (bad key for one
//! host, an outage of one API) never stops another.
//! With Redis persistence a service pulls only while this process holds its lease. Before any
//! tenant starts, `start_check` checks every output once and names the ones that fail.
//!
//! Shutdown: the first SIGINT/SIGTERM cancels a token that every await point of the pullers
//! watches; a window in flight is abandoned before its checkpoint (it is asked for again after
//! the restart), the pullers close their outputs, each held lease is released at once, and `run`
//! returns. A second signal exits at once. Every task `run` spawns is in a `JoinSet` it owns (each
//! tenant's services, and the `Background` tasks), joined before it returns and aborted if it is
//! dropped: no task outlives `run`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

mod service_task;
mod start_check;
mod supervisor;
mod tenant;

pub use tenant::{start_tenant, SenderRegistry, Shared, TenantHandle};

use crate::clock::SharedClock;
use crate::config::{Config, Loaded, OutputConfig, OutputKind, Persistence};
use crate::isolation::job_cap::JobCap;
use crate::isolation::limiter::input_limiter;
use crate::isolation::puller::Puller;
use crate::isolation::shard::{self, Shard};
use crate::metrics::Metrics;
use crate::output::http::{hec::SplunkHecOutput, HttpOutput};
use crate::output::syslog::stats::{render_stats_lines, SenderStats, StatsHandle};
use crate::output::syslog::SyslogOutput;
use crate::output::{console::ConsoleOutput, file::FileOutput, Output, OutputError};
use crate::pipeline::budget::WindowBudget;
use crate::state::redis::RedisStore;
use crate::state::{StateError, StateStore};
use crate::telemetry;
use service_task::log_connection;
use supervisor::Supervisor;

/// How `run` behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// One catch-up cycle per service, then return.
    pub once: bool,
    /// Keep the state in memory only (`--no-save-state`).
    pub no_save_state: bool,
    /// `--strict`: refuse to start (exit 64) when any input block is invalid, instead of
    /// starting the valid ones, and (exit 1) when an output fails its check at start.
    pub strict: bool,
}

/// Builds the state store of a config (it connects to Redis at its first operation).
pub fn store_for(config: &Config, no_save_state: bool) -> Result<StateStore, StateError> {
    Ok(match (&config.globals.persistence, no_save_state) {
        (Persistence::Filesystem { directory }, false) => StateStore::filesystem(directory.clone()),
        (Persistence::Redis(r), false) => StateStore::Redis(Box::new(RedisStore::new(r)?)),
        _ => StateStore::memory(),
    })
}

/// Says where the state lives. With Redis, checks it answers: a refusal (credentials, database)
/// is fatal; an outage is not (logged once by the store; pulling waits for it).
async fn open_store(store: &StateStore, metrics: &Arc<Metrics>) -> Result<(), StateError> {
    match store {
        StateStore::Filesystem { directory } => {
            info!("Persistence: filesystem, directory {}", directory.display());
            if let Some(w) = crate::state::directory_mode_warning(directory) {
                warn!("{w}");
            }
        }
        StateStore::Memory(_) => warn!("Persistence: memory only; nothing survives a restart."),
        StateStore::Redis(r) => {
            info!(
                "Persistence: Redis at {}, lease_ttl_in_seconds {}",
                r.address(),
                r.ttl().as_secs_f64()
            );
            r.report_to(metrics.clone());
            match r.check().await {
                Err(e) if !e.is_unavailable() => return Err(e),
                Err(_) => {}
                Ok(()) => {
                    warn_about_durability(r).await;
                    // Seen from the start: a wipe later on is then recognised as one.
                    let _ = r.check_generation().await;
                }
            }
        }
    }
    Ok(())
}

/// Builds one instance of each of `outputs`; `clock` stamps their records.
pub fn build_outputs(
    outputs: &[OutputConfig],
    clock: &SharedClock,
) -> Result<Vec<Output>, OutputError> {
    outputs.iter().map(|o| build_output(o, clock)).collect()
}

/// Each output builds itself from its configuration.
fn build_output(o: &OutputConfig, clock: &SharedClock) -> Result<Output, OutputError> {
    let name = o.name.clone();
    Ok(match &o.kind {
        OutputKind::File { directory, mode } => {
            Output::File(FileOutput::new(name, directory.clone(), *mode))
        }
        OutputKind::Console => Output::Console(ConsoleOutput::new(name, clock.clone())),
        OutputKind::Network(n) => {
            Output::Syslog(SyslogOutput::from_config(name, n, clock.clone())?)
        }
        OutputKind::Http(h) => Output::Http(Box::new(HttpOutput::from_config(name, h)?)),
        OutputKind::SplunkHec(h) => {
            Output::SplunkHec(Box::new(SplunkHecOutput::from_config(name, h)?))
        }
        OutputKind::Relp(r) => Output::Relp(Box::new(
            crate::output::relp::RelpOutput::from_config(name, r, clock.clone())?,
        )),
    })
}

/// How long `run` waits, once its services have stopped, for its background tasks to end
/// (the internal sender delivering the services' last words) before aborting them.
const BACKGROUND_STOP_BOUND: Duration = Duration::from_secs(10);

/// The tasks `run` starts besides the services: the metrics listener, the memory log, the
/// sender monitor (ended by `stop`) and the internal-message sender (ended by `stop_last`, after
/// the others, so that it delivers their last words too). [`Background::shutdown`] joins them;
/// dropping the set aborts what is left, so no task outlives `run`, even when the grace period
/// drops `run` itself.
struct Background {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    last: JoinSet<()>,
    stop_last: CancellationToken,
}

impl Background {
    /// `stop` is a child of `cancel`: the listener and the logs end on a shutdown request.
    fn new(cancel: &CancellationToken) -> Background {
        Background {
            tasks: JoinSet::new(),
            stop: cancel.child_token(),
            last: JoinSet::new(),
            // Its own token: it must outlive the pullers to deliver their last words.
            stop_last: CancellationToken::new(),
        }
    }

    /// Stops every task and waits for them, at most `bound` in all; aborts the rest.
    async fn shutdown(mut self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        self.stop.cancel();
        let all_done = tokio::time::timeout_at(deadline, join_all(&mut self.tasks)).await;
        self.stop_last.cancel();
        let last_done = tokio::time::timeout_at(deadline, join_all(&mut self.last)).await;
        if all_done.is_err() || last_done.is_err() {
            tracing::debug!(
                "Background tasks still running after {} seconds were aborted.",
                bound.as_secs()
            );
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Starts the internal-message sender for the outputs that asked for it (`internal_senders`
/// in Devo's words: its own connection per output).
fn start_internal_messages(
    config: &Config,
    clock: &SharedClock,
    tasks: &mut Background,
) -> Result<(), OutputError> {
    let outputs = config
        .outputs
        .iter()
        .filter(|o| matches!(&o.kind, OutputKind::Network(n) if n.internal_messages))
        .map(|o| build_output(o, clock))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = crate::internal::Identity {
        collector_name: config.globals.name.clone(),
        input_name: "proofpoint_isolation".into(),
    };
    if let Some(sender) = crate::internal::start(outputs, identity, tasks.stop_last.clone()) {
        tasks.last.spawn(sender);
        info!("Internal messages (warnings and errors) are delivered to Devo as devo.collectors.out.local.*");
    }
    Ok(())
}

/// Starts the metrics listener (`globals.metrics_listen`) and, in the daemon, the memory log.
async fn start_listener_and_memory_log(
    config: &Config,
    metrics: &Arc<Metrics>,
    options: RunOptions,
    clock: &SharedClock,
    tasks: &mut Background,
) -> anyhow::Result<()> {
    if let Some(addr) = config.globals.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the metrics listener (globals.metrics_listen) on {addr}")
        })?;
        info!(
            "Serving metrics and health on http://{} (/metrics, /health, /ready)",
            listener.local_addr().unwrap_or(addr)
        );
        let (metrics, clock, stop) = (metrics.clone(), clock.clone(), tasks.stop.clone());
        tasks.tasks.spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, metrics, clock, stop).await {
                error!("The metrics listener stopped: {e}");
            }
        });
    }
    if !options.once {
        let stop = tasks.stop.clone();
        let period = config.globals.memory_log_period;
        tasks.tasks.spawn(crate::memory::log_every(period, stop));
    }
    Ok(())
}

/// Logs the config's warnings once logging is up.
pub fn log_warnings(config: &Config) {
    for w in &config.warnings {
        warn!("Configuration: {w}");
    }
}

/// Logs each invalid input's problems (errors, with its id): `run` starts the other inputs.
pub fn log_invalid_inputs(config: &Config) {
    for bad in &config.invalid_inputs {
        let id = bad.id.as_deref().unwrap_or("without a valid id");
        error!(
            "Input {id} ({}) is not started: {} problem(s) in its configuration block; the other inputs run",
            bad.source,
            bad.problems.len()
        );
        for p in &bad.problems {
            error!("Configuration of input {id}: {p}");
        }
    }
}

/// Runs the collector from the `loaded` configuration with `clock` as its wall clock. Returns
/// whether everything succeeded (`--once`), or whether the daemon stopped cleanly.
pub async fn run(
    loaded: Loaded,
    options: RunOptions,
    mut reloads: Option<crate::reload::Source>,
    clock: SharedClock,
    cancel: CancellationToken,
) -> anyhow::Result<bool> {
    let Loaded { written, config } = loaded;
    let store = Arc::new(store_for(&config, options.no_save_state)?);
    // Held until the process ends: one process per filesystem state.
    let _state_lock = store.lock()?;
    let metrics = match &*store {
        StateStore::Redis(_) => Metrics::new().with_leases(),
        _ => Metrics::new(),
    };
    let metrics = Arc::new(metrics);
    open_store(&store, &metrics).await?;
    if config.services().next().is_none() {
        warn!("The \"input\" configuration entry for proofpoint_isolation is not enabled");
        return Ok(true);
    }
    let Some(failed) = start_check::check_outputs(&config, &clock, &cancel).await else {
        return Ok(true); // a shutdown request during the check: nothing was started
    };
    if options.strict && !failed.is_empty() {
        anyhow::bail!(
            "run --strict starts nothing while an output fails its check ({}); fix it, or run without --strict to start and retry it",
            failed.join(", ")
        );
    }
    let mut background = Background::new(&cancel);
    start_internal_messages(&config, &clock, &mut background)?;
    start_listener_and_memory_log(&config, &metrics, options, &clock, &mut background).await?;
    let shard = start_sharding(&config, &store, &metrics, options, &mut background).await;
    let shared = Shared {
        store,
        metrics,
        shard,
        clock: clock.clone(),
        // One window memory budget for every service of the process.
        budget: WindowBudget::new(
            config.globals.window_memory_budget,
            config.services().count(),
        ),
        jobs: JobCap::new(config.globals.max_concurrent_jobs),
        options,
        senders: SenderRegistry::default(),
    };
    if !options.once {
        let period = config.globals.sender_stats_period;
        let stop = background.stop.clone();
        let senders = shared.senders.clone();
        background
            .tasks
            .spawn(sender_monitor(senders, period, clock, stop));
    }
    if let Some(source) = reloads.as_mut() {
        start_watcher(source, &mut background);
    }
    let supervisor = Supervisor::start(&config, written, shared, &cancel)?;
    let all_ok = supervisor.run(reloads).await;
    background.shutdown(BACKGROUND_STOP_BOUND).await;
    Ok(all_ok)
}

/// With `--watch-config`, the watcher of the config's files (a background task).
fn start_watcher(source: &mut crate::reload::Source, background: &mut Background) {
    if let Some((trigger, running)) = source.watch.take() {
        info!(
            "Watching {} (and its inputs_dir) for changes every {} seconds (--watch-config)",
            source.loader.path().display(),
            crate::reload::WATCH_PERIOD.as_secs()
        );
        background.tasks.spawn(crate::reload::watch(
            source.loader.clone(),
            running,
            crate::reload::WATCH_PERIOD,
            trigger,
            background.stop.clone(),
        ));
    }
}

/// With Redis persistence, the daemon shares the leases with the other replicas
/// ([`crate::isolation::shard`]): a first heartbeat now (so that the first takes already know
/// the replicas; an outage is not fatal), then one every TTL/3 until the shutdown request.
async fn start_sharding(
    config: &Config,
    store: &Arc<StateStore>,
    metrics: &Arc<Metrics>,
    options: RunOptions,
    background: &mut Background,
) -> Option<Arc<Shard>> {
    let redis = store.redis().filter(|_| !options.once)?;
    let services = config.services().count();
    let shard = Shard::new(crate::state::replica_name(), services, redis.ttl());
    if let Persistence::Redis(r) = &config.globals.persistence {
        let longest_period = config.services().map(|(_, s)| s.request_period).max();
        shard.watch_unpulled(r.unpulled_after(longest_period.unwrap_or_default()));
    }
    shard.beat(redis).await;
    metrics.replicas(shard.live(), shard.fair_share());
    info!(
        "Sharing the leases with the other replicas as {}: {} live, the fair share is {} of {services} service(s).",
        shard.replica(),
        shard.live(),
        shard.fair_share(),
    );
    let stop = background.stop.clone();
    let beats = shard::beat_every(shard.clone(), store.clone(), metrics.clone(), stop);
    background.tasks.spawn(beats);
    Some(shard)
}

/// Logs Devo's sender statistics (devo-platform.md §3.5) for each network output every
/// `sender_stats_period_in_sec`. Each service has its own connection to an output; the lines
/// sum them, so they read as Devo's one sender manager per output. The outputs are read from
/// the registry each period: tenants come and go.
async fn sender_monitor(
    senders: SenderRegistry,
    period: std::time::Duration,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut names: Vec<String> = Vec::new();
    note_new_outputs(&senders.snapshot(), &mut names, period);
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let current = senders.snapshot();
        note_new_outputs(&current, &mut names, period);
        let now = std::time::SystemTime::from(clock.now());
        for name in &names {
            let stats = current
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, h)| h.start_period(now))
                .reduce(sum_stats);
            if let Some(stats) = stats {
                let span = telemetry::monitor_span(name);
                for line in render_stats_lines(&stats, now) {
                    span.in_scope(|| info!("{line}"));
                }
            }
        }
    }
}

/// Devo's start line of a sender monitor, for each output name not seen before.
fn note_new_outputs(
    current: &[(String, StatsHandle)],
    names: &mut Vec<String>,
    period: std::time::Duration,
) {
    for (name, _) in current {
        if !names.contains(name) {
            telemetry::monitor_span(name)
                .in_scope(|| info!("Starting thread (every {} seconds)", period.as_secs()));
            names.push(name.clone());
        }
    }
}

fn sum_stats(a: SenderStats, b: SenderStats) -> SenderStats {
    SenderStats {
        messages_total: a.messages_total + b.messages_total,
        bytes_total: a.bytes_total + b.bytes_total,
        batches_total: a.batches_total + b.batches_total,
        failures_total: a.failures_total + b.failures_total,
        connections_total: a.connections_total + b.connections_total,
        busy: a.busy + b.busy,
        period_start: a.period_start.min(b.period_start),
        period_messages: a.period_messages + b.period_messages,
        period_bytes: a.period_bytes + b.period_bytes,
    }
}

/// `validate`: the outputs each valid input uses reachable, then each enabled service's
/// authentication. With several inputs, each line names the input(s) it is about.
pub async fn validate(config: &Config, clock: &SharedClock) -> bool {
    let mut ok = true;
    for (outputs, ids) in distinct_outputs(config) {
        let whose = match config.multi_tenant {
            true => format!(" (input {})", ids.join(", ")),
            false => String::new(),
        };
        ok &= validate_outputs(outputs, &whose, clock).await;
    }
    ok &= validate_persistence(config).await;
    let store = Arc::new(StateStore::memory());
    let mut limiters = std::collections::HashMap::new();
    for (input, svc) in config.services() {
        let input_limiter = limiters
            .entry(input.id.clone())
            .or_insert_with(|| input_limiter(&input.pacing.requests_limits))
            .clone();
        let span = telemetry::setup_span(&input.name, &input.id, svc.service);
        span.in_scope(|| log_connection(svc));
        let result = async {
            let mut puller = Puller::new(
                input,
                &input_limiter,
                svc.clone(),
                Vec::new(),
                store.clone(),
                CancellationToken::new(),
                clock.clone(),
            )?;
            puller.setup().await.map_err(anyhow::Error::from)
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = result {
            span.in_scope(|| error!("Input {}, service {}: {e:#}", input.id, svc.service));
            ok = false;
        }
    }
    ok
}

/// Each distinct set of outputs of the valid inputs, with the ids of the inputs that use it (the
/// global outputs are checked once, not once per tenant).
fn distinct_outputs(config: &Config) -> Vec<(&[OutputConfig], Vec<&str>)> {
    let mut sets: Vec<(&[OutputConfig], String, Vec<&str>)> = Vec::new();
    for input in &config.inputs {
        // Per-tenant file directories aside, a set is the same when it reads the same.
        let mut same = input.outputs.clone();
        for o in &mut same {
            if let (OutputKind::File { directory, .. }, true) = (&mut o.kind, config.multi_tenant) {
                directory.pop();
            }
        }
        let key = format!("{same:?}");
        match sets.iter_mut().find(|(_, k, _)| *k == key) {
            Some((_, _, ids)) => ids.push(&input.id),
            None => sets.push((&input.outputs, key, vec![&input.id])),
        }
    }
    sets.into_iter().map(|(o, _, ids)| (o, ids)).collect()
}

/// `validate`: that each of `outputs` is usable; `whose` names the inputs using them.
async fn validate_outputs(outputs: &[OutputConfig], whose: &str, clock: &SharedClock) -> bool {
    let mut outputs = match build_outputs(outputs, clock) {
        Ok(outputs) => outputs,
        Err(e) => {
            error!("{e}{whose}");
            return false;
        }
    };
    let mut ok = true;
    for o in &mut outputs {
        match o.check().await {
            Ok(()) => info!("Output {} is usable{whose}.", o.name()),
            Err(e) => {
                error!("{e}{whose}");
                ok = false;
            }
        }
    }
    ok
}

/// `validate`: with Redis persistence, that it answers and accepts the credentials (connect,
/// `AUTH`, `SELECT` the database, `PING`).
async fn validate_persistence(config: &Config) -> bool {
    let Persistence::Redis(r) = &config.globals.persistence else {
        return true;
    };
    match RedisStore::new(r) {
        Ok(store) => match store.check().await {
            Ok(()) => {
                match store.master() {
                    Some(master) => info!(
                        "Redis at {} answers: the sentinels name {master} as the master.",
                        store.address()
                    ),
                    None => info!("Redis at {} answers.", store.address()),
                }
                warn_about_durability(&store).await;
                true
            }
            Err(e) => {
                error!("Persistence: {e}");
                false
            }
        },
        Err(e) => {
            error!("Persistence: {e}");
            false
        }
    }
}

/// Says how Redis can lose the states (no persistence, an evicting policy), if it can.
async fn warn_about_durability(store: &RedisStore) {
    // An outage here was said already (or is said by the next operation).
    for w in store.durability_warnings().await.unwrap_or_default() {
        warn!("{w}");
    }
}

/// When the first shutdown signal arrived, for the `[EXIT]` line.
static SIGNALLED_AT: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Waits for SIGINT or SIGTERM, cancels `token` (Devo's wording), and exits the process at once
/// on a second signal.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let (name, code) = wait_for_signal().await;
    let _ = SIGNALLED_AT.set(std::time::Instant::now());
    warn!("Received the \"{name}\" system signal (code: {code}), all the processes will be gracefully stopped (a second signal stops at once)");
    token.cancel();
    let (name, _) = wait_for_signal().await;
    error!("Received the \"{name}\" system signal again; exiting now without waiting.");
    std::process::exit(130);
}

/// Bounds a graceful shutdown: resolves `grace` after `token` is cancelled.
pub async fn grace_elapsed(token: CancellationToken, grace: std::time::Duration) {
    token.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Devo's last line, when the process ends after a signal.
pub fn log_exit() {
    if let Some(at) = SIGNALLED_AT.get() {
        info!(
            "[EXIT] Process \"MainProcess\" completely terminated (elapsed time since the system signal was received: {:.3}s)",
            at.elapsed().as_secs_f64()
        );
    }
}

async fn wait_for_signal() -> (&'static str, i32) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = int.recv() => ("SIGINT", 2),
            _ = term.recv() => ("SIGTERM", 15),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ("SIGINT", 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that ends when `stop` fires.
    async fn stops_on(stop: CancellationToken) {
        stop.cancelled().await
    }

    /// A task that ignores cancellation; `alive` is dropped (closed) when the task is dropped.
    async fn ignores_cancellation(alive: tokio::sync::oneshot::Sender<()>) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(alive);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_joins_tasks_that_stop_at_once() {
        let cancel = CancellationToken::new();
        let mut background = Background::new(&cancel);
        background.tasks.spawn(stops_on(background.stop.clone()));
        background
            .last
            .spawn(stops_on(background.stop_last.clone()));
        let started = tokio::time::Instant::now();
        background.shutdown(BACKGROUND_STOP_BOUND).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_task_stops_only_after_the_others_have() {
        let cancel = CancellationToken::new();
        let mut background = Background::new(&cancel);
        let (said, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let stop = background.stop.clone();
        let said_too = said.clone();
        background.tasks.spawn(async move {
            stop.cancelled().await;
            // A last word, after a moment.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = said_too.send("other");
        });
        let stop_last = background.stop_last.clone();
        background.last.spawn(async move {
            stop_last.cancelled().await;
            let _ = said.send("last");
        });
        background.shutdown(BACKGROUND_STOP_BOUND).await;
        assert_eq!(heard.recv().await, Some("other"));
        assert_eq!(heard.recv().await, Some("last"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_stop_is_aborted_at_the_bound() {
        let cancel = CancellationToken::new();
        let mut background = Background::new(&cancel);
        let (alive, dropped) = tokio::sync::oneshot::channel();
        background.tasks.spawn(ignores_cancellation(alive));
        let started = tokio::time::Instant::now();
        background.shutdown(BACKGROUND_STOP_BOUND).await;
        assert_eq!(started.elapsed(), BACKGROUND_STOP_BOUND);
        // Aborted, not left running: its future (and the sender it holds) is gone.
        let gone = tokio::time::timeout(Duration::from_secs(1), dropped).await;
        assert!(matches!(gone, Ok(Err(_))), "{gone:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_run_aborts_its_background_tasks() {
        // What happens when the grace period elapses: `run` (and the set) is dropped.
        let cancel = CancellationToken::new();
        let mut background = Background::new(&cancel);
        let (alive, dropped) = tokio::sync::oneshot::channel();
        background.last.spawn(ignores_cancellation(alive));
        drop(background);
        let gone = tokio::time::timeout(Duration::from_secs(1), dropped).await;
        assert!(matches!(gone, Ok(Err(_))), "{gone:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_request_stops_the_listener_and_logs_but_not_the_internal_sender() {
        let cancel = CancellationToken::new();
        let background = Background::new(&cancel);
        cancel.cancel();
        assert!(background.stop.is_cancelled());
        assert!(!background.stop_last.is_cancelled());
    }
}
