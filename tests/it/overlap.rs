//! Jobs that overlap (`max_concurrent_jobs`) against a simulator whose jobs take time: the
//! simulator counts the jobs running at once, and the file output holds every event once.

// Fixtures in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use isolation_sim::SimConfig;

use crate::support::*;

/// Jobs ready after 1 s per 1,000 events (none for the setup check's empty job, so that only
/// the windows' jobs run), and windows of about 320 events: a backfill of about ten windows,
/// each job running about 0.3 s, after a first whole-range job that is too big.
fn slow_jobs(c: &mut SimConfig) {
    c.pending_polls = 0;
    c.job_latency_per_10k = Duration::from_secs(10);
}

const SMALL_WINDOWS: &str = "page_size: 200\nmax_events_per_window: 400";

/// A backfill with `max_concurrent_jobs` (None: the default) over slow jobs. Returns the
/// environment after one successful `run --once`, every event delivered once.
async fn backfill(max_concurrent_jobs: Option<u32>) -> TestEnv {
    backfill_of(3000, max_concurrent_jobs).await
}

/// [`backfill`] of `events` events per service.
async fn backfill_of(events: usize, max_concurrent_jobs: Option<u32>) -> TestEnv {
    let mut env = TestEnv::both(events, slow_jobs).await;
    env.service_extra = SMALL_WINDOWS.to_owned();
    if let Some(n) = max_concurrent_jobs {
        env.service_extra
            .push_str(&format!("\nmax_concurrent_jobs: {n}"));
    }
    env.write_config();
    // Jobs ahead are a way of the split path: spooling off (a spooled job would be the only one).
    spooling_off(&env);
    env.run_once_ok().await;
    env.assert_exactly_once();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_one_at_a_time_with_max_concurrent_jobs_1() {
    let env = backfill(Some(1)).await;
    for sim in [&env.web, &env.url] {
        assert_eq!(sim.stats().max_running_jobs, 1, "{:?}", sim.stats());
    }
}

/// The default (8) runs eight jobs at once: the window being delivered and seven ahead (about
/// twenty windows, so that the range's end does not cut the look-ahead short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_runs_the_default_eight_jobs_at_once_and_delivers_each_event_once() {
    let env = backfill_of(6000, None).await;
    for sim in [&env.web, &env.url] {
        let stats = sim.stats();
        assert_eq!(stats.max_running_jobs, 8, "{stats:?}");
        assert_eq!(stats.not_found, 0, "{stats:?}");
    }
}

/// The limit holds: two jobs at most, and two are reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_jobs_is_never_exceeded() {
    let env = backfill(Some(2)).await;
    for sim in [&env.web, &env.url] {
        assert_eq!(sim.stats().max_running_jobs, 2, "{:?}", sim.stats());
    }
}

/// Jobs created ahead that expire before their turn (a short job TTL, pages that take time) are
/// created again at their turn: nothing is lost, nothing repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_expires_ahead_of_its_turn_is_created_again() {
    let mut env = TestEnv::both(3000, |c| {
        c.pending_polls = 0;
        // Each window is one page that takes 0.4 s; a job created three windows ahead waits
        // at least 1.2 s, past the 1 s TTL, while a job used at once needs about 0.4 s.
        c.page_latency = Duration::from_millis(400);
        c.job_ttl = Duration::from_secs(1);
    })
    .await;
    env.service_extra = "page_size: 400\nmax_events_per_window: 400\nmax_concurrent_jobs: 4".into();
    env.write_config();
    // Jobs ahead are a way of the split path: spooling off (a spooled job would be the only one).
    spooling_off(&env);
    let out = env.run_once_ok().await;
    env.assert_exactly_once();
    let log = stderr(&out);
    let lost = log.matches("is lost (").count();
    assert!(lost >= 2, "{lost} lost jobs:\n{log}");
    let not_found = env.web.stats().not_found + env.url.stats().not_found;
    assert_eq!(not_found as usize, lost, "{log}");
}

/// `globals.max_concurrent_jobs` caps the jobs of all services together: with a cap of 1, each
/// service (which alone would run its default eight) runs one job at a time, the two services
/// take turns, and the windows split on the way (the first whole-range job is too big) never
/// leave a service waiting with a permit in hand: both finish, every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_wide_job_cap_holds_across_services_and_both_finish() {
    let mut env = TestEnv::both(1500, slow_jobs).await;
    env.service_extra = SMALL_WINDOWS.to_owned();
    env.write_config();
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("  name: it\n", "  name: it\n  max_concurrent_jobs: 1\n");
    std::fs::write(env.config_path(), text).unwrap();
    env.run_once_ok().await;
    env.assert_exactly_once();
    for sim in [&env.web, &env.url] {
        assert_eq!(sim.stats().max_running_jobs, 1, "{:?}", sim.stats());
    }
}
