//! Tenants at run time: one input block of the config, its services' tasks, and its own cancel
//! token.
//!
//! What every tenant of the process shares is in [`Shared`]: the state store, the metrics, the
//! sharding coordinator (the daemon on Redis), the clock, the window memory budget, the job cap,
//! the run options and the registry of sender statistics.
//! Everything else is the tenant's own: each service has its own API client (its own retries,
//! backoff and request limits; the input's limiter is shared by its services, because the
//! vendor's quota is per key, and with Redis persistence by every replica, counted in Redis),
//! its own output instances and its own lease. A tenant whose key is
//! refused, or whose API fails for hours, only keeps its own tasks busy.
//!
//! [`start_tenant`] spawns the tenant's service tasks under a child of the process's token;
//! [`TenantHandle::stop`] cancels that child alone (a window in flight is finished or abandoned as
//! on shutdown, the leases are released) and joins the tasks, so a reload can stop one tenant
//! while the others go on.

use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, Instrument};

use super::service_task::ServiceTask;
use super::RunOptions;
use crate::api::client::{self, ApiContext};
use crate::api::job_cap::JobCap;
use crate::api::limiter::{input_limiter, InputLimiter};
use crate::app::outputs::build_outputs;
use crate::audit::schedule::ScheduledAudit;
use crate::clock::SharedClock;
use crate::config::{InputConfig, ServiceConfig};
use crate::ha::lease::{Lease, LeaseContext};
use crate::ha::shard::Shard;
use crate::logging;
use crate::metrics::Metrics;
use crate::output::net::stats::StatsHandle;
use crate::pipeline::budget::WindowBudget;
use crate::puller::Puller;
use crate::state::StateStore;

/// What every tenant of the process shares.
pub struct Shared {
    pub(super) store: Arc<StateStore>,
    pub(super) metrics: Arc<Metrics>,
    /// With Redis persistence (the daemon): the coordinator of this replica's share of the
    /// leases ([`crate::ha::shard`]).
    pub(super) shard: Option<Arc<Shard>>,
    pub(super) clock: SharedClock,
    /// The window memory budget of the process.
    pub(super) budget: WindowBudget,
    /// The process's cap on API jobs alive at once (`globals.max_concurrent_jobs`).
    pub(super) jobs: JobCap,
    /// The share of `jobs` the daemon's audits draw from ([`audit_share`]).
    pub(super) audit_jobs: JobCap,
    /// Where and how much large jobs are spooled (`globals.spool_directory`,
    /// `globals.spool_max_size_in_mb`).
    pub(super) spool: crate::config::SpoolSettings,
    /// `globals.audit_interval_in_hours`: each service's audit task (`audit::schedule`);
    /// `None`: none.
    pub(super) audit_interval: Option<std::time::Duration>,
    pub(super) options: RunOptions,
    /// The network outputs' sender statistics, summed per output name by the sender monitor.
    pub(super) senders: SenderRegistry,
}

/// The sender statistics of every running tenant's network outputs, by tenant.
#[derive(Clone, Debug, Default)]
pub struct SenderRegistry(Arc<Mutex<Vec<Registered>>>);

#[derive(Clone, Debug)]
struct Registered {
    tenant: String,
    output: String,
    stats: StatsHandle,
}

impl SenderRegistry {
    /// Adds one output instance of `tenant`.
    fn register(&self, tenant: &str, output: &str, stats: StatsHandle) {
        self.lock().push(Registered {
            tenant: tenant.to_owned(),
            output: output.to_owned(),
            stats,
        });
    }

    /// Drops a stopped tenant's outputs.
    fn forget(&self, tenant: &str) {
        self.lock().retain(|r| r.tenant != tenant);
    }

    /// Every registered output instance now, as (output name, statistics).
    pub(super) fn snapshot(&self) -> Vec<(String, StatsHandle)> {
        self.lock()
            .iter()
            .map(|r| (r.output.clone(), r.stats.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Registered>> {
        // Held only to copy or edit the list; a panic there leaves a valid list.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running tenant: its services' tasks and its own cancel token (a child of the process's).
pub struct TenantHandle {
    pub id: String,
    cancel: CancellationToken,
    tasks: JoinSet<bool>,
    senders: SenderRegistry,
    metrics: Arc<Metrics>,
}

impl TenantHandle {
    /// Stops the tenant: each service's window in flight is finished or abandoned as on
    /// shutdown, and its lease released. Returns whether every service stopped cleanly.
    pub async fn stop(mut self) -> bool {
        self.cancel.cancel();
        let ok = self.join().await;
        self.senders.forget(&self.id);
        self.metrics.forget_input(&self.id);
        ok
    }

    /// Waits for every service task (the end of `--once`, or of a shutdown); `true` when each
    /// succeeded.
    pub async fn join(&mut self) -> bool {
        let mut all_ok = true;
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(ok) => all_ok &= ok,
                Err(e) => {
                    error!("A service task of input {} failed: {e}", self.id);
                    all_ok = false;
                }
            }
        }
        all_ok
    }
}

/// Starts the enabled services of `input`, each as its own task, under a child of
/// `process_cancel`.
pub fn start_tenant(
    input: &InputConfig,
    shared: &Shared,
    process_cancel: &CancellationToken,
) -> anyhow::Result<TenantHandle> {
    let mut handle = TenantHandle {
        id: input.id.clone(),
        cancel: process_cancel.child_token(),
        tasks: JoinSet::new(),
        senders: shared.senders.clone(),
        metrics: shared.metrics.clone(),
    };
    if input.enabled {
        // One limiter for the input's services: they share one API key.
        let input_limiter = input_limiter(&input.pacing.requests_limits);
        for svc in &input.services {
            let task = service_task(input, &input_limiter, svc, shared, &handle.cancel)?;
            let (name, id) = (&input.name, &input.id);
            let span = logging::puller_span(name, id, svc.service);
            let setup_span = logging::setup_span(name, id, svc.service);
            handle
                .tasks
                .spawn(task.pull_until_stopped(setup_span).instrument(span.clone()));
            if let Some(audit) = scheduled_audit(input, &input_limiter, svc, shared) {
                let cancel = handle.cancel.clone();
                handle.tasks.spawn(audit.run_until(cancel).instrument(span));
            }
        }
    }
    Ok(handle)
}

/// The share of the process's job cap its daemon's audits draw from: a quarter (at least one),
/// so that the audits of a thousand services, which start near the same time, never hold or
/// queue the whole cap ahead of the pullers' windows (`api::job_cap`).
pub fn audit_share(jobs: &JobCap, max_concurrent_jobs: usize) -> JobCap {
    jobs.share((max_concurrent_jobs / 4).max(1))
}

/// The daemon's audit task of one service (`audit::schedule`), unless `--once` or
/// `audit_interval_in_hours: 0`.
pub(super) fn scheduled_audit(
    input: &InputConfig,
    input_limiter: &InputLimiter,
    svc: &ServiceConfig,
    shared: &Shared,
) -> Option<ScheduledAudit> {
    let interval = shared.audit_interval.filter(|_| !shared.options.once)?;
    Some(ScheduledAudit {
        input: input.clone(),
        svc: svc.clone(),
        store: shared.store.clone(),
        limiter: input_limiter.clone(),
        jobs: shared.audit_jobs.clone(),
        metrics: shared.metrics.clone(),
        clock: shared.clock.clone(),
        interval,
    })
}

/// Builds one service's task: its outputs, its puller and its lease.
fn service_task(
    input: &InputConfig,
    input_limiter: &InputLimiter,
    svc: &ServiceConfig,
    shared: &Shared,
    cancel: &CancellationToken,
) -> anyhow::Result<ServiceTask> {
    shared.metrics.expect_service(&input.id, svc.service);
    let outputs = build_outputs(&input.outputs, &shared.clock)?;
    for o in &outputs {
        if let Some(stats) = o.sender_stats() {
            shared.senders.register(&input.id, o.name(), stats);
        }
    }
    let api = ApiContext {
        limiter: input_limiter,
        store: &shared.store,
        cancel: cancel.clone(),
        clock: shared.clock.clone(),
    };
    // The puller runs the setup check itself, retried, before each lease it takes.
    let (client, _setup_check) = client::build(input, svc, api)?;
    let puller = Puller::new(
        input,
        svc.clone(),
        client,
        outputs,
        shared.store.clone(),
        cancel.clone(),
        shared.clock.clone(),
    )
    .with_budget(shared.budget.clone())
    .with_job_cap(shared.jobs.clone())
    .with_spool(shared.spool.clone())
    .with_metrics(&shared.metrics);
    let lease = Lease::build(
        &input.id,
        svc.service,
        LeaseContext {
            store: &shared.store,
            metrics: shared.metrics.service(&input.id, svc.service),
            shard: shared.shard.as_ref(),
        },
    );
    Ok(ServiceTask {
        puller,
        svc: svc.clone(),
        lease,
        options: shared.options,
        cancel: cancel.clone(),
    })
}
