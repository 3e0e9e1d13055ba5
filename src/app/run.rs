//! `run`: the collector from a loaded config, until `--once` ends or the shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::background::{
    start_internal_messages, start_listener_and_memory_log, start_sharding, start_watcher,
    Background, ProcessMemory, BACKGROUND_STOP_BOUND,
};
use super::sender_monitor::sender_monitor;
use super::store::open_store;
use super::supervisor::Supervisor;
use super::tenant::audit_share;
use super::{start_check, RunOptions, SenderRegistry, Shared};
use crate::api::job_cap::JobCap;
use crate::clock::SharedClock;
use crate::config::Loaded;
use crate::logging::InternalTap;
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::pipeline::budget::WindowBudget;
use crate::state::StateStore;

/// Runs the collector from the `loaded` configuration with `clock` as its wall clock. Succeeds if everything was delivered
/// (`--once`), or if the daemon stopped cleanly.
pub async fn run_collector(
    loaded: Loaded,
    options: RunOptions,
    mut reloads: Option<crate::reload::Source>,
    clock: SharedClock,
    tap: InternalTap,
    cancel: CancellationToken,
) -> anyhow::Result<Outcome> {
    let Loaded { written, config } = loaded;
    let (store, store_health) =
        crate::state::build(&config.globals.persistence, options.no_save_state)?;
    // Held until the process ends: one process per filesystem state.
    let _state_lock = store.lock()?;
    let metrics = match &*store {
        StateStore::Redis(_) => Metrics::new().with_leases(),
        _ => Metrics::new(),
    };
    let metrics = Arc::new(metrics);
    open_store(&store, store_health, &metrics).await?;
    if config.services().next().is_none() {
        warn!("The \"input\" configuration entry for proofpoint_isolation is not enabled");
        return Ok(Outcome::Succeeded);
    }
    let Some(failed) = start_check::check_outputs(&config, &clock, &cancel).await else {
        return Ok(Outcome::Succeeded); // a shutdown request during the check: nothing was started
    };
    if options.strict && !failed.is_empty() {
        anyhow::bail!(
            "run --strict starts nothing while an output fails its check ({}); fix it, or run without --strict to start and retry it",
            failed.join(", ")
        );
    }
    let mut background = Background::new(&cancel);
    start_internal_messages(&config, &clock, &tap, &mut background)?;
    start_listener_and_memory_log(&config, &metrics, options, &clock, &mut background).await?;
    let shard = start_sharding(&config, &store, &metrics, options, &mut background).await;
    let jobs = JobCap::new(config.globals.max_concurrent_jobs);
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
        audit_jobs: audit_share(&jobs, config.globals.max_concurrent_jobs),
        jobs,
        spool: config.globals.spool.clone(),
        audit_interval: config.globals.audit_interval,
        options,
        senders: SenderRegistry::default(),
    };
    shared
        .metrics
        .watch_memory(Box::new(ProcessMemory(shared.budget.clone())));
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
    let all_ok = supervisor.reload_until_shutdown(reloads).await;
    background.shutdown(BACKGROUND_STOP_BOUND).await;
    Ok(Outcome::succeeded_if(all_ok))
}
