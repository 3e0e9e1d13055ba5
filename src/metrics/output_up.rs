//! `output_up{input, service, output}`: 1 when the output confirmed the service's last delivery
//! to it, 0 when it did not (any table's). The shipped alert "output down"
//! (`deploy/prometheus/alerts.yaml`) reads it; `/ready` says the same per output, with the error.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::OutputUpLabels;
use super::lock;

/// Registers the family.
pub(super) fn register(registry: &mut Registry) -> Family<OutputUpLabels, Gauge> {
    super::listed::registered(
        registry,
        "output_up",
        "1 if the output confirmed the service's last delivery to it, 0 if not (retried until it does; /ready names the error). No series before a first delivery.",
    )
}

impl super::ServiceMetrics {
    /// The last delivery to `output` was confirmed (`true`) or not.
    pub(super) fn output_up(&self, output: &str, up: bool) {
        let labels = OutputUpLabels {
            input: self.input.clone(),
            service: self.service,
            output: output.to_owned(),
        };
        self.metrics
            .output_up
            .get_or_create(&labels)
            .set(i64::from(up));
    }
}

impl super::Metrics {
    /// Removes the series of `input` (its tenant was forgotten): one per output that
    /// `/ready` knows of, since both are fed by the same deliveries.
    pub(super) fn forget_output_up(&self, input: &str) {
        for ((i, service), output) in lock(&self.readiness).outputs.keys() {
            if i == input {
                self.output_up.remove(&OutputUpLabels {
                    input: input.to_owned(),
                    service: *service,
                    output: output.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Metrics;
    use crate::service::Service;

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn follows_the_last_delivery_and_leaves_with_its_tenant() {
        let m = Arc::new(Metrics::new());
        let up = "isolation_collector_output_up{input=\"10001\",service=\"url_isolation\",output=\"hec\"}";
        let s = m.service("10001", Service::UrlIsolation);
        let text = m.encode(0);
        assert!(
            text.contains("# TYPE isolation_collector_output_up gauge"),
            "{text}"
        );
        assert!(!text.contains(up), "no series before a delivery: {text}");
        s.delivery("hec", "t", Err("refused".into()));
        assert!(has_line(&m.encode(0), &format!("{up} 0")));
        s.delivery("hec", "t", Ok(2));
        assert!(has_line(&m.encode(0), &format!("{up} 1")));
        // Any table's failure marks the output down; its next confirmation up again.
        s.delivery("hec", "t2", Err("refused".into()));
        assert!(has_line(&m.encode(0), &format!("{up} 0")));
        m.service("10002", Service::UrlIsolation)
            .delivery("hec", "t", Ok(1));
        m.forget_input("10001");
        let text = m.encode(0);
        assert!(!text.contains("10001"), "{text}");
        assert!(text.contains("output_up{input=\"10002\""), "{text}");
    }
}
