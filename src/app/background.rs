//! The tasks `run` starts besides the services, and how they stop: the internal-message sender,
//! the metrics listener, the memory log, the config watcher, the sharding heartbeat (and the
//! sender monitor, `sender_monitor`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::RunOptions;
use crate::app::outputs::build_outputs;
use crate::clock::SharedClock;
use crate::config::{Config, OutputConfig, Persistence};
use crate::ha::shard::{self, Shard};
use crate::logging::InternalTap;
use crate::metrics::{MemoryProbe, Metrics};
use crate::output::OutputError;
use crate::pipeline::budget::WindowBudget;
use crate::state::StateStore;

/// How long `run` waits, once its services have stopped, for its background tasks to end
/// (the internal sender delivering the services' last words) before aborting them.
pub(super) const BACKGROUND_STOP_BOUND: Duration = Duration::from_secs(10);

/// The tasks `run` starts besides the services: the metrics listener, the memory log, the
/// sender monitor (ended by `stop`) and the internal-message sender (ended by `stop_last`, after
/// the others, so that it delivers their last words too). [`Background::shutdown`] joins them;
/// dropping the set aborts what is left, so no task outlives `run`, even when the grace period
/// drops `run` itself.
pub(super) struct Background {
    pub(super) tasks: JoinSet<()>,
    pub(super) stop: CancellationToken,
    pub(super) last: JoinSet<()>,
    pub(super) stop_last: CancellationToken,
}

impl Background {
    /// `stop` is a child of `cancel`: the listener and the logs end on a shutdown request.
    pub(super) fn new(cancel: &CancellationToken) -> Background {
        Background {
            tasks: JoinSet::new(),
            stop: cancel.child_token(),
            last: JoinSet::new(),
            // Its own token: it must outlive the pullers to deliver their last words.
            stop_last: CancellationToken::new(),
        }
    }

    /// Stops every task and waits for them, at most `bound` in all; aborts the rest.
    pub(super) async fn shutdown(mut self, bound: Duration) {
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
pub(super) fn start_internal_messages(
    config: &Config,
    clock: &SharedClock,
    tap: &InternalTap,
    tasks: &mut Background,
) -> Result<(), OutputError> {
    let wanted: Vec<OutputConfig> = (config.outputs.iter())
        .filter(|o| o.kind.internal_messages())
        .cloned()
        .collect();
    let outputs = build_outputs(&wanted, clock)?;
    let identity = crate::devo::internal_messages::Identity {
        collector_name: config.globals.name.clone(),
        input_name: "proofpoint_isolation".into(),
    };
    if let Some(sender) =
        crate::devo::internal_messages::start(outputs, identity, tap, tasks.stop_last.clone())
    {
        tasks.last.spawn(sender);
        info!("Internal messages (warnings and errors) are delivered to Devo as devo.collectors.out.local.*");
    }
    Ok(())
}

/// Starts the metrics listener (`globals.metrics_listen`) and, in the daemon, the memory log.
pub(super) async fn start_listener_and_memory_log(
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
            if let Err(e) =
                crate::metrics::serve(listener, metrics, clock, crate::state::replica_name(), stop)
                    .await
            {
                error!("The metrics listener stopped: {e}");
            }
        });
    }
    if !options.once {
        let stop = tasks.stop.clone();
        let period = config.globals.memory_log_period;
        tasks
            .tasks
            .spawn(crate::devo::gc_line::log_every(period, stop));
    }
    Ok(())
}

/// With `--watch-config`, the watcher of the config's files (a background task).
pub(super) fn start_watcher(source: &mut crate::reload::Source, background: &mut Background) {
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
/// ([`crate::ha::shard`]): a first heartbeat now (so that the first takes already know
/// the replicas; an outage is not fatal), then one every TTL/3 until the shutdown request.
pub(super) async fn start_sharding(
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

/// What the memory gauges read at each scrape (`metrics::memory`): the resident set size from
/// `/proc` (as Devo's `[GC]` line reads it) and the process's window memory budget.
#[derive(Debug)]
pub(super) struct ProcessMemory(pub(super) WindowBudget);

impl MemoryProbe for ProcessMemory {
    fn resident_bytes(&self) -> Option<u64> {
        crate::devo::gc_line::read().map(|sample| sample.rss)
    }

    fn window_budget(&self) -> (u64, u64) {
        (self.0.whole(), self.0.held())
    }
}
