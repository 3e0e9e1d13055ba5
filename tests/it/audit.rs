//! The completeness audit (`isolation-collector audit`, and the daemon's schedule) against the
//! simulator: a complete range, events published hours late (beyond the lookback), a crash and
//! a restart, and the `missing_events` gauge.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use isolation_sim::{SimHandle, SimStats};
use serde_json::Value;

use crate::support::*;

const WEB: &str = "browser_and_email_isolation";
const URL: &str = "url_isolation";

/// `audit --json <args>`: the exit code and the report.
async fn audit_json(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let out = env.collector(&all).await;
    let code = out.status.code().expect("an exit code");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit printed no JSON ({e}): {}", describe(&out)));
    (code, report)
}

/// The hours of `service` in `report`, by their start.
fn hours_of<'a>(report: &'a Value, service: &str) -> BTreeMap<String, &'a Value> {
    let s = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no {service} in {report:#}"));
    assert!(s["error"].is_null(), "the audit of {service} failed: {s:#}");
    s["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["hour"].as_str().unwrap().to_owned(), h))
        .collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The events `sim` shows now with dates in the hour line's `[from, to)`.
fn sim_count(sim: &SimHandle, hour: &Value) -> u64 {
    let to = time(&hour["to"]) - TimeDelta::milliseconds(1);
    sim.visible_events_between(time(&hour["from"]), to).len() as u64
}

/// Asserts that every hour of `service` is complete and that the API's and the delivered
/// counts both equal what the simulator holds in that hour; returns the events audited.
fn assert_complete_and_true(report: &Value, service: &str, sim: &SimHandle) -> u64 {
    let hours = hours_of(report, service);
    assert!(
        hours.len() >= 20,
        "{service}: {} hours audited",
        hours.len()
    );
    let mut events = 0;
    for (start, h) in hours {
        let truth = sim_count(sim, h);
        assert_eq!(h["verdict"], "complete", "{service} {start}: {h:#}");
        assert_eq!(h["api"].as_u64(), Some(truth), "{service} {start}: {h:#}");
        assert_eq!(
            h["delivered"].as_u64(),
            Some(truth),
            "{service} {start}: {h:#}"
        );
        assert_eq!(h["missing"], 0, "{service} {start}: {h:#}");
        events += truth;
    }
    events
}

/// Prints what the audit cost the API: requests and events served per audited hour.
fn print_cost(what: &str, env: &TestEnv, before: (SimStats, SimStats), report: &Value) {
    for (service, sim, before) in [(WEB, &env.web, before.0), (URL, &env.url, before.1)] {
        let hours = hours_of(report, service).len() as f64;
        let after = sim.stats();
        eprintln!(
            "audit cost ({what}), {service}: {:.1} requests and {:.1} events downloaded per hour over {hours} hours",
            (after.requests - before.requests) as f64 / hours,
            (after.events_served - before.events_served) as f64 / hours,
        );
    }
}

/// The start of the hour `hours` before the current one.
fn hours_ago(hours: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap() - TimeDelta::hours(hours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_of_a_complete_range_reports_zero_everywhere() {
    let env = TestEnv::both(3000, |c| c.identical_fraction = 0.05).await;
    env.run_once_ok().await;
    let before = (env.web.stats(), env.url.stats());
    let (code, report) = audit_json(&env, &[]).await;
    print_cost("total trusted", &env, before, &report);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["complete"], true);
    assert_eq!(report["missing_events"], 0);
    let web = assert_complete_and_true(&report, WEB, &env.web);
    let url = assert_complete_and_true(&report, URL, &env.url);
    assert!(web > 2000 && url > 2000, "{web} and {url} events audited");
    // The table says the same.
    let out = env.collector(&["audit", "--service", URL]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    // Verdicts follow two spaces; the summary line says "0 event(s) missing".
    assert!(
        table.contains("  complete") && !table.contains("  missing"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_hours_late_are_found_missing_per_hour() {
    let env = TestEnv::both(1500, |_| {}).await;
    env.run_once_ok().await;
    let (first, second) = (hours_ago(6), hours_ago(3));
    let minutes = |m| TimeDelta::minutes(m);
    env.web.inject(7, first + minutes(10), first + minutes(20));
    env.web.inject(4, second + minutes(1), second + minutes(50));
    let (code, report) = audit_json(&env, &[]).await;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["missing_events"], 11);
    let hours = hours_of(&report, WEB);
    for (start, h) in &hours {
        let want = match time(&h["hour"]) {
            t if t == first => 7,
            t if t == second => 4,
            _ => 0,
        };
        assert_eq!(h["missing"], want, "{start}: {h:#}");
        assert_eq!(h["api"].as_u64(), Some(sim_count(&env.web, h)), "{start}");
        if want > 0 {
            assert_eq!(h["verdict"], "missing");
            assert_eq!(h["api_counted"], "download", "{h:#}");
        }
    }
    assert_complete_and_true(&report, URL, &env.url);
    let out = env.collector(&["audit", "--service", WEB]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("missing 7") && table.contains("missing 4"),
        "{table}"
    );
}

/// `total` as a string, absent, a page served twice, events that cannot be read: the audit
/// still counts each hour right, and trusts `total` only where it agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_counts_right_whatever_total_says() {
    let mut web = sim_config(isolation_sim::Dataset::Web, 1500, 1);
    web.total_mode = isolation_sim::TotalMode::Absent;
    web.repeat_page = Some(1);
    let mut url = sim_config(isolation_sim::Dataset::Url, 1500, 2);
    url.total_mode = isolation_sim::TotalMode::String;
    url.non_utf8_events = 3;
    let mut env = TestEnv::start(web, url).await;
    env.service_extra = "page_size: 100".into();
    env.write_config();
    env.run_once_ok().await;
    let before = (env.web.stats(), env.url.stats());
    let (code, report) = audit_json(&env, &[]).await;
    print_cost(
        "web without total, url with total as text",
        &env,
        before,
        &report,
    );
    assert_eq!(code, 0, "{report:#}");
    assert_complete_and_true(&report, WEB, &env.web);
    // Without a total, every hour is downloaded.
    let web = hours_of(&report, WEB);
    assert!(
        web.values().all(|h| h["api_counted"] == "download"),
        "{report:#}"
    );
    // The unreadable events are in the API's count, set aside, and not missing.
    let url = hours_of(&report, URL);
    let set_aside: u64 = url.values().map(|h| h["set_aside"].as_u64().unwrap()).sum();
    assert_eq!(set_aside, 3, "{report:#}");
    for (start, h) in &url {
        let with_unreadable = sim_count(&env.url, h) + h["set_aside"].as_u64().unwrap();
        assert_eq!(h["api"].as_u64(), Some(with_unreadable), "{start}: {h:#}");
        assert_eq!(h["verdict"], "complete", "{start}: {h:#}");
        assert_eq!(h["api_counted"], "total", "{start}: {h:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_across_kill_9_and_restarts_counts_right() {
    let mut env = TestEnv::both(20_000, |c| {
        c.shuffle = true;
        c.identical_fraction = 0.02;
        c.burst_fraction = 0.2;
        c.page_latency = Duration::from_millis(10);
    })
    .await;
    env.service_extra = "page_size: 1000\nmax_events_per_window: 3000".into();
    env.write_config();
    kill_9_until_a_run_completes(&env, 20, 400).await;
    env.assert_exactly_once();
    let (code, report) = audit_json(&env, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_complete_and_true(&report, WEB, &env.web);
    assert_complete_and_true(&report, URL, &env.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_audit_sets_missing_events() {
    let env = TestEnv::both(800, |_| {}).await;
    env.run_once_ok().await;
    let late = hours_ago(5);
    env.web.inject(6, late, late + TimeDelta::minutes(30));
    let base = listen_on_free_port(&env);
    let mut cmd = collector_command(&["run"], &env.config_path());
    cmd.env("ISOLATION_COLLECTOR_AUDIT_FIRST_DELAY_MS", "300");
    let child = spawn_logged(&mut cmd, &env.path("daemon.log"));
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    wait_for("the metrics listener", Duration::from_secs(30), || {
        listening(port)
    })
    .await;
    let missing = "isolation_collector_missing_events";
    let labels = |service| [("input", INPUT_ID), ("service", service)];
    let audited = "isolation_collector_last_audit_timestamp_seconds";
    let samples = scrape_until(&base, "both services audited", |s| {
        sample(s, audited, &labels(WEB)).is_some() && sample(s, audited, &labels(URL)).is_some()
    })
    .await;
    sigterm_and_wait(child).await;
    let log = read_log(&env.path("daemon.log"));
    assert_eq!(sample(&samples, missing, &labels(WEB)), Some(6.0), "{log}");
    assert_eq!(sample(&samples, missing, &labels(URL)), Some(0.0), "{log}");
    assert!(
        log.contains("found 6 event(s) the API holds that were not delivered"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_64_and_an_api_that_refuses_the_key_exits_1_with_it_masked() {
    let mut env = TestEnv::both(300, |_| {}).await;
    for (args, says) in [
        (
            &["--from", "yesterday"][..],
            "--from `yesterday` is not a date",
        ),
        (
            &["--service", "mail"][..],
            "--service `mail` is not an enabled service",
        ),
        (&["--input", "42"][..], "--input `42` is not the id"),
        (
            &[
                "--from",
                "2026-12-01T10:00:00Z",
                "--to",
                "2026-12-01T09:00:00Z",
            ][..],
            "is not before --to",
        ),
    ] {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        let out = env.collector(&all).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", describe(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", describe(&out));
    }
    env.run_once_ok().await;
    let wrong = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";
    env.key = wrong.to_owned();
    env.write_config();
    let out = env.collector(&["audit", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = report["services"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("is not valid"), "{report:#}");
    let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!everything.contains(wrong), "the key leaked: {everything}");
}

/// With Redis persistence: the holder of a service's lease killed mid-backfill, the other
/// replica takes the lease over and finishes; the audit's counts equal the API's per hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_after_a_takeover_on_redis_counts_right() {
    use crate::ha::Ha;
    use rand::Rng;
    let mut ha = Ha::new(
        15_000,
        |c| {
            c.shuffle = true;
            c.identical_fraction = 0.02;
            c.page_latency = Duration::from_millis(50);
        },
        "page_size: 250\nmax_events_per_window: 2000",
        2,
    )
    .await;
    for r in &mut ha.replicas {
        r.start();
    }
    for service in [WEB, URL] {
        let holder = ha.holder(service).await;
        let pause = rand::rng().random_range(100..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let token = ha.lease(service);
        assert!(
            ha.delivered(service) < ha.expected[service].len(),
            "the backfill of {service} ended before the kill: make it longer"
        );
        ha.replicas[holder].kill_9().await;
        let taker = ha.holder(service).await;
        assert_ne!(taker, holder);
        assert_ne!(ha.lease(service), token, "the lease did not change hands");
        ha.replicas[holder].start();
    }
    ha.wait_until_complete(Duration::from_secs(90)).await;
    ha.stop_all().await;
    ha.env.assert_exactly_once();
    let out = ha
        .env
        .collector_with_env(&["audit", "--json"], &[("METRICS_LISTEN", "127.0.0.1:1")])
        .await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", describe(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_complete_and_true(&report, WEB, &ha.env.web);
    assert_complete_and_true(&report, URL, &ha.env.url);
}

/// The audit's hours are counted concurrently, all within the service's `requests_limits`
/// (one limiter for all its clients, not one each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_keeps_the_services_requests_limits() {
    let mut env = TestEnv::both(800, |_| {}).await;
    env.service_extra = "requests_limits: [{period: 1s, number_of_requests: 10}]".into();
    env.write_config();
    env.run_once_ok().await;
    let started = Utc::now();
    let (code, report) = audit_json(&env, &["--service", WEB]).await;
    assert_eq!(code, 0, "{report:#}");
    let during: Vec<_> = (env.web.request_log().into_iter())
        .map(|r| r.at)
        .filter(|&t| t >= started)
        .collect();
    let most =
        crate::devo_keys::busiest(&during, Duration::from_secs(1), Duration::from_millis(30));
    assert!(during.len() >= 30, "{} requests", during.len());
    assert!(
        most <= 10,
        "{most} requests within 1 s, over the limit of 10"
    );
}
/// `audit --repair` delivers the events published hours late, exactly once, and audits those
/// hours again; a second repair delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_delivers_late_events_exactly_once_and_a_second_repair_nothing() {
    let env = TestEnv::both(1500, |c| c.identical_fraction = 0.05).await;
    env.run_once_ok().await;
    let (first, second) = (hours_ago(6), hours_ago(3));
    env.web.inject(
        7,
        first + TimeDelta::minutes(10),
        first + TimeDelta::minutes(20),
    );
    env.url.inject(
        4,
        second + TimeDelta::minutes(1),
        second + TimeDelta::minutes(50),
    );
    let (code, report) = audit_json(&env, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["missing_events"], 0, "{report:#}");
    let repaired: u64 = report["repairs"]
        .as_array()
        .unwrap_or_else(|| panic!("no repairs in {report:#}"))
        .iter()
        .map(|r| r["delivered"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(repaired, 11, "{report:#}");
    env.assert_exactly_once();
    let (code, report) = audit_json(&env, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_complete_and_true(&report, WEB, &env.web);
    assert_complete_and_true(&report, URL, &env.url);
    let (code, report) = audit_json(&env, &["--repair"]).await;
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["repairs"].as_array().is_none_or(Vec::is_empty),
        "{report:#}"
    );
    env.assert_exactly_once();
}

/// A repair that sent to a webhook (an output that cannot take events back) and was cut off
/// before its commit (kill at the crash point) is refused for that hour by the next repair,
/// which sends the webhook nothing; once the operator checked, `--clear-in-flight` forgets the
/// mark and the hour is repaired (the file output, whose uncommitted lines were cut back, ends
/// exactly once; the webhook gets the hour's missing events again, as the operator asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_cut_off_before_its_commit_is_refused_until_its_mark_is_cleared() {
    let mut env = TestEnv::both(600, |_| {}).await;
    let hook = crate::http_receivers::Receiver::start("", false).await;
    env.outputs_extra = format!(
        "  hook:\n    type: http\n    config:\n      url: {}\n",
        hook.url("/hook")
    );
    env.write_config();
    env.run_once_ok().await;
    let before = hook.hook_events().len();
    let late = hours_ago(3);
    env.web.inject(
        4,
        late + TimeDelta::minutes(5),
        late + TimeDelta::minutes(15),
    );

    let crashed = env
        .collector_with_env(
            &["audit", "--json", "--repair", "--service", WEB],
            &[("ISOLATION_COLLECTOR_CRASH_IN_REPAIR", "1")],
        )
        .await;
    assert!(!crashed.status.success(), "{}", describe(&crashed));
    let sent = hook.hook_events().len() - before;
    assert_eq!(sent, 4, "the cut-off repair sent the hour's 4 events first");

    let (code, report) = audit_json(&env, &["--repair", "--service", WEB]).await;
    assert_eq!(code, 2, "{report:#}");
    let refused = report["repairs"][0]["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("--clear-in-flight"), "{report:#}");
    assert_eq!(hook.hook_events().len() - before, 4, "nothing sent again");

    let (code, report) =
        audit_json(&env, &["--repair", "--clear-in-flight", "--service", WEB]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["repairs"][0]["delivered"], 4, "{report:#}");
    assert_eq!(hook.hook_events().len() - before, 8);
    env.assert_exactly_once();
}

/// An event the webhook refuses for good during a repair is set aside for the webhook (a dead
/// letter with its exact bytes), as the puller sets such events aside, and the repair of the
/// hour goes on for the others: no output is left without an event the ledger counts as
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_an_output_refuses_during_a_repair_is_set_aside_for_it() {
    let mut env = TestEnv::both(600, |_| {}).await;
    let hook = crate::http_receivers::Receiver::start("", false).await;
    env.outputs_extra = format!(
        "  hook:\n    type: http\n    config:\n      url: {}\n",
        hook.url("/hook")
    );
    env.write_config();
    env.run_once_ok().await;
    let late = hours_ago(3);
    let (from, to) = (late + TimeDelta::minutes(5), late + TimeDelta::minutes(15));
    let before = env.web.visible_events_between(from, to);
    env.web.inject(3, from, to);
    let injected: Vec<String> = (env.web.visible_events_between(from, to).into_iter())
        .filter(|e| !before.contains(e))
        .collect();
    assert_eq!(injected.len(), 3);
    hook.refuse_requests_containing(&injected[1]);

    let (code, report) = audit_json(&env, &["--repair", "--service", WEB]).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["repairs"][0]["delivered"], 3, "{report:#}");
    let letters = dead_letters(&env);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["output"], "hook");
    let raw = hex::decode(letters[0]["raw_hex"].as_str().unwrap()).unwrap();
    assert_eq!(raw, injected[1].as_bytes());
    let got = hook.hook_events();
    assert!(got.contains(&injected[0]) && got.contains(&injected[2]));
    assert!(!got.contains(&injected[1]));
    env.assert_exactly_once();
}

/// The dead letters in the env's state directory, one JSON object each.
fn dead_letters(env: &TestEnv) -> Vec<Value> {
    let mut letters = Vec::new();
    for entry in std::fs::read_dir(env.path("state")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".dead_letters.jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines = text.lines().filter(|l| !l.is_empty());
            letters.extend(lines.map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
    }
    letters
}
