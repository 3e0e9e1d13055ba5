//! `isolation-collector`: parse the command line, run the command ([`commands`]), map the
//! outcome to an exit code (0 success, 64 bad usage or config, 1 runtime failure).

use std::process::ExitCode;

use clap::Parser;
use isolation_collector::app::RunOptions;
use isolation_collector::cli::{Cli, Command, StateAction};
use isolation_collector::commands::{self, BackfillArgs, BadUsage};

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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(BadUsage) => ExitCode::from(EX_USAGE),
    }
}

async fn dispatch(command: Command) -> Result<bool, BadUsage> {
    match command {
        Command::Run {
            config,
            once,
            no_save_state,
            log_format,
        } => {
            let options = RunOptions {
                once,
                no_save_state,
            };
            commands::run(&config, options, log_format).await
        }
        Command::Validate { config, log_format } => commands::validate(&config, log_format).await,
        Command::State {
            action: StateAction::Show { config, service },
        } => commands::state(&config, service.as_deref(), false),
        Command::State {
            action: StateAction::Reset { config, service },
        } => commands::state(&config, service.as_deref(), true),
        Command::Backfill {
            config,
            service,
            from,
            to,
            log_format,
        } => {
            let args = BackfillArgs {
                service: &service,
                from: &from,
                to: to.as_deref(),
            };
            commands::backfill(&config, args, log_format).await
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            events,
            dir,
            follow,
            quiet,
            log_format,
        } => {
            let args = commands::DemoArgs {
                events,
                dir,
                follow,
                quiet,
            };
            Ok(commands::demo(args, log_format).await)
        }
    }
}
