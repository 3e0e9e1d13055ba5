//! Devo's per-pull statistics line (devo-platform.md §3.4) and the totals of a cycle it reports.
//!
//! A module of its own because the line is a contract that dashboards parse (no space after the
//! colon, three decimals, the `(Partial) ` prefix after each window but the last), and because the
//! totals have a second reader: a backfill's progress. The window loop only adds to the totals
//! and says when a line is due; how requests are counted and how the line reads live here.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::timestamp::Millis;

/// Counters of one client, read by the puller for its statistics line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientStats {
    pub requests: u64,
    pub bytes: u64,
}

/// Totals of one cycle, for Devo's statistics line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleStats {
    pub requests: u64,
    pub received: u64,
    pub duplicates: u64,
    pub sent: u64,
    pub windows: u64,
    pub bytes: u64,
    /// Events left out because they are not JSON text and could not be obfuscated.
    pub obfuscation_failures: u64,
    /// Events set aside in the dead-letter store (unreadable), counted each time their window
    /// is delivered: received = sent + duplicates + dead-lettered, per window.
    pub dead_lettered: u64,
}

/// The statistics of one running cycle: its totals so far, and what its lines need besides them.
pub struct CycleReport {
    /// Devo's `@devo_pulling_id`: the cycle's start in epoch milliseconds.
    pulling_id: Millis,
    /// When the cycle started, for the events-per-second average.
    started: Instant,
    /// The API client's counters when the cycle started: the client counts for its lifetime, the
    /// line counts for the cycle.
    client_before: ClientStats,
    /// Received, filtered, sent and window counts so far (requests and bytes are filled in from
    /// the client when a line is written).
    pub totals: CycleStats,
}

impl CycleReport {
    pub fn start(pulling_id: Millis, started: Instant, client: ClientStats) -> CycleReport {
        CycleReport {
            pulling_id,
            started,
            client_before: client,
            totals: CycleStats::default(),
        }
    }

    /// Logs Devo's `(Partial) ` line after a window that is not the cycle's last; `client` is
    /// the API client's counters now.
    pub fn log_partial(&self, client: ClientStats) {
        let partial = CycleStats {
            requests: client.requests - self.client_before.requests,
            ..self.totals
        };
        info!(
            "{}",
            statistics_line(true, self.pulling_id, &partial, self.started.elapsed())
        );
    }

    /// Logs the cycle's final line and returns its totals, requests and bytes included.
    pub fn finish(mut self, client: ClientStats) -> CycleStats {
        self.totals.requests = client.requests - self.client_before.requests;
        self.totals.bytes = client.bytes - self.client_before.bytes;
        info!(
            "{}",
            statistics_line(false, self.pulling_id, &self.totals, self.started.elapsed())
        );
        self.totals
    }
}

/// Devo's per-pull statistics line (no space after the colon, as in the original).
pub fn statistics_line(
    partial: bool,
    pulling_id: Millis,
    s: &CycleStats,
    elapsed: Duration,
) -> String {
    let eps = if elapsed.as_secs_f64() > 0.0 {
        s.sent as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    format!(
        "{}Statistics for this pull cycle (@devo_pulling_id={pulling_id}):Number of requests made: {}; Number of events received: {}; Number of duplicated events filtered out: {}; Number of events generated and sent: {}; Average of events per second: {eps:.3}.",
        if partial { "(Partial) " } else { "" },
        s.requests,
        s.received,
        s.duplicates,
        s.sent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_devos_text() {
        let stats = CycleStats {
            requests: 7,
            received: 1_000,
            duplicates: 3,
            sent: 997,
            ..CycleStats::default()
        };
        assert_eq!(
            statistics_line(false, 1_680_538_730_783, &stats, Duration::from_millis(2_500)),
            "Statistics for this pull cycle (@devo_pulling_id=1680538730783):Number of requests made: 7; Number of events received: 1000; Number of duplicated events filtered out: 3; Number of events generated and sent: 997; Average of events per second: 398.800."
        );
        assert_eq!(
            statistics_line(true, 5, &CycleStats::default(), Duration::ZERO),
            "(Partial) Statistics for this pull cycle (@devo_pulling_id=5):Number of requests made: 0; Number of events received: 0; Number of duplicated events filtered out: 0; Number of events generated and sent: 0; Average of events per second: 0.000."
        );
    }

    /// The client counts for its lifetime; the lines count only this cycle's requests and bytes.
    #[test]
    fn a_report_counts_the_cycles_requests_and_bytes() {
        let client = |requests, bytes| ClientStats { requests, bytes };
        let mut report = CycleReport::start(1, Instant::now(), client(10, 4_000));
        report.totals.sent = 5;
        report.totals.received = 6;
        let done = report.finish(client(13, 4_500));
        assert_eq!(
            done,
            CycleStats {
                requests: 3,
                bytes: 500,
                sent: 5,
                received: 6,
                ..CycleStats::default()
            }
        );
    }
}
