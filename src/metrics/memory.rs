//! The memory gauges, read at each scrape: the process's resident memory and the window memory
//! budget (`globals.window_memory_budget_in_mb`) with the bytes its windows hold now. The
//! shipped alert "memory near the budget" (`deploy/prometheus/alerts.yaml`) reads them.
//!
//! The readings come from a [`MemoryProbe`] that the wiring supplies (`app::run`): the window
//! budget (`pipeline::budget`) and the `/proc` reader (`devo::gc_line`) sit in layers above this
//! one. The families are registered with or without a probe, so that a scrape lists them
//! (`validate`, `backfill` and the tests build metrics without one).

use std::sync::OnceLock;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// What the memory gauges read at each scrape.
pub trait MemoryProbe: Send + Sync + std::fmt::Debug {
    /// The process's resident set size in bytes, where the OS tells it (`None` elsewhere).
    fn resident_bytes(&self) -> Option<u64>;
    /// The window memory budget in bytes, and the bytes the windows hold of it now.
    fn window_budget(&self) -> (u64, u64);
}

/// `resident_memory_bytes`, `window_memory_budget_bytes` and `window_memory_held_bytes`.
#[derive(Debug, Default)]
pub(super) struct MemoryGauges {
    resident: Gauge,
    budget: Gauge,
    held: Gauge,
    probe: OnceLock<Box<dyn MemoryProbe>>,
}

impl MemoryGauges {
    pub(super) fn registered(registry: &mut Registry) -> MemoryGauges {
        let gauges = MemoryGauges::default();
        registry.register_with_unit(
            "resident_memory",
            "The process's resident set size (VmRSS), read at scrape time.",
            Unit::Bytes,
            gauges.resident.clone(),
        );
        registry.register_with_unit(
            "window_memory_budget",
            "The window memory budget (globals.window_memory_budget_in_mb): the most bytes of events all services' windows hold at once.",
            Unit::Bytes,
            gauges.budget.clone(),
        );
        registry.register_with_unit(
            "window_memory_held",
            "Bytes of the window memory budget that windows hold now (reserved until delivered and committed); at the budget, windows wait their turn.",
            Unit::Bytes,
            gauges.held.clone(),
        );
        gauges
    }

    /// Sets the gauges from the probe, if there is one (before each exposition).
    pub(super) fn sample(&self) {
        let Some(probe) = self.probe.get() else {
            return;
        };
        if let Some(rss) = probe.resident_bytes() {
            self.resident.set(saturating_i64(rss));
        }
        let (budget, held) = probe.window_budget();
        self.budget.set(saturating_i64(budget));
        self.held.set(saturating_i64(held));
    }
}

fn saturating_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl super::Metrics {
    /// The memory gauges read `probe` from now on (the first probe given stays).
    pub fn watch_memory(&self, probe: Box<dyn MemoryProbe>) {
        let _ = self.memory.probe.set(probe);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    /// A probe with fixed readings.
    #[derive(Debug)]
    struct Fixed;

    impl MemoryProbe for Fixed {
        fn resident_bytes(&self) -> Option<u64> {
            Some(80 << 20)
        }
        fn window_budget(&self) -> (u64, u64) {
            (16 << 20, 3 << 20)
        }
    }

    #[test]
    fn the_gauges_are_listed_always_and_read_from_the_probe_at_each_scrape() {
        let m = Metrics::new();
        let text = m.encode(0);
        for family in [
            "resident_memory_bytes",
            "window_memory_budget_bytes",
            "window_memory_held_bytes",
        ] {
            // Listed without a probe (the deploy test checks the names in a scrape).
            assert!(
                text.contains(&format!("# TYPE isolation_collector_{family} gauge")),
                "{family}: {text}"
            );
        }
        m.watch_memory(Box::new(Fixed));
        let text = m.encode(0);
        for line in [
            "isolation_collector_resident_memory_bytes 83886080",
            "isolation_collector_window_memory_budget_bytes 16777216",
            "isolation_collector_window_memory_held_bytes 3145728",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
