//! Files and state (issue 20, §4): a committed file position applies only to the file it was
//! taken from, an uncommitted partial line never has records glued to it, and one state
//! directory serves one process at a time.

// Fixtures in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use chrono::Utc;

use crate::support::*;

/// Points the config's file output at `to` (a directory under the test's work directory).
fn move_file_output(env: &TestEnv, to: &str) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let line = lines
        .iter_mut()
        .find(|l| l.trim_start().starts_with("directory: "))
        .expect("the file output's directory line");
    *line = format!("      directory: {}", env.path(to).display());
    std::fs::write(env.config_path(), lines.join("\n") + "\n").unwrap();
}

/// New events for both services, dated within the last 30 s, visible from now on.
fn new_events(env: &TestEnv, n: usize) {
    let (from, to) = (
        Utc::now() - chrono::Duration::seconds(30),
        Utc::now() - chrono::Duration::seconds(1),
    );
    assert_eq!(env.web.inject(n, from, to), n);
    assert_eq!(env.url.inject(n, from, to), n);
}

/// Events for both services dated 20 to 5 minutes ago that appear only now: the late-arrival
/// sweep of the next run delivers them (a run's own window ends before the newest seconds).
async fn late_events(env: &TestEnv, n: usize) {
    let now = Utc::now();
    let (from, to) = (
        now - chrono::Duration::minutes(20),
        now - chrono::Duration::minutes(5),
    );
    assert_eq!(env.web.inject(n, from, to), n);
    assert_eq!(env.url.inject(n, from, to), n);
    tokio::time::sleep(Duration::from_millis(1500)).await; // let the sweep interval pass
}

fn lines_of(env: &TestEnv, dir: &str, table: &str) -> Vec<String> {
    read_lines(&env.path(dir).join(format!("{table}.jsonl")))
}

/// Directory A, then B, then A again, each run with new events: A keeps every line it had,
/// and A and B together hold every event exactly once. Before positions knew their file, the
/// third run cut A to the length committed for B (A went from thousands of lines to a few).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_committed_for_another_file_never_cuts_this_one() {
    let mut env = TestEnv::both(3000, |_| {}).await;
    env.service_extra =
        "late_arrival_lookback_in_minutes: 30\nlate_arrival_sweep_interval_in_minutes: 0.02".into();
    env.write_config();
    env.run_once_ok().await;
    let first: Vec<Vec<String>> = [WEB_TABLE, URL_TABLE]
        .iter()
        .map(|t| lines_of(&env, "out", t))
        .collect();
    assert!(first.iter().all(|l| l.len() > 1000), "run 1 delivered");

    move_file_output(&env, "out_b");
    late_events(&env, 40).await;
    env.run_once_ok().await;

    move_file_output(&env, "out");
    late_events(&env, 40).await;
    let out = env.run_once_ok().await;

    for ((table, sim), before) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)]
        .into_iter()
        .zip(&first)
    {
        let a = lines_of(&env, "out", table);
        assert!(
            a.len() >= before.len() && a[..before.len()] == before[..],
            "{table}: file A lost lines: {} before, {} after",
            before.len(),
            a.len()
        );
        let mut both = a;
        both.extend(lines_of(&env, "out_b", table));
        assert_same_multiset(&both, &sim.visible_events(), table);
    }
    let log = stderr(&out);
    assert!(
        log.contains("was committed for another file") && log.contains("out_b"),
        "the third run says why it ignores the position:\n{log}"
    );
}

/// Fresh state, and a file that ends in a partial line (a writer died mid-line): the partial
/// line is cut, said in the log, and every line of the file parses after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_last_line_without_a_position_is_cut_not_glued_to() {
    let env = TestEnv::both(500, |_| {}).await;
    let file = env.path("out").join(format!("{WEB_TABLE}.jsonl"));
    std::fs::create_dir_all(env.path("out")).unwrap();
    let partial = "{\"earlier\": \"a record cut short";
    std::fs::write(&file, format!("{{\"earlier\": 1}}\n{partial}")).unwrap();
    let out = env.run_once_ok().await;
    let lines = read_lines(&file);
    assert_eq!(lines[0], "{\"earlier\": 1}", "the complete line stays");
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "a line that does not parse: {line}"
        );
    }
    assert_same_multiset(&lines[1..], &env.web.visible_events(), WEB_TABLE);
    let log = stderr(&out);
    let said = format!("Removed a partial last line ({} bytes)", partial.len());
    assert!(
        log.contains(&said) && log.contains(&file.display().to_string()),
        "{said:?} naming {} in\n{log}",
        file.display()
    );
}

/// A `run --once` beside the daemon on the same filesystem state: refused at once, naming the
/// daemon's pid, before it asks the API for anything; the daemon's file and webhook outputs get
/// every event once. (Before the lock, the webhook received 22,000 events for 10,000.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_state_directory_is_refused_naming_the_holder() {
    let mut env = TestEnv::both(2000, |_| {}).await;
    let hook = crate::http_receivers::Receiver::start("", false).await;
    env.outputs_extra = format!(
        "  hook:\n    type: http\n    config:\n      url: {}\n",
        hook.url("/hook")
    );
    env.write_config();
    let (mut daemon, log) = env.spawn_logged(&["run"], "daemon.log");
    let pid = daemon.id().unwrap();
    Wait::new("the daemon's first cycles", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| count_in(&log, "The data is up to date!") >= 2)
        .await;
    new_events(&env, 3000);
    let out = env.collector(&["run", "--once"]).await;
    let second = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        second.contains(&format!("in use by another collector (pid {pid})")),
        "the error names the daemon's pid {pid}:\n{second}"
    );
    assert!(
        !second.contains("Pull Started"),
        "the second process pulled:\n{second}"
    );
    // The daemon alone delivers the new events.
    Wait::new(
        "the daemon to deliver the new events",
        Duration::from_secs(60),
    )
    .showing_log(&log)
    .until(|| {
        let served = env.web.visible_events().len() + env.url.visible_events().len();
        env.delivered(WEB_TABLE).len() == env.web.visible_events().len()
            && env.delivered(URL_TABLE).len() == env.url.visible_events().len()
            && hook.hook_events().len() >= served
    })
    .await;
    let status = terminate(&mut daemon, Duration::from_secs(60)).await;
    assert!(status.success(), "the daemon stopped cleanly");
    env.assert_exactly_once();
    let mut served = env.web.visible_events();
    served.extend(env.url.visible_events());
    assert_same_multiset(&hook.hook_events(), &served, "webhook");
}
