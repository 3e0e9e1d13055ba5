//! The command line (design.md "CLI"). Runtime flags only; everything else is in the config.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "isolation-collector",
    version,
    about = "Collects Proofpoint Isolation usage data and delivers every event, once, to Devo and other outputs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the collector (a daemon unless --once). SIGHUP reloads the config in the daemon.
    Run {
        /// The YAML config file (Devo's layout).
        #[arg(long, env = "CONFIG_FILE")]
        config: PathBuf,
        /// Run one catch-up cycle per service, then exit (0 when everything was delivered).
        #[arg(long)]
        once: bool,
        /// Keep the state in memory only.
        #[arg(long)]
        no_save_state: bool,
        /// Reload the config when it changes (the file and its inputs_dir, read every 2 s), as
        /// SIGHUP does.
        #[arg(long, conflicts_with = "once")]
        watch_config: bool,
        /// Refuse to start (exit 64) when any input block of the config is invalid; without it,
        /// the valid inputs start and each invalid one's problems are logged.
        #[arg(long)]
        strict: bool,
        /// Log lines as Devo's text lines or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check the config (every problem at once), the outputs and each service's API key.
    Validate {
        #[arg(long, env = "CONFIG_FILE")]
        config: PathBuf,
        /// Log lines as Devo's text lines or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Show what a running daemon is doing, asked of its metrics listener (GET /status): one
    /// line per input and service, failing ones first, with the reason (masked), the
    /// checkpoint's lag, the events delivered in the last minute and hour, the last audit and
    /// the lease holder.
    ///
    /// Exit status: 0 when no line is failing, 2 when any line is failing, 1 when the daemon
    /// cannot be reached (or answers something else), 64 for bad usage.
    #[command(group(clap::ArgGroup::new("daemon").required(true).args(["config", "address"])))]
    Status {
        /// The daemon's config file: its globals.metrics_listen is asked.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The daemon's metrics listener, instead of the config's (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "HOST:PORT")]
        address: Option<String>,
        /// Redraw every SECONDS (default 2), in place on a terminal like top, until Ctrl-C.
        #[arg(
            long,
            value_name = "SECONDS",
            num_args = 0..=1,
            default_missing_value = "2",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        watch: Option<u64>,
        /// Print the /status JSON document as the daemon serves it (one per line with --watch).
        #[arg(long)]
        json: bool,
    },
    /// Show or reset the persisted state.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Re-deliver a past range (within the API's 30-day retention) to the outputs, without
    /// touching the live state. File outputs write to `<directory>/backfill/<table>.jsonl`.
    Backfill {
        #[arg(long, env = "CONFIG_FILE")]
        config: PathBuf,
        /// browser_and_email_isolation or url_isolation.
        #[arg(long)]
        service: String,
        /// The input (its `id`); needed when the config has several.
        #[arg(long)]
        input: Option<String>,
        /// Start of the range (UTC; e.g. 2026-11-20T00:00:00Z or 2026-11-20).
        #[arg(long)]
        from: String,
        /// End of the range (UTC; default: now).
        #[arg(long)]
        to: Option<String>,
        /// Log lines as Devo's text lines or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Compare, per hour of event time, the events the API holds now with those delivered
    /// (exit 0: complete, 2: events missing, 1: the API could not be asked).
    Audit {
        #[arg(long, env = "CONFIG_FILE")]
        config: PathBuf,
        /// Only this input (its `id`); default: every enabled input.
        #[arg(long)]
        input: Option<String>,
        /// Only this service (browser_and_email_isolation or url_isolation).
        #[arg(long)]
        service: Option<String>,
        /// Start of the range (UTC; e.g. 2026-11-20T00:00:00Z; default: a day before --to).
        #[arg(long)]
        from: Option<String>,
        /// End of the range (UTC; default and latest: the last hour the collection settled).
        #[arg(long)]
        to: Option<String>,
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Deliver the events the hours that miss some lack (never one the outputs have), then
        /// audit those hours again.
        #[arg(long)]
        repair: bool,
        /// With --repair: first forget the marks of repairs that began sending to an output that
        /// cannot take events back and never committed (once you checked that output: the
        /// repair then sends those hours' missing events again).
        #[arg(long, requires = "repair")]
        clear_in_flight: bool,
        /// Log lines as Devo's text lines or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// See it work without a vendor key: the built-in API simulator, the collector, and events
    /// written to the console and to files (`demo/`). Run it twice: the second run delivers nothing.
    // Absent from a build without the default feature `demo` (the Docker image).
    #[cfg(feature = "demo")]
    Demo {
        /// Events per service in the simulator.
        #[arg(long, default_value_t = 200)]
        events: usize,
        /// Where the demo writes its state and output files.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        /// Keep running (new events keep arriving) until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Do not print events to the console (files only).
        #[arg(long)]
        quiet: bool,
        /// Log lines as Devo's text lines or as JSON objects.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

/// The states `state show`, `state reset` and `state dead-letters` act on: the config's, of
/// one service or both, of one input or all.
#[derive(clap::Args, Debug)]
pub struct StateScope {
    #[arg(long, env = "CONFIG_FILE")]
    pub config: PathBuf,
    /// Only this service (browser_and_email_isolation or url_isolation).
    #[arg(long)]
    pub service: Option<String>,
    /// Only this input (its `id`); default: every input of the config.
    #[arg(long)]
    pub input: Option<String>,
}

/// The dead letters `state discard` and `state replay` act on.
#[derive(clap::Args, Debug)]
pub struct LetterChoice {
    #[arg(long, env = "CONFIG_FILE")]
    pub config: PathBuf,
    /// The service whose letters are chosen.
    #[arg(long)]
    pub service: String,
    /// Only this input (its `id`); default: every input of the config.
    #[arg(long)]
    pub input: Option<String>,
    /// The letters (ids from `state dead-letters`).
    #[arg(
        long = "id",
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,
    /// Every letter of the service.
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// Print each service's state.
    Show(StateScope),
    /// Delete each service's state: the next run starts again from start_time_in_utc.
    Reset(StateScope),
    /// List the events set aside (dead letters) instead of delivered, with their id, table,
    /// output, position and reason.
    DeadLetters {
        #[command(flatten)]
        scope: StateScope,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Also write each letter's raw bytes (the vendor's, unobfuscated) to FILE, one per
        /// line; the file is created with mode 0600.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Remove dead letters once handled (with Redis under the service's lease).
    Discard(LetterChoice),
    /// Deliver dead letters that one output refused to that output again (once its receiver
    /// is fixed), and discard each one it confirms.
    Replay(LetterChoice),
    /// Copy each enabled service's state between a state directory and the config's Redis
    /// (migration: stop the collector, copy, start it on the other persistence).
    Copy {
        #[arg(long, env = "CONFIG_FILE")]
        config: PathBuf,
        /// Where the states are read: filesystem or redis.
        #[arg(long, value_enum)]
        from: StoreKind,
        /// Where they are written: redis or filesystem.
        #[arg(long, value_enum)]
        to: StoreKind,
        /// The filesystem side's state directory.
        #[arg(long, default_value = "state")]
        directory: PathBuf,
        /// Overwrite a state the target already holds.
        #[arg(long)]
        force: bool,
    },
}

/// The two sides of `state copy`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A state directory (`--directory`).
    Filesystem,
    /// The config's `globals.persistence` (type redis).
    Redis,
}
