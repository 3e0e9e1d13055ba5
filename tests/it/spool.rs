//! The spool (issue 23 §1): a first backfill whose job holds more than one window is consumed
//! as many windows from that one job, spooled to disk; kill -9 mid-spool loses and repeats
//! nothing and leaves no file; a full disk falls back to splitting, losing nothing; an
//! unwritable `spool_directory` is a config error (exit 64).

// Fixtures in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::support::*;

/// 20,000 events per service over 30 days, windows of at most 500 events: one job holds
/// about 40 windows. The simulator's jobs take `job_latency` to complete.
async fn spooled_backfill(job_latency: Duration, page_latency: Duration) -> TestEnv {
    let mut env = TestEnv::both(20_000, |c| {
        c.shuffle = true;
        c.span = Duration::from_secs(29 * 86_400);
        c.job_latency = job_latency;
        c.page_latency = page_latency;
    })
    .await;
    env.service_extra = "page_size: 500\nmax_events_per_window: 500".into();
    env.write_config();
    env
}

/// The files in the spool directory (the default: the state directory's `spool`).
fn spool_files(env: &TestEnv) -> Vec<String> {
    match std::fs::read_dir(env.path("state").join("spool")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Today's way created a whole-range job to learn its `total`, threw it away and created one
/// job per window (40 and more). Now the first job is the only one (besides the setup
/// check's), and its events are delivered in many windows, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backfill_is_one_job_consumed_as_many_windows() {
    let env = spooled_backfill(Duration::from_millis(300), Duration::ZERO).await;
    let out = env.run_once_ok().await;
    let log = stderr(&out);
    env.assert_exactly_once();
    for sim in [&env.web, &env.url] {
        let jobs = sim.stats().job_creates;
        // The setup check's small job, and the backfill's one.
        assert_eq!(jobs, 2, "{jobs} jobs created\n{log}");
    }
    let windows = log
        .lines()
        .filter(|l| l.contains("(Partial) Statistics for this pull cycle"))
        .count();
    assert!(windows >= 2 * 30, "{windows} windows\n{log}");
    assert!(log.contains("spooling it to"), "{log}");
    assert!(spool_files(&env).is_empty(), "{:?}", spool_files(&env));
}

/// kill -9 while the spool's windows are delivered (some committed, not all), then again at
/// random moments, then a run to the end: every event once, and no spool file left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_spool_loses_and_repeats_nothing_and_leaves_no_file() {
    let env = spooled_backfill(Duration::from_millis(100), Duration::from_millis(5)).await;
    let total = env.web.visible_events().len();
    let mut child = collector_command(&["run", "--once"], &env.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Wait::new("a first spooled window delivered", Duration::from_secs(60))
        .every(Duration::from_millis(2))
        .try_until(|| !env.delivered(WEB_TABLE).is_empty())
        .await;
    kill_9(&mut child).await;
    let delivered = env.delivered(WEB_TABLE).len();
    assert!(
        delivered < total,
        "killed after the last window ({delivered} of {total})"
    );
    assert!(spool_files(&env).is_empty(), "{:?}", spool_files(&env));
    kill_9_until_a_run_completes(&env, 100, 600).await;
    env.assert_exactly_once();
    assert!(spool_files(&env).is_empty(), "{:?}", spool_files(&env));
}

/// The spool's disk fills up (a test hook caps its file at 200 KB): one warning names the
/// directory, the error and the fix; the cycle splits the range as without a spool, and every
/// event is still delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_falls_back_to_splitting_and_loses_nothing() {
    let env = spooled_backfill(Duration::ZERO, Duration::ZERO).await;
    let out = env
        .collector_with_env(
            &["run", "--once"],
            &[("ISOLATION_COLLECTOR_SPOOL_ROOM_BYTES", "200000")],
        )
        .await;
    let log = stderr(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        log.contains("could not spool")
            && log.contains("No space left on device")
            && log.contains("spool_directory"),
        "{log}"
    );
    env.assert_exactly_once();
    assert!(env.web.stats().job_creates > 2, "it split the range");
}

/// `spool_max_size_in_mb: 0` turns spooling off: the old way (split), every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooling_off_splits_the_range_as_before() {
    let env = spooled_backfill(Duration::ZERO, Duration::ZERO).await;
    spooling_off(&env);
    let log = stderr(&env.run_once_ok().await);
    env.assert_exactly_once();
    assert!(!log.contains("spooling it to"), "{log}");
    assert!(env.web.stats().job_creates > 2);
}

/// A `spool_directory` that cannot be created (under a file) is a config problem: exit 64,
/// naming the key and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_spool_directory_is_a_config_error() {
    let env = TestEnv::both(10, |_| {}).await;
    let under_a_file = env.config_path().join("spool");
    with_global(
        &env,
        &format!("spool_directory: {}", under_a_file.display()),
    );
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("globals.spool_directory") && err.contains("writable directory"),
        "{err}"
    );
}

/// The API's job expires while it is still being spooled (a 1 s job lifetime, pages of
/// 0.4 s): the spool is dropped with a warning and the range is split into windows of their
/// own jobs, as without a spool; every event once. It used to end the cycle (HTTP 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_expires_while_it_is_spooled_falls_back_to_splitting() {
    let mut env = TestEnv::both(3000, |c| {
        c.pending_polls = 0;
        c.page_latency = Duration::from_millis(400);
        c.job_ttl = Duration::from_secs(1);
    })
    .await;
    env.service_extra = "page_size: 400\nmax_events_per_window: 400\nmax_concurrent_jobs: 1".into();
    env.write_config();
    let log = stderr(&env.run_once_ok().await);
    assert!(
        log.contains("the API lost the job before its last page"),
        "{log}"
    );
    env.assert_exactly_once();
}
