//! The repair of the hours an audit found lacking (`audit --repair`): re-delivers, per hour,
//! only the events the outputs do not have yet, and never one they have.
//!
//! Which events those are: each of the hour's API events becomes an element, `(date, dedup key,
//! copy number among identical events)`, as the commit recorded the delivered ones into the
//! hour's digest (`pipeline::ledger::sketch`). The API's digest minus the delivered one
//! (`state::digests`: sealed entries and the pending one) decodes into the events only the API
//! holds: those are delivered (obfuscated and with the environment, as the puller does), then
//! committed *without moving the cursors*: the hour's count and digest, and the outputs'
//! positions ([`Checkpoint::commit_repair`]). So a second repair of the hour finds nothing to do.
//!
//! Refused hours (the reason in [`HourRepair::refused`], nothing delivered): an hour still being
//! collected (the dedup horizon has not passed its end); an hour the ledger does not track; an
//! hour whose digest does not hold the ledger's count (delivered before digests were kept, or a
//! digest lost); an hour whose difference is too big to decode (beyond
//! [`sketch::CAPACITY`], about); and a decode that names an event the API does not hold. Each
//! reason says what `backfill` would do instead (re-deliver the whole hour, with repeats).
//!
//! One process at a time: the repair takes the service's state as `run --once` does (the state
//! directory's lock; in Redis, the service's lease, every write fenced by it). While a daemon
//! holds it the repair stops with [`RepairError::Held`], which says to stop the daemon first.
//!
//! Crashes: a file output's committed length travels with the state, so a crash between the
//! delivery and the commit is cut back from the file at the next start (the repair's, too: it
//! resumes the outputs first), and the hour is repaired again, each event once. A network
//! output (every kind but `file`) cannot take back what it got: before a repair sends to one,
//! it commits a mark for the hour ([`InFlight`]: when, how many events, which outputs), which
//! its commit clears. A repair that finds the mark (a crash, or an output that failed, in
//! between) refuses the hour instead of sending again, and says what is known, what to check
//! and how to go on ([`CLEAR_IN_FLIGHT`]; [`clear_in_flight`] forgets the mark). The test hook
//! (cargo feature `test-hooks`) stops a repair between its delivery and its commit: see
//! [`stop_after_delivery`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::app::outputs::build_outputs;
use crate::clock::SharedClock;
use crate::config::{Config, InputConfig, ServiceConfig};
use crate::event::Event;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::output::{FanOutError, OutputError, Outputs};
use crate::pipeline::environment::Environment;
use crate::pipeline::ledger::sketch::{self, element_id, Sketch};
use crate::pipeline::ledger::{hour_of, InFlight, HOUR_MS};
use crate::pipeline::obfuscate::Obfuscator;
use crate::pipeline::window::Window;
use crate::puller::checkpoint::Checkpoint;
use crate::puller::refused;
use crate::service::Service;
use crate::state::dead_letter::DeadLetter;
use crate::state::{StateError, StateStore};
use crate::timestamp::{format_iso, Millis};

/// One hour the audit found lacking, with every event the API holds for it now (as parsed by
/// `event::parse_page`; duplicates within the API's data kept: copies count).
pub struct HourToRepair {
    pub hour: Millis,
    pub api_events: Vec<Event>,
}

/// What the repair did for one hour: events delivered, or why it refused (per output or whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourRepair {
    pub hour: Millis,
    pub delivered: u64,
    pub refused: Option<String>,
}

/// Why a repair could not run at all (the hours it had done are committed).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("{service} is not an enabled service of input {input} in this config")]
    UnknownService { input: String, service: Service },
    /// A daemon (or another command) holds the service's state.
    #[error("{0}; a repair needs the service's state to itself: stop the collector that holds it first, then repair, then start it again")]
    Held(#[source] StateError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build the outputs: {0}")]
    Output(#[from] OutputError),
    /// The outputs did not confirm an hour's events: that hour is not committed (a file output
    /// cuts them at the next start; a network output may have them).
    #[error("the repair of hour {hour} was not confirmed by every output, and is not committed: {source}")]
    Delivery {
        hour: String,
        #[source]
        source: FanOutError,
    },
    /// The test hook stopped the repair between a delivery and its commit.
    #[cfg(feature = "test-hooks")]
    #[error("stopped by the test hook after the delivery of hour {0}")]
    StoppedByTestHook(String),
}

/// Repairs `hours` of `service` of `input` (see the module doc): per hour, the events it
/// delivered, or why it refused.
///
/// # Errors
/// [`RepairError::Held`] while another process holds the service's state; a state, output or
/// delivery failure (the hours repaired before it are committed).
pub async fn repair(
    config: &Config,
    input: &InputConfig,
    service: Service,
    hours: Vec<HourToRepair>,
    clock: SharedClock,
) -> Result<Vec<HourRepair>, RepairError> {
    let svc = service_config(input, service)?;
    let holding = Holding::take(config, input, service).await?;
    let repaired = repair_holding(&holding, input, svc, hours, clock).await;
    holding.release().await;
    repaired
}

/// The service's state, held as `run --once` holds it: the state directory's lock, or in
/// Redis the service's lease (every write fenced by its token).
struct Holding {
    store: Arc<StateStore>,
    _lock: Option<crate::state::filesystem::DirectoryLock>,
    key: String,
    token: Option<String>,
}

impl Holding {
    /// Takes the state of `service` of `input`, or says who holds it ([`RepairError::Held`]).
    async fn take(
        config: &Config,
        input: &InputConfig,
        service: Service,
    ) -> Result<Holding, RepairError> {
        let store = Arc::new(StateStore::from_config(&config.globals.persistence, false)?);
        let lock = store.lock().map_err(held)?;
        let key = StateStore::key(&input.id, service.name());
        let token = take_lease(&store, &key).await?;
        Ok(Holding {
            store,
            _lock: lock,
            key,
            token,
        })
    }

    /// The service's checkpoint, restored (Devo's `pre_pull` steps, as `run` does), its writes
    /// fenced by the lease.
    async fn checkpoint(
        &self,
        svc: &ServiceConfig,
        metrics: ServiceMetrics,
        clock: &SharedClock,
    ) -> Result<Checkpoint, StateError> {
        let mut checkpoint = Checkpoint::new(self.store.clone(), self.key.clone(), svc, metrics);
        checkpoint.set_fence(self.token.clone());
        checkpoint.restore(svc, clock.now_ms()).await?;
        Ok(checkpoint)
    }

    /// Renews the lease (Redis), before each hour: a refusal means another took it.
    async fn renew(&self) -> Result<(), RepairError> {
        if let (Some(r), Some(token)) = (self.store.redis(), &self.token) {
            let renewed = r.renew(&self.key, token).await?;
            if !renewed.done {
                return Err(held(StateError::LeaseLost {
                    holder: renewed.holder,
                }));
            }
        }
        Ok(())
    }

    /// Lets the state go (the lock when dropped; the lease released).
    async fn release(self) {
        if let (Some(r), Some(token)) = (self.store.redis(), &self.token) {
            let _ = r.release(&self.key, token).await;
        }
    }
}

/// A lock or lease refusal is the daemon's hold; anything else is the store's failure.
fn held(e: StateError) -> RepairError {
    match e {
        StateError::Locked { .. } | StateError::LeaseLost { .. } => RepairError::Held(e),
        e => RepairError::State(e),
    }
}

/// With Redis, takes the service's lease (the token), or says who holds it.
async fn take_lease(store: &StateStore, key: &str) -> Result<Option<String>, RepairError> {
    let Some(r) = store.redis() else {
        return Ok(None);
    };
    r.take_for_a_command(key).await.map(Some).map_err(held)
}

/// What delivering a repair needs: the outputs and the puller's per-event steps.
struct Delivery {
    outputs: Outputs,
    /// The repair's own counting points (`set_aside_refused` counts the letters).
    metrics: ServiceMetrics,
    /// The outputs that cannot take a delivery back (all but the file outputs).
    cannot_undo: Vec<String>,
    obfuscator: Obfuscator,
    environment: Option<Environment>,
}

/// [`repair`] once the state is this process's: restore it, resume the outputs, repair each hour.
async fn repair_holding(
    holding: &Holding,
    input: &InputConfig,
    svc: &ServiceConfig,
    hours: Vec<HourToRepair>,
    clock: SharedClock,
) -> Result<Vec<HourRepair>, RepairError> {
    let metrics: ServiceMetrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
    let mut checkpoint = holding.checkpoint(svc, metrics.clone(), &clock).await?;
    let built = build_outputs(&input.outputs, &clock)?;
    let cannot_undo = (built.iter().filter(|o| !o.keeps_positions()))
        .map(|o| o.name().to_owned())
        .collect();
    let mut delivery = Delivery {
        cannot_undo,
        outputs: Outputs::new(built, metrics.clone(), CancellationToken::new()),
        metrics,
        obfuscator: Obfuscator::new(svc.obfuscation.clone()),
        environment: input.environment.as_deref().map(Environment::new),
    };
    // Outputs that keep positions cut what a crash left uncommitted (a repair's too).
    let committed = |output: &str| checkpoint.position(output, &svc.table);
    let resumed = (delivery.outputs.resume(&svc.table, committed).await)
        .map_err(|source| delivery_error(0, source))?;
    if !resumed.is_empty() {
        checkpoint.save_positions(&svc.table, resumed).await?;
    }
    let mut done = Vec::with_capacity(hours.len());
    for hour in hours {
        holding.renew().await?;
        done.push(repair_hour(&mut checkpoint, &mut delivery, svc, hour, &clock).await?);
    }
    Ok(done)
}

fn delivery_error(hour: Millis, source: FanOutError) -> RepairError {
    RepairError::Delivery {
        hour: format_iso(hour),
        source,
    }
}

/// The hour's API events as digest elements: `(id, date, key, copy)`, in the API's order, the
/// `n`-th identical event of a date being copy `n` (as the dedup memory numbers them).
fn elements(events: &[Event]) -> Vec<(u64, Millis, [u8; 32], u32)> {
    let mut copies: std::collections::HashMap<(Millis, [u8; 32]), u32> = Default::default();
    events
        .iter()
        .map(|e| {
            let copy = copies.entry((e.date_ms, e.key)).or_insert(0);
            *copy += 1;
            (
                element_id(e.date_ms, &e.key, *copy),
                e.date_ms,
                e.key,
                *copy,
            )
        })
        .collect()
}

/// The indices (into `api`) of the events the outputs lack, or why the hour is refused.
async fn missing_events(
    checkpoint: &Checkpoint,
    hour: Millis,
    api: &[(u64, Millis, [u8; 32], u32)],
) -> Result<Result<Vec<usize>, String>, StateError> {
    let (when, next) = (format_iso(hour), format_iso(hour + HOUR_MS));
    let whole = format!("`isolation-collector backfill --from {when} --to {next}` re-delivers the whole hour, with repeats");
    let state = checkpoint.state();
    let horizon = state.cursors.horizon();
    if hour + HOUR_MS > horizon {
        return Ok(Err(format!("hour {when} is still being collected (the collector may still deliver its events until its checkpoint's horizon passes {next}; it is at {}): audit it again later", format_iso(horizon))));
    }
    let Some(delivered) = state.ledger.delivered(hour) else {
        return Ok(Err(format!("hour {when} is before the audit ledger's start ({}): nothing says which of its events were delivered; {whole}", format_iso(state.ledger.tracked_from()))));
    };
    if delivered == 0 {
        return Ok(Ok((0..api.len()).collect()));
    }
    let digest = checkpoint.delivered_digest(hour).await?;
    if digest.elements() != delivered as i64 {
        return Ok(Err(format!("the digest of hour {when} is incomplete (it holds {} of the {delivered} delivered events: some were delivered before this build kept digests, or a digest was lost), so which events are missing cannot be told; {whole}", digest.elements())));
    }
    let mut difference = Sketch::new();
    api.iter().for_each(|e| difference.insert(e.0));
    difference.subtract(&digest);
    let lacking = (api.len() as u64).saturating_sub(delivered);
    let Ok(found) = difference.decode() else {
        return Ok(Err(format!("hour {when} lacks {lacking} event(s) (the API holds {}, {delivered} were delivered), more than its digest can tell apart (about {}); {whole}", api.len(), sketch::CAPACITY)));
    };
    let index: std::collections::HashMap<u64, usize> =
        api.iter().enumerate().map(|(i, e)| (e.0, i)).collect();
    let found: Option<Vec<usize>> = found
        .left_only
        .iter()
        .map(|id| index.get(id).copied())
        .collect();
    match found {
        Some(mut found) => {
            found.sort_unstable();
            Ok(Ok(found))
        }
        None => Ok(Err(format!("the digest of hour {when} does not match the API's events (a decoded event is not among them), so nothing is re-delivered; {whole}"))),
    }
}

/// Repairs one hour: finds what the outputs lack, delivers it and commits it.
async fn repair_hour(
    checkpoint: &mut Checkpoint,
    delivery: &mut Delivery,
    svc: &ServiceConfig,
    hour: HourToRepair,
    clock: &SharedClock,
) -> Result<HourRepair, RepairError> {
    let HourToRepair {
        hour,
        mut api_events,
    } = hour;
    let hour = hour_of(hour);
    // The puller's order: by date, identical events in the API's order.
    api_events.sort_by_key(|e| e.date_ms);
    let api = elements(&api_events);
    let in_flight = checkpoint.state().ledger.in_flight(hour);
    let missing = match in_flight.map(|r| in_flight_refusal(hour, r)) {
        Some(why) => Err(why),
        None => missing_events(checkpoint, hour, &api).await?,
    };
    let missing = match missing {
        Ok(missing) => missing,
        Err(why) => {
            return Ok(HourRepair {
                hour,
                delivered: 0,
                refused: Some(why),
            })
        }
    };
    let copies: Vec<(Millis, [u8; 32], u32)> = missing
        .iter()
        .map(|&i| (api[i].1, api[i].2, api[i].3))
        .collect();
    let mut batch: Vec<Event> = missing.iter().map(|&i| api_events[i].clone()).collect();
    let withheld = obfuscate(delivery, svc, hour, &mut batch, clock);
    checkpoint.set_aside(withheld).await?;
    if let Some(env) = &delivery.environment {
        env.apply_batch(&mut batch);
    }
    if !delivery.cannot_undo.is_empty() && !batch.is_empty() {
        // Written before the first byte goes out: a crash or a failure from here on leaves the
        // mark, and no later repair sends the hour to these outputs again.
        let marker = InFlight {
            since: clock.now_ms(),
            events: batch.len() as u64,
            outputs: delivery.cannot_undo.clone(),
        };
        checkpoint.set_repair_in_flight(hour, Some(marker)).await?;
    }
    let positions = (delivery.outputs.deliver(&svc.table, &batch).await)
        .map_err(|source| delivery_error(hour, source))?;
    if stop_after_delivery() {
        #[cfg(feature = "test-hooks")]
        return Err(RepairError::StoppedByTestHook(format_iso(hour)));
    }
    // What an output refused for good (and counts as confirmed) goes to the dead-letter store
    // for that output before the hour commits, as the puller does with a window.
    let window = Window {
        from: hour,
        to: hour + HOUR_MS,
    };
    let (outputs, metrics, now) = (&mut delivery.outputs, &delivery.metrics, clock.now_ms());
    refused::set_aside_refused(outputs, checkpoint, metrics, &svc.table, window, now).await?;
    checkpoint
        .commit_repair(&svc.table, hour, &copies, positions)
        .await?;
    delivery.outputs.committed(&batch, hour + HOUR_MS);
    Ok(HourRepair {
        hour,
        delivered: batch.len() as u64,
        refused: None,
    })
}

/// Why an hour with a repair in flight (`r`) is refused: what is known, what to check, how to
/// go on.
fn in_flight_refusal(hour: Millis, r: &InFlight) -> String {
    let (when, next) = (format_iso(hour), format_iso(hour + HOUR_MS));
    format!(
        "a repair of hour {when} began sending {} event(s) to {} at {} and did not commit (the process stopped, or an output failed): whether they arrived is unknown, and they are not sent again. Check in {} which of the hour's events arrived; `isolation-collector backfill --from {when} --to {next}` re-delivers the whole hour, with repeats. {CLEAR_IN_FLIGHT}",
        r.events,
        r.outputs.join(", "),
        format_iso(r.since),
        match r.outputs.len() {
            1 => "that output",
            _ => "those outputs",
        },
    )
}

/// How an operator clears a repair in flight once checked ([`clear_in_flight`]).
pub const CLEAR_IN_FLIGHT: &str = "Once checked, `isolation-collector audit --repair --clear-in-flight` with the same --from and --to forgets the mark, and the next repair of the hour sends what its digest says is missing.";

/// Forgets the repairs in flight of `hours` of `service` (see [`in_flight_refusal`]), under the
/// state's lock or lease as [`repair`] takes it; returns the hours that had one.
///
/// # Errors
/// As [`repair`]'s.
pub async fn clear_in_flight(
    config: &Config,
    input: &InputConfig,
    service: Service,
    hours: &[Millis],
    clock: SharedClock,
) -> Result<Vec<Millis>, RepairError> {
    let svc = service_config(input, service)?;
    let holding = Holding::take(config, input, service).await?;
    let metrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
    let checkpoint = holding.checkpoint(svc, metrics, &clock).await;
    let cleared = async {
        let mut checkpoint = checkpoint?;
        let mut cleared = Vec::new();
        for &hour in hours {
            if checkpoint.state().ledger.in_flight(hour).is_some() {
                checkpoint.set_repair_in_flight(hour, None).await?;
                cleared.push(hour_of(hour));
            }
        }
        Ok(cleared)
    }
    .await;
    holding.release().await;
    cleared
}

/// The enabled service `service` of `input`.
fn service_config(input: &InputConfig, service: Service) -> Result<&ServiceConfig, RepairError> {
    (input.services.iter().find(|s| s.service == service))
        .filter(|_| input.enabled)
        .ok_or_else(|| RepairError::UnknownService {
            input: input.id.clone(),
            service,
        })
}

/// `obfuscation_data` on a repair's batch, as the puller applies it: events that are not JSON
/// text are withheld and returned as dead letters (set aside, never delivered in clear).
fn obfuscate(
    delivery: &Delivery,
    svc: &ServiceConfig,
    hour: Millis,
    batch: &mut Vec<Event>,
    clock: &SharedClock,
) -> Vec<DeadLetter> {
    if delivery.obfuscator.is_empty() {
        return Vec::new();
    }
    let report = delivery.obfuscator.apply_batch(batch);
    let position = format!("repair of hour {}", format_iso(hour));
    let now = clock.now_ms();
    (report.withheld.into_iter())
        .map(|(event, why)| {
            let reason = format!("cannot be obfuscated: {why}");
            DeadLetter::new(&svc.table, None, reason, position.clone(), &event.json, now)
        })
        .collect()
}

#[cfg(feature = "test-hooks")]
thread_local! {
    static STOP_AFTER_DELIVERY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The crash test hook (cargo feature `test-hooks` only): makes this thread's next repair stop
/// between a delivery and its commit, as a crash would leave it (nothing in memory survives).
/// `ISOLATION_COLLECTOR_CRASH_IN_REPAIR=1` aborts the process there instead (a binary's test).
#[cfg(feature = "test-hooks")]
pub fn stop_next_repair_after_delivery() {
    STOP_AFTER_DELIVERY.with(|s| s.set(true));
}

/// Whether the test hook asks to stop here (never in a build without `test-hooks`).
fn stop_after_delivery() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        if std::env::var_os("ISOLATION_COLLECTOR_CRASH_IN_REPAIR").is_some_and(|v| !v.is_empty()) {
            std::process::abort();
        }
        STOP_AFTER_DELIVERY.with(|s| s.replace(false))
    }
    #[cfg(not(feature = "test-hooks"))]
    false
}

#[cfg(test)]
mod tests;
