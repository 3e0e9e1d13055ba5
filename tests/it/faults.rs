//! The fault matrix beyond `collect.rs`: 429 storms, 5xx bursts that outlast a cycle, the
//! collector's clock jumping forward and back, a full disk under the state directory or under
//! the file output (mid-batch), and an output that is down for several daemon cycles. Each ends with the exact multiset delivered.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use isolation_sim::{Fault, FaultTarget};

use crate::support::*;

const SERVICES: [&str; 2] = ["browser_and_email_isolation", "url_isolation"];

fn state_file(env: &TestEnv, service: &str) -> PathBuf {
    env.path("state")
        .join(format!("proofpoint_isolation_10001_{service}.json"))
}

/// The checkpoint stored in a service's state file.
fn checkpoint(env: &TestEnv, service: &str) -> DateTime<Utc> {
    let text = std::fs::read_to_string(state_file(env, service)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["checkpoint_in_utc"].as_str().unwrap().parse().unwrap()
}

/// `run --once` with the collector's clock moved by `offset_secs`.
async fn run_once_with_clock(env: &TestEnv, offset_secs: i64) -> std::process::Output {
    let out = collector_command(&["run", "--once"], &env.config_path())
        .env(
            "ISOLATION_COLLECTOR_CLOCK_OFFSET_SECS",
            offset_secs.to_string(),
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "run --once (clock {offset_secs:+} s): {}",
        describe(&out)
    );
    out
}

/// Adds `n` events dated in `[from, to]` to both simulators, visible from now on.
fn inject_both(env: &TestEnv, n: usize, from: DateTime<Utc>, to: DateTime<Utc>) {
    for sim in [&env.web, &env.url] {
        assert_eq!(sim.inject(n, from, to), n);
    }
}

fn exactly_once(env: &TestEnv) -> bool {
    multiset(&env.delivered(WEB_TABLE)) == multiset(&env.web.visible_events())
        && multiset(&env.delivered(URL_TABLE)) == multiset(&env.url.visible_events())
}

/// Many 429s (Retry-After: 1) on job creation, polls and pages: each is waited out, within
/// the retry budget, and the cycle delivers everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_and_loses_nothing() {
    let env = TestEnv::both(1500, |c| {
        c.page_size_cap = Some(300);
        c.pending_polls = 2;
    })
    .await;
    let storm = Fault::TooManyRequests {
        retry_after_secs: 1,
    };
    for sim in [&env.web, &env.url] {
        // Consecutive answers to the same request (the default budget is 5 retries).
        sim.push_fault(FaultTarget::Create, storm.clone(), 3);
        sim.push_fault(FaultTarget::Poll, storm.clone(), 2);
        sim.push_fault(FaultTarget::Page, storm.clone(), 3);
        sim.push_fault(FaultTarget::Any, storm.clone(), 2);
    }
    let out = env.run_once_ok().await;
    env.assert_exactly_once();
    let log = stderr(&out);
    assert_eq!(log.matches("HTTP 429").count(), 20, "{log}");
    for sim in [&env.web, &env.url] {
        assert_eq!(sim.stats().errors_injected, 10);
        // Every Retry-After was honoured: at the simulator, ten requests (the retries) came at
        // least 1 s after the one before; the backoff alone waits 0.1 s at most here.
        let arrivals: Vec<_> = sim.request_log().iter().map(|r| r.at).collect();
        let waits = arrivals
            .windows(2)
            .filter(|w| w[1] - w[0] >= chrono::Duration::seconds(1))
            .count();
        assert_eq!(waits, 10, "{:#?}", sim.request_log());
    }
}

/// A 5xx burst longer than one cycle's retries: the daemon's cycle fails without moving the
/// checkpoint, a later cycle of the same process recovers, and nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_burst_longer_than_a_cycle_is_recovered_by_a_later_cycle() {
    let mut env = TestEnv::both(1200, |c| c.page_size_cap = Some(400)).await;
    env.service_extra = "max_retries: 2".into();
    env.write_config();
    // Two cycles' worth of attempts (3 each) on the web host, one on the url host.
    env.web.push_fault(FaultTarget::Any, Fault::Status(503), 6);
    env.url.push_fault(FaultTarget::Any, Fault::Status(500), 3);
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    Wait::new("recovery", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| exactly_once(&env))
        .await;
    // Let a few more (empty) cycles run: still nothing repeated.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill_9(&mut child).await;
    env.assert_exactly_once();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("kept failing after 3 attempt(s)"), "{text}");
    assert!(
        text.contains("HTTP 503") && text.contains("HTTP 500"),
        "{text}"
    );
    assert_eq!(env.web.stats().errors_injected, 6);
    assert_eq!(env.url.stats().errors_injected, 3);
}

/// The collector's clock jumps hours ahead (the checkpoint goes into the future), then comes
/// back: the corrections step brings the checkpoint back to now, and events that appear after
/// that are delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_forward_then_back_is_corrected_and_loses_nothing() {
    let env = TestEnv::both(800, |_| {}).await;
    env.run_once_ok().await;
    env.assert_exactly_once();

    // New events, then a run whose clock is 3 hours ahead.
    let now = Utc::now();
    inject_both(
        &env,
        60,
        now - chrono::Duration::seconds(90),
        now - chrono::Duration::seconds(5),
    );
    run_once_with_clock(&env, 3 * 3600).await;
    env.assert_exactly_once();
    for service in SERVICES {
        assert!(
            checkpoint(&env, service) > Utc::now() + chrono::Duration::hours(2),
            "{service}: the checkpoint did not follow the clock into the future"
        );
    }

    // The clock is right again: the checkpoint comes back to now.
    let out = run_once_with_clock(&env, 0).await;
    let corrected_at = Utc::now();
    let log = stderr(&out);
    assert!(log.contains("is in the future"), "{log}");
    for service in SERVICES {
        assert!(checkpoint(&env, service) <= corrected_at, "{service}");
    }
    env.assert_exactly_once();

    // Events dated after the correction arrive: delivered once, and once only.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    inject_both(
        &env,
        70,
        corrected_at + chrono::Duration::milliseconds(10),
        Utc::now() - chrono::Duration::milliseconds(100),
    );
    env.run_once_ok().await;
    env.assert_exactly_once();
    env.run_once_ok().await;
    env.assert_exactly_once();
}

/// The clock goes back (less than the late-arrival lookback), then forward again: the
/// checkpoint is pulled back by the corrections step, the re-read overlap is recognised by
/// the dedup memory, and events that arrive meanwhile are delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_back_then_forward_repeats_nothing() {
    let env = TestEnv::both(800, |c| c.identical_fraction = 0.1).await;
    env.run_once_ok().await;
    env.assert_exactly_once();

    let out = run_once_with_clock(&env, -20 * 60).await;
    assert!(
        stderr(&out).contains("is in the future"),
        "{}",
        stderr(&out)
    );
    env.assert_exactly_once();
    for service in SERVICES {
        assert!(checkpoint(&env, service) < Utc::now() - chrono::Duration::minutes(15));
    }

    let now = Utc::now();
    inject_both(
        &env,
        50,
        now - chrono::Duration::seconds(60),
        now - chrono::Duration::seconds(2),
    );
    let out = run_once_with_clock(&env, 0).await;
    env.assert_exactly_once();
    // Only the 50 new events were sent; the rest of what was re-read was filtered as duplicates.
    let log = stderr(&out);
    for service in SERVICES {
        let s = the_pull_stats(&log, service);
        assert!(s.duplicates > 0, "{service}: {s:?}");
        assert_eq!(
            (s.sent, s.duplicates + 50),
            (50, s.received),
            "{service}: {s:?}"
        );
    }
    for service in SERVICES {
        assert!(checkpoint(&env, service) > now - chrono::Duration::seconds(5));
    }
}

/// A tmpfs mounted over a directory, unmounted (and the mount point left empty) on drop.
struct TinyFs(PathBuf);

impl TinyFs {
    /// Mounts a 128 KiB tmpfs at `dir` (which must exist): room, once it is no longer full, for
    /// both services' states and their temp files beside the state directory's lock file.
    fn mount(dir: &Path) -> TinyFs {
        TinyFs::mount_sized(dir, "128k")
    }

    /// Mounts a tmpfs of `size` (mount's syntax: `600k`) at `dir`. Fails the test (rather than
    /// skipping it) where that is not possible: the suite runs as root, as CI does.
    fn mount_sized(dir: &Path, size: &str) -> TinyFs {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs to fill a disk (the tests run as root, as CI does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyFs(dir.to_owned())
    }

    /// Grows (or shrinks) the mounted tmpfs to `size`, keeping its files.
    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "cannot resize the tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a filler file until the file system is full.
    fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = [0u8; 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The disk holding the state is full when a window's checkpoint is written: exit 1 with an
/// error naming the state file, the checkpoint on disk did not move, and the next run (disk
/// freed) delivers everything exactly once to the file output (the unconfirmed window's lines
/// are rewound and written again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_state_stops_the_checkpoint_and_loses_nothing() {
    let env = TestEnv::both(600, |_| {}).await;
    env.run_once_ok().await;
    env.assert_exactly_once();
    let state_dir = env.path("state");
    let saved: Vec<(PathBuf, Vec<u8>)> = SERVICES
        .iter()
        .map(|s| {
            let p = state_file(&env, s);
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let fs = TinyFs::mount(&state_dir);
    for (p, bytes) in &saved {
        std::fs::write(p, bytes).unwrap();
    }
    fs.fill();

    let now = Utc::now();
    inject_both(
        &env,
        80,
        now - chrono::Duration::seconds(60),
        now - chrono::Duration::seconds(2),
    );
    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    for s in SERVICES {
        let name = format!("proofpoint_isolation_10001_{s}.json");
        assert!(
            log.contains(&name) && log.contains("No space left on device"),
            "{log}"
        );
    }
    for (p, bytes) in &saved {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }

    fs.unfill();
    env.run_once_ok().await;
    env.assert_exactly_once();
    drop(fs);
}

/// The file output's directory cannot be created for several daemon cycles (a file stands in
/// its place); once it can, every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_outage_of_several_cycles_loses_and_repeats_nothing() {
    let env = TestEnv::both(700, |c| c.page_size_cap = Some(250)).await;
    let out_dir = env.path("out");
    std::fs::write(&out_dir, b"not a directory").unwrap();
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    // Three failed cycles per service.
    Wait::new("six failed cycles", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| count_in(&log, "Pull failed") >= 6)
        .await;
    // New events arrive during the outage.
    let now = Utc::now();
    inject_both(
        &env,
        40,
        now - chrono::Duration::seconds(30),
        now - chrono::Duration::seconds(1),
    );
    std::fs::remove_file(&out_dir).unwrap();
    Wait::new("delivery after the outage", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| exactly_once(&env))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill_9(&mut child).await;
    env.assert_exactly_once();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "delivery failed, the window will be delivered again: output local: creating directory"
        ),
        "{text}"
    );
}

/// The output disk fills up in the middle of a batch (4,000 events per service on a 600 KiB
/// tmpfs) and is grown while the daemon is still retrying that batch; the daemon is stopped
/// and run twice more with `--once`. A failed write must leave no bytes behind, so every
/// confirmed length is where the file ends: exactly the served events, each once, no partial
/// line, and the stored positions equal to the file sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_output_disk_mid_batch_freed_during_the_retries_loses_and_repeats_nothing() {
    let env = TestEnv::both(4000, |_| {}).await;
    let out_dir = env.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let fs = TinyFs::mount_sized(&out_dir, "600k");
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    // The first failed write; its in-window retries start 0.5 to 1 s later.
    Wait::new("a write to fail", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| count_in(&log, "No space left on device") > 0)
        .await;
    fs.resize("64m");
    Wait::new("delivery after growing", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| exactly_once(&env))
        .await;
    let status = terminate(&mut child, Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");

    // New events, dated after the daemon's last checkpoint, for the restarts to append.
    let stopped = Utc::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    inject_both(
        &env,
        50,
        stopped + chrono::Duration::milliseconds(10),
        Utc::now() - chrono::Duration::milliseconds(100),
    );
    env.run_once_ok().await;
    env.run_once_ok().await;
    env.assert_exactly_once();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("byte(s) left by a failed write; the batch is written again whole."),
        "{text}"
    );
    for (service, table) in SERVICES.iter().zip([WEB_TABLE, URL_TABLE]) {
        let path = out_dir.join(format!("{table}.jsonl"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'), "{table}: a partial last line");
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{table}: a partial line ({e})"));
        }
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state_file(&env, service)).unwrap())
                .unwrap();
        assert_eq!(
            state["output_positions"]["local"][table]["length"].as_u64(),
            Some(bytes.len() as u64),
            "{service}: the stored position is not the end of the file"
        );
    }
    drop(fs);
}

/// An API error body that quotes the key across byte 300, where the quoted body is cut (issue 20
/// §5): neither the key nor any part of it reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_quoting_the_key_across_the_cut_never_shows_it() {
    let env = TestEnv::both(100, |_| {}).await;
    let body = format!("{}key {KEY} is not allowed here", "x".repeat(286));
    assert_eq!(body.find(KEY), Some(290), "the key straddles byte 300");
    for sim in [&env.web, &env.url] {
        let refusal = Fault::Refuse {
            status: 422,
            body: body.clone(),
        };
        sim.push_fault(FaultTarget::Any, refusal, 1);
    }
    let out = env.collector(&["run", "--once"]).await;
    let log = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(log.contains("HTTP 422"), "the refusal is reported: {log}");
    // Any 8 characters of the key in a row (the masked form shows 4 and 2).
    for piece in KEY.as_bytes().windows(8) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !log.contains(piece),
            "{piece:?} of the key is in the log:\n{log}"
        );
    }
}

/// Jobs caught in a page-token loop (issue 20 §2): the API hands back the token that asked for
/// the page, with empty pages (web) or the same page again (url). Each looping job is given up at
/// the repeated token and a new one is created after a backoff; once the jobs page normally
/// again, every event is delivered once. Today one looping job runs forever, at full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_loop_is_given_up_and_bounded_and_loses_nothing() {
    let mut env = TestEnv::both(2_000, |c| {
        // The setup check's job, then two windows' jobs.
        c.token_loop_jobs = 3;
        c.token_loop = match c.dataset {
            isolation_sim::Dataset::Web => isolation_sim::TokenLoop::EmptyPages,
            isolation_sim::Dataset::Url => isolation_sim::TokenLoop::SamePage,
        };
    })
    .await;
    env.service_extra = "page_size: 500".into();
    env.write_config();
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    let started = Instant::now();
    Wait::new("exactly once", Duration::from_secs(20))
        .try_until(|| exactly_once(&env))
        .await;
    // A few more cycles: nothing repeated, and the requests stay few.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill_9(&mut child).await;
    let requests = [env.web.stats().requests, env.url.stats().requests];
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "requests seen by the simulators (web, url): {requests:?} in {:?}",
        started.elapsed()
    );
    // About 4 per looping job, 3 to 6 per normal job, at most two cycles a second.
    assert!(
        requests.iter().all(|&r| r < 300),
        "the simulators saw {requests:?} requests in {:?}",
        started.elapsed()
    );
    env.assert_exactly_once();
    assert!(
        text.contains("handed back the pageToken of an earlier page"),
        "{text}"
    );
}

/// A page served twice inside one job (issue 20 §2): the copy is dropped, whether the job says
/// its `total` (web) or not (url), and nothing else is: every event once, identical twins
/// included (1 in 10 events is a byte-identical copy of the one before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_served_twice_in_a_job_is_delivered_once() {
    let mut env = TestEnv::both(3_000, |c| {
        c.repeat_page = Some(1);
        c.identical_fraction = 0.1;
        if c.dataset == isolation_sim::Dataset::Url {
            c.total_mode = isolation_sim::TotalMode::Absent;
        }
    })
    .await;
    env.service_extra = "page_size: 400".into();
    env.write_config();
    let out = env.run_once_ok().await;
    env.assert_exactly_once();
    let log = stderr(&out);
    assert!(log.contains("is a repeat of page"), "{log}");
}
