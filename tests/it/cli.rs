//! The command-line contract: exit codes, `validate`, `state`, secrets never printed.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_lists_every_problem_and_exits_64() {
    let env = TestEnv::both(10, |_| {}).await;
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "request_period_in_seconds: 1",
        "request_period_in_seconds: -1\n        page_sise: 5",
    );
    std::fs::write(env.config_path(), text).unwrap();
    for args in [&["validate"][..], &["run", "--once"]] {
        let out = env.collector(args).await;
        assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("4 problem(s)"), "{err}");
        assert!(
            err.contains(
                "inputs.proofpoint_isolation.services.url_isolation.page_sise: unknown key"
            ),
            "{err}"
        );
        assert!(
            err.contains("browser_and_email_isolation.request_period_in_seconds: must be a number"),
            "{err}"
        );
        assert!(!err.contains(KEY));
    }
    let out = collector_command(&["run"], &env.path("nope.yaml"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("cannot read the file"));
    let out = collector(&["--bogus"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_the_key_against_the_api() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    env.key = "ffffffff-0000-4000-8000-00000000ab12".into();
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("API Key ffff...12 is not valid."),
        "{}",
        stderr(&out)
    );
}

/// The key appears nowhere: not in logs (even on auth failure and at debug level), not in the
/// state files, not in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_appears_in_logs_state_or_output() {
    let mut env = TestEnv::both(200, |_| {}).await;
    let out = env.run_once_ok().await;
    let mut everything = String::from_utf8_lossy(&out.stderr).into_owned();
    // A wrong key: the error names the masked key only.
    let wrong = "0badc0de-1111-4222-8333-444455556666";
    env.key = wrong.into();
    env.write_config();
    let out = collector_command(&["run", "--once"], &env.config_path())
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("API Key 0bad...66 is not valid."), "{err}");
    everything.push_str(&err);
    for dir in ["state", "out"] {
        for entry in std::fs::read_dir(env.path(dir)).unwrap() {
            everything.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
    }
    for secret in [KEY, wrong] {
        assert!(!everything.contains(secret), "the key {secret} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_show_reset_and_restart_of_the_persistence() {
    let env = TestEnv::both(500, |_| {}).await;
    env.run_once_ok().await;
    let out = env.collector(&["state", "show"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("url_isolation") && text.contains("checkpoint_in_utc"),
        "{text}"
    );
    let state_file = env.path("state/proofpoint_isolation_10001_url_isolation.json");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(doc["@persistence_version"], 3);

    // Changing start_time_in_utc restarts the persistence: everything is collected again.
    let start = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let text = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "request_period_in_seconds: 1\n",
        &format!("request_period_in_seconds: 1\n        start_time_in_utc: \"{start}\"\n"),
    );
    std::fs::write(env.config_path(), text).unwrap();
    let before = env.delivered(URL_TABLE).len();
    let out = env.run_once_ok().await;
    assert!(
        stderr(&out).contains("start_time_in_utc changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.delivered(URL_TABLE).len(), 2 * before);

    let out = env
        .collector(&["state", "reset", "--service", "url_isolation"])
        .await;
    assert!(out.status.success());
    assert!(!state_file.exists());
    assert!(env
        .path("state/proofpoint_isolation_10001_browser_and_email_isolation.json")
        .exists());
    let out = env.collector(&["state", "show", "--service", "mail"]).await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_save_state_writes_no_state() {
    let env = TestEnv::both(100, |_| {}).await;
    let out = env.collector(&["run", "--once", "--no-save-state"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!env.path("state").exists());
    assert_eq!(env.delivered(WEB_TABLE).len(), 100);
}

/// The daemon keeps collecting new events every period and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_collects_new_events_and_stops_on_sigterm() {
    let env = TestEnv::both(300, |_| {}).await;
    let child = collector_command(&["run"], &env.config_path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let now = chrono::Utc::now();
    env.url.inject(
        40,
        now - chrono::Duration::milliseconds(900),
        now - chrono::Duration::milliseconds(100),
    );
    // Wait until the new events were delivered (the period is 1 s).
    Wait::new(
        "340 url events delivered",
        std::time::Duration::from_secs(20),
    )
    .try_until(|| env.delivered(URL_TABLE).len() >= 340)
    .await;
    let out = terminate_with_output(child, std::time::Duration::from_secs(20)).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Starting data collection every 1 seconds"));
    env.assert_exactly_once();
}

/// `backfill` re-delivers exactly the events of a past range, writes file outputs under
/// backfill/, leaves the live state and files alone, and reports progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_redelivers_a_range_without_touching_the_live_state() {
    let mut env = TestEnv::both(4000, |c| c.burst_fraction = 0.2).await;
    env.service_extra = "page_size: 200\nmax_events_per_window: 400".into();
    env.write_config();
    env.run_once_ok().await;
    let state_path = env.path("state/proofpoint_isolation_10001_url_isolation.json");
    let live_state = std::fs::read(&state_path).unwrap();
    let live_file = env.delivered(URL_TABLE);

    let now = chrono::Utc::now();
    let (from, to) = (
        now - chrono::Duration::hours(20),
        now - chrono::Duration::hours(2),
    );
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (from_s, to_s) = (fmt(from), fmt(to));
    let out = env
        .collector(&[
            "backfill",
            "--service",
            "url_isolation",
            "--from",
            &from_s,
            "--to",
            &to_s,
        ])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    let log = stderr(&out);
    assert!(log.contains("Backfill progress: 100.0%"), "{log}");
    assert!(log.contains("Backfill complete"), "{log}");
    let backfilled = read_lines(&env.path("out/backfill").join(format!("{URL_TABLE}.jsonl")));
    let from_parsed = chrono::DateTime::parse_from_rfc3339(&from_s)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let to_parsed = chrono::DateTime::parse_from_rfc3339(&to_s)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let want = env.url.visible_events_between(from_parsed, to_parsed);
    assert!(want.len() > 1000, "the range holds {} events", want.len());
    assert_same_multiset(&backfilled, &want, "backfill");
    // The live side is untouched.
    assert_eq!(std::fs::read(&state_path).unwrap(), live_state);
    assert_eq!(env.delivered(URL_TABLE), live_file);
    assert!(!env
        .path("out/backfill")
        .join(format!("{WEB_TABLE}.jsonl"))
        .exists());

    for (args, needle) in [
        (
            vec!["--service", "url_isolation", "--from", "2020-01-01"],
            "older than the API's 30-day retention",
        ),
        (
            vec!["--service", "mail", "--from", &from_s],
            "is not an enabled service",
        ),
        (
            vec![
                "--service",
                "url_isolation",
                "--from",
                &to_s,
                "--to",
                &from_s,
            ],
            "is not before",
        ),
        (
            vec!["--service", "url_isolation", "--from", "last week"],
            "is not a date",
        ),
    ] {
        let mut full = vec!["backfill"];
        full.extend(args);
        let out = env.collector(&full).await;
        assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    }
}

/// Each subcommand's `--help` starts with its own description (once, `backfill` printed the
/// demo's and `demo` had none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_help_describes_that_subcommand() {
    let expected = [
        ("run", "Run the collector"),
        ("validate", "Check the config"),
        ("state", "Show or reset the persisted state"),
        ("backfill", "Re-deliver a past range"),
        ("demo", "See it work without a vendor key"),
        ("status", "Show what a running daemon is doing"),
    ];
    for (command, first_words) in expected {
        let out = collector(&[command, "--help"]).output().await.unwrap();
        assert!(out.status.success(), "{command} --help: {}", describe(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let first = help.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(first_words),
            "`{command} --help` starts with {first:?}, not {first_words:?}"
        );
        let others = expected.iter().filter(|(c, _)| *c != command);
        for (_, other_words) in others {
            assert!(
                !help.contains(other_words),
                "`{command} --help` describes another command: {other_words:?}\n{help}"
            );
        }
    }
}

/// Modes are set explicitly, so that no umask widens or narrows them: a new state directory is
/// 0700 and its files 0600, a file output's new files 0640 (or its `mode`), and an existing file
/// keeps its own mode, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_and_the_state_directory_get_their_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for umask in ["000", "077"] {
        let mut env = TestEnv::both(20, |_| {}).await;
        env.outputs_extra = format!(
            "  private:\n    type: file\n    config:\n      directory: {}\n      mode: \"0600\"\n",
            env.path("private").display()
        );
        env.write_config();
        let existing = env.path("out").join(format!("{URL_TABLE}.jsonl"));
        std::fs::create_dir(env.path("out")).unwrap();
        std::fs::write(&existing, b"").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();

        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" run --once --config \"$1\""
            ))
            .arg(COLLECTOR)
            .arg(env.config_path())
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "umask {umask}: {}", describe(&out));
        env.assert_exactly_once();
        let state = env.path("state");
        assert_eq!(mode_of(&state), 0o700, "umask {umask}");
        for service in ["browser_and_email_isolation", "url_isolation"] {
            let file = state.join(format!("proofpoint_isolation_10001_{service}.json"));
            assert_eq!(mode_of(&file), 0o600, "umask {umask}");
        }
        let file = |dir: &str, table: &str| env.path(dir).join(format!("{table}.jsonl"));
        assert_eq!(mode_of(&file("out", WEB_TABLE)), 0o640, "umask {umask}");
        assert_eq!(mode_of(&existing), 0o644, "umask {umask}");
        for table in [WEB_TABLE, URL_TABLE] {
            assert_eq!(mode_of(&file("private", table)), 0o600, "umask {umask}");
        }
        let log = stderr(&out);
        assert!(
            log.contains(
                "The file exists with mode 0644, not the output's mode 0640; it is left as it is"
            ),
            "{log}"
        );
    }
}
