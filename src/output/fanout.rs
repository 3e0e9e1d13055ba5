//! The outputs fan-out: every batch to every output, and "retry the unconfirmed".
//!
//! [`Outputs::deliver`] hands a batch to each output in turn. An output that confirms is done
//! with the batch: when another one fails, only the unconfirmed outputs get it again, after a
//! jittered backoff, so a Devo outage does not write the batch twice into a file output. After
//! [`DELIVERY_RETRIES`] retries the batch is given up (the caller delivers the window again in
//! its next cycle). The waits between tries end at once on a shutdown request.
//!
//! What each output confirmed is remembered beyond one call ([`Confirmed`]), by event identity,
//! until the caller reports the window committed ([`Outputs::committed`]): when the window is
//! delivered again in a later cycle (re-fetched, maybe with other bounds and late events), an
//! output gets only the events it has not confirmed, so a healthy Devo output next to a webhook
//! that is down for an hour gets each event once, not once per cycle. An output that confirmed
//! a part of a batch before failing (requests of a split webhook batch, syslog chunks whose
//! proof arrived, RELP records with their `rsp 200`) reports that part
//! ([`OutputError::Partly`]), and it is remembered too. An output that keeps positions (the
//! file output) is rewound to its committed position by [`Outputs::resume`] after a failed
//! window, which erases what it wrote: its memory is dropped there, and it gets the whole
//! window again. The memory is dropped too when the state is read again (a new tenure) or a
//! commit's write failed (it may have landed): a memory of committed events could hide a late
//! twin from an output.
//!
//! An event one output refuses sent alone, with an answer a retry does not change (a 400 or
//! 413 for a request of that one event: [`OutputError::Refused`]), can never reach it. Its
//! refusals are counted in that output's memory, across cycles; at the
//! [`REFUSALS_BEFORE_SET_ASIDE`]th the event is counted as confirmed *for that output only*
//! and queued to be set aside ([`SetAside`], [`Outputs::take_set_aside`]): the caller writes it
//! to the dead-letter store before it commits the window. Every other output still gets it.
//! 5xx, 429, timeouts and connection errors are transient: they are retried, never set aside.
//!
//! With Redis persistence, each output's turn (each try) starts only after the service's lease
//! gate allows it ([`DeliveryGate::before_delivery`](super::DeliveryGate::before_delivery),
//! which HA implements): a holder paused in the middle of a batch (between two outputs, or
//! between tries) and woken after another process took over stops there, instead of writing its
//! stale batch into the next output (a file shared with the new holder would be cut back to the
//! old holder's idea of its length).
//!
//! Before the first batch after a start, or after a failed one, [`Outputs::resume`] hands each
//! output its committed position (see the [module documentation](super)). It asks the gate
//! before each output too: a file output cuts its file back to the committed length there, and
//! only the holder's committed length may cut bytes another replica wrote (see `file`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::confirmed::Confirmed;
use super::gate::{self, SharedGate};
use super::{Output, OutputError, Position};
use crate::backoff::{Backoff, Jitter};
use crate::event::Event;
use crate::metrics::ServiceMetrics;
use crate::timestamp::Millis;

/// Rounds of delivery to the unconfirmed outputs after the first, within one `deliver`.
pub const DELIVERY_RETRIES: u32 = 3;

/// The wait before the first retry round; doubled for each further round, jittered.
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Refusals of one event sent alone (400, 413), counted across cycles, after which it is set
/// aside for the output that refuses it: a refusal that repeats three times, seconds apart and
/// with nothing else failing, is the receiver's answer to that event.
pub const REFUSALS_BEFORE_SET_ASIDE: u32 = 3;

/// An event one output refused alone [`REFUSALS_BEFORE_SET_ASIDE`] times: it counts as
/// confirmed for that output, and must be set aside for it before the window commits.
#[derive(Clone, Debug)]
pub struct SetAside {
    pub output: String,
    pub event: Event,
    /// The receiver's last answer (its body redacted, then cut).
    pub reason: String,
}

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
    Lease(gate::Refusal),
}

/// The outputs of one service task, delivered to as one.
pub struct Outputs {
    outputs: Vec<Output>,
    /// Per output (same order): what it confirmed of the uncommitted window(s).
    confirmed: Vec<Confirmed>,
    /// Events given up on for one output, not yet taken by the caller to set aside.
    set_aside: Vec<SetAside>,
    metrics: ServiceMetrics,
    cancel: CancellationToken,
    /// Asked before each output's turn (always open without leases).
    gate: SharedGate,
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
            confirmed: outputs.iter().map(|_| Confirmed::default()).collect(),
            set_aside: Vec::new(),
            outputs,
            metrics,
            cancel,
            gate: gate::open(),
        }
    }

    /// Asks `gate` before each output's turn from now on (a lease's tenure).
    pub fn set_gate(&mut self, gate: SharedGate) {
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
        for (o, memory) in self.outputs.iter_mut().zip(&mut self.confirmed) {
            // A resume may cut a shared file: only the lease's holder may do that.
            self.gate
                .before_delivery()
                .await
                .map_err(FanOutError::Lease)?;
            let stored = committed(o.name());
            let position = o.resume(table, stored.clone()).await?;
            if o.keeps_positions() {
                // Rewound: what it confirmed since the commit is gone from it.
                memory.clear();
            }
            // None stored, or one the output did not apply (another file's): record its own.
            if let Some(p) = position.filter(|p| stored.as_ref() != Some(p)) {
                new_positions.push((o.name().to_owned(), p));
            }
        }
        Ok(new_positions)
    }

    /// Delivers `batch` (events of `table`, sorted by date) to every output, each getting only
    /// the events it has not confirmed since the last commit, and retrying only the ones that
    /// did not confirm. Returns the positions the outputs confirmed with, by output name, for the
    /// caller to store with its checkpoint. An empty batch is delivered nowhere.
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
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Waits of 1, 2 and 4 s, each jittered into its upper half.
        let mut backoff =
            Backoff::new(FIRST_RETRY_WAIT, FIRST_RETRY_WAIT * 4).jitter(Jitter::UpperHalf);
        loop {
            let mut last_error = None;
            for (o, memory) in self.outputs.iter_mut().zip(&mut self.confirmed) {
                let pending = memory.pending(batch);
                if pending.is_empty() {
                    continue;
                }
                self.gate
                    .before_delivery()
                    .await
                    .map_err(FanOutError::Lease)?;
                match deliver_one(o, &self.metrics, table, &pending).await {
                    Ok(position) => {
                        memory.record(&pending);
                        memory.set_position(position);
                    }
                    Err(e) => {
                        memory.record(e.confirmed().iter().map(|&i| &pending[i]));
                        self.set_aside
                            .extend(give_up_on_refused(o.name(), memory, &pending, &e));
                        // Done when the events it refused for good were all that was left.
                        if !memory.pending(batch).is_empty() {
                            last_error = Some(e);
                        }
                    }
                }
            }
            let Some(e) = last_error else {
                return Ok(self.positions());
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

    /// The positions the outputs confirmed the uncommitted window with.
    fn positions(&self) -> Vec<(String, Position)> {
        self.outputs
            .iter()
            .zip(&self.confirmed)
            .filter_map(|(o, memory)| Some((o.name().to_owned(), memory.position()?)))
            .collect()
    }

    /// Forgets what every output confirmed: the state was read again, or its last write may
    /// or may not have landed. Events queued to be set aside are forgotten too: not written,
    /// they are tried again, and set aside again after their refusals.
    pub fn forget_all(&mut self) {
        for memory in &mut self.confirmed {
            memory.clear();
        }
        self.set_aside.clear();
    }

    /// The events outputs refused for good since the last call: the caller sets them aside
    /// (durably) before it commits the window, or calls [`Outputs::forget_all`] if it cannot.
    pub fn take_set_aside(&mut self) -> Vec<SetAside> {
        std::mem::take(&mut self.set_aside)
    }

    /// The window ending at `window_end` was committed with `batch` delivered: every output
    /// forgets what it confirmed of it.
    pub fn committed(&mut self, batch: &[Event], window_end: Millis) {
        for memory in &mut self.confirmed {
            memory.committed(batch, window_end);
        }
    }
}

/// Counts the refusals in `e` of events of `pending` sent alone; those refused
/// [`REFUSALS_BEFORE_SET_ASIDE`] times are recorded as confirmed for `output`, and returned to
/// be set aside.
fn give_up_on_refused(
    output: &str,
    memory: &mut Confirmed,
    pending: &[Event],
    e: &OutputError,
) -> Vec<SetAside> {
    let mut given_up = Vec::new();
    for (i, reason) in e.refused() {
        let event = &pending[*i];
        if memory.refused(event) >= REFUSALS_BEFORE_SET_ASIDE {
            memory.record([event]);
            given_up.push(SetAside {
                output: output.to_owned(),
                event: event.clone(),
                reason: reason.clone(),
            });
        }
    }
    given_up
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
    // A stopped output logged its error once already; its refusals are not news.
    if let (Err(e), None) = (&result, o.stopped()) {
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

    /// A window that failed because one output is down is delivered again in the next cycle:
    /// the output that confirmed it does not get it again, a late event reaches both, and a
    /// commit makes the memory forget.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_output_that_confirmed_is_not_given_the_events_again_in_the_next_cycle() {
        let tmp = tempfile::tempdir().unwrap();
        // A shutdown requested already ends the first round's wait: the window fails at once.
        let stopped = CancellationToken::new();
        stopped.cancel();
        let (mut outputs, blocked, _) = good_and_bad(tmp.path(), stopped);
        let events = batch();
        let first = outputs.deliver(TABLE, &events).await;
        assert!(matches!(first, Err(FanOutError::Cancelled)), "{first:?}");
        outputs.set_cancel(CancellationToken::new());

        // The next cycle: `bad` is back, and the re-fetched window has a late event.
        std::fs::remove_file(blocked).unwrap();
        let mut refetched = events.clone();
        refetched.push(Event {
            date_ms: 9,
            key: [9; 32],
            json: Bytes::from_static(br#"{"id":9}"#),
        });
        let positions = outputs.deliver(TABLE, &refetched).await.unwrap();
        let expected = lines(&refetched);
        assert_eq!(contents(&tmp.path().join("good")), expected);
        assert_eq!(contents(&tmp.path().join("bad")), expected);
        let len = expected.len() as u64;
        let lengths: Vec<_> = positions
            .iter()
            .map(|(o, p)| (o.as_str(), p.length))
            .collect();
        assert_eq!(lengths, [("good", len), ("bad", len)]);

        // Committed: the same events (a sweep's re-read, say) are new to every output again.
        outputs.committed(&refetched, 10);
        outputs.deliver(TABLE, &events[..1]).await.unwrap();
        let again = expected.clone() + &lines(&events[..1]);
        assert_eq!(contents(&tmp.path().join("good")), again);
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

    /// A gate that lets `turns` turns through, then refuses (a lease lost mid-batch).
    struct Turns(std::sync::atomic::AtomicUsize);

    impl gate::DeliveryGate for Turns {
        fn before_delivery(
            &self,
        ) -> futures_util::future::BoxFuture<'_, Result<(), gate::Refusal>> {
            let left = self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(std::future::ready(match left {
                0 => Err(gate::Refusal(Box::new(
                    crate::state::StateError::LeaseLost {
                        holder: String::new(),
                    },
                ))),
                _ => Ok(()),
            }))
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_gate_is_asked_before_each_outputs_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let outputs = vec![
            file_output("first", &tmp.path().join("first")),
            file_output("second", &tmp.path().join("second")),
        ];
        let metrics = Arc::new(Metrics::new()).service("10001", Service::UrlIsolation);
        let mut outputs = Outputs::new(outputs, metrics, CancellationToken::new());
        outputs.set_gate(Arc::new(Turns(1.into())));
        let events = batch();

        let result = outputs.deliver(TABLE, &events).await;

        assert!(matches!(result, Err(FanOutError::Lease(_))), "{result:?}");
        assert_eq!(contents(&tmp.path().join("first")), lines(&events));
        assert!(!tmp.path().join("second").exists());
    }
}
