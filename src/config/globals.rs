//! The `globals` section: the collector's id and name, persistence, shutdown and statistics
//! periods, the metrics listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::walker::{Cx, Obj};

#[derive(Clone, Debug)]
pub struct Globals {
    /// How long a graceful shutdown may take before the process exits anyway.
    pub shutdown_grace_period: Duration,
    /// How often the network outputs log Devo's sender statistics lines.
    pub sender_stats_period: Duration,
    pub id: String,
    pub name: String,
    pub debug: bool,
    pub persistence: Persistence,
    /// `metrics_listen`: where to serve `/metrics`, `/health` and `/ready` (none: no listener).
    pub metrics_listen: Option<SocketAddr>,
    /// `memory_log_period_in_sec`: how often Devo's `[GC]` memory line is logged.
    pub memory_log_period: Duration,
    /// `window_memory_budget_in_mb`: the bytes of events all services together hold in their
    /// windows (see `pipeline::budget`).
    pub window_memory_budget: u64,
}

/// `window_memory_budget_in_mb` when not set, in MiB: with both services backfilling, the
/// process stays under 32 MiB of peak RSS (docs/performance.md).
pub const DEFAULT_WINDOW_MEMORY_BUDGET_MB: u64 = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// One JSON file per (input id, service) in this directory.
    Filesystem { directory: PathBuf },
    /// Nothing survives a restart (`--no-save-state`, or `type: memory`).
    Memory,
}

const DEVO_GLOBALS_IGNORED: &[&str] = &[
    "multiprocessing",
    "devo_sender_threshold_for_using_gzip_in_transport_layer",
    "devo_sender_compression_level",
    "devo_sender_compression_buffer_in_bytes",
    "generate_collector_details",
    "balanced_output",
];

/// Devo's rule for `globals.name` (`^[0-9a-zA-Z-_]+$`): `.`, `#` and spaces become `_` with a
/// warning; any other character is an error.
fn devo_name(path: &str, name: String, cx: &mut Cx) -> String {
    let replaced: String = name
        .chars()
        .map(|c| if matches!(c, '.' | '#' | ' ') { '_' } else { c })
        .collect();
    if replaced.is_empty()
        || !replaced
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        cx.error(
            path,
            format!("`{name}` may only hold letters, digits, `-` and `_` (`.`, `#` and spaces are replaced by `_`)"),
        );
        return name;
    }
    if replaced != name {
        cx.warn(
            path,
            format!("`{name}` holds `.`, `#` or spaces, which Devo does not allow in a collector name; using `{replaced}` instead"),
        );
    }
    replaced
}

pub(super) fn parse_globals(mut g: Obj<'_>, cx: &mut Cx) -> Option<Globals> {
    g.ignored = DEVO_GLOBALS_IGNORED;
    let id = g.string("id", cx).unwrap_or_else(|| "unknown".into());
    let name = g
        .string("name", cx)
        .map(|n| devo_name(&g.path("name"), n, cx))
        .unwrap_or_else(|| "isolation-collector".into());
    let debug = g.boolean("debug", false, cx);
    let persistence = persistence(&mut g, cx);
    let metrics_listen = metrics_listen(&mut g, cx);
    let mut shutdown_grace_period = Duration::from_secs(30);
    let mut sender_stats_period = Duration::from_secs(300);
    let mut memory_log_period = Duration::from_secs(300);
    for (key, range, field) in [
        (
            "shutdown_grace_period_in_seconds",
            1.0..=3600.0,
            &mut shutdown_grace_period,
        ),
        // Devo allows 60..1800; shorter periods are allowed here for tests and debugging.
        (
            "sender_stats_period_in_sec",
            1.0..=1800.0,
            &mut sender_stats_period,
        ),
        (
            "memory_log_period_in_sec",
            10.0..=86400.0,
            &mut memory_log_period,
        ),
    ] {
        *field = g.duration(key, range, *field, cx);
    }
    let window_memory_budget = g
        .number("window_memory_budget_in_mb", 1.0, 65_536.0, true, cx)
        .map_or(DEFAULT_WINDOW_MEMORY_BUDGET_MB, |mb| mb as u64)
        * 1024
        * 1024;
    g.finish(cx);
    Some(Globals {
        window_memory_budget,
        metrics_listen,
        memory_log_period,
        shutdown_grace_period,
        sender_stats_period,
        id,
        name,
        debug,
        persistence: persistence?,
    })
}

/// `persistence`: where the state lives (absent: memory, with a warning).
fn persistence(g: &mut Obj<'_>, cx: &mut Cx) -> Option<Persistence> {
    match g.map("persistence", cx) {
        None => {
            cx.warn(&g.path("persistence"), "not set; state is kept in memory only and a restart collects again from `start_time_in_utc` (set `type: filesystem`)".into());
            Some(Persistence::Memory)
        }
        Some(mut p) => {
            let kind = p.string("type", cx);
            let persistence = persistence_kind(kind.as_deref(), &mut p, cx);
            p.finish(cx);
            persistence
        }
    }
}

/// `persistence.type` and what it needs (`config.directory_name` for `filesystem`).
fn persistence_kind(kind: Option<&str>, p: &mut Obj<'_>, cx: &mut Cx) -> Option<Persistence> {
    match kind {
        Some("filesystem") => {
            match p.map("config", cx).map(|mut c| {
                let d = c.string("directory_name", cx);
                c.finish(cx);
                d
            }) {
                Some(Some(d)) if !d.trim().is_empty() => Some(Persistence::Filesystem {
                    directory: PathBuf::from(d),
                }),
                _ => {
                    cx.error(
                        &p.path("config.directory_name"),
                        "missing; the filesystem persistence needs a directory, e.g. `state`"
                            .into(),
                    );
                    None
                }
            }
        }
        Some("memory") => {
            p.get("config");
            Some(Persistence::Memory)
        }
        Some(other) => {
            cx.error(
                &p.path("type"),
                format!("`{other}` is not supported; use `filesystem` or `memory`"),
            );
            None
        }
        None => {
            cx.error(
                &p.path("type"),
                "missing; use `filesystem` (with `config.directory_name`) or `memory`".into(),
            );
            None
        }
    }
}

/// `metrics_listen`: an IP and a port.
fn metrics_listen(g: &mut Obj<'_>, cx: &mut Cx) -> Option<SocketAddr> {
    let text = g.string("metrics_listen", cx)?;
    match text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            cx.error(
                &g.path("metrics_listen"),
                format!("`{text}` is not a socket address; write an IP and a port, e.g. `127.0.0.1:9464`"),
            );
            None
        }
    }
}
