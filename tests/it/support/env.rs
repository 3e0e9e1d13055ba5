//! The test environment: a work directory with a config pointing at two in-process simulators,
//! runs of the collector on it, and what it delivered against what the simulators served.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use isolation_sim::{Dataset, SimConfig, SimHandle};

use super::{assert_same_multiset, collector_command, describe, read_lines};
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

/// Turns spooling off (`globals.spool_max_size_in_mb: 0`) in `env`'s config as written: a job
/// too big for one window is split into windows of their own jobs (the tests of that path).
pub fn spooling_off(env: &TestEnv) {
    with_global(env, "spool_max_size_in_mb: 0");
}

/// Adds a `globals` key (`line`, e.g. `spool_max_size_in_mb: 0`) to `env`'s config as written.
pub fn with_global(env: &TestEnv, line: &str) {
    let path = env.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("globals:\n", &format!("globals:\n  {line}\n"), 1);
    std::fs::write(&path, text).unwrap();
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
