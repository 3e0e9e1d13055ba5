//! Several tenants in one process: one config with a list of input blocks, each tenant against
//! its own simulator with its own key. A refused key keeps its tenant retrying while the others
//! deliver exactly; `validate` lists every invalid tenant's problems under its id; `--strict`
//! refuses to start.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use isolation_sim::{Dataset, SimHandle};

use crate::support::*;

const WEB: &str = "browser_and_email_isolation";
const URL: &str = "url_isolation";

/// One tenant: its id, its one service, the simulator it reads and the key its block holds
/// (status.rs uses it too).
pub(crate) struct Tenant {
    pub(crate) id: &'static str,
    pub(crate) service: &'static str,
    pub(crate) sim: SimHandle,
    key: String,
}

impl Tenant {
    /// A tenant whose simulator accepts `sim_key` and whose block holds `config_key`.
    pub(crate) async fn start(
        id: &'static str,
        dataset: Dataset,
        sim_key: &str,
        config_key: &str,
    ) -> Tenant {
        let mut c = sim_config(dataset, 300, id.parse().unwrap());
        c.api_key = sim_key.to_owned();
        c.page_size_cap = Some(100);
        Tenant {
            id,
            service: match dataset {
                Dataset::Web => WEB,
                Dataset::Url => URL,
            },
            sim: SimHandle::start(c).await.unwrap(),
            key: config_key.to_owned(),
        }
    }

    /// Its input block, a list element.
    pub(crate) fn block(&self) -> String {
        format!(
            "    - id: \"{id}\"\n      credentials:\n        api_key: \"{key}\"\n      services:\n        {service}:\n          override_base_url: {base}\n          request_period_in_seconds: 1\n          job_poll_initial_interval_in_seconds: 0.01\n          job_poll_max_interval_in_seconds: 0.05\n          retry_initial_interval_in_seconds: 0.01\n          retry_max_interval_in_seconds: 0.1\n",
            id = self.id,
            key = self.key,
            service = self.service,
            base = self.sim.base_url(),
        )
    }

    pub(crate) fn table(&self) -> &'static str {
        match self.service {
            WEB => WEB_TABLE,
            _ => URL_TABLE,
        }
    }

    /// Its file: `<directory>/<input id>/<table>.jsonl`.
    pub(crate) fn file(&self, env: &TestEnv) -> PathBuf {
        env.path("out")
            .join(self.id)
            .join(format!("{}.jsonl", self.table()))
    }

    pub(crate) fn delivered(&self, env: &TestEnv) -> Vec<String> {
        read_lines(&self.file(env))
    }
}

/// Rewrites the env's config with these blocks as `inputs.proofpoint_isolation`.
pub(crate) fn write_tenants_config(env: &TestEnv, blocks: &[String]) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let head = &text[..text.find("inputs:").unwrap()];
    let text = format!(
        "{head}inputs:\n  proofpoint_isolation:\n{}",
        blocks.concat()
    );
    std::fs::write(env.config_path(), text).unwrap();
}

pub(crate) const KEYS: [&str; 3] = [
    "aaaaaaaa-1111-4111-8111-aaaaaaaaaa01",
    "bbbbbbbb-2222-4222-8222-bbbbbbbbbb02",
    "cccccccc-3333-4333-8333-cccccccccc03",
];

/// The auth failures of `input`'s `service` so far.
fn auth_failures(samples: &Samples, input: &str, service: &str) -> f64 {
    value(
        samples,
        "isolation_collector_api_requests_total",
        &[("input", input), ("service", service), ("outcome", "auth")],
    )
}

/// Three tenants, three simulators, three keys; the third's key is refused. The two good
/// tenants deliver exactly while the third keeps failing and retrying throughout: its first
/// refusal is counted before they are done, and it is still retrying after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tenant_keeps_retrying_and_the_others_are_exact() {
    let env = TestEnv::both(1, |_| {}).await;
    let tenants = [
        Tenant::start("10001", Dataset::Web, KEYS[0], KEYS[0]).await,
        Tenant::start("10002", Dataset::Url, KEYS[1], KEYS[1]).await,
        // Its simulator accepts another key than the block holds.
        Tenant::start("10003", Dataset::Url, KEYS[2], KEYS[0]).await,
    ];
    write_tenants_config(&env, &tenants.iter().map(Tenant::block).collect::<Vec<_>>());
    let base = listen_on_free_port(&env);
    let log = env.path("daemon.log");
    let child = collector_command(&["run"], &env.config_path())
        // A refused key waits a minute before the next try (`Retrying in 60 seconds.`, which
        // `shutdown::sigterm_during_the_auth_retry_exits_0_at_once` asserts); 5 s here (a
        // test hook), so that the test sees the retry without waiting that minute.
        .env("ISOLATION_COLLECTOR_AUTH_RETRY_SECS", "5")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let [good_a, good_b, refused] = &tenants;

    Wait::new("the good tenants to finish", Duration::from_secs(60))
        .showing_log(&log)
        .until(|| {
            good_a.delivered(&env).len() >= good_a.sim.visible_events().len()
                && good_b.delivered(&env).len() >= good_b.sim.visible_events().len()
        })
        .await;
    let first = scrape_until(&base, "the first refusal", |s| {
        auth_failures(s, refused.id, URL) >= 1.0
    })
    .await;
    let pulls = |s: &Samples, t: &Tenant| ok_requests(s, t.id, t.service);
    // The refused tenant retries (its setup waits 5 s after a refused key, the hook above); meanwhile the
    // others go on pulling every second.
    let second = scrape_until_within(&base, "a second refusal", Duration::from_secs(60), |s| {
        auth_failures(s, refused.id, URL) > auth_failures(&first, refused.id, URL)
    })
    .await;
    for good in [good_a, good_b] {
        assert!(
            pulls(&second, good) > pulls(&first, good),
            "input {} stopped pulling while 10003 was refused",
            good.id
        );
    }
    sigterm_and_wait(child).await;

    for good in [good_a, good_b] {
        assert_same_multiset(
            &good.delivered(&env),
            &good.sim.visible_events(),
            &format!("input {} {}", good.id, good.table()),
        );
    }
    assert!(
        refused.delivered(&env).is_empty() && !refused.file(&env).exists(),
        "the refused tenant delivered something"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals = text
        .lines()
        .filter(|l| l.contains("Setup failed") && l.contains("#10003,"))
        .count();
    assert!(
        refusals >= 2,
        "{refusals} setup failures of 10003 logged:\n{text}"
    );
    for key in KEYS {
        assert!(!text.contains(key), "a key leaked into the log");
    }
}

/// The API requests of `input`'s `service` that succeeded so far.
fn ok_requests(samples: &Samples, input: &str, service: &str) -> f64 {
    value(
        samples,
        "isolation_collector_api_requests_total",
        &[("input", input), ("service", service), ("outcome", "ok")],
    )
}

/// A config with one good tenant and two invalid blocks.
async fn one_good_two_invalid() -> (TestEnv, Tenant) {
    let env = TestEnv::both(1, |_| {}).await;
    let good = Tenant::start("10001", Dataset::Url, KEYS[0], KEYS[0]).await;
    let unset_key =
        "    - id: \"10002\"\n      credentials: {api_key: \"${TENANT_10002_KEY}\"}\n".to_owned();
    let bad_service = format!(
        "    - id: \"10003\"\n      credentials: {{api_key: \"{}\"}}\n      services: {{url_isolation: {{page_size: 0}}}}\n",
        KEYS[1]
    );
    write_tenants_config(&env, &[good.block(), unset_key, bad_service]);
    (env, good)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_lists_each_invalid_tenant_s_problems_under_its_id_and_checks_the_others() {
    let (env, _good) = one_good_two_invalid().await;
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = stderr(&out);
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in:\n{err}"))
    };
    let first = at("  input 10002 (inputs.proofpoint_isolation[1]):\n    - inputs.proofpoint_isolation[1] (id 10002).credentials.api_key: refers to the environment variable `TENANT_10002_KEY`, which is not set");
    let second = at("  input 10003 (inputs.proofpoint_isolation[2]):\n    - inputs.proofpoint_isolation[2] (id 10003).services.url_isolation.page_size: ");
    assert!(first < second);
    at("2 problem(s) found in 2 input(s)");
    // The valid tenant is still checked: its output, and its key against its API.
    at("Output local is usable (input 10001).");
    assert!(!err.contains("Input 10001, service"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_the_valid_tenants_and_strict_refuses() {
    let (env, good) = one_good_two_invalid().await;
    let out = env.collector(&["run", "--once", "--strict"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("input 10002 (") && err.contains("input 10003 ("),
        "{err}"
    );
    assert!(err.contains("run --strict starts nothing"), "{err}");
    assert!(
        !env.path("out").join("10001").exists(),
        "--strict started a tenant"
    );

    // Without --strict: the valid tenant runs, each invalid one is reported under its id, and
    // `--once` says not everything ran.
    let out = env.collector(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Input 10002 (inputs.proofpoint_isolation[1]) is not started"),
        "{err}"
    );
    assert!(
        err.contains("Input 10003 (inputs.proofpoint_isolation[2]) is not started"),
        "{err}"
    );
    assert_same_multiset(
        &good.delivered(&env),
        &good.sim.visible_events(),
        "input 10001",
    );
}
