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
use crate::config::Config;
use isolation_sim::{Dataset, SimConfig, SimHandle};

const DEMO_KEY: &str = "00000000-0000-0000-0000-000000000000";

/// Runs the demo; `clock` is the collector's wall clock and stamps the published events.
pub async fn run(
    events: usize,
    dir: &Path,
    follow: bool,
    quiet: bool,
    clock: SharedClock,
) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let start = |dataset, seed| {
        let mut c = SimConfig::new(dataset);
        c.api_key = DEMO_KEY.into();
        c.events = events;
        c.seed = seed;
        c.pending_polls = 1;
        SimHandle::start(c)
    };
    let web = start(Dataset::Web, 1)
        .await
        .context("starting the simulator")?;
    let url = start(Dataset::Url, 2)
        .await
        .context("starting the simulator")?;
    let dir_abs = std::fs::canonicalize(dir)?;
    let console = if quiet {
        ""
    } else {
        "  screen:\n    type: console\n"
    };
    let period = if follow { 5 } else { 60 };
    let service = |base: String| {
        format!("        override_base_url: {base}\n        request_period_in_seconds: {period}\n        job_poll_initial_interval_in_seconds: 0.2\n        late_arrival_lookback_in_minutes: 5\n        late_arrival_sweep_interval_in_minutes: 0.5\n")
    };
    let text = format!(
        "globals:\n  id: demo\n  name: isolation_demo\n  persistence:\n    type: filesystem\n    config:\n      directory_name: {state}\noutputs:\n  files:\n    type: file\n    config:\n      directory: {out}\n{console}inputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials:\n      api_key: \"{DEMO_KEY}\"\n    services:\n      browser_and_email_isolation:\n{web}      url_isolation:\n{url}",
        state = dir_abs.join("state").display(),
        out = dir_abs.join("out").display(),
        web = service(web.base_url()),
        url = service(url.base_url()),
    );
    let config = Config::parse(&text, &dir_abs, &|_| None, clock.now())
        .map_err(|problems| anyhow::anyhow!("demo config: {}", problems.join("; ")))?;
    info!("Demo: simulated Browser & Email Isolation API at {}, URL Isolation API at {}, {events} events each.", web.base_url(), url.base_url());
    info!("Demo: the collector runs with this configuration:\n{text}");
    let cancel = CancellationToken::new();
    tokio::spawn(app::shutdown_on_signal(cancel.clone()));
    if follow {
        // New events every few seconds, a third of them published a minute late.
        let publisher = {
            let (cancel, clock) = (cancel.clone(), clock.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = cancel.cancelled() => return,
                    }
                    let now = clock.now();
                    for sim in [&web, &url] {
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
        };
        let collector = app::run(
            config,
            RunOptions {
                once: false,
                no_save_state: false,
            },
            clock,
            cancel.clone(),
        );
        let (ok, ()) = tokio::join!(collector, publisher);
        return ok;
    }
    let ok = app::run(
        config,
        RunOptions {
            once: true,
            no_save_state: false,
        },
        clock,
        cancel,
    )
    .await?;
    for table in [
        "tap.proofpoint.isolation.browser_and_email",
        "tap.proofpoint.isolation.url_isolation",
    ] {
        let path = dir_abs.join("out").join(format!("{table}.jsonl"));
        let lines = std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        info!("Demo: {} holds {lines} events.", path.display());
    }
    info!("Demo: run it again and nothing is delivered twice; `--follow` keeps it running with new and late events.");
    Ok(ok)
}
