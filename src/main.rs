//! `isolation-collector`: parse the command line, load the config, run, map the outcome to an
//! exit code (0 success, 64 bad usage or config, 1 runtime failure).

use std::process::ExitCode;

use clap::Parser;
use isolation_collector::cli::{Cli, Command, StateAction};
use isolation_collector::config::Config;
use isolation_collector::service::Service;
use isolation_collector::{app, backfill, state::StateStore, telemetry};
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(real_main(cli))
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    // Devo's rule: a relative config name that is not found resolves under `config/` (the
    // image runs `--config ${CONFIG_FILE:-config.yaml}` from /devo-collector).
    let devo_path = std::path::Path::new("config").join(path);
    let path = if path.is_relative() && !path.exists() && devo_path.is_file() {
        devo_path.as_path()
    } else {
        path
    };
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EX_USAGE)
    })
}

/// The exit code of a command that ran (1 on failure), after Devo's `[EXIT]` line if a signal
/// stopped it.
fn finish(result: anyhow::Result<bool>) -> ExitCode {
    let code = match result {
        Ok(ok) => exit(ok),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    };
    app::log_exit();
    code
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the one function over the limit; the thin main.rs of issue 9 replaces it"
)]
async fn real_main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run {
            config,
            once,
            no_save_state,
            log_format,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(config.globals.debug, log_format);
            app::log_warnings(&config);
            let cancel = CancellationToken::new();
            tokio::spawn(app::shutdown_on_signal(cancel.clone()));
            let grace = config.globals.shutdown_grace_period;
            let options = app::RunOptions {
                once,
                no_save_state,
            };
            tokio::select! {
                result = app::run(config, options, cancel.clone()) => finish(result),
                () = app::grace_elapsed(cancel, grace) => {
                    // Whatever was in flight is abandoned unconfirmed: its window is asked for
                    // again after the restart, so nothing is lost.
                    tracing::error!(
                        "The graceful shutdown did not finish within {} seconds (globals.shutdown_grace_period_in_seconds); exiting now.",
                        grace.as_secs()
                    );
                    finish(Ok(false))
                }
            }
        }
        Command::Validate { config, log_format } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(config.globals.debug, log_format);
            app::log_warnings(&config);
            let ok = app::validate(&config).await;
            if ok {
                tracing::info!("The configuration is valid, the outputs are usable and the API accepted the key.");
            }
            exit(ok)
        }
        Command::State { action } => {
            let (path, service, reset) = match action {
                StateAction::Show { config, service } => (config, service, false),
                StateAction::Reset { config, service } => (config, service, true),
            };
            let config = match load(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let services: Vec<Service> = match service.as_deref() {
                None => Service::ALL.to_vec(),
                Some(name) => match Service::from_name(name) {
                    Some(s) => vec![s],
                    None => {
                        eprintln!("error: unknown service `{name}`; use browser_and_email_isolation or url_isolation");
                        return ExitCode::from(EX_USAGE);
                    }
                },
            };
            let store = app::store_for(&config, false);
            let mut ok = true;
            for s in services {
                let key = StateStore::key(&config.input.id, s.name());
                let location = store
                    .path(&key)
                    .map_or("memory".to_owned(), |p| p.display().to_string());
                if reset {
                    match store.reset(&key) {
                        Ok(true) => println!("{s}: state deleted ({location}); the next run starts from start_time_in_utc"),
                        Ok(false) => println!("{s}: no state ({location})"),
                        Err(e) => {
                            eprintln!("{s}: {e}");
                            ok = false;
                        }
                    }
                } else {
                    match store.load(&key) {
                        Ok(Some((state, _))) => println!("{s} ({location}): {}", state.summary()),
                        Ok(None) => println!("{s}: no state ({location})"),
                        Err(e) => {
                            eprintln!("{s}: {e}");
                            ok = false;
                        }
                    }
                }
            }
            exit(ok)
        }
        Command::Backfill {
            config,
            service,
            from,
            to,
            log_format,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let request = match backfill::Request::parse(&config, &service, &from, to.as_deref()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            telemetry::init(config.globals.debug, log_format);
            app::log_warnings(&config);
            let cancel = CancellationToken::new();
            tokio::spawn(app::shutdown_on_signal(cancel.clone()));
            finish(backfill::run(config, request, cancel).await)
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            events,
            dir,
            follow,
            quiet,
            log_format,
        } => {
            telemetry::init(false, log_format);
            finish(isolation_collector::demo::run(events, &dir, follow, quiet).await)
        }
    }
}
