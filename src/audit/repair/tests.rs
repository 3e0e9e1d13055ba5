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
    let relay = format!("relay: {{type: syslog, config: {{address: 127.0.0.1, port: {port}}}}}, ");
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
