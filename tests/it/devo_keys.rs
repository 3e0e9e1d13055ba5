//! Devo-layout configs (tests/devo-configs/*.yaml) with every key Devo documents: each is
//! accepted by `validate`, and `run` against the simulators shows the key's effect (the table
//! changed, the field added to every output, the request rate held at the simulator, the name
//! rewritten, pulls on time slots). The configs take the simulators' URLs, ports, key and
//! directories from `${VAR}`s, as an operator's config would.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use isolation_sim::{Dataset, FaultTarget, RequestRecord, SimHandle};

use crate::rsyslog::{Listen, Pki, Rsyslog};
use crate::support::*;

/// A work directory, both simulators and the `${VAR}`s of a Devo-layout config.
struct DevoRun {
    dir: tempfile::TempDir,
    web: SimHandle,
    url: SimHandle,
    vars: BTreeMap<String, String>,
}

impl DevoRun {
    async fn start(events: usize) -> DevoRun {
        let dir = tempfile::tempdir().unwrap();
        let web = SimHandle::start(sim_config(Dataset::Web, events, 1))
            .await
            .unwrap();
        let url = SimHandle::start(sim_config(Dataset::Url, events, 2))
            .await
            .unwrap();
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("WEB_URL", web.base_url()),
            ("URL_URL", url.base_url()),
            ("API_KEY", KEY.to_owned()),
            ("OUT_DIR", dir.path().join("out").display().to_string()),
            ("STATE_DIR", dir.path().join("state").display().to_string()),
        ] {
            vars.insert(k.to_owned(), v);
        }
        DevoRun {
            dir,
            web,
            url,
            vars,
        }
    }

    fn set(&mut self, name: &str, value: impl ToString) {
        self.vars.insert(name.to_owned(), value.to_string());
    }

    fn command(&self, config: &str, args: &[&str]) -> tokio::process::Command {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/devo-configs")
            .join(config);
        let mut cmd = collector_command(args, &path);
        cmd.envs(&self.vars);
        cmd
    }

    async fn collector(&self, config: &str, args: &[&str]) -> Output {
        let run = self.command(config, args).output();
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the collector finished within 120 s")
            .unwrap()
    }

    /// `validate` then `run --once`, both asserted to succeed; returns the run's output.
    async fn validate_and_run_once(&self, config: &str) -> Output {
        let v = self.collector(config, &["validate"]).await;
        assert_eq!(
            v.status.code(),
            Some(0),
            "validate {config}: {}",
            describe(&v)
        );
        let out = self.collector(config, &["run", "--once"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "run --once {config}: {}",
            describe(&out)
        );
        out
    }

    fn delivered(&self, table: &str) -> Vec<String> {
        read_lines(&self.dir.path().join("out").join(format!("{table}.jsonl")))
    }

    fn out_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("out"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The request times at a simulator, job creations only or every authenticated request. The
/// setup check (a one-event job) is left out of the creations.
fn times(log: &[RequestRecord], creations_only: bool) -> Vec<DateTime<Utc>> {
    log.iter()
        .filter(|r| r.kind.is_some())
        .filter(|r| {
            !creations_only || (r.kind == Some(FaultTarget::Create) && r.page_size != Some(1))
        })
        .map(|r| r.at)
        .collect()
}

/// The most requests that arrived within any span `[t, t + period - slack)`. The slack allows
/// for loopback scheduling jitter between the collector's send and the simulator's arrival
/// time: the limiter allows a request exactly one period after the one it replaces.
pub(crate) fn busiest(times: &[DateTime<Utc>], period: Duration, slack: Duration) -> usize {
    let span = chrono::Duration::from_std(period - slack).unwrap();
    times
        .iter()
        .map(|&t| times.iter().filter(|&&x| x >= t && x < t + span).count())
        .max()
        .unwrap_or(0)
}

/// Appends `"@devo_environment":<value>` the way Devo's json.dumps of the event dict does.
fn with_environment(event: &str, value: &str) -> String {
    let member = format!(
        "\"@devo_environment\":{}",
        serde_json::to_string(value).unwrap()
    );
    format!("{},{member}}}", event.strip_suffix('}').unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_every_devo_key_is_accepted_and_the_name_is_rewritten() {
    let mut run = DevoRun::start(50).await;
    let rs = Rsyslog::start(&run.dir, "rsyslog", Listen::Tcp).await;
    run.set("SYSLOG_PORT", rs.port);
    let out = run.validate_and_run_once("globals.yaml").await;
    let log = stderr(&out);
    assert!(
        log.contains("globals.name: `proofpoint isolation.eu#1` holds `.`, `#` or spaces, which Devo does not allow in a collector name; using `proofpoint_isolation_eu_1` instead"),
        "{log}"
    );
    // Each ignored global says what happens instead; none is an error.
    assert!(log.contains("globals.balanced_output: Devo collector setting with no effect here; ignored: every event goes to every output"), "{log}");
    assert!(log.contains("globals.queue_max_size_in_mb: Devo collector setting with no effect here; ignored: there is no internal queue"), "{log}");
    // The rewritten name is the collector's identity in its internal messages to Devo.
    let received = rs.wait_for_lines(1, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&received);
    let internal: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("devo.collectors.out.local"))
        .collect();
    assert!(!internal.is_empty(), "no internal message arrived: {text}");
    for line in &internal {
        assert!(
            line.contains("\"collector_name\":\"proofpoint_isolation_eu_1\""),
            "{line}"
        );
    }
    assert_same_multiset(
        &run.delivered(WEB_TABLE),
        &run.web.visible_events(),
        WEB_TABLE,
    );
}

/// The JSON bodies of `<14>DATE HOST TABLE: JSON` records, per table.
fn syslog_bodies(received: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(received).lines() {
        let rest = line
            .split_once(" collector-host ")
            .unwrap_or_else(|| panic!("no host in {line}"))
            .1;
        let (table, json) = rest.split_once(": ").unwrap();
        tables
            .entry(table.to_owned())
            .or_default()
            .push(json.to_owned());
    }
    tables
}

/// `n` copies of each line.
fn times_n(lines: &[String], n: usize) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| std::iter::repeat_n(l.clone(), n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_every_alias_gets_every_event_with_the_environment_and_a_rerun_adds_nothing() {
    const ENV: &str = "prod \"eu\"";
    let events = 40;
    let mut run = DevoRun::start(events).await;
    let pki = Pki::new(run.dir.path());
    let tls = Rsyslog::start(&run.dir, "tls", pki.listen_tls()).await;
    let tcp = Rsyslog::start(&run.dir, "tcp", Listen::Tcp).await;
    run.set("TLS_PORT", tls.port);
    run.set("SYSLOG_PORT", tcp.port);
    run.set("CHAIN", pki.ca.pem.display());
    run.set("CERT", pki.client.cert.display());
    run.set("KEY", pki.client.key.display());
    let out = run.validate_and_run_once("outputs_environment.yaml").await;
    let log = stderr(&out);
    assert!(
        log.contains("outputs.devo_1.config.sending_timeout: Devo collector setting with no effect here; ignored: a batch waits confirm_timeout_in_seconds"),
        "{log}"
    );
    let want: BTreeMap<&str, Vec<String>> = [
        (WEB_TABLE, run.web.visible_events()),
        (URL_TABLE, run.url.visible_events()),
    ]
    .into_iter()
    .map(|(t, evs)| (t, evs.iter().map(|e| with_environment(e, ENV)).collect()))
    .collect();
    // The file output: each event once, the field last.
    for (table, events) in &want {
        assert_same_multiset(&run.delivered(table), events, &format!("file {table}"));
    }
    // Two TLS outputs (devo_platform, relay) and three plain ones (syslog, in_house_relay,
    // sidecar) into two receivers, and two consoles (console, stdout).
    let total = 2 * events;
    let tls_got = syslog_bodies(&tls.wait_for_lines(2 * total, Duration::from_secs(20)).await);
    let tcp_got = syslog_bodies(&tcp.wait_for_lines(3 * total, Duration::from_secs(20)).await);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut console: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let table = v["message_tag"].as_str().unwrap().to_owned();
        let body = line
            .split_once(",\"message_content\":")
            .unwrap()
            .1
            .strip_suffix('}')
            .unwrap();
        console.entry(table).or_default().push(body.to_owned());
    }
    for (table, events) in &want {
        let empty = Vec::new();
        assert_same_multiset(
            tls_got.get(*table).unwrap_or(&empty),
            &times_n(events, 2),
            &format!("TLS {table}"),
        );
        assert_same_multiset(
            tcp_got.get(*table).unwrap_or(&empty),
            &times_n(events, 3),
            &format!("TCP {table}"),
        );
        assert_same_multiset(
            console.get(*table).unwrap_or(&empty),
            &times_n(events, 2),
            &format!("console {table}"),
        );
    }
    // The dedup keys are the vendor's originals: a second run finds nothing new.
    let again = run
        .collector("outputs_environment.yaml", &["run", "--once"])
        .await;
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    assert!(again.stdout.is_empty(), "the rerun printed events");
    for (table, events) in &want {
        assert_eq!(
            run.delivered(table).len(),
            events.len(),
            "{table} after a rerun"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tls.received().iter().filter(|&&b| b == b'\n').count(),
        2 * total
    );
    assert_eq!(
        tcp.received().iter().filter(|&&b| b == b'\n').count(),
        3 * total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_base_tag_changes_both_tables_and_override_tag_wins() {
    let run = DevoRun::start(30).await;
    let out = run.validate_and_run_once("tags.yaml").await;
    assert_eq!(
        run.out_files(),
        [
            "my.custom.urls.jsonl",
            "my.isolation.browser_and_email.jsonl"
        ]
    );
    assert_same_multiset(
        &run.delivered("my.isolation.browser_and_email"),
        &run.web.visible_events(),
        "web",
    );
    assert_same_multiset(
        &run.delivered("my.custom.urls"),
        &run.url.visible_events(),
        "url",
    );
    let log = stderr(&out);
    assert!(
        log.contains(
            "Overriding rule #1 - base_tag: \"tap.proofpoint.isolation\" -> \"my.isolation\""
        ),
        "{log}"
    );
    assert!(log.contains("Overriding rule #2 - tag: \"tap.proofpoint.isolation.url_isolation\" -> \"my.custom.urls\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_limits_hold_at_the_input_and_the_service_at_once() {
    let run = DevoRun::start(60).await;
    let started = std::time::Instant::now();
    let out = run.validate_and_run_once("limits.yaml").await;
    let elapsed = started.elapsed();
    // The validate run's setup checks (one per service, another process) are left out.
    let (web, url) = (
        times(&run.web.request_log(), false)[1..].to_vec(),
        times(&run.url.request_log(), false)[1..].to_vec(),
    );
    let mut both: Vec<_> = web.iter().chain(&url).copied().collect();
    both.sort();
    let slack = Duration::from_millis(30);
    // The input's 6 per second hold for both services together.
    assert!(both.len() >= 12, "only {} requests", both.len());
    assert!(
        busiest(&both, Duration::from_secs(1), slack) <= 6,
        "{both:?}"
    );
    // The service's 2 per 2 seconds hold for url_isolation.
    assert!(busiest(&url, Duration::from_secs(2), slack) <= 2, "{url:?}");
    // ...and were met: the waits were logged (once per wait of a second or more).
    let log = stderr(&out);
    assert!(log.contains("Request limit reached (2 request(s) per 2s, services.url_isolation requests_limits); waiting "), "{log}");
    assert!(elapsed < Duration::from_secs(30));
    assert_same_multiset(&run.delivered(URL_TABLE), &run.url.visible_events(), "url");
    assert_same_multiset(&run.delivered(WEB_TABLE), &run.web.visible_events(), "web");
}

/// The smallest gap between consecutive times.
fn min_gap(times: &[DateTime<Utc>]) -> Duration {
    times
        .windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
        .min()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_second_the_service_setting_beats_the_input_one() {
    let run = DevoRun::start(40).await;
    run.validate_and_run_once("rate.yaml").await;
    // The validate run's setup checks are requests too; take the run's only.
    let run_part = |log: Vec<RequestRecord>| {
        let t = times(&log, false);
        t[1..].to_vec()
    };
    let (web, url) = (
        run_part(run.web.request_log()),
        run_part(run.url.request_log()),
    );
    assert!(web.len() >= 5 && url.len() >= 5, "{web:?} {url:?}");
    let slack = Duration::from_millis(20);
    // Input: 10 per second for the web service (it sets nothing itself)...
    assert!(
        min_gap(&web) >= Duration::from_millis(100) - slack,
        "{web:?}"
    );
    assert!(
        min_gap(&web) < Duration::from_millis(250) - slack,
        "web paced like url: {web:?}"
    );
    // ...and url_isolation's own 4 per second.
    assert!(
        min_gap(&url) >= Duration::from_millis(250) - slack,
        "{url:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_time_slots_starts_cycles_on_multiples_of_the_period() {
    let run = DevoRun::start(20).await;
    let v = run.collector("time_slots.yaml", &["validate"]).await;
    assert_eq!(v.status.code(), Some(0), "{}", describe(&v));
    // Start half a period off the grid, so that cycles paced from the start would miss it.
    let now = Utc::now().timestamp_millis();
    let to_half = (1_000 - now.rem_euclid(2_000)).rem_euclid(2_000);
    tokio::time::sleep(Duration::from_millis(to_half as u64)).await;
    let child = run
        .command("time_slots.yaml", &["run"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let out = terminate_with_output(child, Duration::from_secs(30)).await;
    assert!(out.status.success(), "{}", describe(&out));
    for (name, sim) in [("web", &run.web), ("url", &run.url)] {
        let creations = times(&sim.request_log(), true);
        // The first cycle starts at once; the others on the 2-second grid.
        assert!(creations.len() >= 3, "{name}: {creations:?}");
        for t in &creations[1..] {
            let phase = t.timestamp_millis().rem_euclid(2_000);
            assert!(
                phase < 500,
                "{name}: a cycle started {phase} ms after its slot: {creations:?}"
            );
        }
    }
    assert!(stderr(&out).contains("until the next time slot"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_every_devo_key_together_and_a_disabled_input() {
    let mut run = DevoRun::start(30).await;
    run.set("ENABLED", "true");
    let out = run.validate_and_run_once("inputs.yaml").await;
    let log = stderr(&out);
    assert!(log.contains("services.browser_and_email_isolation.retries: Devo collector setting with no effect here; ignored: as in Devo"), "{log}");
    assert_eq!(
        run.out_files(),
        ["my.isolation.url_isolation.jsonl", "my.web.jsonl"]
    );
    let web = run.delivered("my.web");
    assert_eq!(web.len(), run.web.visible_events().len());
    for line in &web {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["userName"], "****SANITIZED****", "{line}");
        assert!(line.ends_with(",\"@devo_environment\":\"test\"}"), "{line}");
    }
    let url_want: Vec<String> = run
        .url
        .visible_events()
        .iter()
        .map(|e| with_environment(e, "test"))
        .collect();
    assert_same_multiset(
        &run.delivered("my.isolation.url_isolation"),
        &url_want,
        "url",
    );

    // Disabled: accepted, nothing asked of the API, nothing delivered.
    let run = {
        let mut r = DevoRun::start(30).await;
        r.set("ENABLED", "false");
        r
    };
    let out = run.collector("inputs.yaml", &["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out)
        .contains("The \"input\" configuration entry for proofpoint_isolation is not enabled"));
    assert_eq!(run.web.stats().requests + run.url.stats().requests, 0);
    assert!(run.out_files().is_empty());
}

#[tokio::test]
async fn bad_devo_values_are_all_listed_and_exit_64() {
    let run = DevoRun::start(1).await;
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/devo-configs/limits.yaml"),
    )
    .unwrap()
    .replace("period: 1s", "period: \"5x\"")
    .replace("number_of_requests: 2", "number_of_requests: 0")
    .replace("name: proofpoint_isolation", "name: \"pp/isolation\"");
    let path = run.dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let out = collector_command(&["validate"], &path)
        .envs(&run.vars)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let log = stderr(&out);
    for problem in [
        "3 problem(s) found",
        "globals.name: `pp/isolation` may only hold letters, digits, `-` and `_`",
        "inputs.proofpoint_isolation.requests_limits[0].period: `5x` is not a period",
        "inputs.proofpoint_isolation.services.url_isolation.requests_limits[0].number_of_requests: must be a whole number from 1 to 9999999, or -1 for no limit, got 0",
    ] {
        assert!(log.contains(problem), "missing {problem:?} in {log}");
    }
    assert_eq!(run.web.stats().requests + run.url.stats().requests, 0);
}
