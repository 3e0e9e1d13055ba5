//! The collector binary as a child process: its command line, a daemon logging into a file,
//! signals (SIGTERM and its exit, kill -9), and what a finished run printed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{listening, TestEnv, Wait};

/// The collector binary under test.
pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_isolation-collector");

/// `isolation-collector <args> --config <config>` (see [`collector`]).
pub fn collector_command(args: &[&str], config: &Path) -> Command {
    let mut cmd = collector(args);
    cmd.arg("--config").arg(config);
    cmd
}

/// `isolation-collector <args>`, killed when dropped, in an environment without `RUST_LOG` or
/// a proxy.
pub fn collector(args: &[&str]) -> Command {
    let mut cmd = Command::new(COLLECTOR);
    cmd.args(args).kill_on_drop(true);
    cmd.env_remove("RUST_LOG");
    // The simulators are on 127.0.0.1: a proxy set in the CI environment must not route the
    // collector's requests (tests that want a proxy variable set it themselves).
    for var in PROXY_VARIABLES {
        cmd.env_remove(var);
    }
    cmd
}

/// The variables the collector reads to find a proxy.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Sends `sig` (for example `-TERM`) to a running child with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("the child runs").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Spawns `cmd` with its log (stderr) going to the file `log`, which can be read while it runs
/// (a pipe nobody reads could fill and block it), and its stdout to nowhere.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

impl TestEnv {
    /// `isolation-collector <args>` on this env's config, logging into the file `log` of the
    /// work directory (see [`spawn_logged`]): the child, and the log's path.
    pub fn spawn_logged(&self, args: &[&str], log: &str) -> (Child, PathBuf) {
        let path = self.path(log);
        let child = spawn_logged(&mut collector_command(args, &self.config_path()), &path);
        (child, path)
    }
}

/// SIGTERM, then its exit status; panics if it does not exit within `limit`.
pub async fn terminate(child: &mut Child, limit: Duration) -> ExitStatus {
    terminate_timed(child, limit).await.0
}

/// [`terminate`], and how long the process took to exit from the signal on.
pub async fn terminate_timed(child: &mut Child, limit: Duration) -> (ExitStatus, Duration) {
    signal(child, "-TERM");
    let signalled = Instant::now();
    let status = exit_within(limit, child.wait()).await;
    (status, signalled.elapsed())
}

/// SIGTERM, then what it printed (its stdout and stderr were piped); panics if it does not exit
/// within `limit`.
pub async fn terminate_with_output(child: Child, limit: Duration) -> Output {
    terminate_with_output_timed(child, limit).await.0
}

/// [`terminate_with_output`], and how long the process took to exit from the signal on.
pub async fn terminate_with_output_timed(child: Child, limit: Duration) -> (Output, Duration) {
    signal(&child, "-TERM");
    let signalled = Instant::now();
    let out = exit_within(limit, child.wait_with_output()).await;
    (out, signalled.elapsed())
}

async fn exit_within<T>(limit: Duration, exit: impl Future<Output = std::io::Result<T>>) -> T {
    tokio::time::timeout(limit, exit)
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {limit:?} of SIGTERM"))
        .unwrap()
}

/// SIGTERM, and asserts a clean exit (0) within 20 s.
pub async fn sigterm_and_wait(child: Child) {
    let out = terminate_with_output(child, Duration::from_secs(20)).await;
    assert!(out.status.success(), "{:?}", out.status);
}

/// SIGKILL (`kill -9`), and reaps it.
pub async fn kill_9(child: &mut Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// SIGKILL a server started with std's `Command` (redis-server, rsyslogd, tinyproxy...) and
/// reap it; nothing if it has gone already.
pub fn kill_server(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (at most `limit`) until the server `what`, just started as `child`, listens on the
/// loopback `port`; fails at once if it exits instead, showing `log()` either way.
pub async fn wait_until_listening(
    what: &str,
    child: &mut std::process::Child,
    port: u16,
    limit: Duration,
    log: impl Fn() -> String,
) {
    Wait::new(format!("{what} to listen on 127.0.0.1:{port}"), limit)
        .every(Duration::from_millis(25))
        .showing(&log)
        .until(|| {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{what} exited at start ({status}); {}", log());
            }
            listening(port)
        })
        .await;
}

/// Runs `run --once` and kills it with SIGKILL after a random time, again and again, until a
/// run completes; returns how many runs were killed. The kill point is drawn from
/// `first_ms..spread_ms + 50 * attempt` ms: later attempts may live longer, so that a machine
/// slowed down by other work still lets a run complete instead of killing every one during its
/// start-up. Asserts that a run completed (successfully) within 60 attempts and that at least
/// three were killed (the backfill did not finish too fast to be interrupted).
pub async fn kill_9_until_a_run_completes(env: &TestEnv, first_ms: u64, spread_ms: u64) -> u32 {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut completed = false;
    for attempt in 0..60u64 {
        let mut child = collector_command(&["run", "--once"], &env.config_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.random_range(first_ms..spread_ms + 50 * attempt));
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
                kill_9(&mut child).await;
                kills += 1;
            }
        }
    }
    assert!(completed, "no run completed after {kills} kills");
    assert!(
        kills >= 3,
        "the backfill finished too fast to be interrupted ({kills} kills)"
    );
    kills
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
