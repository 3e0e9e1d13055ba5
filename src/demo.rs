//! `isolation-collector demo`: see the collector work without a vendor key.
//!
//! Starts the built-in simulator for both vendor hosts on loopback, writes nothing but a state
//! directory and output files under `--dir`, and runs the real collector against it through the
//! same config path a user's file takes (the config text is printed). With `--follow` the
//! simulator keeps publishing new events, some of them late, and the collector keeps pulling
//! until Ctrl-C.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{self, RunOptions};
use crate::clock::SharedClock;
use crate::config::Loaded;
use crate::logging::InternalTap;
use crate::outcome::Outcome;
use isolation_sim::{Dataset, SimConfig, SimHandle};

const DEMO_KEY: &str = "00000000-0000-0000-0000-000000000000";

/// Runs the collector against two simulated vendor hosts (one catch-up, or `--follow`);
/// `clock` is the collector's wall clock and stamps the published events.
pub async fn run_against_simulators(
    events: usize,
    dir: &Path,
    follow: bool,
    quiet: bool,
    clock: SharedClock,
) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let web = start_simulator(Dataset::Web, 1, events).await?;
    let url = start_simulator(Dataset::Url, 2, events).await?;
    let dir_abs = std::fs::canonicalize(dir)?;
    let text = config_text(&dir_abs, &web, &url, follow, quiet);
    let loaded = Loaded::parse(&text, &dir_abs, &|_| None, clock.now())
        .map_err(|problems| anyhow::anyhow!("demo config: {}", problems.join("; ")))?;
    info!("Demo: simulated Browser & Email Isolation API at {}, URL Isolation API at {}, {events} events each.", web.base_url(), url.base_url());
    info!("Demo: the collector runs with this configuration:\n{text}");
    let cancel = CancellationToken::new();
    tokio::spawn(app::shutdown_on_signal(cancel.clone()));
    let options = RunOptions {
        once: !follow,
        no_save_state: false,
        strict: true,
    };
    // The demo's config has no output with `internal_messages`: the tap stays unconnected.
    if follow {
        let publisher = publish_new_and_late_events([&web, &url], clock.clone(), cancel.clone());
        let collector =
            app::run_collector(loaded, options, None, clock, InternalTap::default(), cancel);
        let (outcome, ()) = tokio::join!(collector, publisher);
        return outcome;
    }
    let outcome =
        app::run_collector(loaded, options, None, clock, InternalTap::default(), cancel).await?;
    report_output_files(&dir_abs);
    info!("Demo: run it again and nothing is delivered twice; `--follow` keeps it running with new and late events.");
    Ok(outcome)
}

/// One simulated vendor host with `events` events.
async fn start_simulator(dataset: Dataset, seed: u64, events: usize) -> anyhow::Result<SimHandle> {
    let mut c = SimConfig::new(dataset);
    c.api_key = DEMO_KEY.into();
    c.events = events;
    c.seed = seed;
    c.pending_polls = 1;
    SimHandle::start(c).await.context("starting the simulator")
}

/// The demo's configuration, in the layout of a user's file (it is printed for the user).
fn config_text(dir: &Path, web: &SimHandle, url: &SimHandle, follow: bool, quiet: bool) -> String {
    let console = if quiet {
        ""
    } else {
        "  screen:\n    type: console\n"
    };
    let period = if follow { 5 } else { 60 };
    let service = |base: String| {
        format!("        override_base_url: {base}\n        request_period_in_seconds: {period}\n        job_poll_initial_interval_in_seconds: 0.2\n        late_arrival_lookback_in_minutes: 5\n        late_arrival_sweep_interval_in_minutes: 0.5\n")
    };
    format!(
        "globals:\n  id: demo\n  name: isolation_demo\n  persistence:\n    type: filesystem\n    config:\n      directory_name: {state}\noutputs:\n  files:\n    type: file\n    config:\n      directory: {out}\n{console}inputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials:\n      api_key: \"{DEMO_KEY}\"\n    services:\n      browser_and_email_isolation:\n{web}      url_isolation:\n{url}",
        state = dir.join("state").display(),
        out = dir.join("out").display(),
        web = service(web.base_url()),
        url = service(url.base_url()),
    )
}

/// `--follow`: new events every few seconds, a third of them published a minute late.
async fn publish_new_and_late_events(
    sims: [&SimHandle; 2],
    clock: SharedClock,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = clock.now();
        for sim in sims {
            sim.inject(
                rand::random_range(1..20),
                now - chrono::Duration::seconds(3),
                now,
            );
            sim.inject(
                rand::random_range(0..8),
                now - chrono::Duration::seconds(70),
                now - chrono::Duration::seconds(60),
            );
        }
    }
}

/// Tells the user where the events went and how many there are.
fn report_output_files(dir: &Path) {
    for table in [
        "tap.proofpoint.isolation.browser_and_email",
        "tap.proofpoint.isolation.url_isolation",
    ] {
        let path = dir.join("out").join(format!("{table}.jsonl"));
        let lines = std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        info!("Demo: {} holds {lines} events.", path.display());
    }
}
