//! Every registered family is listed in the exposition (its `# HELP` and `# TYPE` lines) from
//! the start, before its first series: `prometheus_client` leaves an empty family out, so a
//! scrape would not tell a metric that is renamed or gone from one that has not happened yet
//! (no dead letter, no audit). Prometheus reads a family without samples as just metadata
//! (OpenMetrics allows a MetricFamily with no Metrics). The shipped rules and dashboard
//! (`deploy/`) are checked against a real scrape by name (`tests/it/deploy.rs`), which this
//! makes possible. [`registered`] registers a family so.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// A metric that is never empty to the registry: always listed, with or without series.
#[derive(Debug)]
pub(super) struct Listed<M>(pub(super) M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A new family, registered under `name` and listed from the start.
pub(super) fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: Default + Clone + EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
{
    let family = M::default();
    registry.register(name, help, Listed(family.clone()));
    family
}

/// [`registered`], with the unit's suffix added to `name` (`_seconds`).
pub(super) fn registered_with_unit<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Unit,
) -> M
where
    M: Default + Clone + EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
{
    let family = M::default();
    registry.register_with_unit(name, help, unit, Listed(family.clone()));
    family
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;

    #[test]
    fn a_family_without_series_is_listed() {
        let text = Metrics::new().with_leases().encode(0);
        for (family, kind) in [
            ("events_dead_lettered", "counter"),
            ("api_job_faults", "counter"),
            ("delivered_events", "counter"),
            ("missing_events", "gauge"),
            ("last_audit_timestamp_seconds", "gauge"),
            ("checkpoint_lag_seconds", "gauge"),
            ("lease_held", "gauge"),
            ("service_unpulled", "gauge"),
            ("state_written_back", "counter"),
        ] {
            let line = format!("# TYPE isolation_collector_{family} {kind}");
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // Without series: no sample line of them.
        assert!(!text
            .lines()
            .any(|l| l.starts_with("isolation_collector_events_dead")));
    }
}
