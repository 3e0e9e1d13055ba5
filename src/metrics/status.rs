//! What `/status`, the status page at `/` and `isolation-collector status` show: one line per
//! (input, service), failing ones first, built from what the counting points already feed.
//!
//! The JSON form ([`StatusReport`]) is a contract: the README documents it, `status` reads it
//! from a running daemon, and scripts may read it too. Add fields; never rename or remove one.

use serde::{Deserialize, Serialize};

use super::{lock, Metrics, ServiceMetrics};
use crate::timestamp::{format_iso, Millis};

/// The result of the last completeness audit of one service (`crate::audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// When the audit ran (ISO 8601, UTC).
    pub at: String,
    /// The audited range of event time, `[from, to)`.
    pub from: String,
    pub to: String,
    /// Hours audited, and those the API holds more events for than were delivered.
    pub hours: u32,
    pub hours_missing: u32,
    /// Events the API holds that were not delivered, summed over the range.
    pub missing_events: u64,
    /// Events delivered beyond what the API holds now, summed over the range.
    pub extra_events: u64,
    /// Why the audit could not finish (masked), if it could not.
    pub error: Option<String>,
}

/// What a service is doing, as the status line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Something is wrong (`reason` says what): sorted first.
    Failing,
    /// Its setup (the API key's check) has not passed yet.
    Starting,
    /// Another replica holds its lease (HA): nothing is wrong.
    Standby,
    /// This process pulls it and nothing is wrong.
    Collecting,
}

/// One output as seen by one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStatus {
    pub name: String,
    /// Whether its last delivery was confirmed (or none was tried yet).
    pub ok: bool,
    /// Why its last delivery failed (masked).
    pub reason: Option<String>,
}

/// One (input, service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub input: String,
    pub service: String,
    pub condition: Condition,
    /// Why it is failing or starting (masked); `None` when collecting or standing by.
    pub reason: Option<String>,
    /// The checkpoint (everything before it is delivered), ISO 8601.
    pub checkpoint: Option<String>,
    /// Now minus the checkpoint, in seconds.
    pub lag_seconds: Option<f64>,
    /// Events the outputs confirmed in the last 60 s and 3,600 s (by this process).
    pub delivered_last_minute: u64,
    pub delivered_last_hour: u64,
    pub last_audit: Option<AuditSummary>,
    /// With Redis persistence: the replica that holds the lease (`<host>:<pid>`), if known.
    pub lease_holder: Option<String>,
    pub outputs: Vec<OutputStatus>,
}

/// The whole report: `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the report was made, ISO 8601.
    pub generated_at: String,
    /// This process's replica name (`<host>:<pid>`).
    pub replica: String,
    /// With Redis persistence: why Redis is unreachable, if it is.
    pub persistence_problem: Option<String>,
    /// Lines per condition.
    pub failing: usize,
    pub starting: usize,
    pub standby: usize,
    pub collecting: usize,
    /// Failing first, then starting, standing by and collecting; within each, the largest lag
    /// first, then by input and service.
    pub services: Vec<ServiceStatus>,
}

impl Metrics {
    /// The status of every (input, service) this process knows, at `now`; `replica` is this
    /// process's name (`crate::state::replica_name`).
    pub fn status_report(&self, now: Millis, replica: &str) -> StatusReport {
        let r = lock(&self.readiness);
        let checkpoints = lock(&self.checkpoints);
        let audits = lock(&self.audits);
        let mut services: Vec<ServiceStatus> = r
            .services
            .iter()
            .map(|(id, setup)| {
                let outputs: Vec<OutputStatus> = r
                    .outputs
                    .iter()
                    .filter(|((sid, _), _)| sid == id)
                    .map(|((_, name), why)| OutputStatus {
                        name: name.clone(),
                        ok: why.is_none(),
                        reason: why.clone(),
                    })
                    .collect();
                let standby = r.leases.as_ref().is_some_and(|l| l.get(id) == Some(&false));
                let failure = r.unpulled.get(id).cloned().or_else(|| {
                    outputs
                        .iter()
                        .find_map(|o| o.reason.as_ref().map(|w| format!("output {}: {w}", o.name)))
                });
                let (condition, reason) = match (setup, failure) {
                    (_, Some(why)) => (Condition::Failing, Some(why)),
                    (Some(why), None) if standby => {
                        let _ = why;
                        (Condition::Standby, None)
                    }
                    (Some(why), None) => (Condition::Starting, Some(why.clone())),
                    (None, None) if standby => (Condition::Standby, None),
                    (None, None) => (Condition::Collecting, None),
                };
                let checkpoint = checkpoints.get(id).copied();
                ServiceStatus {
                    input: id.0.clone(),
                    service: id.1.to_string(),
                    condition,
                    reason,
                    checkpoint: checkpoint.map(format_iso),
                    lag_seconds: checkpoint.map(|c| (now - c) as f64 / 1000.0),
                    delivered_last_minute: 0,
                    delivered_last_hour: 0,
                    last_audit: audits.get(id).cloned(),
                    lease_holder: None,
                    outputs,
                }
            })
            .collect();
        sort_for_display(&mut services);
        let count = |c: Condition| services.iter().filter(|s| s.condition == c).count();
        StatusReport {
            generated_at: format_iso(now),
            replica: replica.to_owned(),
            persistence_problem: r.persistence.clone(),
            failing: count(Condition::Failing),
            starting: count(Condition::Starting),
            standby: count(Condition::Standby),
            collecting: count(Condition::Collecting),
            services,
        }
    }
}

/// Failing first, then starting, standing by, collecting; the largest lag first within each.
pub fn sort_for_display(services: &mut [ServiceStatus]) {
    services.sort_by(|a, b| {
        a.condition
            .cmp(&b.condition)
            .then(
                b.lag_seconds
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&a.lag_seconds.unwrap_or(f64::INFINITY)),
            )
            .then_with(|| (&a.input, &a.service).cmp(&(&b.input, &b.service)))
    });
}

impl ServiceMetrics {
    /// An audit of this service finished at `at`: the gauges `missing_events` and
    /// `last_audit_timestamp_seconds`, and the status line's `last_audit`.
    pub fn audited(&self, summary: AuditSummary, at: Millis) {
        let labels = self.labels();
        if summary.error.is_none() {
            self.metrics
                .missing_events
                .get_or_create(&labels)
                .set(summary.missing_events as i64);
        }
        self.metrics
            .last_audit
            .get_or_create(&labels)
            .set(at as f64 / 1000.0);
        lock(&self.metrics.audits).insert(self.id(), summary);
    }
}
