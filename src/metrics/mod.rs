//! Prometheus metrics, health and readiness, served by the optional HTTP listener
//! (`globals.metrics_listen`).
//!
//! One [`Metrics`] per process, created in `app::run_collector` and passed explicitly (an `Arc`)
//! to each service's puller and API client; nothing is global, so tests, `validate` and
//! `backfill` can build clients and pullers without a registry (they get a private, unserved
//! one). Business code calls one method of
//! [`ServiceMetrics`] per thing counted, so the counting points stay one line each.
//!
//! Labels are few and bounded: `input` (the input ids of the config: one per tenant), `service`
//! (2 values), `output` (the configured names), `table` (one per service) and `outcome` (the
//! fixed [`Outcome`] set). Every per-service family has `input` before `service`, so the series
//! grow linearly with the tenants: 16 per (input, service) (19 with Redis persistence), plus 2
//! per (input, output, table), 1 per (input, service, output) (`output_up`), one per
//! obfuscation rule that fell back and one per kind of [`JobFault`] that occurred (the README's
//! metrics section has the count). Every family is listed from the start, series or not
//! (`listed`), so that a scrape names every metric the shipped rules and dashboard read.
//! Counter names get `_total` from the encoder; units (`_seconds`) are part of the registered
//! name.
//!
//! Readiness is kept here too, because it is fed by the same call sites: a service is ready once
//! its setup (authentication check) passed, an output once its last delivery attempt was
//! confirmed (or before any attempt: `run` checks each output once at start, in `app::start_check`,
//! and logs what it finds, without touching readiness; `validate` checks them too).
//!
//! The files, one job each: `families` registers the metric families and holds the counting
//! points ([`ServiceMetrics`]); `output_up` and `memory` hold the gauges the shipped alerts
//! read (`deploy/prometheus/`); `readiness` keeps what `/ready` says; `recent` keeps each
//! service's recent past (its last failure, its deliveries in the last minute and hour, its
//! lease's holder); `status` builds what `/status` and the page show from both; `page` renders
//! the status page at `/` (HTML); `server` serves `/metrics`, `/health`, `/ready`, `/status` and
//! `/`; `labels` holds the label sets. The types are declared here, where each of them can read
//! their fields.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::service::Service;
use crate::timestamp::Millis;

mod families;
mod labels;
mod listed;
mod memory;
mod output_up;
pub mod page;
mod readiness;
mod recent;
mod server;
pub mod status;
#[cfg(test)]
mod tests;

use families::DeadLetterSeries;
pub use labels::{JobFault, Outcome};
use labels::{
    JobFaultLabels, OutputLabels, OutputUpLabels, RequestLabels, RuleLabels, ServiceLabels,
};
pub use memory::MemoryProbe;
pub use server::serve;

/// One service of one input: what the per-service state is kept by.
type ServiceId = (String, Service);

type SecondsGauge = Gauge<f64, AtomicU64>;

/// What `/ready` reports.
#[derive(Debug, Default)]
struct Readiness {
    /// Per enabled (input, service): `None` once setup passed, else why not.
    services: BTreeMap<ServiceId, Option<String>>,
    /// Per (input, service, output): `None` when the last delivery was confirmed (or none yet).
    outputs: BTreeMap<(ServiceId, String), Option<String>>,
    /// With Redis persistence: `Some(problem)` while it is unreachable.
    persistence: Option<String>,
    /// With Redis persistence: whether this process holds each (input, service)'s lease.
    leases: Option<BTreeMap<ServiceId, bool>>,
    /// With Redis persistence, once the replicas' heartbeats ran: (live replicas, fair share).
    replicas: Option<(usize, usize)>,
    /// With Redis persistence: the services nobody pulls, and why they count as unpulled.
    unpulled: BTreeMap<ServiceId, String>,
}

/// The sharding gauges (`crate::ha::shard`).
#[derive(Debug, Default)]
struct ShardingGauges {
    replicas_live: Gauge,
    fair_share: Gauge,
    /// `service_unpulled{input, service}`.
    unpulled: Family<ServiceLabels, Gauge>,
}

/// The process's metric families, health state and registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Family<ServiceLabels, Counter>,
    duplicates: Family<ServiceLabels, Counter>,
    spooled: Family<ServiceLabels, Counter>,
    delivered: Family<OutputLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    polls: Family<ServiceLabels, Counter>,
    job_wait: Family<ServiceLabels, Counter<f64, AtomicU64>>,
    confirm_failures: Family<OutputLabels, Counter>,
    /// `output_up{input, service, output}`: whether the last delivery was confirmed.
    output_up: Family<OutputUpLabels, Gauge>,
    /// The process's memory and the window budget's, read at scrape time.
    memory: memory::MemoryGauges,
    state_write_failures: Family<ServiceLabels, Counter>,
    obfuscation_fallbacks: Family<RuleLabels, Counter>,
    job_faults: Family<JobFaultLabels, Counter>,
    dead_letters: DeadLetterSeries,
    checkpoint_lag: Family<ServiceLabels, SecondsGauge>,
    last_pull: Family<ServiceLabels, SecondsGauge>,
    /// The API's job latency as each service learnt it (`api::client::poll_schedule`).
    job_latency: Family<ServiceLabels, SecondsGauge>,
    /// The last completeness audit (`crate::audit`): `missing_events` and
    /// `last_audit_timestamp_seconds`, and each service's summary for `/status`.
    missing_events: Family<ServiceLabels, Gauge>,
    last_audit: Family<ServiceLabels, SecondsGauge>,
    audits: Mutex<BTreeMap<ServiceId, status::AuditSummary>>,
    /// Each service's last failure, deliveries per minute and lease holder, for `/status`.
    recent: Mutex<BTreeMap<ServiceId, recent::Recent>>,
    /// Registered only with Redis persistence ([`Metrics::with_leases`]).
    lease_held: Family<ServiceLabels, Gauge>,
    lease_lost: Family<ServiceLabels, Counter>,
    persistence_up: Gauge,
    /// Fenced state writes no Redis replica acknowledged in time (`WAIT`), with replicas known.
    unreplicated_writes: Counter,
    /// Times this process found the Redis store wiped, and states it wrote back after one.
    persistence_wiped: Counter,
    state_written_back: Family<ServiceLabels, Counter>,
    /// Registered only with Redis persistence, fed by the replicas' heartbeats.
    sharding: ShardingGauges,
    /// The checkpoint per service; the lag gauge is computed from it at scrape time, so it keeps
    /// growing while a service is stuck (a gauge set only on success would freeze instead).
    checkpoints: Mutex<BTreeMap<ServiceId, Millis>>,
    readiness: Mutex<Readiness>,
    /// The label sets of the families whose labels are not only (input, service): what
    /// [`Metrics::forget_input`] must remove.
    output_series: Mutex<HashSet<OutputLabels>>,
    rule_series: Mutex<HashSet<RuleLabels>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is plain values, valid even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One service's view of [`Metrics`]: the counting points of the puller and the API client.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    metrics: Arc<Metrics>,
    input: String,
    service: Service,
}
