//! Crash safety: `kill -9` at random moments of a large backfill, then restart, until a run
//! completes. The file output must hold every event exactly once: the checkpoint moves only
//! after the fsynced write, and the file is rewound to its committed length on restart.

use std::time::Duration;

use rand::Rng;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_repeats_nothing() {
    let mut env = TestEnv::both(40_000, |c| {
        c.shuffle = true;
        c.identical_fraction = 0.02;
        c.burst_fraction = 0.2;
    })
    .await;
    env.service_extra = "page_size: 1000\nmax_events_per_window: 3000".into();
    env.write_config();
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut completed = false;
    for attempt in 0..60u64 {
        let mut child = collector_command(&["run", "--once"], &env.config_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Random kill points; later attempts may live longer, so that a machine slowed down by
        // other work still lets a run complete instead of killing every one during its start-up.
        let after = Duration::from_millis(rng.random_range(20..400 + 50 * attempt));
        match tokio::time::timeout(after, child.wait()).await {
            Ok(status) => {
                assert!(
                    status.unwrap().success(),
                    "a run that was not killed failed"
                );
                completed = true;
                break;
            }
            Err(_) => {
                child.start_kill().unwrap(); // SIGKILL
                child.wait().await.unwrap();
                kills += 1;
            }
        }
    }
    assert!(completed, "no run completed after {kills} kills");
    assert!(
        kills >= 3,
        "the backfill finished too fast to be interrupted ({kills} kills)"
    );
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
