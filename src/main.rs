//! `isolation-collector`: parse the command line, run the command ([`commands`]), map the
//! outcome to an exit code ([`exit_code`]: 0 success, 64 bad usage or config, 1 runtime
//! failure, 2 a report that needs attention: `audit` found events missing, `status` a failing
//! service).
//!
//! The library forbids `unsafe`; this binary denies it and allows one call, glibc's `mallopt`
//! in [`limit_malloc_arenas`], for which no safe interface exists.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use isolation_collector::app::RunOptions;
use isolation_collector::cli::{Cli, Command, LetterChoice, StateAction};
use isolation_collector::clock::SharedClock;
use isolation_collector::commands::{
    self, AuditArgs, BackfillArgs, BadUsage, Outcome, StateFilter,
};

const EX_USAGE: u8 = 64;
/// `audit` found hours that miss events.
const EX_NEEDS_ATTENTION: u8 = 2;

/// Limits glibc's malloc to one arena unless the operator set `MALLOC_ARENA_MAX`. By default
/// glibc gives each thread that allocates an arena of its own and keeps there what a freed
/// window used, so with both services backfilling the process peaked at 52 MiB while holding
/// 16 MiB of windows; with one arena it peaked at 27 MiB, at the same CPU time (measured, README
/// "Guarantees", Bounded). mimalloc was tried instead and kept more (101 MiB), jemalloc too
/// (94-97 MiB). The variable `MALLOC_ARENA_MAX` would do the same, but only if every operator
/// remembered to set it.
///
/// It also fixes glibc's mmap threshold at 128 KiB (its initial value) unless the operator set
/// `MALLOC_MMAP_THRESHOLD_`. By default glibc raises the threshold to the size of each large
/// block freed (up to 32 MiB), so that after the first freed page body or spooled window (a few
/// MB) the next ones come from the heap, where the small buffers allocated between them keep
/// the freed ones from going back to the system. Measured with scripts/bench/backfill.sh (1M
/// events, 10 s jobs, issue 23): a spooled backfill of both services peaked at 46.4 MiB, and at
/// 32.0 MiB with the threshold fixed (puller::spool's first version; 30.9 MiB with its buffers
/// reused); one service at 40.1 MiB against 28.8 MiB. The price is CPU: 2.45 µs per event
/// against 2.07, as every page body is then mapped fresh and faulted in (reusing page buffers,
/// issue 23 §2, removes that).
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: as above: first thing in main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
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
    // The one wall clock of the process, handed to everything that reads the time of day.
    let clock = SharedClock::for_process();
    exit_code(runtime.block_on(dispatch(cli.command, clock)))
}

/// The exit code of a command: 0 when it succeeded, 1 when it ran and something failed, 2 when
/// what it reports needs attention (`audit`: events missing; `status`: a failing service), 64
/// (`EX_USAGE`) when a bad config or argument kept it from running.
fn exit_code(ended: Result<Outcome, BadUsage>) -> ExitCode {
    match ended {
        Ok(Outcome::Succeeded) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Ok(Outcome::NeedsAttention) => ExitCode::from(EX_NEEDS_ATTENTION),
        Err(BadUsage) => ExitCode::from(EX_USAGE),
    }
}

/// The config, the services and the letters (`None`: all) a letter command chose.
fn letter_choice(
    choice: &LetterChoice,
) -> (&std::path::Path, StateFilter<'_>, Option<Vec<String>>) {
    let only = StateFilter {
        service: Some(&choice.service),
        input: choice.input.as_deref(),
    };
    (
        &choice.config,
        only,
        (!choice.all).then(|| choice.ids.clone()),
    )
}

/// `state dead-letters`, `state discard` and `state replay`.
async fn dead_letters(action: StateAction, clock: &SharedClock) -> Result<Outcome, BadUsage> {
    match action {
        StateAction::DeadLetters {
            scope,
            json,
            export,
        } => {
            let args = commands::dead_letters::ListArgs { json, export };
            let only = StateFilter::of(&scope);
            commands::dead_letters::list(&scope.config, only, args, clock).await
        }
        StateAction::Discard(choice) => {
            let (config, only, ids) = letter_choice(&choice);
            commands::dead_letters::discard(config, only, ids, clock).await
        }
        StateAction::Replay(choice) => {
            let (config, only, ids) = letter_choice(&choice);
            commands::dead_letters::replay(config, only, ids, clock).await
        }
        _ => unreachable!("dispatch passes only dead-letter actions"),
    }
}

/// `audit`.
async fn audit(command: Command, clock: SharedClock) -> Result<Outcome, BadUsage> {
    let Command::Audit {
        config,
        input,
        service,
        from,
        to,
        json,
        repair,
        clear_in_flight,
        log_format,
    } = command
    else {
        unreachable!("dispatch passes only `audit`");
    };
    let args = AuditArgs {
        input: input.as_deref(),
        service: service.as_deref(),
        from: from.as_deref(),
        to: to.as_deref(),
        json,
        repair,
        clear_in_flight,
    };
    commands::audit(&config, args, log_format, clock).await
}

async fn dispatch(command: Command, clock: SharedClock) -> Result<Outcome, BadUsage> {
    match command {
        Command::Run {
            config,
            once,
            no_save_state,
            watch_config,
            strict,
            log_format,
        } => {
            let options = RunOptions {
                once,
                no_save_state,
                strict,
            };
            commands::run(&config, options, watch_config, log_format, clock).await
        }
        Command::Validate { config, log_format } => {
            commands::validate(&config, log_format, &clock).await
        }
        Command::Status {
            config,
            address,
            watch,
            json,
        } => {
            let args = commands::status::StatusArgs {
                config,
                address,
                watch,
                json,
            };
            commands::status::status(args, &clock).await
        }
        Command::State {
            action: StateAction::Show(scope),
        } => commands::state(&scope.config, StateFilter::of(&scope), false, &clock).await,
        Command::State {
            action: StateAction::Reset(scope),
        } => commands::state(&scope.config, StateFilter::of(&scope), true, &clock).await,
        Command::State {
            action:
                action @ (StateAction::DeadLetters { .. }
                | StateAction::Discard(_)
                | StateAction::Replay(_)),
        } => dead_letters(action, &clock).await,
        Command::State {
            action:
                StateAction::Copy {
                    config,
                    from,
                    to,
                    directory,
                    force,
                },
        } => {
            let args = commands::CopyArgs {
                from,
                to,
                directory,
                force,
            };
            commands::state_copy(&config, args, &clock).await
        }
        Command::Backfill {
            config,
            service,
            input,
            from,
            to,
            log_format,
        } => {
            let args = BackfillArgs {
                service: &service,
                input: input.as_deref(),
                from: &from,
                to: to.as_deref(),
            };
            commands::backfill(&config, args, log_format, clock).await
        }
        command @ Command::Audit { .. } => audit(command, clock).await,
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
            Ok(commands::demo(args, log_format, clock).await)
        }
    }
}
