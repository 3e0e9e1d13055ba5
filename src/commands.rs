//! The bodies of the subcommands (`run`, `validate`, `state`, `backfill`, `demo`).
//!
//! Each command starts with the same preamble (`prepare`: load the config, then start logging
//! and log the config's warnings). A command that ran returns whether everything succeeded;
//! problems the operator must fix before anything runs (a bad config, a bad argument) are
//! printed to standard error and end as [`BadUsage`]. `main` maps both to the exit code.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::service::Service;
use crate::state::StateStore;
use crate::telemetry::{self, LogFormat};
use crate::{app, backfill};

/// A bad config or argument, already printed to standard error: nothing ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUsage;

/// Loads the config at `path`, printing its problems. Devo's rule: a relative config name that
/// is not found resolves under `config/` (the image runs `--config ${CONFIG_FILE:-config.yaml}`
/// from /devo-collector).
fn load(path: &Path) -> Result<Config, BadUsage> {
    let devo_path = Path::new("config").join(path);
    let path = if path.is_relative() && !path.exists() && devo_path.is_file() {
        devo_path.as_path()
    } else {
        path
    };
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        BadUsage
    })
}

/// Starts logging in `format` and logs the config's warnings.
fn start_logging(config: &Config, format: LogFormat) {
    telemetry::init(config.globals.debug, format);
    app::log_warnings(config);
}

/// The preamble of every command that reads the config: load it, then (with a `log_format`)
/// start logging.
fn prepare(path: &Path, log_format: Option<LogFormat>) -> Result<Config, BadUsage> {
    let config = load(path)?;
    if let Some(format) = log_format {
        start_logging(&config, format);
    }
    Ok(config)
}

/// A token cancelled by the first SIGINT/SIGTERM (a second one exits at once).
fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    // The signal handler lives as long as the process: it must see the second signal.
    tokio::spawn(app::shutdown_on_signal(cancel.clone()));
    cancel
}

/// Whether a command that ran succeeded, after Devo's `[EXIT]` line if a signal stopped it.
fn finish(result: anyhow::Result<bool>) -> bool {
    let ok = result.unwrap_or_else(|e| {
        tracing::error!("{e:#}");
        false
    });
    app::log_exit();
    ok
}

/// `run`: the daemon (or one catch-up cycle with `once`), its shutdown bounded by
/// `globals.shutdown_grace_period_in_seconds`.
pub async fn run(
    path: &Path,
    options: app::RunOptions,
    log_format: LogFormat,
) -> Result<bool, BadUsage> {
    let config = prepare(path, Some(log_format))?;
    let cancel = cancel_on_signal();
    let grace = config.globals.shutdown_grace_period;
    Ok(tokio::select! {
        result = app::run(config, options, cancel.clone()) => finish(result),
        () = app::grace_elapsed(cancel, grace) => {
            // Whatever was in flight is abandoned unconfirmed (dropping `app::run` aborts its
            // tasks): its window is asked for again after the restart, so nothing is lost.
            tracing::error!(
                "The graceful shutdown did not finish within {} seconds (globals.shutdown_grace_period_in_seconds); exiting now.",
                grace.as_secs()
            );
            finish(Ok(false))
        }
    })
}

/// `validate`: the config, the outputs and each service's API key.
pub async fn validate(path: &Path, log_format: LogFormat) -> Result<bool, BadUsage> {
    let config = prepare(path, Some(log_format))?;
    let ok = app::validate(&config).await;
    if ok {
        tracing::info!(
            "The configuration is valid, the outputs are usable and the API accepted the key."
        );
    }
    Ok(ok)
}

/// `state show` (`reset: false`) or `state reset`, for one service or both. Prints; never logs.
pub fn state(path: &Path, service: Option<&str>, reset: bool) -> Result<bool, BadUsage> {
    let config = prepare(path, None)?;
    let services: Vec<Service> = match service {
        None => Service::ALL.to_vec(),
        Some(name) => vec![Service::from_name(name).ok_or_else(|| {
            eprintln!(
                "error: unknown service `{name}`; use browser_and_email_isolation or url_isolation"
            );
            BadUsage
        })?],
    };
    let store = app::store_for(&config, false);
    let mut ok = true;
    for s in services {
        let key = StateStore::key(&config.input.id, s.name());
        let location = store
            .path(&key)
            .map_or("memory".to_owned(), |p| p.display().to_string());
        let result = if reset {
            store.reset(&key).map(|existed| match existed {
                true => println!(
                    "{s}: state deleted ({location}); the next run starts from start_time_in_utc"
                ),
                false => println!("{s}: no state ({location})"),
            })
        } else {
            store.load(&key).map(|loaded| match loaded {
                Some((state, _)) => println!("{s} ({location}): {}", state.summary()),
                None => println!("{s}: no state ({location})"),
            })
        };
        if let Err(e) = result {
            eprintln!("{s}: {e}");
            ok = false;
        }
    }
    Ok(ok)
}

/// The arguments of `backfill`.
pub struct BackfillArgs<'a> {
    pub service: &'a str,
    pub from: &'a str,
    pub to: Option<&'a str>,
}

/// `backfill`: a past range re-delivered without touching the live state. A bad range is a usage
/// error, printed before logging starts.
pub async fn backfill(
    path: &Path,
    args: BackfillArgs<'_>,
    log_format: LogFormat,
) -> Result<bool, BadUsage> {
    let config = prepare(path, None)?;
    let request =
        backfill::Request::parse(&config, args.service, args.from, args.to).map_err(|e| {
            eprintln!("error: {e}");
            BadUsage
        })?;
    start_logging(&config, log_format);
    Ok(finish(
        backfill::run(config, request, cancel_on_signal()).await,
    ))
}

/// The arguments of `demo`.
#[cfg(feature = "demo")]
pub struct DemoArgs {
    pub events: usize,
    pub dir: std::path::PathBuf,
    pub follow: bool,
    pub quiet: bool,
}

/// `demo`: the collector against the built-in simulator.
#[cfg(feature = "demo")]
pub async fn demo(args: DemoArgs, log_format: LogFormat) -> bool {
    telemetry::init(false, log_format);
    finish(crate::demo::run(args.events, &args.dir, args.follow, args.quiet).await)
}
