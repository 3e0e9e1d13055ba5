//! Reload without restart: the daemon with several tenants against the simulators, its config
//! changed under it and reloaded by SIGHUP or `--watch-config`; each tenant's file output
//! (`out/<id>/<table>.jsonl`) checked exactly afterwards.

// Fixtures in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use chrono::Utc;

use crate::support::*;

/// One tenant's input block (as a file of `inputs_dir` holds it): both services on the test
/// simulators, polled fast. `extra` lines go into each service section.
fn block(env: &TestEnv, id: &str, extra: &str) -> String {
    let service = |name: &str, base: &str| {
        let mut s = format!(
            "  {name}:\n    override_base_url: {base}\n    request_period_in_seconds: 1\n    job_poll_initial_interval_in_seconds: 0.01\n    job_poll_max_interval_in_seconds: 0.05\n    retry_initial_interval_in_seconds: 0.01\n    retry_max_interval_in_seconds: 0.1\n"
        );
        for line in extra.lines() {
            s.push_str(&format!("    {}\n", line.trim()));
        }
        s
    };
    format!(
        "id: \"{id}\"\ncredentials:\n  api_key: \"{KEY}\"\nservices:\n{}{}",
        service("browser_and_email_isolation", &env.web.base_url()),
        service("url_isolation", &env.url.base_url()),
    )
}

/// [`block`] as an element of the list `inputs.proofpoint_isolation`.
fn tenant(env: &TestEnv, id: &str, extra: &str) -> String {
    block(env, id, extra)
        .lines()
        .enumerate()
        .map(|(i, line)| match i {
            0 => format!("  - {line}\n"),
            _ => format!("    {line}\n"),
        })
        .collect()
}

/// The config's globals and outputs, before its inputs.
fn head(env: &TestEnv) -> String {
    format!(
        "globals:\n  id: \"t1\"\n  name: it\n  persistence:\n    type: filesystem\n    config:\n      directory_name: {state}\noutputs:\n  local:\n    type: file\n    config:\n      directory: {out}\n",
        state = env.path("state").display(),
        out = env.path("out").display(),
    )
}

/// Writes config.yaml with these tenant blocks (the list form), by renaming a complete file
/// over it, as an operator's tooling should.
fn write_tenants(env: &TestEnv, blocks: &[String]) {
    let text = format!(
        "{}inputs:\n  proofpoint_isolation:\n{}",
        head(env),
        blocks.concat()
    );
    replace_file(&env.config_path(), &text);
}

fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A tenant's delivered lines of a table.
fn delivered(env: &TestEnv, id: &str, table: &str) -> Vec<String> {
    read_lines(&env.path("out").join(id).join(format!("{table}.jsonl")))
}

/// Whether both of a tenant's files hold exactly what the simulators show now.
fn exact(env: &TestEnv, id: &str) -> bool {
    let same = |table, sim: &isolation_sim::SimHandle| {
        multiset(&delivered(env, id, table)) == multiset(&sim.visible_events())
    };
    same(WEB_TABLE, &env.web) && same(URL_TABLE, &env.url)
}

/// Asserts (with what is missing or extra) that a tenant's files are exact.
fn assert_exact(env: &TestEnv, id: &str) {
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        assert_same_multiset(
            &delivered(env, id, table),
            &sim.visible_events(),
            &format!("tenant {id}, {table}"),
        );
    }
}

/// Waits (at most 60 s) until every tenant in `ids` is exact, then asserts it.
async fn wait_exact(env: &TestEnv, ids: &[&str], log: &std::path::Path) {
    Wait::new("every tenant exact", Duration::from_secs(60))
        .try_until(|| ids.iter().all(|id| exact(env, id)))
        .await;
    for id in ids {
        if !exact(env, id) {
            eprintln!("{}", read_log(log));
        }
        assert_exact(env, id);
    }
}

/// New events on both simulators, dated in the next seconds: the daemon's next cycles fetch
/// them (each tenant its own copy).
fn new_events(env: &TestEnv, count: usize) {
    let now = Utc::now();
    for sim in [&env.web, &env.url] {
        sim.inject(
            count,
            now + chrono::Duration::milliseconds(200),
            now + chrono::Duration::seconds(2),
        );
    }
}

/// The log lines of one tenant that contain `needle`: its pullers' threads
/// (`IsolationPuller(proofpoint_isolation,<id>,...)`) and its setup threads
/// (`IsolationPullerSetup(unknown,proofpoint_isolation#<id>,...)`) name its id.
fn tenant_lines(log: &str, id: &str, needle: &str) -> usize {
    let (puller, setup) = (
        format!("(proofpoint_isolation,{id},"),
        format!(",proofpoint_isolation#{id},"),
    );
    log.lines()
        .filter(|l| (l.contains(&puller) || l.contains(&setup)) && l.contains(needle))
        .count()
}

/// SIGTERM, and a clean exit.
async fn stop(mut child: tokio::process::Child, log: &std::path::Path) {
    let status = terminate(&mut child, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", read_log(log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_tenants_mid_run_and_leaves_the_others_untouched() {
    // A backfill of many small windows with slow pages: the reload comes while A and B are
    // in the middle of it.
    let env = TestEnv::both(4000, |c| c.page_latency = Duration::from_millis(10)).await;
    let small = "page_size: 100\nmax_events_per_window: 400";
    let (a, b, c) = ("20001", "20002", "20003");
    write_tenants(&env, &[tenant(&env, a, small), tenant(&env, b, small)]);
    let (child, log) = env.spawn_logged(&["run"], "collector.log");
    Wait::new("A's backfill under way", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| delivered(&env, a, WEB_TABLE).len() >= 400)
        .await;
    // B goes, C comes, A stays.
    write_tenants(&env, &[tenant(&env, a, small), tenant(&env, c, small)]);
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reloaded: 1 added, 1 removed, 0 restarted, 1 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    let b_at_stop: Vec<_> = [WEB_TABLE, URL_TABLE].map(|t| delivered(&env, b, t)).into();
    new_events(&env, 200);
    wait_exact(&env, &[a, c], &log).await;
    let text = read_log(&log);
    assert!(
        text.contains("Received the \"SIGHUP\" system signal (code: 1)"),
        "{text}"
    );
    // A was not touched: one setup and one thread per service, no gap, nothing twice (exact).
    for needle in [
        "Making sample request to test authentication.",
        "Starting thread",
    ] {
        assert_eq!(tenant_lines(&text, a, needle), 2, "{needle:?} in\n{text}");
        assert_eq!(tenant_lines(&text, c, needle), 2, "{needle:?} in\n{text}");
    }
    // B stopped as on shutdown: what it delivered is part of the truth, once, and it wrote
    // nothing after its stop.
    for (table, sim, at_stop) in [
        (WEB_TABLE, &env.web, &b_at_stop[0]),
        (URL_TABLE, &env.url, &b_at_stop[1]),
    ] {
        let (got, truth) = (delivered(&env, b, table), sim.visible_events());
        let (got_set, truth_set) = (multiset(&got), multiset(&truth));
        for (line, n) in &got_set {
            assert!(
                truth_set.get(line).copied().unwrap_or(0) >= *n,
                "tenant {b}, {table}: {line} delivered {n} time(s)"
            );
        }
        assert_eq!(&got, at_stop, "tenant {b} wrote after its stop");
    }
    // B back: it resumes from its committed state (a tail it wrote unconfirmed is cut), and
    // ends exact like the others.
    write_tenants(
        &env,
        &[
            tenant(&env, a, small),
            tenant(&env, c, small),
            tenant(&env, b, small),
        ],
    );
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reloaded: 1 added, 0 removed, 0 restarted, 2 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    wait_exact(&env, &[a, b, c], &log).await;
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_an_invalid_block_keeps_its_tenant_running() {
    let env = TestEnv::both(800, |_| {}).await;
    let (a, b) = ("20001", "20002");
    write_tenants(&env, &[tenant(&env, a, "")]);
    let (child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_exact(&env, &[a], &log).await;
    // A problem outside the input blocks: the whole new config is refused.
    let bad = format!(
        "{}inputs:\n  proofpoint_isolation:\n{}{}",
        head(&env).replace("outputs:\n", "  bogus_global_key: 1\noutputs:\n"),
        tenant(&env, a, ""),
        tenant(&env, b, ""),
    );
    replace_file(&env.config_path(), &bad);
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reload refused: ",
        1,
        Duration::from_secs(60),
    )
    .await;
    let text = read_log(&log);
    assert!(
        text.contains("problem(s); the running configuration stays"),
        "{text}"
    );
    assert!(text.contains("bogus_global_key"), "{text}");
    assert!(!text.contains("Configuration reloaded"), "{text}");
    // Still running, still delivering; B was not started.
    new_events(&env, 100);
    wait_exact(&env, &[a], &log).await;
    assert!(delivered(&env, b, WEB_TABLE).is_empty());

    // A's new block has a problem, B's is fine: B starts, A keeps running on its old block.
    write_tenants(
        &env,
        &[tenant(&env, a, "bogus_service_key: 1"), tenant(&env, b, "")],
    );
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reloaded: 1 added, 0 removed, 0 restarted, 1 unchanged (1 of them on its previous configuration: 20001)", 1, Duration::from_secs(60)).await;
    new_events(&env, 100);
    wait_exact(&env, &[a, b], &log).await;
    let text = read_log(&log);
    assert!(text.contains("bogus_service_key"), "{text}");
    assert_eq!(
        tenant_lines(&text, a, "Making sample request to test authentication."),
        2,
        "{text}"
    );
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_strict_an_invalid_block_refuses_the_reload() {
    let env = TestEnv::both(300, |_| {}).await;
    let (a, b) = ("20001", "20002");
    write_tenants(&env, &[tenant(&env, a, "")]);
    let (child, log) = env.spawn_logged(&["run", "--strict"], "collector.log");
    wait_exact(&env, &[a], &log).await;
    write_tenants(
        &env,
        &[tenant(&env, a, ""), tenant(&env, b, "bogus_service_key: 1")],
    );
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reload refused: 2 problem(s)",
        1,
        Duration::from_secs(60),
    )
    .await;
    new_events(&env, 50);
    wait_exact(&env, &[a], &log).await;
    let text = read_log(&log);
    assert!(
        text.contains("run --strict: a configuration with an invalid input is refused"),
        "{text}"
    );
    assert_eq!(tenant_lines(&text, b, "Starting thread"), 0, "{text}");
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_picks_up_a_changed_file() {
    let env = TestEnv::both(500, |_| {}).await;
    let (a, b) = ("20001", "20002");
    write_tenants(&env, &[tenant(&env, a, "")]);
    let (child, log) = env.spawn_logged(&["run", "--watch-config"], "collector.log");
    wait_exact(&env, &[a], &log).await;
    write_tenants(&env, &[tenant(&env, a, ""), tenant(&env, b, "")]);
    wait_for_log(
        &log,
        "Configuration reloaded: 1 added, 0 removed, 0 restarted, 1 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    wait_exact(&env, &[a, b], &log).await;
    let text = read_log(&log);
    assert!(text.contains("(--watch-config)"), "{text}");
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_follows_the_files_of_inputs_dir() {
    let env = TestEnv::both(500, |_| {}).await;
    let (a, b) = ("20001", "20002");
    let dir = env.path("tenants.d");
    std::fs::create_dir(&dir).unwrap();
    replace_file(&dir.join("a.yaml"), &block(&env, a, ""));
    let config = format!("{}inputs_dir: tenants.d\n", head(&env));
    replace_file(&env.config_path(), &config);
    let (child, log) = env.spawn_logged(&["run", "--watch-config"], "collector.log");
    wait_exact(&env, &[a], &log).await;
    // A tenant file comes: its tenant starts. The config file itself did not change.
    replace_file(&dir.join("b.yaml"), &block(&env, b, ""));
    wait_for_log(
        &log,
        "Configuration reloaded: 1 added, 0 removed, 0 restarted, 1 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    new_events(&env, 50);
    wait_exact(&env, &[a, b], &log).await;
    // A tenant file goes: its tenant stops; the other goes on.
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    wait_for_log(
        &log,
        "Configuration reloaded: 0 added, 1 removed, 0 restarted, 1 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    new_events(&env, 50);
    wait_exact(&env, &[b], &log).await;
    assert_eq!(
        tenant_lines(
            &read_log(&log),
            b,
            "Making sample request to test authentication."
        ),
        2
    );
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_restarts_a_tenant_whose_key_file_changed() {
    const WRONG_KEY: &str = "0a0a0a0a-5e6f-4a8b-9c0d-1e2f3a4b5c00";
    let env = TestEnv::both(300, |_| {}).await;
    let (a, b) = ("20001", "20002");
    let key_file = env.path("a.key");
    replace_file(&key_file, KEY);
    let a_block = tenant(&env, a, "").replace(
        &format!("api_key: \"{KEY}\""),
        &format!("api_key_file: {}", key_file.display()),
    );
    write_tenants(&env, &[a_block, tenant(&env, b, "")]);
    let (child, log) = env.spawn_logged(&["run", "--watch-config"], "collector.log");
    wait_exact(&env, &[a, b], &log).await;
    // The key rotated in its file, to one the API refuses: A restarts with it (and fails its
    // setup, retrying), B is not touched. Then to the right one again: A resumes from its state.
    replace_file(&key_file, WRONG_KEY);
    let reloaded = "Configuration reloaded: 0 added, 0 removed, 1 restarted, 1 unchanged";
    wait_for_log(&log, reloaded, 1, Duration::from_secs(60)).await;
    Wait::new("A refused", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| tenant_lines(&read_log(&log), a, "is not valid") >= 1)
        .await;
    replace_file(&key_file, KEY);
    wait_for_log(&log, reloaded, 2, Duration::from_secs(60)).await;
    new_events(&env, 50);
    wait_exact(&env, &[a, b], &log).await;
    let text = read_log(&log);
    let setups = |id| tenant_lines(&text, id, "Making sample request to test authentication.");
    assert_eq!((setups(a), setups(b)), (6, 2), "{text}");
    for key in [KEY, WRONG_KEY] {
        assert!(!text.contains(key), "a key leaked into the log");
    }
    stop(child, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_start_time_resets_that_tenant_and_another_change_resumes() {
    let env = TestEnv::both(600, |_| {}).await;
    let (a, b) = ("20001", "20002");
    let start = |days| {
        let at = (Utc::now() - chrono::Duration::days(days)).format("%Y-%m-%dT%H:%M:%SZ");
        format!("start_time_in_utc: \"{at}\"")
    };
    let a_two_days = tenant(&env, a, &start(2));
    write_tenants(&env, &[a_two_days, tenant(&env, b, "")]);
    let (child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_exact(&env, &[a, b], &log).await;
    // A's start moves (Devo's rule: its state restarts, everything comes again); B changes a
    // setting that keeps its state (it resumes: nothing again).
    write_tenants(
        &env,
        &[
            tenant(&env, a, &start(3)),
            tenant(&env, b, "page_size: 500"),
        ],
    );
    signal(&child, "-HUP");
    wait_for_log(
        &log,
        "Configuration reloaded: 0 added, 0 removed, 2 restarted, 0 unchanged",
        1,
        Duration::from_secs(60),
    )
    .await;
    let twice = |sim: &isolation_sim::SimHandle| {
        let mut all = sim.visible_events();
        all.extend(sim.visible_events());
        all
    };
    Wait::new(
        "tenant A delivered everything again",
        Duration::from_secs(60),
    )
    .showing_log(&log)
    .until(|| {
        delivered(&env, a, WEB_TABLE).len() == 2 * env.web.visible_events().len()
            && delivered(&env, a, URL_TABLE).len() == 2 * env.url.visible_events().len()
    })
    .await;
    assert_same_multiset(&delivered(&env, a, WEB_TABLE), &twice(&env.web), "A web");
    assert_same_multiset(&delivered(&env, a, URL_TABLE), &twice(&env.url), "A url");
    new_events(&env, 50);
    wait_exact(&env, &[b], &log).await;
    let text = read_log(&log);
    assert_eq!(
        tenant_lines(&text, a, "start_time_in_utc changed"),
        2,
        "{text}"
    );
    assert_eq!(
        tenant_lines(&text, b, "start_time_in_utc changed"),
        0,
        "{text}"
    );
    // Both restarted: a second setup per service.
    for id in [a, b] {
        assert_eq!(
            tenant_lines(&text, id, "Making sample request to test authentication."),
            4,
            "{text}"
        );
    }
    stop(child, &log).await;
}
