//! The `globals` section: the collector's id and name, persistence, shutdown and statistics
//! periods, the metrics listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;
use crate::yaml_walker::{Cx, Obj};

mod sentinel;
pub use sentinel::SentinelConfig;

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
    /// `max_concurrent_jobs`: the API jobs all services of all inputs together run at once
    /// (`isolation::job_cap`).
    pub max_concurrent_jobs: usize,
    /// `spool_directory` and `spool_max_size_in_mb` (`puller::spool`).
    pub spool: SpoolSettings,
    /// `audit_interval_in_hours`: how often the daemon audits the services it pulls against
    /// the API (`audit::schedule`); `None` (0): never.
    pub audit_interval: Option<Duration>,
}

/// Where the puller spools a large job's events (`spool_directory`) and how big one spool
/// may grow (`spool_max_size_in_mb`); see `puller::spool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolSettings {
    pub directory: PathBuf,
    /// The most bytes one spool file may hold; 0 turns spooling off.
    pub max_bytes: u64,
}

impl SpoolSettings {
    /// Spooling turned off (`spool_max_size_in_mb: 0`): a too-big window is split.
    pub fn off() -> SpoolSettings {
        SpoolSettings {
            directory: std::env::temp_dir(),
            max_bytes: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }
}

/// `spool_max_size_in_mb` when not set.
pub const DEFAULT_SPOOL_MAX_SIZE_MB: u64 = 4096;

/// `window_memory_budget_in_mb` when not set, in MiB: with both services backfilling, the
/// process stays under 32 MiB of peak RSS (docs/performance.md).
pub const DEFAULT_WINDOW_MEMORY_BUDGET_MB: u64 = 16;

/// `globals.max_concurrent_jobs` when not set.
pub const DEFAULT_MAX_CONCURRENT_JOBS: usize = 64;

/// `globals.audit_interval_in_hours` when not set: a daily audit.
pub const DEFAULT_AUDIT_INTERVAL_HOURS: u64 = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// One JSON file per (input id, service) in this directory.
    Filesystem { directory: PathBuf },
    /// Nothing survives a restart (`--no-save-state`, or `type: memory`).
    Memory,
    /// One key per (input id, service) in a Redis, with leases (Devo's `type: redis`).
    Redis(RedisConfig),
}

/// `persistence.type: redis`: Devo's `host`, `port`, `password` and `db`, and ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    /// `password` or the contents of `password_file`; shown only as `****`.
    pub password: Option<Secret>,
    /// A Redis 6 ACL user (`AUTH username password`).
    pub username: Option<String>,
    pub db: i64,
    /// `rediss`: TLS, verified against the system's roots, or against `ca` only.
    pub tls: bool,
    /// A PEM file of the CA to trust (TLS only), resolved against the config's directory.
    pub ca: Option<PathBuf>,
    /// Put before every key (`<prefix>{proofpoint_isolation_<id>_<service>}:state`).
    pub key_prefix: String,
    /// How long a lease lives without being renewed.
    pub lease_ttl: Duration,
    /// How long a service may go without a replica pulling it healthily before every replica
    /// reports it (`unpulled_after_in_seconds`; `None`: [`RedisConfig::unpulled_after`]'s default).
    pub unpulled_after: Option<Duration>,
    /// `sentinels`: the master is the one these name (`host` and `port` are then not set).
    pub sentinel: Option<Box<SentinelConfig>>,
}

impl RedisConfig {
    /// `host:port`, the only way the server is named in logs and errors; with sentinels,
    /// `<master_name> via sentinels <host:port>,...` (the master's address changes at a failover).
    pub fn address(&self) -> String {
        if let Some(s) = &self.sentinel {
            return s.describe();
        }
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The bound after which a service nobody pulls is reported: `unpulled_after_in_seconds`, or
    /// max(5 min, 3 × the longest request period, 3 × the lease TTL) up to a day. Three periods:
    /// a holder needs three failed cycles to give a lease up, and the next one a period to pull.
    pub fn unpulled_after(&self, longest_period: Duration) -> Duration {
        self.unpulled_after.unwrap_or_else(|| {
            let floor = Duration::from_secs(300).max(self.lease_ttl * 3);
            (longest_period * 3)
                .max(floor)
                .min(Duration::from_secs(24 * 3600))
        })
    }
}

/// `key_prefix` when not set.
pub const DEFAULT_KEY_PREFIX: &str = "isolation-collector:";

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
    let max_concurrent_jobs = g
        .number("max_concurrent_jobs", 1.0, 4096.0, true, cx)
        .map_or(DEFAULT_MAX_CONCURRENT_JOBS, |n| n as usize);
    // Up to the API's 30-day retention: a longer interval would leave hours never audited.
    let audit_interval = g
        .number("audit_interval_in_hours", 0.0, 720.0, true, cx)
        .map_or(DEFAULT_AUDIT_INTERVAL_HOURS, |h| h as u64);
    let audit_interval = (audit_interval > 0).then(|| Duration::from_secs(audit_interval * 3600));
    let spool = spool(&mut g, persistence.as_ref(), cx);
    g.finish(cx);
    Some(Globals {
        spool,
        audit_interval,
        window_memory_budget,
        max_concurrent_jobs,
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

/// `spool_directory` (default: the filesystem persistence's directory's `spool`, else the OS
/// temporary directory) and `spool_max_size_in_mb` (0: off). A directory set here must be
/// writable (it is created if missing); the default one is created when first used.
fn spool(g: &mut Obj<'_>, persistence: Option<&Persistence>, cx: &mut Cx) -> SpoolSettings {
    let max_bytes = g
        .number("spool_max_size_in_mb", 0.0, 1_048_576.0, true, cx)
        .map_or(DEFAULT_SPOOL_MAX_SIZE_MB, |mb| mb as u64)
        * 1024
        * 1024;
    let directory = match g.string("spool_directory", cx) {
        Some(d) => {
            let dir = PathBuf::from(&d);
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| tempfile::tempfile_in(&dir))
            {
                cx.error(
                    &g.path("spool_directory"),
                    format!("{d} is not a writable directory ({e}); give a directory the collector may create files in, or remove the key (default: the state directory's `spool`)"),
                );
            }
            dir
        }
        None => match persistence {
            Some(Persistence::Filesystem { directory }) => directory.join("spool"),
            _ => std::env::temp_dir(),
        },
    };
    SpoolSettings {
        directory,
        max_bytes,
    }
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
        Some("redis") => {
            let c = p.required_map(
                "config",
                "the redis persistence needs at least `host` (e.g. `config: {host: redis, port: 6379}`)",
                cx,
            )?;
            redis_config(c, cx).map(Persistence::Redis)
        }
        Some(other) => {
            cx.error(
                &p.path("type"),
                format!("`{other}` is not supported; use `filesystem`, `redis` or `memory`"),
            );
            None
        }
        None => {
            cx.error(
                &p.path("type"),
                "missing; use `filesystem` (with `config.directory_name`), `redis` (with `config.host`) or `memory`".into(),
            );
            None
        }
    }
}

/// `persistence.config` of `type: redis`. Every bad value is its own error (recorded in `cx`,
/// which fails the config); the password never appears in one.
fn redis_config(mut c: Obj<'_>, cx: &mut Cx) -> Option<RedisConfig> {
    let sentinel = sentinel::parse(&mut c, cx).map(Box::new);
    let host = c.string("host", cx).unwrap_or_else(|| "localhost".into());
    if host.trim().is_empty() || host.contains(char::is_whitespace) {
        cx.error(
            &c.path("host"),
            format!("`{host}` is not a host name; write the Redis server's name or IP, e.g. `127.0.0.1`"),
        );
    }
    let port = c.number("port", 1.0, 65535.0, true, cx).map(|n| n as u16);
    let password = secret(&mut c, ["password", "password_file"], cx);
    let username = c.string("username", cx).filter(|u| !u.is_empty());
    let db = c
        .number("db", 0.0, i32::MAX as f64, true, cx)
        .map(|n| n as i64);
    let tls = c.boolean("tls", false, cx);
    let ca = c.string("ca", cx).map(|name| {
        let path = PathBuf::from(&name);
        if path.is_absolute() {
            path
        } else {
            cx.base_dir.join(path)
        }
    });
    if let Some(ca) = &ca {
        if !tls {
            cx.error(
                &c.path("ca"),
                "is only used with `tls: true`; set `tls: true` or remove `ca`".into(),
            );
        } else if let Err(e) = std::fs::read(ca) {
            cx.error(&c.path("ca"), format!("cannot read {}: {e}; give the PEM file of the CA that signed the Redis server's certificate", ca.display()));
        }
    }
    let key_prefix = c
        .string("key_prefix", cx)
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    if key_prefix.contains(['{', '}']) {
        cx.error(
            &c.path("key_prefix"),
            format!("`{key_prefix}` holds `{{` or `}}`, which would change the keys' Redis Cluster hash tag; remove them"),
        );
    }
    let ttl = c.number("lease_ttl_in_seconds", 1.0, 3600.0, false, cx);
    let unpulled_after = c.number("unpulled_after_in_seconds", 1.0, 86400.0, false, cx);
    if let (Some(after), ttl) = (unpulled_after, ttl.unwrap_or(30.0)) {
        if after <= ttl {
            cx.error(
                &c.path("unpulled_after_in_seconds"),
                format!("{after} s is not more than lease_ttl_in_seconds ({ttl} s): a hand-over alone leaves a service unpulled for up to a TTL, so every hand-over would be reported; raise it above the TTL"),
            );
        }
    }
    c.finish(cx);
    // A bad value was recorded in `cx`, which fails the whole config.
    Some(RedisConfig {
        host,
        port: port.unwrap_or(6379),
        password,
        username,
        db: db.unwrap_or(0),
        tls,
        ca,
        key_prefix,
        lease_ttl: ttl.map_or(Duration::from_secs(30), Duration::from_secs_f64),
        unpulled_after: unpulled_after.map(Duration::from_secs_f64),
        sentinel,
    })
}

/// `password` or `password_file` (one of them, or neither; `keys` names them: the Redis's or
/// the sentinels'); never shown in an error.
fn secret(c: &mut Obj<'_>, keys: [&str; 2], cx: &mut Cx) -> Option<Secret> {
    let [key, file_key] = keys;
    let inline = c.string(key, cx);
    let file = c.string(file_key, cx);
    let password = match (inline, file) {
        (Some(_), Some(_)) => {
            cx.error(
                &c.path(key),
                format!("give either `{key}` or `{file_key}`, not both"),
            );
            return None;
        }
        (Some(p), None) => p,
        (None, Some(f)) => {
            let bytes = cx.read_secret_file(&c.path(file_key), &f)?;
            match String::from_utf8(bytes) {
                Ok(p) => p,
                Err(_) => {
                    cx.error(
                        &c.path(file_key),
                        format!("{f} is not UTF-8 text; it must hold the password alone"),
                    );
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    if password.is_empty() {
        cx.error(
            &c.path(key),
            "is empty; remove it (no password) or set it, e.g. \"${REDIS_PASSWORD}\"".into(),
        );
        return None;
    }
    Some(Secret::new(password))
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
