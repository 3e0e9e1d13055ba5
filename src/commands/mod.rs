//! The bodies of the subcommands (`run`, `validate`, `state`, `backfill`, `audit`, `demo`,
//! `status`).
//!
//! Each command starts with the same preamble (`prepare`: load the config, then start logging
//! and log the config's warnings; `status` only loads it, for its listener, and logs nothing:
//! its output is the report). A command that ran returns its [`Outcome`]; problems the
//! operator must fix before anything runs (a bad config, a bad argument) are printed to
//! standard error and end as [`BadUsage`]. `main` maps both to the exit code.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::cli::{StateScope, StoreKind};
use crate::clock::SharedClock;
use crate::config::{Config, Env, Loaded, Loader, Persistence};
use crate::logging::{self, InternalTap, LogFormat};
pub use crate::outcome::Outcome;
use crate::service::Service;
use crate::state::redis::RedisStore;
use crate::state::{StateError, StateStore};
use crate::{app, backfill, reload};

pub mod audit;
pub mod dead_letters;
pub mod status;
pub use audit::{audit, AuditArgs};

/// A bad config or argument, already printed to standard error: nothing ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUsage;

/// The loader of the config named `path`, substituting from the process environment. Devo's
/// rule: a relative config name that is not found resolves under `config/` (the image runs
/// `--config ${CONFIG_FILE:-config.yaml}` from /devo-collector).
fn loader(path: &Path) -> Loader {
    Loader::new(resolve(path), Env::process())
}

/// Loads the config through `loader`, printing its problems.
fn load(loader: &Loader, clock: &SharedClock) -> Result<Loaded, BadUsage> {
    loader.load(clock.now()).map_err(|e| {
        eprintln!("{e}");
        BadUsage
    })
}

/// The file a config name means (Devo's rule, see [`loader`]).
fn resolve(path: &Path) -> PathBuf {
    let devo_path = Path::new("config").join(path);
    if path.is_relative() && !path.exists() && devo_path.is_file() {
        devo_path
    } else {
        path.to_owned()
    }
}

/// Starts logging in `format`, with `clock`'s times, and logs the config's warnings. Returns
/// the logging layer's tap, for the daemon's internal messages.
fn start_logging(config: &Config, format: LogFormat, clock: &SharedClock) -> InternalTap {
    let tap = logging::init(config.globals.debug, format, clock.clone());
    app::log_warnings(config);
    tap
}

/// The preamble of every command that reads the config: load it, then (with a `log_format`)
/// start logging.
fn prepare(
    path: &Path,
    log_format: Option<LogFormat>,
    clock: &SharedClock,
) -> Result<Config, BadUsage> {
    let config = load(&loader(path), clock)?.config;
    if let Some(format) = log_format {
        start_logging(&config, format, clock);
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

/// The daemon's reload source; its SIGHUP listener lives as long as the process. Without a
/// SIGHUP handler (the system refused one) the daemon runs without reloads, saying so.
fn start_reloads(loader: Loader, watch_config: bool) -> Option<reload::Source> {
    match reload::source(loader, watch_config) {
        Ok((source, hangups)) => {
            tokio::spawn(hangups);
            Some(source)
        }
        Err(e) => {
            eprintln!("warning: cannot install the SIGHUP handler ({e}); the configuration will not be reloaded");
            None
        }
    }
}

/// How a command that ran ended (an error is logged and fails it), after Devo's `[EXIT]` line
/// if a signal stopped it.
fn finish(result: anyhow::Result<Outcome>) -> Outcome {
    let outcome = result.unwrap_or_else(|e| {
        tracing::error!("{}", error_line(&e));
        Outcome::Failed
    });
    app::log_exit();
    outcome
}

/// An error and its causes on one line, outermost first (`context: error: cause`), as anyhow's
/// `{:#}` writes it, except that a cause the line already says is not said again: the
/// collector's errors carry their cause typed (`#[source]`) and also quote it in their message.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// `run`: the daemon (or one catch-up cycle with `once`), its shutdown bounded by
/// `globals.shutdown_grace_period_in_seconds`. The daemon reloads its config on SIGHUP, and
/// with `watch_config` when the config's files change.
pub async fn run(
    path: &Path,
    options: app::RunOptions,
    watch_config: bool,
    log_format: LogFormat,
    clock: SharedClock,
) -> Result<Outcome, BadUsage> {
    let loader = loader(path);
    // Before the load: a SIGHUP from then on asks for a reload instead of ending the process.
    let reloads = match options.once {
        true => None,
        false => start_reloads(loader.clone(), watch_config),
    };
    let loaded = load(&loader, &clock)?;
    let config = &loaded.config;
    if options.strict && !config.invalid_inputs.is_empty() {
        eprintln!(
            "{}\nrun --strict starts nothing while an input is invalid; fix them, or run without --strict to start the valid inputs.",
            config.input_problems(loader.path())
        );
        return Err(BadUsage);
    }
    let tap = start_logging(config, log_format, &clock);
    app::log_invalid_inputs(config);
    let cancel = cancel_on_signal();
    let grace = config.globals.shutdown_grace_period;
    // `--once` with an input left out did not deliver everything.
    let all_inputs = config.invalid_inputs.is_empty() || !options.once;
    let ran = tokio::select! {
        result = app::run_collector(loaded, options, reloads, clock, tap, cancel.clone()) => finish(result),
        () = app::grace_elapsed(cancel, grace) => {
            // Whatever was in flight is abandoned unconfirmed (dropping `app::run_collector` aborts its
            // tasks): its window is asked for again after the restart, so nothing is lost.
            tracing::error!(
                "The graceful shutdown did not finish within {} seconds (globals.shutdown_grace_period_in_seconds); exiting now.",
                grace.as_secs()
            );
            finish(Ok(Outcome::Failed))
        }
    };
    Ok(ran.and(Outcome::succeeded_if(all_inputs)))
}

/// `validate`: the config, the outputs and each service's API key.
pub async fn validate(
    path: &Path,
    log_format: LogFormat,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let config = load(&loader(path), clock)?.config;
    // Every tenant's config problems first, each under its input id; then the checks of the
    // valid inputs, which run anyway so that one pass reports everything.
    if !config.invalid_inputs.is_empty() {
        eprintln!("{}", config.input_problems(path));
    }
    start_logging(&config, log_format, clock);
    let ok = app::validate(&config, clock).await;
    if !config.invalid_inputs.is_empty() {
        return Err(BadUsage);
    }
    if ok {
        tracing::info!(
            "The configuration is valid, the outputs are usable and the API accepted the key."
        );
    }
    Ok(Outcome::succeeded_if(ok))
}

/// Which states `state show` and `state reset` act on: one service or both, one input or all.
#[derive(Clone, Copy, Debug, Default)]
pub struct StateFilter<'a> {
    pub service: Option<&'a str>,
    pub input: Option<&'a str>,
}

impl<'a> StateFilter<'a> {
    /// The states a `state` subcommand's `--service` and `--input` choose.
    pub fn of(scope: &'a StateScope) -> Self {
        StateFilter {
            service: scope.service.as_deref(),
            input: scope.input.as_deref(),
        }
    }
}

/// The config at `path` and its state store, for the `state` subcommands (no logging, no
/// lock: each command takes the lock it needs).
fn open_config_and_store(
    path: &Path,
    clock: &SharedClock,
) -> Result<(Config, StateStore), BadUsage> {
    let config = prepare(path, None, clock)?;
    let store = StateStore::from_config(&config.globals.persistence, false).map_err(|e| {
        eprintln!("error: {e}");
        BadUsage
    })?;
    Ok((config, store))
}

/// `state show` (`reset: false`) or `state reset`, for one service or both, of one input or
/// every input of the config. Prints; never logs.
pub async fn state(
    path: &Path,
    only: StateFilter<'_>,
    reset: bool,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let (config, store) = open_config_and_store(path, clock)?;
    // A reset deletes states a running collector uses: only with the directory's lock (a
    // `show` only reads).
    let _lock = match reset {
        true => match store.lock() {
            Ok(lock) => lock,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Outcome::Failed);
            }
        },
        false => None,
    };
    let mut outcome = Outcome::Succeeded;
    for (key, name) in chosen_services(&config, only)? {
        outcome = outcome.and(state_one(&store, &key, &name, reset).await);
    }
    Ok(outcome)
}

/// The (state key, name to print) of each service `only` chooses.
fn chosen_services(
    config: &Config,
    only: StateFilter<'_>,
) -> Result<Vec<(String, String)>, BadUsage> {
    let inputs = chosen_inputs(config, only.input)?;
    let services: Vec<Service> = match only.service {
        None => Service::ALL.to_vec(),
        Some(name) => vec![Service::from_name(name).ok_or_else(|| {
            eprintln!(
                "error: unknown service `{name}`; use browser_and_email_isolation or url_isolation"
            );
            BadUsage
        })?],
    };
    Ok(inputs
        .iter()
        .flat_map(|input| {
            services.iter().map(|&s| {
                let key = StateStore::key(&input.id, s.name());
                (key, state_label(config, &input.id, s))
            })
        })
        .collect())
}

/// The inputs `--input` names (one id), or every valid input of the config.
fn chosen_inputs<'a>(
    config: &'a Config,
    id: Option<&str>,
) -> Result<Vec<&'a crate::config::InputConfig>, BadUsage> {
    let Some(id) = id else {
        return Ok(config.inputs.iter().collect());
    };
    match config.input(id) {
        Some(input) => Ok(vec![input]),
        None => {
            let ids: Vec<&str> = config.inputs.iter().map(|i| i.id.as_str()).collect();
            eprintln!(
                "error: --input `{id}` is not the id of a valid input of this config; its inputs are {}",
                ids.join(", ")
            );
            Err(BadUsage)
        }
    }
}

/// How `state` names a service: with several inputs, `<input id> <service>`.
fn state_label(config: &Config, input_id: &str, service: Service) -> String {
    if config.multi_tenant {
        format!("{input_id} {service}")
    } else {
        service.to_string()
    }
}

/// `state show` or `state reset` of one key, printed as `name`.
async fn state_one(store: &StateStore, key: &str, name: &str, reset: bool) -> Outcome {
    let location = store.location(key);
    let result = if reset {
        store.reset(key).await.map(|existed| match existed {
            true => println!(
                "{name}: state deleted ({location}); the next run starts from start_time_in_utc"
            ),
            false => println!("{name}: no state ({location})"),
        })
    } else {
        match store.load(key).await.map(|loaded| match loaded {
            Some((state, _)) => println!("{name} ({location}): {}", state.summary()),
            None => println!("{name}: no state ({location})"),
        }) {
            Ok(()) => dead_letters::show(store, key).await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = &result {
        eprintln!("{name}: {e}");
    }
    Outcome::succeeded_if(result.is_ok())
}

/// The arguments of `state copy`.
pub struct CopyArgs {
    pub from: StoreKind,
    pub to: StoreKind,
    /// The filesystem side.
    pub directory: PathBuf,
    pub force: bool,
}

/// `state copy`: each enabled service's state from one store to the other (filesystem and the
/// config's Redis), under the service's lease, so that a running collector's state is never
/// overwritten; an existing target state only with `--force`. Prints; never logs.
pub async fn state_copy(
    path: &Path,
    args: CopyArgs,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let config = prepare(path, None, clock)?;
    let usage = |e: String| {
        eprintln!("error: {e}");
        BadUsage
    };
    if args.from == args.to {
        return Err(usage(
            "--from and --to must differ: one is filesystem, the other redis".into(),
        ));
    }
    let Persistence::Redis(r) = &config.globals.persistence else {
        return Err(usage(format!(
            "{}: globals.persistence.type must be redis for `state copy` (it copies between --directory and that Redis)",
            path.display()
        )));
    };
    let redis = StateStore::Redis(Box::new(
        RedisStore::new(r).map_err(|e| usage(e.to_string()))?,
    ));
    let files = StateStore::filesystem(args.directory.clone());
    // No collector may use the directory meanwhile (Redis's side is fenced by the leases).
    let _lock = match files.lock() {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Outcome::Failed);
        }
    };
    let (from, to) = match args.from {
        StoreKind::Filesystem => (&files, &redis),
        StoreKind::Redis => (&redis, &files),
    };
    let mut outcome = Outcome::Succeeded;
    for (input, svc) in config.services() {
        let key = StateStore::key(&input.id, svc.service.name());
        let name = state_label(&config, &input.id, svc.service);
        match copy_one(&redis, from, to, &key, args.force).await {
            Ok(line) => println!("{name}: {line}"),
            Err(e) => {
                eprintln!("{name}: {e}");
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(outcome)
}

/// Copies the state of `key` from `from` to `to` while holding its lease in `redis`.
async fn copy_one(
    redis: &StateStore,
    from: &StateStore,
    to: &StateStore,
    key: &str,
    force: bool,
) -> Result<String, String> {
    let lease = redis.redis().expect("the Redis side");
    let token = match lease.take_for_a_command(key).await {
        Ok(token) => token,
        Err(StateError::LeaseLost { holder }) => return Err(format!(
            "not copied: the lease is held by {holder}, a collector that pulls this service; stop it first (or wait lease_ttl_in_seconds after it died)"
        )),
        Err(e) => return Err(e.to_string()),
    };
    let copied = copy_held(from, to, key, force, &token).await;
    let released = lease.release(key, &token).await;
    let line = copied?;
    released.map_err(|e| {
        format!(
            "copied, but the lease was not released ({e}); it expires after lease_ttl_in_seconds"
        )
    })?;
    Ok(line)
}

/// [`copy_one`]'s copy, the lease held by `token`.
async fn copy_held(
    from: &StateStore,
    to: &StateStore,
    key: &str,
    force: bool,
    token: &str,
) -> Result<String, String> {
    let (from_at, to_at) = (from.location(key), to.location(key));
    let Some((state, _)) = from.load(key).await.map_err(|e| e.to_string())? else {
        return Ok(format!("no state in {from_at}; nothing copied"));
    };
    if !force && to.load(key).await.map_err(|e| e.to_string())?.is_some() {
        return Err(format!(
            "not copied: {to_at} already holds a state; add --force to overwrite it"
        ));
    }
    to.save(key, &state, Some(token))
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("copied {from_at} -> {to_at}: {}", state.summary()))
}

/// The arguments of `backfill`.
pub struct BackfillArgs<'a> {
    pub service: &'a str,
    /// The input's id (`None`: the config's only input).
    pub input: Option<&'a str>,
    pub from: &'a str,
    pub to: Option<&'a str>,
}

/// `backfill`: a past range re-delivered without touching the live state. A bad range is a usage
/// error, printed before logging starts.
pub async fn backfill(
    path: &Path,
    args: BackfillArgs<'_>,
    log_format: LogFormat,
    clock: SharedClock,
) -> Result<Outcome, BadUsage> {
    let config = prepare(path, None, &clock)?;
    let now = clock.now();
    let request =
        backfill::Request::parse(&config, args.input, args.service, args.from, args.to, now)
            .map_err(|e| {
                eprintln!("error: {e}");
                BadUsage
            })?;
    start_logging(&config, log_format, &clock);
    let delivered = backfill::pull_range(config, request, clock, cancel_on_signal()).await;
    Ok(finish(delivered.map(|()| Outcome::Succeeded)))
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
pub async fn demo(args: DemoArgs, log_format: LogFormat, clock: SharedClock) -> Outcome {
    logging::init(false, log_format, clock.clone());
    finish(
        crate::demo::run_against_simulators(args.events, &args.dir, args.follow, args.quiet, clock)
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collector's errors say their typed cause (`#[source]`) in their own message: the
    /// line says it once, and a cause a context does not say is still there.
    #[test]
    fn the_error_line_says_each_cause_once() {
        let locked = || StateError::Io {
            action: "lock",
            path: "/s/.lock".into(),
            source: std::io::Error::from_raw_os_error(libc::EAGAIN),
        };
        let cause = std::io::Error::from_raw_os_error(libc::EAGAIN).to_string();
        let e = anyhow::Error::from(locked());
        assert_eq!(error_line(&e), format!("cannot lock /s/.lock: {cause}"));
        let e = anyhow::Error::from(locked()).context("opening the state");
        assert_eq!(
            error_line(&e),
            format!("opening the state: cannot lock /s/.lock: {cause}")
        );
        let e = anyhow::Error::from(std::io::Error::other("refused")).context("binding");
        assert_eq!(error_line(&e), "binding: refused");
    }
}
