//! Graceful shutdown: SIGTERM mid-backfill stops cleanly with nothing lost or repeated after a
//! restart; a shutdown that cannot finish is bounded by the grace period; a second signal exits
//! at once.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_backfill_stops_cleanly_and_a_restart_completes_exactly_once() {
    let mut env = TestEnv::both(40_000, |c| c.shuffle = true).await;
    env.service_extra = "page_size: 1000\nmax_events_per_window: 2000".into();
    env.write_config();
    let child = collector_command(&["run"], &env.config_path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until delivery is under way, then stop it in the middle.
    Wait::new("4,000 web events delivered", Duration::from_secs(30))
        .every(Duration::from_millis(20))
        .try_until(|| env.delivered(WEB_TABLE).len() >= 4_000)
        .await;
    let (out, took) = terminate_with_output_timed(child, Duration::from_secs(30)).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(took < Duration::from_secs(10), "the shutdown took {took:?}");
    assert!(log.contains("Received the \"SIGTERM\" system signal (code: 15), all the processes will be gracefully stopped"), "{log}");
    assert!(log.contains("[EXIT] Process \"MainProcess\" completely terminated (elapsed time since the system signal was received: "), "{log}");
    let partial = env.delivered(WEB_TABLE).len();
    assert!(
        partial < env.web.visible_events().len(),
        "the backfill was not interrupted"
    );
    // The restart delivers the rest: nothing lost, nothing twice.
    env.run_once_ok().await;
    env.assert_exactly_once();
}

/// A receiver that accepts connections and never reads nor closes: delivery to it cannot be
/// confirmed and does not react to cancellation, so only the grace period or a second signal
/// ends the process.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

async fn stuck_env(grace_secs: u64) -> (TestEnv, tokio::task::JoinHandle<()>) {
    let (port, hole) = black_hole().await;
    let mut env = TestEnv::both(200, |_| {}).await;
    env.outputs_extra = format!(
        "  relay:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: {port}\n      confirm_timeout_in_seconds: 120\n"
    );
    env.write_config();
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "  name: it\n",
        &format!("  name: it\n  shutdown_grace_period_in_seconds: {grace_secs}\n"),
    );
    std::fs::write(env.config_path(), text).unwrap();
    (env, hole)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_shutdown_is_bounded_by_the_grace_period() {
    let (env, _hole) = stuck_env(2).await;
    let (mut child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_for_log(&log, "Pull Started", 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the batch is on its way to the hole
    let (status, took) = terminate_timed(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("did not finish within 2 seconds"), "{text}");
    // Nothing was confirmed, so nothing was checkpointed: the file output is rewound next time.
    let state =
        std::fs::read_to_string(env.path("state/proofpoint_isolation_10001_url_isolation.json"))
            .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(doc["dedup"].as_array().map(Vec::len), Some(0), "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (env, _hole) = stuck_env(600).await;
    let (mut child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_for_log(&log, "Pull Started", 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "-TERM");
    wait_for_log(
        &log,
        "all the processes will be gracefully stopped",
        1,
        Duration::from_secs(20),
    )
    .await;
    let second = Instant::now();
    signal(&child, "-INT");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "took {:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Received the \"SIGINT\" system signal again"));
}

/// SIGTERM while the daemon waits (a start-up retry, a request limit): it stops within a second, exits 0,
/// and ends with Devo's [EXIT] line.
async fn assert_sigterm_stops_a_wait_at_once(env: &TestEnv, waiting: &str) {
    let (mut child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_for_log(&log, waiting, 1, Duration::from_secs(20)).await;
    let (status, took) = terminate_timed(&mut child, Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(took < Duration::from_secs(1), "took {took:?}\n{text}");
    assert!(text.contains("[EXIT] Process \"MainProcess\" completely terminated (elapsed time since the system signal was received: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_pre_pull_retry_exits_0_at_once() {
    let env = TestEnv::both(50, |_| {}).await;
    std::fs::create_dir(env.path("state")).unwrap();
    for service in ["browser_and_email_isolation", "url_isolation"] {
        let file = format!("state/proofpoint_isolation_10001_{service}.json");
        std::fs::write(env.path(&file), b"{\"@persistence_version\": 2, \"checkpo").unwrap();
    }
    assert_sigterm_stops_a_wait_at_once(&env, "Sleeping 60 sec before retry pre-pull").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_auth_retry_exits_0_at_once() {
    let mut env = TestEnv::both(50, |_| {}).await;
    env.key = "0a0a0a0a-5e6f-4a8b-9c0d-1e2f3a4b5c00".into();
    env.write_config();
    assert_sigterm_stops_a_wait_at_once(&env, "Retrying in 60 seconds.").await;
}

/// Edits config.yaml as written by [`TestEnv::write_config`]: each `(from, to)` replaced.
fn edit_config(env: &TestEnv, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(env.config_path()).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in {text}");
        text = text.replace(from, to);
    }
    std::fs::write(env.config_path(), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_request_limit_wait_exits_0_at_once() {
    let env = TestEnv::both(50, |_| {}).await;
    // One request an hour per service: the setup check takes it, the first job waits an hour.
    edit_config(
        &env,
        &[(
            "        retry_max_interval_in_seconds: 0.1\n",
            "        retry_max_interval_in_seconds: 0.1\n        requests_limits:\n          - period: 1h\n            number_of_requests: 1\n",
        )],
    );
    assert_sigterm_stops_a_wait_at_once(&env, "Request limit reached (1 request(s) per 1h").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_job_poll_wait_exits_0_at_once() {
    let env = TestEnv::both(50, |_| {}).await;
    // The simulator answers PENDING once: the first poll comes after ten minutes.
    edit_config(
        &env,
        &[
            (
                "job_poll_initial_interval_in_seconds: 0.01",
                "job_poll_initial_interval_in_seconds: 600",
            ),
            (
                "job_poll_max_interval_in_seconds: 0.05",
                "job_poll_max_interval_in_seconds: 600",
            ),
        ],
    );
    let (mut child, log) = env.spawn_logged(&["run"], "collector.log");
    wait_for_log(
        &log,
        "Fetching all url_isolation event(s)",
        1,
        Duration::from_secs(20),
    )
    .await;
    wait_for_log(
        &log,
        "Fetching all browser_and_email_isolation event(s)",
        1,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // both jobs created, polls waiting
    let (status, took) = terminate_timed(&mut child, Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(took < Duration::from_secs(1), "took {took:?}\n{text}");
    // The windows in flight were abandoned: nothing delivered, to be asked for again.
    assert!(env.delivered(WEB_TABLE).is_empty() && env.delivered(URL_TABLE).is_empty());
    assert!(
        text.contains("Retrieving loop has been interrupted due to a controlled stopping action has been activated"),
        "{text}"
    );
}
