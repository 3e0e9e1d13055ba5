//! Crash safety: `kill -9` at random moments of a large backfill, then restart, until a run
//! completes. The file output must hold every event exactly once: the checkpoint moves only
//! after the fsynced write, and the file is rewound to its committed length on restart.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_repeats_nothing() {
    let mut env = TestEnv::both(40_000, |c| {
        c.shuffle = true;
        c.identical_fraction = 0.02;
        c.burst_fraction = 0.2;
        // The whole range is one spooled job: its pages take time, so that kills land while
        // it is spooled and while its windows are delivered.
        c.page_latency = std::time::Duration::from_millis(10);
    })
    .await;
    env.service_extra = "page_size: 1000\nmax_events_per_window: 3000".into();
    env.write_config();
    let kills = kill_9_until_a_run_completes(&env, 20, 400).await;
    env.assert_exactly_once();
    eprintln!("crash test: {kills} kill -9 before a run completed; 0 missing, 0 duplicated");
}

/// A crash exactly between writing the state's temp file and renaming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_state_write_and_rename_recovers() {
    let mut env = TestEnv::both(3000, |_| {}).await;
    env.service_extra = "page_size: 500\nmax_events_per_window: 1000".into();
    env.write_config();
    let out = collector_command(&["run", "--once"], &env.config_path())
        .env("ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME", "1")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "the crash hook did not fire");
    let tmp_files: Vec<_> = std::fs::read_dir(env.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(!tmp_files.is_empty(), "no temp state file was left behind");
    let out = env.run_once_ok().await;
    assert!(
        stderr(&out).contains("Found a complete state written just before a crash"),
        "{}",
        stderr(&out)
    );
    env.assert_exactly_once();
}
