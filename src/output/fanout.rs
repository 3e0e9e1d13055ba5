//! The outputs fan-out: every batch to every output, and "retry the unconfirmed".
//!
//! [`Outputs::deliver`] hands a batch to each output in turn. An output that confirms is done
//! with the batch: when another one fails, only the unconfirmed outputs get it again, after a
//! jittered backoff, so a Devo outage does not write the batch twice into a file output. After
//! [`DELIVERY_RETRIES`] retries the batch is given up (the caller delivers the window again in
//! its next cycle). The waits between tries end at once on a shutdown request.
//!
//! With Redis persistence, each output's turn (each try) starts only after the service's lease
//! gate allows it ([`LeaseGate::before_delivery`]): a holder paused in the middle of a batch
//! (between two outputs, or between tries) and woken after another process took over stops
//! there, instead of writing its stale batch into the next output (a file shared with the new
//! holder would be cut back to the old holder's idea of its length).
//!
//! Before the first batch after a start, or after a failed one, [`Outputs::resume`] hands each
//! output its committed position (see the [module documentation](super)). It asks the gate
//! before each output too: a file output cuts its file back to the committed length there, and
//! only the holder's committed length may cut bytes another replica wrote (see `file`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Output, OutputError, Position};
use crate::backoff::{Backoff, Jitter};
use crate::event::Event;
use crate::isolation::lease::LeaseGate;
use crate::metrics::ServiceMetrics;
use crate::state::StateError;

/// Rounds of delivery to the unconfirmed outputs after the first, within one `deliver`.
pub const DELIVERY_RETRIES: u32 = 3;

/// The wait before the first retry round; doubled for each further round, jittered.
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Why a batch was not confirmed by every output.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// The last failure of an output that never confirmed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A shutdown request ended a wait between tries.
    #[error("stopped by a shutdown request")]
    Cancelled,
    /// The lease gate refused the next output's turn (lost, or Redis unreachable).
    #[error(transparent)]
    Lease(StateError),
}

/// The outputs of one service task, delivered to as one.
pub struct Outputs {
    outputs: Vec<Output>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
    /// Asked before each output's turn (always open without leases).
    gate: LeaseGate,
}

impl Outputs {
    /// `metrics` counts every delivery attempt per output; `cancel` ends the waits between tries
    /// (ours and the outputs' own).
    pub fn new(
        mut outputs: Vec<Output>,
        metrics: ServiceMetrics,
        cancel: CancellationToken,
    ) -> Self {
        for o in &mut outputs {
            o.stop_retries_on(cancel.clone());
        }
        Outputs {
            outputs,
            metrics,
            cancel,
            gate: LeaseGate::open(),
        }
    }

    /// Asks `gate` before each output's turn from now on (a lease's tenure).
    pub fn set_gate(&mut self, gate: LeaseGate) {
        self.gate = gate;
    }

    /// Counts into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: ServiceMetrics) {
        self.metrics = metrics;
    }

    /// Ends the waits between tries on `cancel` from now on (a lease's tenure).
    pub fn set_cancel(&mut self, cancel: CancellationToken) {
        for o in &mut self.outputs {
            o.stop_retries_on(cancel.clone());
        }
        self.cancel = cancel;
    }

    /// Tells every output the position committed for it in `table` (`committed(name)`), and
    /// returns the positions of outputs that had none committed, or did not apply the one
    /// committed (a file output's position of another file), and now report one: the caller
    /// records them.
    ///
    /// # Errors
    /// [`FanOutError::Output`] for the first output that cannot resume (e.g. a file it cannot
    /// cut back); [`FanOutError::Lease`] when the lease gate refuses an output's turn.
    pub async fn resume(
        &mut self,
        table: &str,
        committed: impl Fn(&str) -> Option<Position>,
    ) -> Result<Vec<(String, Position)>, FanOutError> {
        let mut new_positions = Vec::new();
        for o in &mut self.outputs {
            // A resume may cut a shared file: only the lease's holder may do that.
            self.gate
                .before_delivery()
                .await
                .map_err(FanOutError::Lease)?;
            let stored = committed(o.name());
            let position = o.resume(table, stored.clone()).await?;
            // None stored, or one the output did not apply (another file's): record its own.
            if let Some(p) = position.filter(|p| stored.as_ref() != Some(p)) {
                new_positions.push((o.name().to_owned(), p));
            }
        }
        Ok(new_positions)
    }

    /// Delivers `batch` (events of `table`, sorted by date) to every output, retrying only the
    /// ones that did not confirm. Returns the positions the outputs confirmed with, by output
    /// name, for the caller to store with its checkpoint. An empty batch is delivered nowhere.
    ///
    /// # Errors
    /// [`FanOutError::Output`] with the last failure when an output still has not confirmed
    /// after [`DELIVERY_RETRIES`] retries; [`FanOutError::Cancelled`] on a shutdown request;
    /// [`FanOutError::Lease`] when the lease gate refuses an output's turn.
    pub async fn deliver(
        &mut self,
        table: &str,
        batch: &[Event],
    ) -> Result<Vec<(String, Position)>, FanOutError> {
        let mut positions = Vec::new();
        if batch.is_empty() {
            return Ok(positions);
        }
        let mut confirmed = vec![false; self.outputs.len()];
        // Waits of 1, 2 and 4 s, each jittered into its upper half.
        let mut backoff =
            Backoff::new(FIRST_RETRY_WAIT, FIRST_RETRY_WAIT * 4).jitter(Jitter::UpperHalf);
        loop {
            let mut last_error = None;
            for (o, done) in self.outputs.iter_mut().zip(&mut confirmed) {
                if *done {
                    continue;
                }
                self.gate
                    .before_delivery()
                    .await
                    .map_err(FanOutError::Lease)?;
                match deliver_one(o, &self.metrics, table, batch).await {
                    Ok(p) => {
                        *done = true;
                        positions.extend(p.map(|p| (o.name().to_owned(), p)));
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            let Some(e) = last_error else {
                return Ok(positions);
            };
            if backoff.attempts() >= DELIVERY_RETRIES {
                return Err(e.into());
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_wait()) => {}
                _ = self.cancel.cancelled() => return Err(FanOutError::Cancelled),
            }
        }
    }
}

/// One output's try, counted and, on failure, logged.
async fn deliver_one(
    o: &mut Output,
    metrics: &ServiceMetrics,
    table: &str,
    batch: &[Event],
) -> Result<Option<Position>, OutputError> {
    let result = o.deliver(table, batch).await;
    metrics.delivery(
        o.name(),
        table,
        result
            .as_ref()
            .map(|_| batch.len())
            .map_err(|e| e.to_string()),
    );
    if let Err(e) = &result {
        warn!(
            "Output {} did not confirm {} event(s): {e}",
            o.name(),
            batch.len()
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::time::Instant;

    use super::*;
    use crate::metrics::Metrics;
    use crate::output::file::FileOutput;
    use crate::service::Service;

    const TABLE: &str = "t.a";

    fn batch() -> Vec<Event> {
        (0..3)
            .map(|i| Event {
                date_ms: i,
                key: [0; 32],
                json: Bytes::from(format!(r#"{{"id":{i}}}"#)),
            })
            .collect()
    }

    fn lines(events: &[Event]) -> String {
        events
            .iter()
            .map(|e| format!("{}\n", std::str::from_utf8(&e.json).unwrap()))
            .collect()
    }

    fn file_output(name: &str, dir: &Path) -> Output {
        Output::File(FileOutput::new(name.into(), dir.to_owned(), 0o640))
    }

    fn contents(dir: &Path) -> String {
        std::fs::read_to_string(FileOutput::path_for(dir, TABLE)).unwrap()
    }

    /// `good` writes into a directory; `bad`'s directory is a regular file until it is removed.
    /// The registry lets a test see when `bad` has failed.
    fn good_and_bad(
        tmp: &Path,
        cancel: CancellationToken,
    ) -> (Outputs, std::path::PathBuf, Arc<Metrics>) {
        let blocked = tmp.join("bad");
        std::fs::write(&blocked, b"not a directory").unwrap();
        let outputs = vec![
            file_output("good", &tmp.join("good")),
            file_output("bad", &blocked),
        ];
        let registry = Arc::new(Metrics::new());
        let metrics = registry.service("10001", Service::UrlIsolation);
        (Outputs::new(outputs, metrics, cancel), blocked, registry)
    }

    /// Whether `output` has failed to confirm at least once, read from the exposition text.
    fn has_failed(registry: &Metrics, output: &str) -> bool {
        registry.encode(0).lines().any(|line| {
            line.contains("output_confirm_failures")
                && line.contains(&format!("output=\"{output}\""))
                && !line.ends_with(" 0")
        })
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn only_the_unconfirmed_output_gets_the_batch_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut outputs, blocked, registry) = good_and_bad(tmp.path(), CancellationToken::new());
        let events = batch();
        // Unblock `bad` once its first try has failed, so the batch reaches it only by a retry
        // (a fixed delay raced `good`'s fsync, which can take hundreds of ms, and `bad` then
        // succeeded at its first try).
        let unblock = tokio::spawn(async move {
            while !has_failed(&registry, "bad") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            std::fs::remove_file(blocked).unwrap();
        });
        let started = Instant::now();
        let positions = outputs.deliver(TABLE, &events).await.unwrap();
        unblock.await.unwrap();

        // The first retry waits half to all of FIRST_RETRY_WAIT.
        assert!(
            started.elapsed() >= FIRST_RETRY_WAIT / 2,
            "{:?}",
            started.elapsed()
        );
        let expected = lines(&events);
        let len = expected.len() as u64;
        let lengths: Vec<(String, u64)> =
            positions.into_iter().map(|(o, p)| (o, p.length)).collect();
        assert_eq!(
            lengths,
            [("good".to_string(), len), ("bad".to_string(), len)]
        );
        // Written once each: the confirmed output was not given the batch again.
        assert_eq!(contents(&tmp.path().join("good")), expected);
        assert_eq!(contents(&tmp.path().join("bad")), expected);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_shutdown_ends_the_wait_between_tries() {
        let tmp = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let (mut outputs, _blocked, _) = good_and_bad(tmp.path(), cancel.clone());
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let events = batch();
        let started = Instant::now();
        let result = outputs.deliver(TABLE, &events).await;
        stop.await.unwrap();

        assert!(matches!(result, Err(FanOutError::Cancelled)), "{result:?}");
        assert!(
            started.elapsed() < FIRST_RETRY_WAIT / 2,
            "the wait was not cut short: {:?}",
            started.elapsed()
        );
        assert_eq!(contents(&tmp.path().join("good")), lines(&events));
    }

    #[tokio::test]
    async fn an_empty_batch_goes_nowhere() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut outputs, _blocked, _) = good_and_bad(tmp.path(), CancellationToken::new());
        assert!(outputs.deliver(TABLE, &[]).await.unwrap().is_empty());
        assert!(!tmp.path().join("good").exists());
    }
}
