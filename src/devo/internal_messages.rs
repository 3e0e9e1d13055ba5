//! Internal messages: the collector's own warnings and errors delivered to Devo, as Devo's
//! collectors do (devo-platform.md §3.7), for outputs configured with `internal_messages: true`.
//!
//! Each record goes to the table `devo.collectors.out.local.<level>` (`warning`, `error`) with
//! Devo's JSON shape: `{msg, time, level, collector_name, collector_version, collector_image,
//! input_name, service_name, module_name}`, and `input_id`: the id of the input (tenant) whose
//! service logged it (empty for the process's own lines), since one process carries many.
//!
//! The logging layer hands messages to its [`InternalTap`], a bounded channel this sender
//! connects to: logging never waits for the network, and when the channel is full (Devo
//! unreachable for long) messages are dropped and counted rather than held without bound. They
//! are operational logs, not events: at-most-once is the right trade here, and they still reach
//! standard error. The sender's own log lines carry the target [`SENDER_TARGET`] and are never
//! handed over, so an unreachable Devo cannot feed a loop of messages about itself.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
pub use crate::logging::{InternalMessage, InternalTap, SENDER_TARGET};
use crate::output::Output;

/// Messages waiting for the sender at most; more are dropped.
const CHANNEL_CAPACITY: usize = 1_000;

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
        "time": crate::timestamp::format_iso(m.time_ms),
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
    tap: &InternalTap,
    cancel: CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    if outputs.is_empty() {
        return None;
    }
    let rx = tap.connect(CHANNEL_CAPACITY)?; // None: this tap has its sender already
    Some(deliver_until_cancelled(
        outputs,
        identity,
        rx,
        tap.clone(),
        cancel,
    ))
}

async fn deliver_until_cancelled(
    mut outputs: Vec<Output>,
    identity: Identity,
    mut rx: mpsc::Receiver<InternalMessage>,
    tap: InternalTap,
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
        let dropped = tap.dropped();
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

    /// Two collectors in one process (in-process replicas, tests) each deliver their own
    /// internal messages through their own outputs: no process-wide sender joins them.
    #[tokio::test]
    async fn two_collectors_in_one_process_each_deliver_their_own() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let identity = |name: &str| Identity {
            collector_name: name.into(),
            input_name: "proofpoint_isolation".into(),
        };
        let cancel = CancellationToken::new();
        let output = |i: usize| {
            Output::File(crate::output::file::FileOutput::new(
                format!("file{i}"),
                dirs[i].path().to_owned(),
                0o644,
            ))
        };
        let taps = [InternalTap::default(), InternalTap::default()];
        let first = start(vec![output(0)], identity("first"), &taps[0], cancel.clone());
        let second = start(
            vec![output(1)],
            identity("second"),
            &taps[1],
            cancel.clone(),
        );
        assert!(
            first.is_some(),
            "the first collector's sender did not start"
        );
        assert!(
            second.is_some(),
            "the second collector in the process got no internal-message sender"
        );
    }
}
