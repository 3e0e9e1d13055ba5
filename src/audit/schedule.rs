//! The daemon's own audit: every `globals.audit_interval_in_hours` (default 24; 0: never), each
//! service this process pulls (with Redis persistence: each whose lease it holds now) is
//! audited over the last interval of settled hours, at least the last 24, without repair. The
//! result goes to the service's metrics (`isolation_collector_missing_events`,
//! `isolation_collector_last_audit_timestamp_seconds`) and its `/status` line.
//!
//! One task per service, beside its puller: it only reads the committed state, and its API
//! requests wait for the same `requests_limits` limiter and job cap as the pullers', so it
//! never blocks collection and never exceeds the vendor's quota. The first audit runs
//! [`FIRST_AUDIT_DELAY`] after the start, when the first cycles have caught up; one that could
//! not run (no state yet, the API failing) is tried again after [`RETRY_AFTER_FAILURE`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::service::{audit_service, AuditContext, AuditRange};
use crate::api::job_cap::JobCap;
use crate::api::limiter::InputLimiter;
use crate::clock::SharedClock;
use crate::config::{InputConfig, ServiceConfig};
use crate::metrics::Metrics;
use crate::pipeline::ledger::HOUR_MS;
use crate::service::Service;
use crate::state::StateStore;
use crate::timestamp::Millis;

/// How long after the start the first audit runs.
pub const FIRST_AUDIT_DELAY: Duration = Duration::from_secs(180);

/// How soon an audit that could not run is tried again (at most the interval).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// What the audit task of one service needs.
pub struct ScheduledAudit {
    pub input: InputConfig,
    pub svc: ServiceConfig,
    pub store: Arc<StateStore>,
    pub limiter: InputLimiter,
    pub jobs: JobCap,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub interval: Duration,
}

impl ScheduledAudit {
    /// Audits the service every interval until `cancel`; always `true` (a failed audit is
    /// reported in its summary and tried again at the next interval).
    pub async fn run_until(self, cancel: CancellationToken) -> bool {
        let mut wait = first_audit_delay();
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return true,
            }
            wait = self.interval;
            if self.pulled_here() && !self.audit_once(&cancel).await {
                // No state yet, or the API failing: try again sooner than a day later.
                wait = wait.min(RETRY_AFTER_FAILURE);
            }
        }
    }

    fn pulled_here(&self) -> bool {
        pulled_here(&self.metrics, &self.input.id, self.svc.service)
    }

    /// One audit, its result in the metrics; `false` when it could not run.
    async fn audit_once(&self, cancel: &CancellationToken) -> bool {
        let span = (self.interval.as_millis() as Millis).max(24 * HOUR_MS);
        let range = AuditRange {
            span: Some(span),
            ..AuditRange::default()
        };
        let cx = AuditContext {
            store: &self.store,
            limiter: &self.limiter,
            jobs: &self.jobs,
            clock: self.clock.clone(),
            cancel: cancel.child_token(),
            keep_events: false,
        };
        let audited = audit_service(&self.input, &self.svc, range, &cx).await;
        if cancel.is_cancelled() {
            return true;
        }
        let at = self.clock.now_ms();
        let summary = audited.report.summary(at);
        match &summary.error {
            Some(why) => warn!("The audit against the API could not run: {why}"),
            None if summary.missing_events > 0 => warn!(
                "The audit from {} to {} found {} event(s) the API holds that were not delivered, in {} hour(s); run `isolation-collector audit --repair` to deliver them.",
                summary.from, summary.to, summary.missing_events, summary.hours_missing
            ),
            None => info!(
                "The audit from {} to {} found every event the API holds delivered ({} hour(s)).",
                summary.from, summary.to, summary.hours
            ),
        }
        let ran = summary.error.is_none();
        self.metrics
            .service(&self.input.id, self.svc.service)
            .audited(summary, at);
        ran
    }
}

/// Whether this process pulls `service` of input `input` now: without Redis always, with
/// Redis while it holds the lease (as its metrics say).
fn pulled_here(metrics: &Metrics, input: &str, service: Service) -> bool {
    let id = (input.to_owned(), service);
    metrics.leases().is_none_or(|(held, _)| held.contains(&id))
}

/// [`FIRST_AUDIT_DELAY`], or in a build with the cargo feature `test-hooks`, the milliseconds
/// in `ISOLATION_COLLECTOR_AUDIT_FIRST_DELAY_MS` (the tests do not wait three minutes).
fn first_audit_delay() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("ISOLATION_COLLECTOR_AUDIT_FIRST_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    FIRST_AUDIT_DELAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_redis_only_the_services_whose_lease_is_held_are_audited() {
        let alone = Metrics::new();
        assert!(pulled_here(&alone, "1", Service::UrlIsolation));
        let metrics = Arc::new(Metrics::new().with_leases());
        metrics.expect_service("1", Service::UrlIsolation);
        metrics.expect_service("1", Service::BrowserAndEmailIsolation);
        assert!(!pulled_here(&metrics, "1", Service::UrlIsolation));
        metrics.service("1", Service::UrlIsolation).lease_held(true);
        assert!(pulled_here(&metrics, "1", Service::UrlIsolation));
        assert!(!pulled_here(
            &metrics,
            "1",
            Service::BrowserAndEmailIsolation
        ));
        metrics
            .service("1", Service::UrlIsolation)
            .lease_held(false);
        assert!(!pulled_here(&metrics, "1", Service::UrlIsolation));
    }
}
