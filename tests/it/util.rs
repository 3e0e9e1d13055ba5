//! Test helpers: a work directory with a config pointing at in-process simulators, the real
//! collector binary run as a child process, and multiset comparison of what it delivered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use isolation_sim::{Dataset, SimConfig, SimHandle};

use crate::rsyslog::CertFiles;

/// The id of the input block `TestEnv` writes (its metrics' `input` label).
pub const INPUT_ID: &str = "10001";
pub const KEY: &str = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c9z";
pub const WEB_TABLE: &str = "tap.proofpoint.isolation.browser_and_email";
pub const URL_TABLE: &str = "tap.proofpoint.isolation.url_isolation";

/// A simulator config with the test key, tuned for fast tests.
pub fn sim_config(dataset: Dataset, events: usize, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(dataset);
    c.api_key = KEY.to_owned();
    c.events = events;
    c.seed = seed;
    c
}

/// A temp dir with `config.yaml`, `out/` and `state/`, and the two simulators.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub web: SimHandle,
    pub url: SimHandle,
    /// Extra YAML lines for each service section (indented by the caller's text as is).
    pub service_extra: String,
    /// Extra YAML for the outputs section (each line indented by 2).
    pub outputs_extra: String,
    /// Extra YAML lines for the input block (`proxy_url`, `ca_file`...), indented as is.
    pub input_extra: String,
    /// The `persistence:` block of `globals` (indented by 2) instead of the filesystem one, for
    /// example `RedisServer::persistence_yaml`.
    pub persistence: Option<String>,
    pub key: String,
}

impl TestEnv {
    pub async fn start(web: SimConfig, url: SimConfig) -> TestEnv {
        let web = SimHandle::start(web).await.unwrap();
        let url = SimHandle::start(url).await.unwrap();
        TestEnv::with_sims(web, url)
    }

    /// Like [`TestEnv::start`], with the simulators serving HTTPS with `server`'s certificate.
    pub async fn start_tls(web: SimConfig, url: SimConfig, server: &CertFiles) -> TestEnv {
        let web = SimHandle::start_tls(web, &server.cert, &server.key)
            .await
            .unwrap();
        let url = SimHandle::start_tls(url, &server.cert, &server.key)
            .await
            .unwrap();
        TestEnv::with_sims(web, url)
    }

    fn with_sims(web: SimHandle, url: SimHandle) -> TestEnv {
        let env = TestEnv {
            dir: tempfile::tempdir().unwrap(),
            web,
            url,
            service_extra: String::new(),
            outputs_extra: String::new(),
            input_extra: String::new(),
            persistence: None,
            key: KEY.to_owned(),
        };
        env.write_config();
        env
    }

    /// Both datasets with the same knobs.
    pub async fn both(events: usize, tweak: impl Fn(&mut SimConfig)) -> TestEnv {
        let mut web = sim_config(Dataset::Web, events, 1);
        let mut url = sim_config(Dataset::Url, events, 2);
        tweak(&mut web);
        tweak(&mut url);
        TestEnv::start(web, url).await
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.yaml")
    }

    /// (Re)writes config.yaml from the current settings.
    pub fn write_config(&self) {
        let service = |base: &str| {
            let mut s = format!(
                "        override_base_url: {base}\n        request_period_in_seconds: 1\n        job_poll_initial_interval_in_seconds: 0.01\n        job_poll_max_interval_in_seconds: 0.05\n        retry_initial_interval_in_seconds: 0.01\n        retry_max_interval_in_seconds: 0.1\n"
            );
            for line in self.service_extra.lines() {
                s.push_str(&format!("        {}\n", line.trim()));
            }
            s
        };
        let persistence = self.persistence.clone().unwrap_or_else(|| {
            format!(
                "  persistence:\n    type: filesystem\n    config:\n      directory_name: {}\n",
                self.path("state").display()
            )
        });
        let text = format!(
            "globals:\n  id: \"t1\"\n  name: it\n{persistence}outputs:\n  local:\n    type: file\n    config:\n      directory: {out}\n{outputs_extra}inputs:\n  proofpoint_isolation:\n    id: \"10001\"\n{input_extra}    credentials:\n      api_key: \"{key}\"\n    services:\n      browser_and_email_isolation:\n{web}      url_isolation:\n{url}",
            out = self.path("out").display(),
            outputs_extra = self.outputs_extra,
            key = self.key,
            input_extra = self.input_extra,
            web = service(&self.web.base_url()),
            url = service(&self.url.base_url()),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// `isolation-collector <args> --config config.yaml`, to completion.
    pub async fn collector(&self, args: &[&str]) -> Output {
        self.collector_with_env(args, &[]).await
    }

    /// Like [`TestEnv::collector`], with these environment variables set for the child.
    pub async fn collector_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = collector_command(args, &self.config_path());
        cmd.envs(vars.iter().copied());
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("the collector finished within 120 s")
            .unwrap()
    }

    /// `run --once`, asserting success.
    pub async fn run_once_ok(&self) -> Output {
        let out = self.collector(&["run", "--once"]).await;
        assert!(
            out.status.success(),
            "run --once failed: {}",
            describe(&out)
        );
        out
    }

    /// The delivered lines of a table's file.
    pub fn delivered(&self, table: &str) -> Vec<String> {
        read_lines(&self.path("out").join(format!("{table}.jsonl")))
    }

    /// Asserts that each table's file holds exactly the simulator's visible events.
    pub fn assert_exactly_once(&self) {
        assert_same_multiset(
            &self.delivered(WEB_TABLE),
            &self.web.visible_events(),
            WEB_TABLE,
        );
        assert_same_multiset(
            &self.delivered(URL_TABLE),
            &self.url.visible_events(),
            URL_TABLE,
        );
    }
}

pub fn collector_command(args: &[&str], config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_isolation-collector"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .kill_on_drop(true);
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
pub fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("the child runs").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success());
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

/// The file's lines. Tests poll files the collector is still writing, so the last character may
/// be cut in half: a lossy read keeps the poll going, and a line that is really corrupt still
/// differs from every expected event in the final multiset comparison.
pub fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

pub fn multiset(lines: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_str()).or_insert(0) += 1;
    }
    m
}

/// Asserts equal multisets and says what is missing and what is extra.
pub fn assert_same_multiset(got: &[String], want: &[String], what: &str) {
    let (g, w) = (multiset(got), multiset(want));
    if g == w {
        return;
    }
    let mut missing = 0;
    let mut extra = 0;
    let mut examples = Vec::new();
    for (k, n) in &w {
        let have = g.get(k).copied().unwrap_or(0);
        if have < *n {
            missing += n - have;
            if examples.len() < 3 {
                examples.push(format!("missing: {k}"));
            }
        }
    }
    for (k, n) in &g {
        let want_n = w.get(k).copied().unwrap_or(0);
        if *n > want_n {
            extra += n - want_n;
            if examples.len() < 6 {
                examples.push(format!("extra x{}: {k}", n - want_n));
            }
        }
    }
    panic!(
        "{what}: delivered {} events, expected {}: {missing} missing, {extra} extra\n{}",
        got.len(),
        want.len(),
        examples.join("\n")
    );
}

/// The counts of one "Statistics for this pull cycle" line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    pub requests: u64,
    pub received: u64,
    pub duplicates: u64,
    pub sent: u64,
}

/// The final (not `(Partial)`) statistics line of each of `service`'s cycles in `log`, in order.
/// Tests assert these numbers: the line's wording alone is in every cycle's log.
pub fn pull_stats(log: &str, service: &str) -> Vec<PullStats> {
    let thread = format!(",{service},");
    log.lines()
        .filter(|l| l.contains(&thread) && l.contains("Statistics for this pull cycle"))
        .filter(|l| !l.contains("(Partial) "))
        .map(|l| PullStats {
            requests: count_after(l, "Number of requests made: "),
            received: count_after(l, "Number of events received: "),
            duplicates: count_after(l, "Number of duplicated events filtered out: "),
            sent: count_after(l, "Number of events generated and sent: "),
        })
        .collect()
}

/// The whole number that follows `label` in `line`; panics (showing the line) if there is none.
fn count_after(line: &str, label: &str) -> u64 {
    line.split_once(label)
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no number after {label:?} in {line}"))
}

/// The one final statistics line of `service` in a `run --once` log.
pub fn the_pull_stats(log: &str, service: &str) -> PullStats {
    match pull_stats(log, service)[..] {
        [one] => one,
        ref other => panic!(
            "{service}: {} statistics lines, expected 1:\n{log}",
            other.len()
        ),
    }
}
