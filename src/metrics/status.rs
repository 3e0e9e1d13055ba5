//! What `/status`, the status page at `/` and `isolation-collector status` show: one line per
//! (input, service), failing ones first, built from what the counting points already feed.
//!
//! The JSON form ([`StatusReport`]) is a contract: the README documents it, `status` reads it
//! from a running daemon, and scripts may read it too. Add fields; never rename or remove one.

use serde::{Deserialize, Serialize};

use super::recent::Recent;
use super::{lock, Metrics, Readiness, ServiceId, ServiceMetrics};
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
        let recent = lock(&self.recent);
        let mut services: Vec<ServiceStatus> = r
            .services
            .iter()
            .map(|(id, setup)| {
                let outputs = outputs_of(&r, id);
                let past = recent.get(id);
                let held = r.leases.as_ref().map(|l| l.get(id) == Some(&true));
                let standby = held == Some(false);
                let (condition, reason) = match failure(&r, id, past, &outputs, standby) {
                    Some(why) => (Condition::Failing, Some(why)),
                    None if standby => (Condition::Standby, None),
                    None => match setup {
                        Some(why) => (Condition::Starting, Some(why.clone())),
                        None => (Condition::Collecting, None),
                    },
                };
                let (last_minute, last_hour) = past.map_or((0, 0), |p| p.delivered(now));
                let lease_holder = match held {
                    Some(true) => Some(replica.to_owned()),
                    _ => past.and_then(|p| p.other_holder.clone()),
                };
                let checkpoint = checkpoints.get(id).copied();
                ServiceStatus {
                    input: id.0.clone(),
                    service: id.1.to_string(),
                    condition,
                    reason,
                    checkpoint: checkpoint.map(format_iso),
                    lag_seconds: checkpoint.map(|c| (now - c) as f64 / 1000.0),
                    delivered_last_minute: last_minute,
                    delivered_last_hour: last_hour,
                    last_audit: audits.get(id).cloned(),
                    lease_holder,
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

/// The outputs of service `id`, as its last deliveries left them: a range of the map (keyed by
/// service first), not a scan of every service's (a report of 2,000 services took 30 ms so, in
/// a release build).
fn outputs_of(r: &Readiness, id: &ServiceId) -> Vec<OutputStatus> {
    r.outputs
        .range((id.clone(), String::new())..)
        .take_while(|((sid, _), _)| sid == id)
        .map(|((_, name), why)| OutputStatus {
            name: name.clone(),
            ok: why.is_none(),
            reason: why.clone(),
        })
        .collect()
}

/// Why service `id` is failing, the cause nearest the root first, or `None`. Nobody pulling
/// it, the state store unreachable and a failed setup check fail it even while it stands by
/// (this replica could not take over); an output down and a failed cycle only while this
/// replica pulls it (standing by, they are news of a tenure that ended).
fn failure(
    r: &Readiness,
    id: &ServiceId,
    past: Option<&Recent>,
    outputs: &[OutputStatus],
    standby: bool,
) -> Option<String> {
    if let Some(why) = r.unpulled.get(id) {
        return Some(why.clone());
    }
    if let Some(why) = &r.persistence {
        return Some(format!("state store: {why}"));
    }
    if let Some(why) = past.and_then(|p| p.setup_failure.as_ref()) {
        return Some(format!("setup failed: {why}"));
    }
    if standby {
        return None;
    }
    outputs
        .iter()
        .find_map(|o| o.reason.as_ref().map(|why| output_reason(&o.name, why)))
        .or_else(|| past.and_then(|p| p.failure.clone()))
}

/// An output's failure, naming the output once (its errors start with `output <name>: `
/// already, `output::OutputError`).
fn output_reason(name: &str, why: &str) -> String {
    let prefix = format!("output {name}: ");
    if why.starts_with(&prefix) {
        why.to_owned()
    } else {
        format!("{prefix}{why}")
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

#[cfg(test)]
mod tests {
    // The status lines (`status.rs`): which condition a line is in and why, their order, the
    // delivered counts' windows, the lease holder, and that no reason shows a key in clear.

    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::secret::ApiKey;
    use crate::service::Service;

    const REPLICA: &str = "host-a:101";
    const CLEAR_KEY: &str = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c9z";

    fn line<'a>(report: &'a StatusReport, input: &str, service: Service) -> &'a ServiceStatus {
        report
            .services
            .iter()
            .find(|s| s.input == input && s.service == service.to_string())
            .unwrap_or_else(|| panic!("no line for {input} {service}: {report:?}"))
    }

    /// An expected service whose setup passed and whose checkpoint is at `checkpoint`.
    fn collecting(m: &Arc<Metrics>, input: &str, service: Service, checkpoint: Millis) {
        m.expect_service(input, service);
        let s = m.service(input, service);
        s.setup(Ok(()));
        s.checkpoint(checkpoint);
    }

    #[test]
    fn a_refused_key_fails_the_line_with_the_masked_key_only() {
        let m = Arc::new(Metrics::new());
        m.expect_service("10001", Service::UrlIsolation);
        let starting = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&starting, "10001", Service::UrlIsolation).condition,
            Condition::Starting,
            "before the first setup check it is starting, not failing"
        );
        // The API client's refusal, as it words it (`api::client::FetchError::Auth`).
        let key = ApiKey::new(CLEAR_KEY.into());
        let refusal = format!("API Key {} is not valid. (HTTP 401)", key.masked());
        m.service("10001", Service::UrlIsolation)
            .setup(Err(refusal));
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(l.condition, Condition::Failing, "{l:?}");
        assert!(l.reason.as_deref().unwrap().contains("1a2b...9z"), "{l:?}");
        assert_eq!(report.failing, 1);
        let json = serde_json::to_string(&report).unwrap();
        assert!(!json.contains(CLEAR_KEY), "{json}");
        // Fixed: the next check passes.
        m.service("10001", Service::UrlIsolation).setup(Ok(()));
        let fixed = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&fixed, "10001", Service::UrlIsolation).condition,
            Condition::Collecting
        );
    }

    #[test]
    fn an_output_down_is_named_once_in_the_reason() {
        let m = Arc::new(Metrics::new());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        // The outputs' errors name their output already (`output::OutputError`).
        m.service("10001", Service::UrlIsolation).delivery(
            "hook",
            "t",
            Err("output hook: cannot connect".into()),
        );
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(l.condition, Condition::Failing);
        assert_eq!(l.reason.as_deref(), Some("output hook: cannot connect"));
    }

    #[test]
    fn failing_lines_come_first_then_the_largest_lag() {
        let m = Arc::new(Metrics::new());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        collecting(&m, "10002", Service::UrlIsolation, 9_000);
        collecting(&m, "10003", Service::UrlIsolation, 9_500);
        m.service("10003", Service::UrlIsolation).delivery(
            "devo",
            "t",
            Err("connection refused".into()),
        );
        m.expect_service("10004", Service::UrlIsolation);
        let report = m.status_report(10_000, REPLICA);
        let order: Vec<(&str, Condition)> = report
            .services
            .iter()
            .map(|s| (s.input.as_str(), s.condition))
            .collect();
        assert_eq!(
            order,
            [
                ("10003", Condition::Failing),
                ("10004", Condition::Starting),
                ("10001", Condition::Collecting),
                ("10002", Condition::Collecting),
            ]
        );
        let failing = line(&report, "10003", Service::UrlIsolation);
        assert_eq!(
            failing.reason.as_deref(),
            Some("output devo: connection refused")
        );
        assert_eq!(
            (report.failing, report.starting, report.collecting),
            (1, 1, 2)
        );
    }

    #[test]
    fn an_unreachable_state_store_fails_every_line_even_standing_by() {
        let m = Arc::new(Metrics::new().with_leases());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        collecting(&m, "10001", Service::BrowserAndEmailIsolation, 1_000);
        m.service("10001", Service::UrlIsolation).lease_held(true);
        let healthy = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&healthy, "10001", Service::BrowserAndEmailIsolation).condition,
            Condition::Standby,
            "standing by is not failing"
        );
        m.persistence(Err(
            "Redis at 127.0.0.1:6379 is unreachable: connection refused".into(),
        ));
        let report = m.status_report(10_000, REPLICA);
        for service in Service::ALL {
            let l = line(&report, "10001", service);
            assert_eq!(l.condition, Condition::Failing, "{l:?}");
            assert!(
                l.reason
                    .as_deref()
                    .unwrap()
                    .contains("Redis at 127.0.0.1:6379 is unreachable"),
                "{l:?}"
            );
        }
        m.persistence(Ok(()));
        let back = m.status_report(10_000, REPLICA);
        assert_eq!(back.failing, 0, "{back:?}");
    }

    #[test]
    fn the_lease_holder_is_this_replica_while_it_holds_the_lease() {
        let m = Arc::new(Metrics::new().with_leases());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        let s = m.service("10001", Service::UrlIsolation);
        s.lease_held(true);
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(l.condition, Condition::Collecting);
        assert_eq!(l.lease_holder.as_deref(), Some(REPLICA));
        s.lease_held(false);
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(l.condition, Condition::Standby);
        assert_eq!(l.lease_holder, None, "the holder is not known yet");
        // Without Redis there is no lease.
        let plain = Arc::new(Metrics::new());
        collecting(&plain, "10001", Service::UrlIsolation, 1_000);
        let report = plain.status_report(10_000, REPLICA);
        assert_eq!(
            line(&report, "10001", Service::UrlIsolation).lease_holder,
            None
        );
    }

    #[test]
    fn a_failed_cycle_fails_the_line_until_the_next_success() {
        let m = Arc::new(Metrics::new());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        let s = m.service("10001", Service::UrlIsolation);
        s.pull_failed("the API kept failing after 5 attempt(s); last error: HTTP 503".into());
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(l.condition, Condition::Failing);
        assert!(l.reason.as_deref().unwrap().contains("HTTP 503"), "{l:?}");
        // A committed window is progress: the failure is over.
        s.window_committed(0, 9_000);
        let report = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&report, "10001", Service::UrlIsolation).condition,
            Condition::Collecting
        );
        s.pull_failed("delivery failed".into());
        s.pull_succeeded(9_500);
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(
            (l.condition, l.reason.as_deref()),
            (Condition::Collecting, None)
        );
    }

    #[test]
    fn standing_by_is_not_failing_and_names_the_holder_if_known() {
        let m = Arc::new(Metrics::new().with_leases());
        collecting(&m, "10001", Service::UrlIsolation, 1_000);
        let s = m.service("10001", Service::UrlIsolation);
        s.lease_held(true);
        // The tenure's last cycle failed, then the lease went to another replica.
        s.pull_failed("delivery failed".into());
        s.delivery("devo", "t", Err("connection refused".into()));
        s.lease_held(false);
        s.lease_holder(Some("host-b:202"));
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(
            (l.condition, l.reason.as_deref()),
            (Condition::Standby, None),
            "{l:?}"
        );
        assert_eq!(l.lease_holder.as_deref(), Some("host-b:202"));
        // Expired: nobody holds it.
        s.lease_holder(None);
        let report = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&report, "10001", Service::UrlIsolation).lease_holder,
            None
        );
        // Taken again: this replica.
        s.lease_holder(Some("host-b:202"));
        s.lease_held(true);
        let report = m.status_report(10_000, REPLICA);
        assert_eq!(
            line(&report, "10001", Service::UrlIsolation)
                .lease_holder
                .as_deref(),
            Some(REPLICA)
        );
        // A new tenure: the last one's failed cycle is old news (its output's last delivery
        // stays failed until one is confirmed, as `/ready` says).
        s.delivery("devo", "t", Ok(1));
        let report = m.status_report(10_000, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(
            (l.condition, l.reason.as_deref()),
            (Condition::Collecting, None)
        );
    }

    #[test]
    fn delivered_counts_cover_the_last_60_seconds_and_60_minutes() {
        let m = Arc::new(Metrics::new());
        collecting(&m, "10001", Service::UrlIsolation, 0);
        let s = m.service("10001", Service::UrlIsolation);
        let counts = |now: Millis| {
            let report = m.status_report(now, REPLICA);
            let l = line(&report, "10001", Service::UrlIsolation);
            (l.delivered_last_minute, l.delivered_last_hour)
        };
        let hour: Millis = 3_600_000;
        let t0 = 100 * hour; // on a minute's (and a second's) first millisecond
        assert_eq!(counts(t0), (0, 0));
        s.window_committed(5, t0);
        s.window_committed(7, t0 + 999);
        assert_eq!(counts(t0 + 999), (12, 12));
        // The second of t0 is in the last minute until 59 more seconds have begun.
        assert_eq!(counts(t0 + 59_999), (12, 12));
        assert_eq!(counts(t0 + 60_000), (0, 12), "a minute later");
        s.window_committed(3, t0 + 61_000);
        assert_eq!(counts(t0 + 61_500), (3, 15));
        // A commit stamped after `now` (a clock that went back) is not in the last minute yet.
        assert_eq!(counts(t0 + 60_500), (0, 15));
        // The minute of t0 is in the last hour until 59 more minutes have begun.
        assert_eq!(counts(t0 + hour - 1), (0, 15));
        assert_eq!(counts(t0 + hour), (0, 3));
        assert_eq!(counts(t0 + hour + 60_000), (0, 0));
        // Slots are reused: an hour later, the old counts are gone, not added.
        s.window_committed(2, t0 + 2 * hour);
        assert_eq!(counts(t0 + 2 * hour), (2, 2));
    }

    #[test]
    fn a_forgotten_input_loses_its_recent_past() {
        let m = Arc::new(Metrics::new());
        collecting(&m, "10001", Service::UrlIsolation, 0);
        let s = m.service("10001", Service::UrlIsolation);
        s.window_committed(5, 1_000);
        s.pull_failed("x".into());
        m.forget_input("10001");
        collecting(&m, "10001", Service::UrlIsolation, 0);
        let report = m.status_report(1_500, REPLICA);
        let l = line(&report, "10001", Service::UrlIsolation);
        assert_eq!(
            (l.condition, l.delivered_last_minute),
            (Condition::Collecting, 0)
        );
    }
}
