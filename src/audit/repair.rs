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
//! resumes the outputs first), and the hour is repaired again, each event once. The test hook
//! (cargo feature `test-hooks`) stops a repair at that point: see [`stop_after_delivery`].

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
use crate::puller::checkpoint::Checkpoint;
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
    let store = Arc::new(StateStore::from_config(&config.globals.persistence, false)?);
    let _lock = store.lock().map_err(held)?;
    let key = StateStore::key(&input.id, service.name());
    let token = take_lease(&store, &key).await?;
    let repaired = repair_holding(&store, &key, token.as_deref(), input, svc, hours, clock).await;
    if let (Some(r), Some(token)) = (store.redis(), &token) {
        let _ = r.release(&key, token).await;
    }
    repaired
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
    let token = crate::state::lease_token();
    let taken = r.take(key, &token).await?;
    if !taken.done {
        return Err(held(StateError::LeaseLost {
            holder: taken.holder,
        }));
    }
    Ok(Some(token))
}

/// What delivering a repair needs: the outputs and the puller's per-event steps.
struct Delivery {
    outputs: Outputs,
    /// The outputs that cannot take a delivery back (all but the file outputs).
    cannot_undo: Vec<String>,
    obfuscator: Obfuscator,
    environment: Option<Environment>,
}

/// [`repair`] once the state is this process's: restore it, resume the outputs, repair each hour.
async fn repair_holding(
    store: &Arc<StateStore>,
    key: &str,
    token: Option<&str>,
    input: &InputConfig,
    svc: &ServiceConfig,
    hours: Vec<HourToRepair>,
    clock: SharedClock,
) -> Result<Vec<HourRepair>, RepairError> {
    let metrics: ServiceMetrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
    let mut checkpoint = Checkpoint::new(store.clone(), key.to_owned(), svc, metrics.clone());
    checkpoint.set_fence(token.map(str::to_owned));
    checkpoint.restore(svc, clock.now_ms()).await?;
    let built = build_outputs(&input.outputs, &clock)?;
    let cannot_undo = (built.iter().filter(|o| !o.keeps_positions()))
        .map(|o| o.name().to_owned())
        .collect();
    let mut delivery = Delivery {
        cannot_undo,
        outputs: Outputs::new(built, metrics, CancellationToken::new()),
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
        if let (Some(r), Some(token)) = (store.redis(), token) {
            if !r.renew(key, token).await?.done {
                return Err(held(StateError::LeaseLost {
                    holder: String::new(),
                }));
            }
        }
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
    let store = Arc::new(StateStore::from_config(&config.globals.persistence, false)?);
    let _lock = store.lock().map_err(held)?;
    let key = StateStore::key(&input.id, service.name());
    let token = take_lease(&store, &key).await?;
    let metrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
    let mut checkpoint = Checkpoint::new(store.clone(), key.clone(), svc, metrics);
    checkpoint.set_fence(token.clone());
    let mut cleared = Vec::new();
    let mut result = checkpoint.restore(svc, clock.now_ms()).await;
    for &hour in hours {
        if result.is_ok() && checkpoint.state().ledger.in_flight(hour).is_some() {
            result = checkpoint.set_repair_in_flight(hour, None).await;
            cleared.push(hour_of(hour));
        }
    }
    if let (Some(r), Some(token)) = (store.redis(), &token) {
        let _ = r.release(&key, token).await;
    }
    result?;
    Ok(cleared)
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
mod tests {
    use super::*;
    use crate::pipeline::window::Window;
    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    /// An event of `date` whose body is `body` (its dedup key: the SHA-256 of the body).
    fn event(date: Millis, body: &str) -> Event {
        let json = format!("{{\"date\":{date},\"b\":\"{body}\"}}");
        Event {
            date_ms: date,
            key: Sha256::digest(json.as_bytes()).into(),
            json: Bytes::from(json),
        }
    }

    /// A config with a filesystem state and a file output, both under `dir`.
    fn config(dir: &Path) -> Config {
        config_with(dir, "")
    }

    /// [`config`] with more `outputs` (YAML flow entries, each ending with `, `).
    fn config_with(dir: &Path, outputs: &str) -> Config {
        let text = format!(
            "globals:\n  persistence: {{type: filesystem, config: {{directory_name: {}}}}}\noutputs: {{{outputs}local: {{type: file, config: {{directory: {}}}}}}}\ninputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials: {{api_key: \"k3y\"}}\n    services:\n      url_isolation: {{}}\n",
            dir.join("state").display(),
            dir.join("out").display()
        );
        Config::parse(&text, dir, &|_| None, SharedClock::system().now()).expect("a valid config")
    }

    /// The hour the tests repair: five hours ago, well behind any horizon.
    fn hour() -> Millis {
        hour_of(SharedClock::system().now_ms()) - 5 * HOUR_MS
    }

    /// Delivers `events` as the puller does (the file output, then the commit that counts and
    /// digests them), with a window that ends two hours after the hour.
    async fn deliver_as_the_puller(config: &Config, events: &[Event]) {
        let input = &config.inputs[0];
        let svc = &input.services[0];
        let store = Arc::new(StateStore::from_config(&config.globals.persistence, false).unwrap());
        let key = StateStore::key(&input.id, svc.service.name());
        let metrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
        let mut checkpoint = Checkpoint::new(store, key, svc, metrics.clone());
        let clock = SharedClock::system();
        checkpoint.restore(svc, clock.now_ms()).await.unwrap();
        let built = build_outputs(&input.outputs, &clock).unwrap();
        let mut outputs = Outputs::new(built, metrics, CancellationToken::new());
        let w = Window {
            from: checkpoint.state().cursors.checkpoint,
            to: hour() + 2 * HOUR_MS,
        };
        let plan = checkpoint.state().dedup.plan(events, w.to);
        let positions = outputs.deliver(&svc.table, events).await.unwrap();
        let created = w.to + 60_000;
        checkpoint
            .commit(w, created, plan, positions, svc)
            .await
            .unwrap();
    }

    /// The lines of the service's file output.
    fn lines(dir: &Path, config: &Config) -> Vec<String> {
        let table = &config.inputs[0].services[0].table;
        let text = std::fs::read_to_string(dir.join("out").join(format!("{table}.jsonl")));
        text.unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn run(config: &Config, api_events: Vec<Event>) -> Result<Vec<HourRepair>, RepairError> {
        let input = &config.inputs[0];
        let hours = vec![HourToRepair {
            hour: hour(),
            api_events,
        }];
        repair(
            config,
            input,
            Service::UrlIsolation,
            hours,
            SharedClock::system(),
        )
        .await
    }

    /// Whether each of `events` is in `lines` exactly once and nothing else is there.
    fn each_once(lines: &[String], events: &[Event]) -> bool {
        let mut want: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.json).into_owned())
            .collect();
        let mut got: Vec<String> = lines.to_vec();
        want.sort();
        got.sort();
        want == got
    }

    /// The hour's API events: `delivered` that the collector delivered, and `late` that it
    /// missed (one of them an identical twin of a delivered event: a copy counts).
    fn an_hour(delivered: usize, late: usize) -> (Vec<Event>, Vec<Event>) {
        let h = hour();
        let on_time: Vec<Event> = (0..delivered)
            .map(|i| event(h + i as Millis * 1_000, &format!("e{i}")))
            .collect();
        let mut missed: Vec<Event> = (0..late)
            .map(|i| event(h + 7 + i as Millis * 1_000, &format!("late{i}")))
            .collect();
        if late > 0 {
            missed[0] = on_time[0].clone();
        }
        (on_time, missed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_hour_gets_exactly_its_missing_events_and_a_second_repair_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (on_time, late) = an_hour(200, 5);
        deliver_as_the_puller(&config, &on_time).await;
        let mut api = on_time.clone();
        api.extend(late.iter().cloned());
        let done = run(&config, api.clone()).await.unwrap();
        assert_eq!(done[0].refused, None);
        assert_eq!(done[0].delivered, 5);
        assert!(each_once(&lines(dir.path(), &config), &api));
        let again = run(&config, api.clone()).await.unwrap();
        assert_eq!((again[0].delivered, &again[0].refused), (0, &None));
        assert!(each_once(&lines(dir.path(), &config), &api));
    }

    #[cfg(feature = "test-hooks")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_delivery_and_commit_is_undone_and_repaired_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (on_time, late) = an_hour(50, 3);
        deliver_as_the_puller(&config, &on_time).await;
        let mut api = on_time.clone();
        api.extend(late.iter().cloned());
        stop_next_repair_after_delivery();
        let stopped = run(&config, api.clone()).await.unwrap_err();
        assert!(
            matches!(stopped, RepairError::StoppedByTestHook(_)),
            "{stopped}"
        );
        // Delivered, not committed: the file has them beyond its committed length.
        assert_eq!(lines(dir.path(), &config).len(), 53);
        let done = run(&config, api.clone()).await.unwrap();
        assert_eq!((done[0].delivered, &done[0].refused), (3, &None));
        assert!(each_once(&lines(dir.path(), &config), &api));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hours_that_cannot_be_told_apart_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (on_time, late) = an_hour(20, 200);
        deliver_as_the_puller(&config, &on_time).await;
        let mut api = on_time.clone();
        api.extend(late);
        let done = run(&config, api).await.unwrap();
        let why = done[0].refused.as_deref().unwrap();
        assert!(why.contains("lacks 200 event(s)"), "{why}");
        assert!(why.contains("isolation-collector backfill --from"), "{why}");
        assert_eq!(done[0].delivered, 0);
        assert_eq!(lines(dir.path(), &config).len(), 20);
        // An hour still being collected is refused too.
        let now = hour_of(SharedClock::system().now_ms());
        let hours = vec![HourToRepair {
            hour: now,
            api_events: vec![event(now + 1, "x")],
        }];
        let input = &config.inputs[0];
        let done = repair(
            &config,
            input,
            Service::UrlIsolation,
            hours,
            SharedClock::system(),
        );
        let why = done.await.unwrap()[0].refused.clone().unwrap();
        assert!(why.contains("is still being collected"), "{why}");
    }

    /// A digest that does not hold the hour's count (delivered before digests were kept) is
    /// not trusted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incomplete_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (on_time, late) = an_hour(10, 2);
        deliver_as_the_puller(&config, &on_time).await;
        // The sealed digest lost (a build before digests): the count stays.
        for f in std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .flatten()
        {
            if f.file_name().to_string_lossy().contains(".digests.") {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        let mut api = on_time.clone();
        api.extend(late);
        let done = run(&config, api).await.unwrap();
        let why = done[0].refused.as_deref().unwrap();
        assert!(why.contains("is incomplete (it holds 0 of the 10"), "{why}");
        assert_eq!(lines(dir.path(), &config).len(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_state_is_refused_saying_to_stop_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (on_time, _) = an_hour(3, 0);
        deliver_as_the_puller(&config, &on_time).await;
        let store = StateStore::filesystem(dir.path().join("state"));
        let _daemon = store.lock().unwrap();
        let e = run(&config, on_time).await.unwrap_err();
        assert!(matches!(e, RepairError::Held(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("stop the collector that holds it first"),
            "{e}"
        );
    }

    /// A plain-TCP syslog receiver that reads each connection to its end and closes (the
    /// syslog output's proof of delivery); returns its port and the records it read.
    async fn receiver() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = records.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut bytes = Vec::new();
                let _ = socket.read_to_end(&mut bytes).await;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                kept.lock().unwrap().extend(text.lines().map(str::to_owned));
            }
        });
        (port, records)
    }

    /// A network output cannot take back what it got: a repair stopped between its delivery and
    /// its commit leaves its mark, and the next repair refuses the hour instead of sending it
    /// again, saying what is known and how to go on; clearing the mark lets it repair again.
    #[cfg(feature = "test-hooks")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_network_output_is_never_sent_a_repair_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (port, records) = receiver().await;
        let relay =
            format!("relay: {{type: syslog, config: {{address: 127.0.0.1, port: {port}}}}}, ");
        let config = config_with(dir.path(), &relay);
        deliver_as_the_puller(&config, &[]).await; // the cursors pass the hour, nothing in it
        let (api, _) = an_hour(4, 0);
        stop_next_repair_after_delivery();
        let stopped = run(&config, api.clone()).await.unwrap_err();
        assert!(
            matches!(stopped, RepairError::StoppedByTestHook(_)),
            "{stopped}"
        );
        assert_eq!(records.lock().unwrap().len(), 4);
        let done = run(&config, api.clone()).await.unwrap();
        let why = done[0].refused.as_deref().expect("refused");
        assert!(
            why.contains("began sending 4 event(s) to relay at"),
            "{why}"
        );
        assert!(why.contains("isolation-collector backfill --from"), "{why}");
        assert_eq!(done[0].delivered, 0);
        assert_eq!(records.lock().unwrap().len(), 4, "sent once");
        // The file output's uncommitted copy was cut back: it lacks them, as the ledger says.
        assert_eq!(lines(dir.path(), &config).len(), 0);
        let input = &config.inputs[0];
        let clock = SharedClock::system();
        let hours = [hour()];
        let cleared = clear_in_flight(&config, input, Service::UrlIsolation, &hours, clock);
        assert_eq!(cleared.await.unwrap(), vec![hour()]);
        let done = run(&config, api.clone()).await.unwrap();
        assert_eq!((done[0].delivered, &done[0].refused), (4, &None));
        assert!(each_once(&lines(dir.path(), &config), &api));
    }
}
