//! Devo's sender statistics lines, summed over the services' connections to each output.

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::SenderRegistry;
use crate::clock::SharedClock;
use crate::logging;
use crate::output::net::stats::{render_stats_lines, SenderStats, StatsHandle};

/// Logs Devo's sender statistics (devo-platform.md §3.5) for each network output every
/// `sender_stats_period_in_sec`. Each service has its own connection to an output; the lines
/// sum them, so they read as Devo's one sender manager per output. The outputs are read from
/// the registry each period: tenants come and go.
pub(super) async fn sender_monitor(
    senders: SenderRegistry,
    period: std::time::Duration,
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut names: Vec<String> = Vec::new();
    note_new_outputs(&senders.snapshot(), &mut names, period);
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let current = senders.snapshot();
        note_new_outputs(&current, &mut names, period);
        let now = std::time::SystemTime::from(clock.now());
        for name in &names {
            let stats = current
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, h)| h.start_period(now))
                .reduce(sum_stats);
            if let Some(stats) = stats {
                let span = logging::monitor_span(name);
                for line in render_stats_lines(&stats, now) {
                    span.in_scope(|| info!("{line}"));
                }
            }
        }
    }
}

/// Devo's start line of a sender monitor, for each output name not seen before.
fn note_new_outputs(
    current: &[(String, StatsHandle)],
    names: &mut Vec<String>,
    period: std::time::Duration,
) {
    for (name, _) in current {
        if !names.contains(name) {
            logging::monitor_span(name)
                .in_scope(|| info!("Starting thread (every {} seconds)", period.as_secs()));
            names.push(name.clone());
        }
    }
}

fn sum_stats(a: SenderStats, b: SenderStats) -> SenderStats {
    SenderStats {
        messages_total: a.messages_total + b.messages_total,
        bytes_total: a.bytes_total + b.bytes_total,
        batches_total: a.batches_total + b.batches_total,
        failures_total: a.failures_total + b.failures_total,
        connections_total: a.connections_total + b.connections_total,
        busy: a.busy + b.busy,
        period_start: a.period_start.min(b.period_start),
        period_messages: a.period_messages + b.period_messages,
        period_bytes: a.period_bytes + b.period_bytes,
    }
}
