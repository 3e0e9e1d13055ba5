//! Prometheus metrics, health and readiness, served by the optional HTTP listener
//! (`globals.metrics_listen`).
//!
//! One [`Metrics`] per process, created in `app::run` and passed explicitly (an `Arc`) to each
//! service's puller and API client; nothing is global, so tests and `validate` can build pullers
//! without a registry (they get a private, unserved one). Business code calls one method of
//! [`ServiceMetrics`] per thing counted, so the counting points stay one line each.
//!
//! Labels are few and bounded: `input` (the input ids of the config: one per tenant), `service`
//! (2 values), `output` (the configured names), `table` (one per service) and `outcome` (the
//! fixed [`Outcome`] set). Every per-service family has `input` before `service`, so the series
//! grow linearly with the tenants: 16 per (input, service) (19 with Redis persistence), plus 2
//! per (input, output, table), one per obfuscation rule that fell back and one per kind of
//! [`JobFault`] that occurred (the README's metrics section has the count). Counter names get `_total` from the
//! encoder; units (`_seconds`) are part of the registered name.
//!
//! Readiness is kept here too, because it is fed by the same call sites: a service is ready once
//! its setup (authentication check) passed, an output once its last delivery attempt was
//! confirmed (or before any attempt: `run` checks each output once at start, in `app::start_check`,
//! and logs what it finds, without touching readiness; `validate` checks them too).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::service::Service;
use crate::time::Millis;

mod labels;

use labels::{
    DeadLetterLabels, JobFaultLabels, OutputLabels, RequestLabels, RuleLabels, ServiceLabels,
};
pub use labels::{JobFault, Outcome};

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

/// The sharding gauges (`crate::isolation::shard`).
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
    delivered: Family<OutputLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    polls: Family<ServiceLabels, Counter>,
    job_wait: Family<ServiceLabels, Counter<f64, AtomicU64>>,
    confirm_failures: Family<OutputLabels, Counter>,
    state_write_failures: Family<ServiceLabels, Counter>,
    obfuscation_fallbacks: Family<RuleLabels, Counter>,
    job_faults: Family<JobFaultLabels, Counter>,
    dead_letters: DeadLetterSeries,
    checkpoint_lag: Family<ServiceLabels, SecondsGauge>,
    last_pull: Family<ServiceLabels, SecondsGauge>,
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

/// The per-service time gauges: `checkpoint_lag_seconds` and
/// `last_successful_pull_timestamp_seconds`.
fn register_time_gauges(
    registry: &mut Registry,
) -> (
    Family<ServiceLabels, SecondsGauge>,
    Family<ServiceLabels, SecondsGauge>,
) {
    let checkpoint_lag = Family::default();
    registry.register_with_unit(
        "checkpoint_lag",
        "Now minus the service's checkpoint (everything before it is delivered).",
        Unit::Seconds,
        checkpoint_lag.clone(),
    );
    let last_pull = Family::default();
    registry.register_with_unit(
        "last_successful_pull_timestamp",
        "Unix time of the end of the service's last successful pull cycle.",
        Unit::Seconds,
        last_pull.clone(),
    );
    (checkpoint_lag, last_pull)
}

/// `events_dead_lettered_total` and its label sets (what [`Metrics::forget_input`] removes).
#[derive(Debug)]
struct DeadLetterSeries {
    family: Family<DeadLetterLabels, Counter>,
    series: Mutex<HashSet<DeadLetterLabels>>,
}

impl DeadLetterSeries {
    fn registered(registry: &mut Registry) -> DeadLetterSeries {
        let family = Family::default();
        registry.register(
            "events_dead_lettered",
            "Events set aside in the dead-letter store instead of delivered: output=\"none\" for events that could not be read (every output lacks them), else the one output that refused them for good. `state dead-letters` lists them.",
            family.clone(),
        );
        DeadLetterSeries {
            family,
            series: Mutex::default(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family, registered under the `isolation_collector` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("isolation_collector");
        let received = Family::default();
        registry.register(
            "received_events",
            "Events received from the API (every parsed page, the setup check's included).",
            received.clone(),
        );
        let duplicates = Family::default();
        registry.register(
            "duplicate_events",
            "Events dropped by the dedup memory (already delivered).",
            duplicates.clone(),
        );
        let delivered = Family::default();
        registry.register(
            "delivered_events",
            "Events confirmed by an output, per output and table.",
            delivered.clone(),
        );
        let requests = Family::default();
        registry.register(
            "api_requests",
            "API request attempts by outcome.",
            requests.clone(),
        );
        let retries = Family::default();
        registry.register(
            "api_retries",
            "API requests retried after a retryable failure.",
            retries.clone(),
        );
        let polls = Family::default();
        registry.register(
            "job_polls",
            "Polls of an API job that was not complete yet.",
            polls.clone(),
        );
        let job_wait = Family::default();
        registry.register(
            "job_wait_seconds",
            "Time spent polling API jobs that were not complete yet, with nothing to download or deliver meanwhile.",
            job_wait.clone(),
        );
        let confirm_failures = Family::default();
        registry.register(
            "output_confirm_failures",
            "Delivery attempts an output did not confirm (each is retried).",
            confirm_failures.clone(),
        );
        let state_write_failures = Family::default();
        registry.register(
            "state_write_failures",
            "State (checkpoint) writes that failed.",
            state_write_failures.clone(),
        );
        let obfuscation_fallbacks = Family::default();
        registry.register(
            "obfuscation_fallbacks",
            "Events in which an obfuscation rule could not read a value it targets; the value was masked whole with its type's default and the event delivered.",
            obfuscation_fallbacks.clone(),
        );
        let dead_letters = DeadLetterSeries::registered(&mut registry);
        let (checkpoint_lag, last_pull) = register_time_gauges(&mut registry);
        Metrics {
            // All three before `registry` moves in.
            job_faults: register_job_faults(&mut registry),
            registry,
            received,
            duplicates,
            delivered,
            requests,
            retries,
            polls,
            job_wait,
            confirm_failures,
            state_write_failures,
            obfuscation_fallbacks,
            dead_letters,
            checkpoint_lag,
            last_pull,
            lease_held: Family::default(),
            lease_lost: Family::default(),
            persistence_up: Gauge::default(),
            unreplicated_writes: Counter::default(),
            persistence_wiped: Counter::default(),
            state_written_back: Family::default(),
            sharding: ShardingGauges::default(),
            checkpoints: Mutex::default(),
            readiness: Mutex::default(),
            output_series: Mutex::default(),
            rule_series: Mutex::default(),
        }
    }

    /// Registers the lease and persistence families (Redis persistence only) and shows leases in
    /// `/ready`.
    pub fn with_leases(mut self) -> Metrics {
        self.registry.register(
            "lease_held",
            "1 while this process holds the service's lease (and pulls it), 0 while it stands by.",
            self.lease_held.clone(),
        );
        self.registry.register(
            "lease_lost",
            "Leases lost while pulling (refused renewal or fenced write): the service stopped and stood by.",
            self.lease_lost.clone(),
        );
        self.registry.register(
            "persistence_up",
            "1 if Redis answered the last operation, 0 if it was unreachable.",
            self.persistence_up.clone(),
        );
        self.registry.register(
            "persistence_wiped",
            "Times this process found the Redis store wiped (its generation marker gone or changed): every state, lease and dead letter was lost.",
            self.persistence_wiped.clone(),
        );
        self.registry.register(
            "state_written_back",
            "States this process wrote back to Redis from memory after Redis lost them.",
            self.state_written_back.clone(),
        );
        self.registry.register(
            "replicas_live",
            "Replicas with a live heartbeat in Redis, this one included (they share the leases).",
            self.sharding.replicas_live.clone(),
        );
        self.registry.register(
            "fair_share",
            "The most leases this replica takes: ceil(services / live replicas) + 1.",
            self.sharding.fair_share.clone(),
        );
        self.registry.register(
            "service_unpulled",
            "1 while no replica has pulled the service for longer than unpulled_after_in_seconds (no replica holds its lease, or its holder's cycles keep failing), else 0. The same on every replica.",
            self.sharding.unpulled.clone(),
        );
        self.registry.register(
            "persistence_unreplicated_writes",
            "State writes the Redis master stored but no replica acknowledged within the wait (a failover now may go back to an older state: re-sends, not losses).",
            self.unreplicated_writes.clone(),
        );
        self.persistence_up.set(1);
        lock(&self.readiness).leases = Some(BTreeMap::new());
        self
    }

    /// The replicas' heartbeats say `live` replicas share the leases, `fair_share` each at most.
    pub fn replicas(&self, live: usize, fair_share: usize) {
        self.sharding.replicas_live.set(live as i64);
        self.sharding.fair_share.set(fair_share as i64);
        lock(&self.readiness).replicas = Some((live, fair_share));
    }

    /// A state write that no Redis replica acknowledged in time.
    pub fn unreplicated_write(&self) {
        self.unreplicated_writes.inc();
    }

    /// This process found the Redis store wiped.
    pub fn persistence_wiped(&self) {
        self.persistence_wiped.inc();
    }

    /// Whether the persistence answered (`Ok`) or why not.
    pub fn persistence(&self, result: Result<(), String>) {
        self.persistence_up.set(i64::from(result.is_ok()));
        lock(&self.readiness).persistence = result.err();
    }

    /// The (input id, service) pairs whose lease this process holds and those it stands by
    /// for, or `None` without leases.
    pub fn leases(&self) -> Option<(Vec<ServiceId>, Vec<ServiceId>)> {
        let r = lock(&self.readiness);
        let leases = r.leases.as_ref()?;
        let pick = |held: bool| {
            leases
                .iter()
                .filter(|(_, &h)| h == held)
                .map(|(s, _)| s.clone())
                .collect()
        };
        Some((pick(true), pick(false)))
    }

    /// The handle one service of input `input` counts through (its puller, client, lease).
    pub fn service(self: &Arc<Self>, input: &str, service: Service) -> ServiceMetrics {
        ServiceMetrics {
            metrics: self.clone(),
            input: input.to_owned(),
            service,
        }
    }

    /// Marks a service of input `input` as expected: not ready until its setup passes. Its
    /// counters start at 0 (series that exist from the start make `rate()` and `increase()`
    /// alerts work at once).
    pub fn expect_service(&self, input: &str, service: Service) {
        let labels = ServiceLabels {
            input: input.to_owned(),
            service,
        };
        let id: ServiceId = (input.to_owned(), service);
        for family in self.service_counters() {
            family.get_or_create(&labels).inc_by(0);
        }
        self.lease_held.get_or_create(&labels).set(0);
        self.sharding.unpulled.get_or_create(&labels).set(0);
        if let Some(leases) = lock(&self.readiness).leases.as_mut() {
            leases.insert(id.clone(), false);
        }
        for outcome in Outcome::ALL {
            let labels = RequestLabels {
                input: input.to_owned(),
                service,
                outcome,
            };
            self.requests.get_or_create(&labels).inc_by(0);
        }
        lock(&self.readiness)
            .services
            .insert(id, Some("setup has not passed yet".into()));
    }

    /// The per-service counters that start at 0 for an expected service and go with a
    /// forgotten one: one list, so that a family added to one also goes with the other.
    fn service_counters(&self) -> [&Family<ServiceLabels, Counter>; 6] {
        [
            &self.received,
            &self.duplicates,
            &self.retries,
            &self.polls,
            &self.state_write_failures,
            &self.lease_lost,
        ]
    }

    /// Forgets a stopped tenant (a reload removed or restarted it): its readiness and lease
    /// entries (`/ready` is about what runs) and its series (the exposition does not keep
    /// growing with tenants that are gone; a restarted tenant's counters start again at 0,
    /// which `rate()` reads as a reset).
    pub fn forget_input(&self, input: &str) {
        let mut r = lock(&self.readiness);
        r.services.retain(|(i, _), _| i != input);
        r.outputs.retain(|((i, _), _), _| i != input);
        r.unpulled.retain(|(i, _), _| i != input);
        if let Some(leases) = r.leases.as_mut() {
            leases.retain(|(i, _), _| i != input);
        }
        drop(r);
        lock(&self.checkpoints).retain(|(i, _), _| i != input);
        for service in Service::ALL {
            self.forget_service_series(input, service);
        }
        lock(&self.output_series).retain(|l| {
            let keep = l.input != input;
            if !keep {
                self.delivered.remove(l);
                self.confirm_failures.remove(l);
            }
            keep
        });
        lock(&self.rule_series).retain(|l| {
            let keep = l.input != input;
            if !keep {
                self.obfuscation_fallbacks.remove(l);
            }
            keep
        });
        lock(&self.dead_letters.series).retain(|l| {
            let keep = l.input != input;
            if !keep {
                self.dead_letters.family.remove(l);
            }
            keep
        });
    }

    /// Removes the (input, service) series of every per-service family.
    fn forget_service_series(&self, input: &str, service: Service) {
        let labels = ServiceLabels {
            input: input.to_owned(),
            service,
        };
        for family in self.service_counters() {
            family.remove(&labels);
        }
        self.job_wait.remove(&labels);
        self.checkpoint_lag.remove(&labels);
        self.last_pull.remove(&labels);
        self.lease_held.remove(&labels);
        self.sharding.unpulled.remove(&labels);
        for outcome in Outcome::ALL {
            self.requests.remove(&RequestLabels {
                input: input.to_owned(),
                service,
                outcome,
            });
        }
        for kind in JobFault::ALL {
            self.job_faults.remove(&JobFaultLabels {
                input: input.to_owned(),
                service,
                kind,
            });
        }
    }

    /// The OpenMetrics text exposition, with the lag gauges brought up to `now`.
    pub fn encode(&self, now: Millis) -> String {
        for ((input, service), &checkpoint) in lock(&self.checkpoints).iter() {
            let labels = ServiceLabels {
                input: input.clone(),
                service: *service,
            };
            self.checkpoint_lag
                .get_or_create(&labels)
                .set((now - checkpoint) as f64 / 1000.0);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// What is not ready, one line each; empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let r = lock(&self.readiness);
        let mut problems = Vec::new();
        if let Some(why) = &r.persistence {
            problems.push(format!("persistence: {why}"));
        }
        for ((input, service), why) in &r.services {
            if let Some(why) = why {
                problems.push(format!("input {input} service {service}: {why}"));
            }
        }
        for ((input, service), why) in &r.unpulled {
            problems.push(format!("input {input} service {service}: {why}"));
        }
        for (((input, service), output), why) in &r.outputs {
            if let Some(why) = why {
                problems.push(format!(
                    "output {output} (input {input} service {service}): last delivery failed: {why}"
                ));
            }
        }
        problems
    }
}

/// `api_job_faults_total{input, service, kind}` (kept out of [`Metrics::new`], which is long).
fn register_job_faults(registry: &mut Registry) -> Family<JobFaultLabels, Counter> {
    let job_faults = Family::default();
    registry.register(
        "api_job_faults",
        "API jobs (or windows) given up for a fault of the API's answers, by kind; a repeated page is dropped and its job goes on.",
        job_faults.clone(),
    );
    job_faults
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

impl ServiceMetrics {
    /// A handle on a private registry that nobody serves (pullers built without metrics).
    pub fn detached(service: Service) -> ServiceMetrics {
        Arc::new(Metrics::new()).service("", service)
    }

    fn labels(&self) -> ServiceLabels {
        ServiceLabels {
            input: self.input.clone(),
            service: self.service,
        }
    }

    fn id(&self) -> ServiceId {
        (self.input.clone(), self.service)
    }

    pub fn events_received(&self, n: usize) {
        self.metrics
            .received
            .get_or_create(&self.labels())
            .inc_by(n as u64);
    }

    pub fn duplicates_filtered(&self, n: usize) {
        self.metrics
            .duplicates
            .get_or_create(&self.labels())
            .inc_by(n as u64);
    }

    pub fn request(&self, outcome: Outcome) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                input: self.input.clone(),
                service: self.service,
                outcome,
            })
            .inc();
    }

    pub fn retry(&self) {
        self.metrics.retries.get_or_create(&self.labels()).inc();
    }

    pub fn job_poll(&self) {
        self.metrics.polls.get_or_create(&self.labels()).inc();
    }

    /// The puller waited `waited` for a job to complete.
    pub fn job_wait(&self, waited: std::time::Duration) {
        self.metrics
            .job_wait
            .get_or_create(&self.labels())
            .inc_by(waited.as_secs_f64());
    }

    /// An API job (or a window) was given up, or a page dropped, for `kind`.
    pub fn job_fault(&self, kind: JobFault) {
        self.metrics
            .job_faults
            .get_or_create(&JobFaultLabels {
                input: self.input.clone(),
                service: self.service,
                kind,
            })
            .inc();
    }

    pub fn state_write_failed(&self) {
        self.metrics
            .state_write_failures
            .get_or_create(&self.labels())
            .inc();
    }

    /// `n` events of a batch had a value `rule` could not read masked whole instead.
    pub fn obfuscation_fallbacks(&self, rule: &str, n: u64) {
        let labels = RuleLabels {
            input: self.input.clone(),
            service: self.service,
            rule: rule.to_owned(),
        };
        self.metrics
            .obfuscation_fallbacks
            .get_or_create(&labels)
            .inc_by(n);
        lock(&self.metrics.rule_series).insert(labels);
    }

    /// `n` events of `table` were set aside in the dead-letter store: refused for good by
    /// `output`, or (`None`) unreadable.
    pub fn dead_lettered(&self, table: &str, output: Option<&str>, n: u64) {
        let labels = DeadLetterLabels {
            input: self.input.clone(),
            service: self.service,
            table: table.to_owned(),
            output: output.unwrap_or("none").to_owned(),
        };
        let dead_letters = &self.metrics.dead_letters;
        dead_letters.family.get_or_create(&labels).inc_by(n);
        lock(&dead_letters.series).insert(labels);
    }

    /// An output confirmed `n` events (`Ok`), or did not.
    pub fn delivery(&self, output: &str, table: &str, result: Result<usize, String>) {
        let labels = OutputLabels {
            input: self.input.clone(),
            output: output.to_owned(),
            table: table.to_owned(),
        };
        if !lock(&self.metrics.output_series).contains(&labels) {
            lock(&self.metrics.output_series).insert(labels.clone());
        }
        let why = match result {
            Ok(n) => {
                self.metrics
                    .delivered
                    .get_or_create(&labels)
                    .inc_by(n as u64);
                None
            }
            Err(e) => {
                self.metrics.confirm_failures.get_or_create(&labels).inc();
                Some(e)
            }
        };
        lock(&self.metrics.readiness)
            .outputs
            .insert((self.id(), output.to_owned()), why);
    }

    /// The checkpoint moved (or was loaded).
    pub fn checkpoint(&self, checkpoint: Millis) {
        lock(&self.metrics.checkpoints).insert(self.id(), checkpoint);
    }

    /// A pull cycle completed at `now`.
    pub fn pull_succeeded(&self, now: Millis) {
        self.metrics
            .last_pull
            .get_or_create(&self.labels())
            .set(now as f64 / 1000.0);
    }

    /// This process took (`true`) or no longer holds (`false`) the service's lease.
    pub fn lease_held(&self, held: bool) {
        self.metrics
            .lease_held
            .get_or_create(&self.labels())
            .set(i64::from(held));
        if let Some(leases) = lock(&self.metrics.readiness).leases.as_mut() {
            leases.insert(self.id(), held);
        }
    }

    /// Nobody pulls the service (`Some(why)`), or it is pulled again (`None`): the gauge and
    /// `/ready` (sharding's health, `crate::isolation::shard`).
    pub fn unpulled(&self, why: Option<String>) {
        let gauge = self.metrics.sharding.unpulled.get_or_create(&self.labels());
        gauge.set(i64::from(why.is_some()));
        let mut r = lock(&self.metrics.readiness);
        match why {
            Some(why) => r.unpulled.insert(self.id(), why),
            None => r.unpulled.remove(&self.id()),
        };
    }

    /// The state, lost by Redis, was written back from memory.
    pub fn state_written_back(&self) {
        self.metrics
            .state_written_back
            .get_or_create(&self.labels())
            .inc();
    }

    /// The lease was lost while pulling.
    pub fn lease_lost(&self) {
        self.metrics.lease_lost.get_or_create(&self.labels()).inc();
    }

    /// The setup check's result.
    pub fn setup(&self, result: Result<(), String>) {
        let why = result.err().map(|e| format!("setup has not passed: {e}"));
        lock(&self.metrics.readiness)
            .services
            .insert(self.id(), why);
    }
}

// === The listener ===

/// Serves `/metrics`, `/health` and `/ready` on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move |metrics: State<Arc<Metrics>>| metrics_handler(metrics, clock.clone())),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready_handler))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>, clock: SharedClock) -> Response {
    let text = metrics.encode(clock.now_ms());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn ready_handler(State(metrics): State<Arc<Metrics>>) -> Response {
    let (status, body) = ready_body(&metrics);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `/ready`'s status and JSON body; with leases, which services this process holds and which it
/// stands by for, each as `<input id>/<service>` (standing by is not a problem: the other
/// replica pulls them).
fn ready_body(metrics: &Metrics) -> (StatusCode, serde_json::Value) {
    let problems = metrics.not_ready();
    let (status, mut body) = if problems.is_empty() {
        (StatusCode::OK, serde_json::json!({"ready": true}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "not_ready": problems}),
        )
    };
    if let Some((held, standby)) = metrics.leases() {
        let names = |s: Vec<ServiceId>| {
            s.iter()
                .map(|(input, service)| format!("{input}/{service}"))
                .collect::<Vec<_>>()
        };
        body["leases"] = serde_json::json!({"held": names(held), "standby": names(standby)});
    }
    if let Some((live, fair_share)) = lock(&metrics.readiness).replicas {
        body["replicas"] = serde_json::json!({"live": live, "fair_share": fair_share});
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_lag() {
        let m = Arc::new(Metrics::new());
        let s = m.service("10001", Service::UrlIsolation);
        s.events_received(5);
        s.request(Outcome::RateLimited);
        s.delivery("local", "t.a", Ok(3));
        s.checkpoint(1_000);
        s.pull_succeeded(2_500);
        s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 2);
        s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 0);
        s.job_fault(JobFault::PageTokenLoop);
        s.dead_lettered("t.a", None, 3);
        s.dead_lettered("t.a", Some("hec"), 1);
        let text = m.encode(11_000);
        for line in [
            "isolation_collector_received_events_total{input=\"10001\",service=\"url_isolation\"} 5",
            "isolation_collector_api_requests_total{input=\"10001\",service=\"url_isolation\",outcome=\"rate_limited\"} 1",
            "isolation_collector_delivered_events_total{input=\"10001\",output=\"local\",table=\"t.a\"} 3",
            "isolation_collector_checkpoint_lag_seconds{input=\"10001\",service=\"url_isolation\"} 10.0",
            "isolation_collector_last_successful_pull_timestamp_seconds{input=\"10001\",service=\"url_isolation\"} 2.5",
            "isolation_collector_obfuscation_fallbacks_total{input=\"10001\",service=\"url_isolation\",rule=\"obfuscation_data[0] [userName]\"} 2",
            "isolation_collector_api_job_faults_total{input=\"10001\",service=\"url_isolation\",kind=\"page_token_loop\"} 1",
            "isolation_collector_events_dead_lettered_total{input=\"10001\",service=\"url_isolation\",table=\"t.a\",output=\"none\"} 3",
            "isolation_collector_events_dead_lettered_total{input=\"10001\",service=\"url_isolation\",table=\"t.a\",output=\"hec\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn readiness_follows_setup_and_deliveries() {
        let m = Arc::new(Metrics::new());
        m.expect_service("10001", Service::UrlIsolation);
        assert_eq!(m.not_ready().len(), 1);
        let s = m.service("10001", Service::UrlIsolation);
        s.setup(Err("API Key 1a2b...9z is not valid.".into()));
        assert!(m.not_ready()[0].contains("url_isolation: setup has not passed: API Key"));
        s.setup(Ok(()));
        assert!(m.not_ready().is_empty());
        assert!(m.encode(0).contains(
            "isolation_collector_api_requests_total{input=\"10001\",service=\"url_isolation\",outcome=\"auth\"} 0\n"
        ));
        s.delivery("dev", "t", Err("refused".into()));
        assert!(m.not_ready()[0].starts_with("output dev (input 10001 service url_isolation)"));
        s.delivery("dev", "t", Ok(1));
        assert!(m.not_ready().is_empty());
        assert_eq!(ready_body(&m).1, serde_json::json!({"ready": true}));
        assert!(!m.encode(0).contains("lease"));
    }

    #[test]
    fn leases_and_persistence_with_redis() {
        let m = Arc::new(Metrics::new().with_leases());
        m.expect_service("10001", Service::UrlIsolation);
        m.expect_service("10001", Service::BrowserAndEmailIsolation);
        let (url, browser) = (
            m.service("10001", Service::UrlIsolation),
            m.service("10001", Service::BrowserAndEmailIsolation),
        );
        url.setup(Ok(()));
        browser.setup(Ok(()));
        url.lease_held(true);
        let (status, body) = ready_body(&m);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"ready": true, "leases": {"held": ["10001/url_isolation"], "standby": ["10001/browser_and_email_isolation"]}})
        );
        url.lease_held(false);
        url.lease_lost();
        m.persistence(Err("Redis at 127.0.0.1:1 is unreachable".into()));
        let (status, body) = ready_body(&m);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["not_ready"],
            serde_json::json!(["persistence: Redis at 127.0.0.1:1 is unreachable"])
        );
        let text = m.encode(0);
        for line in [
            "isolation_collector_lease_held{input=\"10001\",service=\"url_isolation\"} 0",
            "isolation_collector_lease_lost_total{input=\"10001\",service=\"url_isolation\"} 1",
            "isolation_collector_lease_lost_total{input=\"10001\",service=\"browser_and_email_isolation\"} 0",
            "isolation_collector_persistence_up 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        m.persistence(Ok(()));
        assert!(m
            .encode(0)
            .contains("isolation_collector_persistence_up 1\n"));
        m.replicas(3, 9);
        assert_eq!(
            ready_body(&m).1["replicas"],
            serde_json::json!({"live": 3, "fair_share": 9})
        );
        let text = m.encode(0);
        for line in [
            "isolation_collector_replicas_live 3",
            "isolation_collector_fair_share 9",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_forgotten_input_leaves_ready_and_the_exposition() {
        let m = Arc::new(Metrics::new().with_leases());
        for input in ["10001", "10002"] {
            m.expect_service(input, Service::UrlIsolation);
            let s = m.service(input, Service::UrlIsolation);
            s.delivery("local", "t", Err("refused".into()));
            s.checkpoint(1_000);
            s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 1);
            s.job_fault(JobFault::RepeatedPage);
            s.dead_lettered("t", None, 1);
        }
        assert_eq!(m.not_ready().len(), 4);
        m.forget_input("10002");
        let problems = m.not_ready();
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().all(|p| p.contains("10001")), "{problems:?}");
        let text = m.encode(2_000);
        assert!(!text.contains("10002"), "{text}");
        for family in [
            "received_events_total",
            "api_requests_total",
            "checkpoint_lag_seconds",
            "output_confirm_failures_total",
            "obfuscation_fallbacks_total",
            "api_job_faults_total",
            "events_dead_lettered_total",
            "lease_held",
        ] {
            assert!(
                text.contains(&format!("isolation_collector_{family}{{input=\"10001\"")),
                "{family}: {text}"
            );
        }
        assert_eq!(
            m.leases().unwrap().1,
            [("10001".to_owned(), Service::UrlIsolation)]
        );
    }
}
