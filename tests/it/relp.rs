//! The collector binary with a `relp` output into a real rsyslog `imrelp` over mutual TLS
//! (`tls.authMode="name"`: our CA and our client's name), next to the file output that serves
//! as the reference. What rsyslog received is parsed strictly (`<14>DATE collector-host TABLE:
//! JSON`, the syslog output's records) and compared, per table, with the served events.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::devo_e2e::{assert_not_advanced, line_count, parse_records};
use crate::rsyslog::{CertFiles, Pki, Rsyslog};
use crate::support::*;

/// The window the tests configure (librelp's default).
const RELP_WINDOW: usize = 128;

pub(crate) async fn start_receiver(env: &TestEnv) -> (Pki, Rsyslog) {
    let pki = Pki::new(env.dir.path());
    let rs = Rsyslog::start(&env.dir, "rsyslog-relp", pki.listen_relp_tls()).await;
    (pki, rs)
}

/// The `relp` output section (for `TestEnv::outputs_extra`).
pub(crate) fn relp_output(pki: &Pki, port: u16, client: &CertFiles) -> String {
    format!(
        "  relp:\n    type: relp\n    config:\n      address: 127.0.0.1\n      port: {port}\n      \
         chain: {chain}\n      cert: {cert}\n      key: {key}\n      hostname: collector-host\n      \
         window_size: {RELP_WINDOW}\n      confirm_timeout_in_seconds: 10\n      \
         connect_timeout_in_seconds: 5\n",
        chain = pki.ca.pem.display(),
        cert = client.cert.display(),
        key = client.key.display(),
    )
}

/// Asserts that every served event arrived at least once and nothing unserved arrived; returns
/// the number of extra copies per table.
pub(crate) fn duplicates(env: &TestEnv, mut tables: BTreeMap<String, Vec<String>>) -> [usize; 2] {
    [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)].map(|(table, sim)| {
        let want = sim.visible_events();
        let got = tables.remove(table).unwrap_or_default();
        let (g, w) = (multiset(&got), multiset(&want));
        for (event, n) in &w {
            assert!(
                g.get(event).copied().unwrap_or(0) >= *n,
                "{table}: missing {event}"
            );
        }
        for event in g.keys() {
            assert!(w.contains_key(event), "{table}: never served: {event}");
        }
        got.len() - want.len()
    })
}

/// Parses rsyslog's file around a kill -9 of rsyslog at byte `kill_len` (which may leave a
/// partial line that the restarted rsyslog appends after).
fn parse_around_kill(all: &[u8], kill_len: usize) -> BTreeMap<String, Vec<String>> {
    let before = &all[..kill_len];
    let complete = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut tables = parse_records(&before[..complete]);
    for (table, events) in parse_records(&all[kill_len..]) {
        tables.entry(table).or_default().extend(events);
    }
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_exactly_the_served_events_byte_for_byte() {
    let mut env = TestEnv::both(3000, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    env.outputs_extra = relp_output(&pki, rs.port, &pki.client);
    env.write_config();

    env.run_once_ok().await;
    env.assert_exactly_once();
    // Confirmed means every record has its rsp 200, and imrelp answers after the (direct)
    // ruleset wrote it: the records are in the file, each exactly once.
    let received = rs.received();
    let tables = parse_records(&received);
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        assert_same_multiset(&tables[table], &sim.visible_events(), table);
    }
    assert_eq!(line_count(&received), 6000);

    // The second run asks from the checkpoint on: nothing new.
    env.run_once_ok().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rs.received().len(), received.len(), "a rerun sent records");

    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(rs.received().len(), received.len(), "validate sent records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_client_certificate_fails_with_the_fix_and_checkpoints_nothing() {
    let mut env = TestEnv::both(500, |_| {}).await;
    let (pki, mut rs) = start_receiver(&env).await;
    env.outputs_extra = relp_output(&pki, rs.port, &pki.foreign_client);
    env.write_config();

    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    assert!(
        log.contains("Output relp did not confirm")
            && log.contains("rejected our client certificate")
            && log.contains("check cert/key/chain"),
        "{log}"
    );
    assert!(rs.received().is_empty(), "records arrived");
    assert_not_advanced(&env);

    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rejected our client certificate"),
        "{}",
        describe(&out)
    );

    rs.kill();
    env.outputs_extra = relp_output(&pki, rs.port, &pki.client);
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("cannot connect to 127.0.0.1:{}", rs.port)),
        "{}",
        describe(&out)
    );

    rs.restart().await;
    env.run_once_ok().await;
    env.assert_exactly_once();
    assert_eq!(duplicates(&env, parse_records(&rs.received())), [0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_batch_gets_the_unacknowledged_again_and_loses_nothing() {
    const PER_SERVICE: usize = 30_000;
    let mut env = TestEnv::both(PER_SERVICE, |_| {}).await;
    let (pki, mut rs) = start_receiver(&env).await;
    env.service_extra = "page_size: 2000\nmax_events_per_window: 4000".into();
    env.outputs_extra = relp_output(&pki, rs.port, &pki.client);
    env.write_config();

    let (mut child, log) = env.spawn_logged(&["run", "--once"], "run1.log");
    // Kill rsyslog inside a batch: 6,000 records is inside the second or third window.
    Wait::new("rsyslog to receive 6,000 records", Duration::from_secs(60))
        .every(Duration::from_millis(1))
        .until(|| line_count(&rs.received()) >= 6_000)
        .await;
    rs.kill();
    let kill_len = rs.received().len();
    let lines_at_kill = line_count(&rs.received());
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the kill"
    );
    wait_for(
        "the session loss was logged",
        Duration::from_secs(30),
        || read_log(&log).contains("RELP session lost"),
    )
    .await;
    rs.restart().await;
    // The output retries for about 9 s (its own tries, then the fan-out's) before it gives up
    // a batch; rsyslog is back well before that, so the first run completes.
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the run finished")
        .unwrap();
    assert!(status.success(), "{status}: {}", read_log(&log));
    env.assert_exactly_once();

    let dups = duplicates(&env, parse_around_kill(&rs.received(), kill_len));
    // At most the unanswered window of each service's session lost with rsyslog.
    for d in dups {
        assert!(d <= RELP_WINDOW, "{dups:?} duplicates > one window");
    }
    eprintln!(
        "relp kill test: rsyslog killed at {lines_at_kill} records; duplicates per table \
         {dups:?} (bound {RELP_WINDOW} each); file output exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_collector_resends_at_most_the_windows_in_flight() {
    const WINDOW: usize = 3000;
    let mut env = TestEnv::both(20_000, |c| {
        c.shuffle = true;
        c.burst_fraction = 0.2;
    })
    .await;
    let (pki, rs) = start_receiver(&env).await;
    env.service_extra = format!("page_size: 1000\nmax_events_per_window: {WINDOW}");
    env.outputs_extra = relp_output(&pki, rs.port, &pki.client);
    env.write_config();
    let kills = kill_9_until_a_run_completes(&env, 20, 400).await;
    env.assert_exactly_once();
    let dups = duplicates(&env, parse_records(&rs.received()));
    // Each kill may leave one unconfirmed window per service, sent again by the next run.
    let total: usize = dups.iter().sum();
    assert!(
        total <= kills as usize * 2 * WINDOW,
        "{total} duplicates after {kills} kills"
    );
    eprintln!(
        "relp crash test: {kills} kill -9, {total} events re-sent ({:.0} per crash, bound {} \
         per crash); nothing missing",
        total as f64 / f64::from(kills),
        2 * WINDOW
    );
}
