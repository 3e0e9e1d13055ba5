//! The collector binary end to end with a `devo_platform` output: a real rsyslog with mutual TLS
//! (`x509/certvalid`) plays Devo's balancer, next to the file output that serves as the reference.
//! What rsyslog received is parsed strictly (`<14>DATE collector-host TABLE: JSON`) and compared,
//! per table, with the events the simulators serve.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::rsyslog::{CertFiles, Pki, Rsyslog};
use crate::support::*;

const HOST: &str = "collector-host";
const WEB_STATE: &str = "state/proofpoint_isolation_10001_browser_and_email_isolation.json";
const URL_STATE: &str = "state/proofpoint_isolation_10001_url_isolation.json";

/// Our PKI and a TLS rsyslog that verifies client certificates against our CA.
pub(crate) async fn start_receiver(env: &TestEnv) -> (Pki, Rsyslog) {
    let pki = Pki::new(env.dir.path());
    let rs = Rsyslog::start(&env.dir, "rsyslog", pki.listen_tls()).await;
    (pki, rs)
}

/// The `devo_platform` output section (for `TestEnv::outputs_extra`). The server certificate
/// names 127.0.0.1, so the host name check stays on.
pub(crate) fn devo_output(pki: &Pki, port: u16, client: &CertFiles) -> String {
    format!(
        "  devo:\n    type: devo_platform\n    config:\n      address: 127.0.0.1\n      \
         port: {port}\n      chain: {chain}\n      cert: {cert}\n      key: {key}\n      \
         check_hostname: true\n      hostname: {HOST}\n      confirm_timeout_in_seconds: 10\n      \
         connect_timeout_in_seconds: 5\n",
        chain = pki.ca.pem.display(),
        cert = client.cert.display(),
        key = client.key.display(),
    )
}

/// Parses received records strictly: `<14>YYYY-MM-DD HH:MM:SS.mmm collector-host TABLE: JSON`,
/// one per line, every line complete. Returns the JSON bodies per table.
pub(crate) fn parse_records(received: &[u8]) -> BTreeMap<String, Vec<String>> {
    let text = std::str::from_utf8(received).expect("received records are UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the last received record is incomplete"
    );
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (table, json) = parse_record(line)
            .unwrap_or_else(|why| panic!("record {i}: {why}: {:?}", &line[..line.len().min(200)]));
        tables
            .entry(table.to_owned())
            .or_default()
            .push(json.to_owned());
    }
    tables
}

fn parse_record(line: &str) -> Result<(&str, &str), String> {
    let rest = line.strip_prefix("<14>").ok_or("no <14> PRI")?;
    let date = rest.get(..23).ok_or("too short for the date")?;
    let shape_ok = date.bytes().enumerate().all(|(j, c)| match j {
        4 | 7 => c == b'-',
        10 => c == b' ',
        13 | 16 => c == b':',
        19 => c == b'.',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok || chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S%.3f").is_err() {
        return Err(format!("bad date {date:?}"));
    }
    let rest = rest[23..]
        .strip_prefix(&format!(" {HOST} "))
        .ok_or("no ` collector-host ` after the date")?;
    let (table, json) = rest.split_once(": ").ok_or("no `: ` after the table")?;
    if table != WEB_TABLE && table != URL_TABLE {
        return Err(format!("unexpected table {table:?}"));
    }
    if !json.starts_with('{') || serde_json::from_str::<serde_json::Value>(json).is_err() {
        return Err("the message is not a JSON object".into());
    }
    Ok((table, json))
}

/// Asserts that the records hold, per table, exactly the events the simulators serve.
fn assert_received_exactly_once(env: &TestEnv, received: &[u8]) {
    let tables = parse_records(received);
    let empty = Vec::new();
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        let got = tables.get(table).unwrap_or(&empty);
        assert!(!got.is_empty(), "nothing arrived for {table}");
        assert_same_multiset(got, &sim.visible_events(), &format!("rsyslog {table}"));
    }
}

pub(crate) fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The `checkpoint_in_utc` of both services' state files (`None`: no state file).
fn checkpoints(env: &TestEnv) -> [Option<chrono::DateTime<chrono::Utc>>; 2] {
    [WEB_STATE, URL_STATE].map(|p| {
        let text = std::fs::read_to_string(env.path(p)).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let c = doc["checkpoint_in_utc"].as_str().unwrap();
        Some(c.parse().unwrap_or_else(|e| panic!("{c:?}: {e}")))
    })
}

/// The earliest `date` of the events a simulator serves.
fn earliest_event(events: &[String]) -> chrono::DateTime<chrono::Utc> {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["date"].as_str().unwrap().parse().unwrap()
        })
        .min()
        .unwrap()
}

/// Asserts that no service checkpointed any event: the state exists (the first cycle writes
/// the file output's committed position before fetching) and its checkpoint is before every
/// event.
pub(crate) fn assert_not_advanced(env: &TestEnv) {
    let [web, url] = checkpoints(env);
    for (c, sim, what) in [(web, &env.web, "web"), (url, &env.url, "url")] {
        let c = c.unwrap_or_else(|| panic!("{what}: no state file"));
        let first = earliest_event(&sim.visible_events());
        assert!(
            c < first,
            "{what}: checkpoint {c} moved past the first event {first}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devo_receives_exactly_the_served_events_and_a_rerun_sends_nothing() {
    let mut env = TestEnv::both(3000, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();

    env.run_once_ok().await;
    env.assert_exactly_once();
    // Confirmed means read by rsyslog; its queues are direct, so the records are in the file.
    let received = rs.received();
    assert_received_exactly_once(&env, &received);

    // The second run asks from the checkpoint on: nothing new for either output.
    env.run_once_ok().await;
    env.assert_exactly_once();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rs.received().len(), received.len(), "a rerun sent records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_client_certificate_fails_the_run_without_checkpointing() {
    let mut env = TestEnv::both(1000, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.foreign_client);
    env.write_config();

    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    // rsyslog closes without a TLS alert (ClosedAfterHandshake); with an alert it would be
    // ClientCertRejected. Both say this.
    assert!(
        log.contains("Output devo did not confirm")
            && log.contains("rejected our client certificate"),
        "{log}"
    );
    assert!(
        rs.received().is_empty(),
        "records arrived with a rejected certificate"
    );
    // The file output came first and was written, but nothing was checkpointed: the next run
    // rewinds it to the committed length (0).
    assert_not_advanced(&env);

    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();
    env.run_once_ok().await;
    env.assert_exactly_once();
    assert_received_exactly_once(&env, &rs.received());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_backfill_loses_nothing_and_repeats_at_most_the_windows_in_flight() {
    const PER_SERVICE: usize = 30_000;
    const WINDOW: usize = 4_000;
    let mut env = TestEnv::both(PER_SERVICE, |_| {}).await;
    let (pki, mut rs) = start_receiver(&env).await;
    env.service_extra = format!("page_size: 2000\nmax_events_per_window: {WINDOW}");
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();

    let (mut child, log) = env.spawn_logged(&["run", "--once"], "run1.log");
    // Kill rsyslog part-way: some windows confirmed, most not yet sent. The first two windows
    // (one per service) end at 5,612 records and the next window follows after its fetch, so
    // 6,000 lands inside a window in flight (seeds 1 and 2 are deterministic). A window goes
    // out in tens of milliseconds, so poll the file size every millisecond.
    let mut last_len = 0;
    Wait::new("rsyslog to receive 6,000 records", Duration::from_secs(60))
        .every(Duration::from_millis(1))
        .until(|| {
            let len = std::fs::metadata(&rs.out).map_or(0, |m| m.len());
            let grew = len != last_len;
            last_len = len;
            grew && line_count(&rs.received()) >= 6_000
        })
        .await;
    rs.kill();
    let kill_len = rs.received().len();
    let lines_at_kill = line_count(&rs.received());
    assert!(
        lines_at_kill < 2 * PER_SERVICE,
        "the backfill finished before the kill"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the collector finished before the kill"
    );
    // The collector notices (retries in place) before the receiver comes back.
    wait_for(
        "the collector logged the failure",
        Duration::from_secs(30),
        || read_log(&log).contains("Output devo did not confirm"),
    )
    .await;
    rs.restart().await;
    let restarted = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the first run finished")
        .unwrap();
    let mut runs = 1;
    let mut succeeded = status.success();
    assert!(
        succeeded || status.code() == Some(1),
        "{status}: {}",
        read_log(&log)
    );
    while !succeeded {
        assert!(runs < 4, "no run succeeded after the restart");
        let out = env.collector(&["run", "--once"]).await;
        runs += 1;
        succeeded = out.status.success();
        assert!(
            succeeded || out.status.code() == Some(1),
            "{}",
            describe(&out)
        );
    }
    let recovered = restarted.elapsed();

    // The file output is exactly once even so.
    env.assert_exactly_once();

    // kill -9 may leave a partial line at the end of rsyslog's file (omfile's buffer); the
    // restarted rsyslog appends after it. Parse the two parts apart and drop that fragment.
    let all = rs.received();
    let before = &all[..kill_len];
    let complete = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let fragment = kill_len - complete;
    let mut tables = parse_records(&before[..complete]);
    for (table, events) in parse_records(&all[kill_len..]) {
        tables.entry(table).or_default().extend(events);
    }
    // At-least-once to Devo: nothing missing; duplicates are bounded by the windows in flight.
    // Each service delivers one window at a time and checkpoints it only once every output
    // confirmed it, so at most one unconfirmed window per service is sent again:
    // max_events_per_window × 2 services.
    let mut duplicates = 0;
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        let want = sim.visible_events();
        let got = tables.remove(table).unwrap_or_default();
        let (g, w) = (multiset(&got), multiset(&want));
        for (event, n) in &w {
            assert!(
                g.get(event).copied().unwrap_or(0) >= *n,
                "{table}: missing {event}"
            );
        }
        for (event, n) in &g {
            let expected = w.get(event).copied().unwrap_or(0);
            assert!(expected > 0, "{table}: never served: {event}");
            duplicates += n - expected;
        }
        let extra = got.len() - want.len();
        assert!(extra <= WINDOW, "{table}: {extra} duplicates > one window");
    }
    assert!(duplicates <= 2 * WINDOW, "{duplicates} duplicates");
    eprintln!(
        "devo kill test: killed at {lines_at_kill} records ({fragment} byte partial line), \
         {runs} run(s), recovered {recovered:?} after the restart, {duplicates} duplicate(s) in \
         rsyslog (bound {}), file output exactly once",
        2 * WINDOW
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_several_cycles_then_everything_arrives_once() {
    let mut env = TestEnv::both(3000, |_| {}).await;
    let (pki, mut rs) = start_receiver(&env).await;
    rs.kill();
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();

    let (child, log) = env.spawn_logged(&["run"], "daemon.log");
    let refused = format!("cannot connect to 127.0.0.1:{}", rs.port);
    // Several failed deliveries of each service (each is 3 connection attempts).
    wait_for(
        "repeated connection failures",
        Duration::from_secs(30),
        || {
            let text = read_log(&log);
            text.matches("Output devo did not confirm").count() >= 6
                && text.matches(refused.as_str()).count() >= 6
        },
    )
    .await;
    assert!(read_log(&log).contains("refused"), "{}", read_log(&log));
    assert_not_advanced(&env);
    assert!(rs.received().is_empty());

    rs.restart().await;
    let restarted = Instant::now();
    let want = env.web.visible_events().len() + env.url.visible_events().len();
    wait_for(
        "everything reached rsyslog",
        Duration::from_secs(20),
        || line_count(&rs.received()) >= want,
    )
    .await;
    let recovered = restarted.elapsed();
    // Checkpointed too (the state is written after every output confirmed).
    wait_for("the checkpoints moved", Duration::from_secs(10), || {
        checkpoints(&env)
            .iter()
            .all(|c| c.is_some_and(|c| c > earliest_event(&env.web.visible_events())))
    })
    .await;

    let out = terminate_with_output(child, Duration::from_secs(20)).await;
    assert!(out.status.success(), "{}\n{}", out.status, read_log(&log));
    // Nothing reached rsyslog while it was down, and nothing it read was left unconfirmed, so
    // no duplicates are expected.
    assert_received_exactly_once(&env, &rs.received());
    env.assert_exactly_once();
    eprintln!("devo outage test: everything arrived {recovered:?} after rsyslog came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_the_devo_receiver() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let (pki, mut rs) = start_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));

    env.outputs_extra = devo_output(&pki, rs.port, &pki.foreign_client);
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rejected our client certificate"),
        "{}",
        describe(&out)
    );

    rs.kill();
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("cannot connect to 127.0.0.1:{}", rs.port)),
        "{}",
        describe(&out)
    );
    assert!(rs.received().is_empty(), "validate sent records");
}

/// `internal_messages: true`: the collector's own warnings reach Devo as
/// `devo.collectors.out.local.warning` records with Devo's JSON shape, beside the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_messages_reach_devo_as_their_own_table() {
    let mut env = TestEnv::both(500, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client) + "      internal_messages: true\n";
    env.write_config();
    // A 503 makes the client log a retry warning.
    env.url.push_fault(
        isolation_sim::FaultTarget::Page,
        isolation_sim::Fault::Status(503),
        1,
    );
    env.run_once_ok().await;
    env.assert_exactly_once();
    let text = String::from_utf8(rs.wait_for_lines(1001, Duration::from_secs(10)).await).unwrap();
    let internal: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!(" {HOST} devo.collectors.out.local.warning: ")))
        .collect();
    assert!(
        !internal.is_empty(),
        "no internal message arrived:\n{}",
        &text[text.len().saturating_sub(2000)..]
    );
    let records: Vec<serde_json::Value> = internal
        .iter()
        .map(|l| {
            let json = l
                .split_once("devo.collectors.out.local.warning: ")
                .unwrap()
                .1;
            serde_json::from_str(json).unwrap()
        })
        .collect();
    let retry = records
        .iter()
        .find(|v| v["msg"].as_str().unwrap_or("").contains("HTTP 503"))
        .unwrap_or_else(|| panic!("no record of the 503 retry among {records:#?}"));
    assert_eq!(retry["level"], "WARNING");
    assert_eq!(retry["service_name"], "url_isolation");
    assert_eq!(retry["module_name"], "IsolationPuller");
    assert_eq!(retry["input_name"], "proofpoint_isolation");
    assert_eq!(retry["input_id"], INPUT_ID);
    assert_eq!(retry["collector_name"], "it");
    assert!(!text.contains(KEY), "the key leaked into Devo");
    // The events themselves are untouched by this: exactly once per table.
    let events: Vec<u8> = text
        .lines()
        .filter(|l| !l.contains(" devo.collectors.out.local."))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert_received_exactly_once(&env, &events);
}

/// Devo's sender statistics lines, every `sender_stats_period_in_sec`, with true counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_statistics_lines_count_what_was_delivered() {
    let mut env = TestEnv::both(700, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.client);
    env.write_config();
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "  name: it\n",
        "  name: it\n  sender_stats_period_in_sec: 1\n",
    );
    std::fs::write(env.config_path(), text).unwrap();
    let (child, log) = env.spawn_logged(&["run"], "daemon.log");
    wait_for(
        "all events and a statistics line after them",
        Duration::from_secs(20),
        || {
            let text = read_log(&log);
            line_count(&rs.received()) >= 1400
                && text
                    .matches("Standard - Total number of messages sent: 1400,")
                    .count()
                    > 0
        },
    )
    .await;
    signal(&child, "-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await;
    let text = read_log(&log);
    assert!(
        text.contains("OutputProcess::DevoSenderManagerMonitor(standard_senders,devo) -> Number of available senders: 1, sender manager internal queue size: 0"),
        "{text}"
    );
    assert_received_exactly_once(&env, &rs.received());
}
