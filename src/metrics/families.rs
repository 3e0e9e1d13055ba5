//! The metric families: their registration under the `isolation_collector` prefix, the series
//! an expected service starts with and a forgotten tenant loses, the exposition, and the
//! counting points of each service ([`ServiceMetrics`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::labels::{
    DeadLetterLabels, JobFaultLabels, OutputLabels, RequestLabels, RuleLabels, ServiceLabels,
};
use super::listed::{registered, registered_with_unit, Listed};
use super::{
    lock, JobFault, Metrics, Outcome, SecondsGauge, ServiceId, ServiceMetrics, ShardingGauges,
};
use crate::service::Service;
use crate::timestamp::Millis;

/// The per-service time gauges: `checkpoint_lag_seconds`,
/// `last_successful_pull_timestamp_seconds` and `api_job_latency_estimate_seconds`.
fn register_time_gauges(registry: &mut Registry) -> [Family<ServiceLabels, SecondsGauge>; 3] {
    let checkpoint_lag = registered_with_unit(
        registry,
        "checkpoint_lag",
        "Now minus the service's checkpoint (everything before it is delivered).",
        Unit::Seconds,
    );
    let last_pull = registered_with_unit(
        registry,
        "last_successful_pull_timestamp",
        "Unix time of the end of the service's last successful pull cycle.",
        Unit::Seconds,
    );
    let job_latency = registered_with_unit(
        registry,
        "api_job_latency_estimate",
        "The API's job latency as the service learnt it from its own jobs; its job polls are fitted to it. Absent until a job taught it anything.",
        Unit::Seconds,
    );
    [checkpoint_lag, last_pull, job_latency]
}

/// `events_dead_lettered_total` and its label sets (what [`Metrics::forget_input`] removes).
#[derive(Debug)]
pub(super) struct DeadLetterSeries {
    family: Family<DeadLetterLabels, Counter>,
    series: Mutex<HashSet<DeadLetterLabels>>,
}

impl DeadLetterSeries {
    pub(super) fn registered(registry: &mut Registry) -> DeadLetterSeries {
        let family = registered(
            registry,
            "events_dead_lettered",
            "Events set aside in the dead-letter store instead of delivered: output=\"none\" for events that could not be read (every output lacks them), else the one output that refused them for good. `state dead-letters` lists them.",
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

/// `missing_events` and `last_audit_timestamp_seconds` (`crate::audit`).
fn register_audit_gauges(
    registry: &mut Registry,
) -> (
    Family<ServiceLabels, Gauge>,
    Family<ServiceLabels, SecondsGauge>,
) {
    let missing = registered(
        registry,
        "missing_events",
        "Events the API holds that were not delivered, over the range the last completeness audit covered (`audit_interval_in_hours`). Absent until an audit finished.",
    );
    let last_audit = registered_with_unit(
        registry,
        "last_audit_timestamp",
        "Unix time the last completeness audit of the service finished (with or without an error).",
        Unit::Seconds,
    );
    (missing, last_audit)
}

/// `obfuscation_fallbacks_total` (`pipeline::obfuscate`).
fn register_obfuscation_fallbacks(registry: &mut Registry) -> Family<RuleLabels, Counter> {
    registered(
        registry,
        "obfuscation_fallbacks",
        "Events in which an obfuscation rule could not read a value it targets; the value was masked whole with its type's default and the event delivered.",
    )
}

/// `spooled_events_total` (`puller::spool`).
fn register_spooled(registry: &mut Registry) -> Family<ServiceLabels, Counter> {
    registered(
        registry,
        "spooled_events",
        "Events of API jobs too big for one window, written to a spool file to be delivered as several windows.",
    )
}

impl Metrics {
    /// Every family, registered under the `isolation_collector` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("isolation_collector");
        let received = registered(
            &mut registry,
            "received_events",
            "Events received from the API (every parsed page, the setup check's included).",
        );
        let duplicates = registered(
            &mut registry,
            "duplicate_events",
            "Events dropped by the dedup memory (already delivered).",
        );
        let spooled = register_spooled(&mut registry);
        let delivered = registered(
            &mut registry,
            "delivered_events",
            "Events confirmed by an output, per output and table.",
        );
        let requests = registered(
            &mut registry,
            "api_requests",
            "API request attempts by outcome.",
        );
        let retries = registered(
            &mut registry,
            "api_retries",
            "API requests retried after a retryable failure.",
        );
        let polls = registered(
            &mut registry,
            "job_polls",
            "Polls of an API job that was not complete yet.",
        );
        let job_wait = registered(
            &mut registry,
            "job_wait_seconds",
            "Time spent polling API jobs that were not complete yet, with nothing to download or deliver meanwhile.",
        );
        let confirm_failures = registered(
            &mut registry,
            "output_confirm_failures",
            "Delivery attempts an output did not confirm (each is retried).",
        );
        let state_write_failures = registered(
            &mut registry,
            "state_write_failures",
            "State (checkpoint) writes that failed.",
        );
        let output_up = super::output_up::register(&mut registry);
        let memory = super::memory::MemoryGauges::registered(&mut registry);
        let obfuscation_fallbacks = register_obfuscation_fallbacks(&mut registry);
        let dead_letters = DeadLetterSeries::registered(&mut registry);
        let [checkpoint_lag, last_pull, job_latency] = register_time_gauges(&mut registry);
        let (missing_events, last_audit) = register_audit_gauges(&mut registry);
        Metrics {
            // All three before `registry` moves in.
            job_faults: register_job_faults(&mut registry),
            registry,
            received,
            duplicates,
            spooled,
            delivered,
            requests,
            retries,
            polls,
            job_wait,
            confirm_failures,
            output_up,
            memory,
            state_write_failures,
            obfuscation_fallbacks,
            dead_letters,
            checkpoint_lag,
            last_pull,
            job_latency,
            missing_events,
            last_audit,
            audits: Mutex::default(),
            recent: Mutex::default(),
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
            Listed(self.lease_held.clone()),
        );
        self.registry.register(
            "lease_lost",
            "Leases lost while pulling (refused renewal or fenced write): the service stopped and stood by.",
            Listed(self.lease_lost.clone()),
        );
        self.registry.register(
            "persistence_up",
            "1 if Redis answered the last operation, 0 if it was unreachable.",
            Listed(self.persistence_up.clone()),
        );
        self.registry.register(
            "persistence_wiped",
            "Times this process found the Redis store wiped (its generation marker gone or changed): every state, lease and dead letter was lost.",
            Listed(self.persistence_wiped.clone()),
        );
        self.registry.register(
            "state_written_back",
            "States this process wrote back to Redis from memory after Redis lost them.",
            Listed(self.state_written_back.clone()),
        );
        self.registry.register(
            "replicas_live",
            "Replicas with a live heartbeat in Redis, this one included (they share the leases).",
            Listed(self.sharding.replicas_live.clone()),
        );
        self.registry.register(
            "fair_share",
            "The most leases this replica takes: ceil(services / live replicas) + 1.",
            Listed(self.sharding.fair_share.clone()),
        );
        self.registry.register(
            "service_unpulled",
            "1 while no replica has pulled the service for longer than unpulled_after_in_seconds (no replica holds its lease, or its holder's cycles keep failing), else 0. The same on every replica.",
            Listed(self.sharding.unpulled.clone()),
        );
        self.registry.register(
            "persistence_unreplicated_writes",
            "State writes the Redis master stored but no replica acknowledged within the wait (a failover now may go back to an older state: re-sends, not losses).",
            Listed(self.unreplicated_writes.clone()),
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
    fn service_counters(&self) -> [&Family<ServiceLabels, Counter>; 7] {
        [
            &self.received,
            &self.duplicates,
            &self.spooled,
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
        self.forget_output_up(input);
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
        self.job_latency.remove(&labels);
        self.missing_events.remove(&labels);
        self.last_audit.remove(&labels);
        lock(&self.audits).remove(&(input.to_owned(), service));
        lock(&self.recent).remove(&(input.to_owned(), service));
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
        self.memory.sample();
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
}

/// `api_job_faults_total{input, service, kind}` (kept out of [`Metrics::new`], which is long).
fn register_job_faults(registry: &mut Registry) -> Family<JobFaultLabels, Counter> {
    registered(
        registry,
        "api_job_faults",
        "API jobs (or windows) given up for a fault of the API's answers, by kind; a repeated page is dropped and its job goes on.",
    )
}

impl ServiceMetrics {
    /// A handle on a private registry that nobody serves (pullers built without metrics).
    pub fn detached(service: Service) -> ServiceMetrics {
        Arc::new(Metrics::new()).service("", service)
    }

    pub(super) fn labels(&self) -> ServiceLabels {
        ServiceLabels {
            input: self.input.clone(),
            service: self.service,
        }
    }

    pub(super) fn id(&self) -> ServiceId {
        (self.input.clone(), self.service)
    }

    pub fn events_received(&self, n: usize) {
        self.metrics
            .received
            .get_or_create(&self.labels())
            .inc_by(n as u64);
    }

    /// `n` events of a job too big for one window were spooled (`puller::spool`).
    pub fn spooled_events(&self, n: u64) {
        self.metrics.spooled.get_or_create(&self.labels()).inc_by(n);
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

    /// The job latency the API client learnt from the service's jobs.
    pub fn job_latency_estimate(&self, estimate: std::time::Duration) {
        self.metrics
            .job_latency
            .get_or_create(&self.labels())
            .set(estimate.as_secs_f64());
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
        self.output_up(output, result.is_ok());
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

    /// A pull cycle completed at `now` (the status line's last failure is over).
    pub fn pull_succeeded(&self, now: Millis) {
        self.metrics.recent(self.id(), |r| r.failure = None);
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
        // Held: this replica, and a new tenure (the last one's failed cycle is old news). Given
        // up: the holder is not known until the next try says.
        self.metrics.recent(self.id(), |r| {
            r.other_holder = None;
            if held {
                r.failure = None;
            }
        });
    }

    /// Nobody pulls the service (`Some(why)`), or it is pulled again (`None`): the gauge and
    /// `/ready` (sharding's health, `crate::ha::shard`).
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
}
