//! Internal messages: the collector's own warnings and errors delivered to Devo, as Devo's
//! collectors do (devo-platform.md §3.7), for outputs configured with `internal_messages: true`.
//!
//! Each record goes to the table `devo.collectors.out.local.<level>` (`warning`, `error`) with
//! Devo's JSON shape: `{msg, time, level, collector_name, collector_version, collector_image,
//! input_name, service_name, module_name}`, and `input_id`: the id of the input (tenant) whose
//! service logged it (empty for the process's own lines), since one process carries many.
//!
//! The logging layer hands messages to a bounded channel with `try_send`: logging never waits
//! for the network, and when the channel is full (Devo unreachable for long) messages are
//! dropped and counted rather than held without bound. They are operational logs, not events:
//! at-most-once is the right trade here, and they still reach standard error. The sender's own
//! log lines carry the target [`SENDER_TARGET`] and are never forwarded, so an unreachable Devo
//! cannot feed a loop of messages about itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::output::Output;
use crate::telemetry::DevoThread;

/// The `tracing` target of the internal sender's own lines.
pub const SENDER_TARGET: &str = "isolation_collector::internal_sender";

/// Messages waiting for the sender at most; more are dropped.
const CHANNEL_CAPACITY: usize = 1_000;

/// One captured log line.
#[derive(Debug, Clone)]
pub struct InternalMessage {
    pub time_ms: i64,
    pub level: &'static str,
    /// Devo's `module_name`: the line's thread without its arguments (`IsolationPuller`).
    pub module: &'static str,
    /// Devo's `service_name`: the service the line's thread works for (empty when none).
    pub service: String,
    /// The input id of that service (empty when none).
    pub input_id: String,
    pub message: String,
}

static SENDER: OnceLock<mpsc::Sender<InternalMessage>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Called by the logging layer for WARN and ERROR events, with the line's time and the thread
/// it came from.
pub fn forward(
    meta: &tracing::Metadata<'_>,
    time_ms: i64,
    level: &'static str,
    origin: &DevoThread,
    message: &str,
) {
    let Some(tx) = SENDER.get() else { return };
    if meta.target() == SENDER_TARGET {
        return;
    }
    let msg = InternalMessage {
        time_ms,
        level,
        module: origin.module(),
        service: origin.service().to_owned(),
        input_id: origin.input_id().to_owned(),
        message: message.to_owned(),
    };
    if tx.try_send(msg).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Who the collector is, for the records.
#[derive(Debug, Clone)]
pub struct Identity {
    pub collector_name: String,
    pub input_name: String,
}

/// The Devo table of a level.
pub fn table_for(level: &str) -> String {
    format!("devo.collectors.out.local.{}", level.to_ascii_lowercase())
}

/// The record body of a message.
pub fn record(identity: &Identity, m: &InternalMessage) -> String {
    serde_json::json!({
        "msg": m.message,
        "time": crate::time::format_iso(m.time_ms),
        "level": m.level,
        "collector_name": identity.collector_name,
        "collector_version": env!("CARGO_PKG_VERSION"),
        "collector_image": std::env::var("COLLECTOR_IMAGE").unwrap_or_default(),
        "input_name": identity.input_name,
        "input_id": m.input_id,
        "service_name": m.service,
        "module_name": m.module,
    })
    .to_string()
}

/// Starts capturing for `outputs` (one instance per output with `internal_messages: true`).
/// Returns the sender, for the caller to spawn where it tracks its tasks; it delivers what is
/// waiting and ends when `cancel` fires.
pub fn start(
    outputs: Vec<Output>,
    identity: Identity,
    cancel: CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    if outputs.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    if SENDER.set(tx).is_err() {
        return None; // already running (one collector per process)
    }
    Some(deliver_until_cancelled(outputs, identity, rx, cancel))
}

/// Delivers each captured message, gathered by level, until `cancel`, then what is waiting.
async fn deliver_until_cancelled(
    mut outputs: Vec<Output>,
    identity: Identity,
    mut rx: mpsc::Receiver<InternalMessage>,
    cancel: CancellationToken,
) {
    let mut reported_drops = 0;
    loop {
        let (first, mut stopping) = tokio::select! {
            m = rx.recv() => match m { Some(m) => (m, false), None => return },
            _ = cancel.cancelled() => match rx.try_recv() {
                // Stopping: flush what is waiting, then end.
                Ok(m) => (m, true),
                Err(_) => return,
            },
        };
        // Gather what else is waiting, for one connection per level rather than per message.
        let mut batch = vec![first];
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = cancel.cancelled() => stopping = true,
            }
        }
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        send(&mut outputs, &identity, &batch).await;
        let dropped = DROPPED.load(Ordering::Relaxed);
        if dropped > reported_drops {
            tracing::warn!(target: SENDER_TARGET, "{} internal message(s) dropped: the internal sender could not keep up.", dropped - reported_drops);
            reported_drops = dropped;
        }
        if stopping {
            return;
        }
    }
}

async fn send(outputs: &mut [Output], identity: &Identity, batch: &[InternalMessage]) {
    for level in ["WARNING", "ERROR"] {
        let events: Vec<Event> = batch
            .iter()
            .filter(|m| m.level == level)
            .map(|m| Event {
                date_ms: m.time_ms,
                key: [0; 32],
                json: Bytes::from(record(identity, m)),
            })
            .collect();
        if events.is_empty() {
            continue;
        }
        let table = table_for(level);
        for o in outputs.iter_mut() {
            if let Err(e) = o.deliver(&table, &events).await {
                tracing::warn!(target: SENDER_TARGET, "Internal messages not delivered to {}: {e}", o.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_devo_shape() {
        let identity = Identity {
            collector_name: "pp".into(),
            input_name: "proofpoint_isolation".into(),
        };
        let m = InternalMessage {
            time_ms: 1_741_083_327_412,
            level: "ERROR",
            module: "IsolationPuller",
            service: "url_isolation".into(),
            input_id: "10001".into(),
            message: "Pull failed: \"x\"".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&record(&identity, &m)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "msg": "Pull failed: \"x\"",
                "time": "2025-03-04T10:15:27.412Z",
                "level": "ERROR",
                "collector_name": "pp",
                "collector_version": env!("CARGO_PKG_VERSION"),
                "collector_image": std::env::var("COLLECTOR_IMAGE").unwrap_or_default(),
                "input_name": "proofpoint_isolation",
                "input_id": "10001",
                "service_name": "url_isolation",
                "module_name": "IsolationPuller",
            })
        );
        assert_eq!(table_for("WARNING"), "devo.collectors.out.local.warning");
    }
}
