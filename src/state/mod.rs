//! Persistence: one versioned JSON document per (input id, service), in a store.
//!
//! The stores ([`StateStore`]): a directory of files ([`filesystem`], atomic writes), a Redis
//! ([`redis`], a key per state and a hash of its dedup memory beside it, every write fenced by
//! the service's lease), or memory. The document and its rules are the same in each (but for
//! where Redis keeps the dedup memory, version 4 below), and live here.
//!
//! Loading follows Devo's `pre_pull` steps and log lines: read, default if empty, *upgrade*
//! older `@persistence_version`s, *corrections* (clamp to the API's retention, undo a checkpoint
//! from a clock that ran ahead), and *reset* when the configured `start_time_in_utc` changed
//! (Devo's "Restart the persistence").
//!
//! Versions: 1 is Devo's document; 2 added the dedup memory and the outputs' positions (a file
//! output's committed byte length, by output name and table); 3 gives each position the file it
//! is of (its canonical path, device and inode), because a length applied to another file cuts
//! that file's lines. A version-2 position is read as a length of no known file: the file
//! output applies it to the file it writes now (what version 2 did), and only where it ends a
//! line of that file (see [`crate::output::file`]). A build that understands only version 2
//! refuses a version-3 document ("newer than this build understands") instead of cutting a file
//! with it.
//!
//! Version 4 is Redis's only: version 3 without its dedup memory, which is kept beside the
//! document in a hash of its own (see [`redis`]), so that a commit writes what changed instead
//! of a document that grows with the lookback (about 29 MB at 100 events/s with the default
//! 35 minutes). A version-3 document in Redis is read, and written as version 4 at the next
//! commit. Files stay version 3 (one file, written whole by an atomic rename). A build that
//! understands only version 3 refuses a version-4 document instead of reading it without its
//! dedup memory (which would deliver the lookback's events again).

pub mod dead_letter;
pub mod digests;
pub mod filesystem;
pub mod redis;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::component::Healthcheck;
use crate::config::Persistence;
use crate::output::Position;
use crate::pipeline::dedup::{DedupMemory, DedupRecord};
use crate::pipeline::ledger::{AuditLedger, LedgerDoc};
use crate::pipeline::window::Cursors;
use crate::timestamp::{format_iso, parse_user_time, Millis};

/// The version this build writes to files (and names in the logs' state summaries).
pub const PERSISTENCE_VERSION: u32 = 3;

/// After a wipe of the Redis store, how many lease TTLs a missing state is left to the replica
/// that held it last (`crate::puller::checkpoint`): long enough for it to see the lease free
/// (every TTL/10) and take it, short enough that a service nobody remembers is not idle long.
pub const WIPE_GRACE_TTLS: u32 = 3;

/// The version this build writes to Redis: [`PERSISTENCE_VERSION`]'s document with the dedup
/// memory kept beside it.
pub const REDIS_PERSISTENCE_VERSION: u32 = 4;

/// The state of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceState {
    /// `start_time_in_utc` as configured when the state was created (`None`: the default).
    pub start_time_in_utc: Option<String>,
    pub cursors: Cursors,
    pub dedup: DedupMemory,
    /// Committed positions by output name, then table (file output: byte length and file).
    pub positions: BTreeMap<String, BTreeMap<String, Position>>,
    /// Delivered events per hour of event time, for `audit` (`pipeline::ledger`).
    pub ledger: AuditLedger,
}

impl ServiceState {
    pub fn new(start_time_in_utc: Option<String>, start: Millis) -> Self {
        ServiceState {
            start_time_in_utc,
            cursors: Cursors::new(start),
            dedup: DedupMemory::new(),
            positions: BTreeMap::new(),
            ledger: AuditLedger::tracking_from(start),
        }
    }

    /// A one-line summary for logs (the dedup memory is counted, not listed).
    pub fn summary(&self) -> String {
        format!(
            "{{'start_time_in_utc': {:?}, 'checkpoint_in_utc': '{}', 'settled_until_in_utc': '{}', 'last_sweep_in_utc': {}, 'dedup_entries': {}, 'output_positions': {:?}, '@persistence_version': {}}}",
            self.start_time_in_utc.as_deref().unwrap_or("default"),
            format_iso(self.cursors.checkpoint),
            format_iso(self.cursors.settled),
            self.cursors.last_sweep.map_or("None".to_owned(), |t| format!("'{}'", format_iso(t))),
            self.dedup.len(),
            self.position_lengths(),
            PERSISTENCE_VERSION,
        )
    }
}

impl ServiceState {
    /// The positions' lengths, by output and table (the summary's `output_positions`).
    fn position_lengths(&self) -> BTreeMap<&str, BTreeMap<&str, u64>> {
        self.positions
            .iter()
            .map(|(output, tables)| {
                let lengths = tables.iter().map(|(t, p)| (t.as_str(), p.length));
                (output.as_str(), lengths.collect())
            })
            .collect()
    }
}

/// The document on disk: version 3 with `P` = [`Position`], version 2 with `P` = `u64` (a
/// length of no known file).
#[derive(Serialize, Deserialize)]
struct Doc<P> {
    #[serde(rename = "@persistence_version")]
    version: u32,
    start_time_in_utc: Option<String>,
    checkpoint_in_utc: String,
    settled_until_in_utc: String,
    #[serde(default)]
    last_sweep_in_utc: Option<String>,
    /// `[date_ms | null, sha256 hex, copies, expires_ms]`; absent in version 4 (kept beside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dedup: Option<Vec<DedupRecord>>,
    #[serde(default = "BTreeMap::new")]
    output_positions: BTreeMap<String, BTreeMap<String, P>>,
    /// The audit ledger; absent in documents of builds before it (tracked from the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit: Option<LedgerDoc>,
}

/// Why a state document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state {location} is not valid: {reason}; move it away to start again from start_time_in_utc")]
    Invalid {
        location: String,
        #[source]
        reason: InvalidState,
    },
    /// Redis did not answer (down, unreachable, timed out, loading): worth retrying.
    #[error("Redis at {address} is unreachable: {reason}; check that it runs and that globals.persistence.config.host and port point at it")]
    Unavailable {
        address: String,
        #[source]
        reason: RedisCause,
    },
    /// Redis answered but refused us (credentials, database): an operator must fix `fix`.
    #[error("Redis at {address} refused the connection: {reason}; {fix}")]
    Refused {
        address: String,
        #[source]
        reason: RedisCause,
        fix: &'static str,
    },
    /// Another process holds the filesystem state directory's lock ([`filesystem::lock`]).
    #[error("the state directory {} is in use by another collector (pid {}); two processes on one state would deliver the same events twice. Stop that process first (a daemon catches up by itself: no `run --once` is needed beside it), or give this one its own globals.persistence.config.directory_name", directory.display(), holder.map_or("unknown".to_owned(), |p| p.to_string()))]
    Locked {
        directory: PathBuf,
        /// The holder's pid, as it wrote it in the lock file.
        holder: Option<u32>,
    },
    /// A fenced write or a renewal was refused: another process holds the service's lease.
    #[error("the lease is held by {}", holder_name(holder))]
    LeaseLost { holder: String },
    /// The state is missing from a store that was wiped, and this process does not hold it (or
    /// holds an older one than another replica may): left to the replica that held it last.
    #[error("the state at {location} is missing since Redis was wiped, and this process did not hold it last; the lease is left for {:.0} s to a replica that holds it in memory", remaining.as_secs_f64())]
    LeftToOthers {
        location: String,
        remaining: std::time::Duration,
    },
}

/// What is wrong with a state document: the cause of [`StateError::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum InvalidState {
    /// It is not JSON, or not a state document of its version.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// One of its times does not parse.
    #[error("`{0}` is not a time")]
    NotATime(String),
    /// A version-4 document read without the dedup memory kept beside it.
    #[error("a version-4 document keeps its dedup memory beside it, in Redis; read it there (`state copy --from redis --to filesystem` writes a version-3 file)")]
    DedupNotBeside,
    /// A version this build does not know.
    #[error("@persistence_version {0} is newer than this build understands ({REDIS_PERSISTENCE_VERSION}); upgrade the collector")]
    TooNew(u64),
    /// This many of its dedup records are malformed.
    #[error("{0} dedup record(s) are malformed")]
    MalformedDedup(usize),
    /// A bucket of the dedup memory kept beside a version-4 document is not JSON records.
    #[error("the dedup bucket {field} is not valid: {source}")]
    DedupBucket {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why Redis could not be used: the cause of [`StateError::Unavailable`] and
/// [`StateError::Refused`].
#[derive(Debug, thiserror::Error)]
pub enum RedisCause {
    /// The Redis client's error: the server's answer, or why it could not be reached.
    #[error(transparent)]
    Client(#[from] ::redis::RedisError),
    /// The `ca` file (globals.persistence.config.ca) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Ours, no underlying error: the lease's renewals came back too late to deliver on.
    #[error("two renewals in a row were answered after the lease's validity had run out (is the process being paused, or the machine suspended?)")]
    LateRenewals,
}

impl StateError {
    /// Whether this is the lease's refusal (stop pulling and stand by).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StateError::LeaseLost { .. })
    }

    /// Whether the store did not answer (retry soon).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StateError::Unavailable { .. })
    }

    /// How long the service is left to another replica, if that is why this failed.
    pub fn left_to_others(&self) -> Option<std::time::Duration> {
        match self {
            StateError::LeftToOthers { remaining, .. } => Some(*remaining),
            _ => None,
        }
    }
}

/// A lease holder as logs name it; an empty one is a lease that expired.
pub fn holder_name(holder: &str) -> &str {
    if holder.is_empty() {
        "nobody (it expired)"
    } else {
        holder
    }
}

/// This process's name among the replicas (sharding): `<hostname>:<pid>`, as its lease tokens
/// start.
pub fn replica_name() -> String {
    let host = gethostname::gethostname();
    format!("{}:{}", host.to_string_lossy(), std::process::id())
}

/// A new lease token: `<hostname>:<pid>:<random hex>`, which names the holder in logs (the
/// host and process) and tells two tenures of one process apart (the random part).
pub fn lease_token() -> String {
    format!("{}:{:016x}", replica_name(), rand::random::<u64>())
}

/// The replica a lease token names (`<hostname>:<pid>`, its [`lease_token`] minus the random
/// part); `None` for the empty holder (nobody: the lease expired).
pub fn replica_of(token: &str) -> Option<&str> {
    match token.rsplit_once(':') {
        _ if token.is_empty() => None,
        Some((replica, _)) => Some(replica),
        None => Some(token),
    }
}

/// Encodes a state as the current document version.
pub fn encode(state: &ServiceState) -> Vec<u8> {
    encode_as(state, PERSISTENCE_VERSION, Some(state.dedup.to_records()))
}

/// Encodes a state as a version-4 document: without the dedup memory, which the caller keeps
/// beside it (Redis).
pub fn encode_without_dedup(state: &ServiceState) -> Vec<u8> {
    encode_as(state, REDIS_PERSISTENCE_VERSION, None)
}

fn encode_as(state: &ServiceState, version: u32, dedup: Option<Vec<DedupRecord>>) -> Vec<u8> {
    let doc = Doc {
        version,
        start_time_in_utc: state.start_time_in_utc.clone(),
        checkpoint_in_utc: format_iso(state.cursors.checkpoint),
        settled_until_in_utc: format_iso(state.cursors.settled),
        last_sweep_in_utc: state.cursors.last_sweep.map(format_iso),
        dedup,
        output_positions: state.positions.clone(),
        audit: Some(state.ledger.to_doc()),
    };
    let mut v = serde_json::to_vec_pretty(&doc).expect("a state document always serialises");
    v.push(b'\n');
    v
}

/// What loading did, for Devo's pre_pull log lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The document was of an older version and was upgraded from it.
    pub upgraded_from: Option<u32>,
}

/// Decodes any version that holds its dedup memory (1 to 3), running the upgrade steps.
/// `location` names the document in errors (`file state/x.json`, `Redis key ...`).
pub fn decode(bytes: &[u8], location: &str) -> Result<(ServiceState, LoadReport), StateError> {
    decode_beside(bytes, location, None)
}

/// [`decode`], and a version-4 document with `beside`, the dedup memory kept beside it (Redis;
/// a document of an older version holds its own, and `beside` is ignored).
pub fn decode_beside(
    bytes: &[u8],
    location: &str,
    beside: Option<DedupMemory>,
) -> Result<(ServiceState, LoadReport), StateError> {
    let invalid = |reason: InvalidState| StateError::Invalid {
        location: location.to_owned(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.into()))?;
    let version = value
        .get("@persistence_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    let time = |s: &str| {
        parse_user_time(s)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| invalid(InvalidState::NotATime(s.to_owned())))
    };
    match version {
        // Version 1: the shape Devo's collector logs ("Data retrieved from the persistence:
        // {'start_time_in_utc', 'last_event_time_in_utc', 'last_ids', '@persistence_version': 1}").
        // Its ids are another algorithm's hashes, so they cannot seed our dedup; the window edge
        // overlap is re-read and may repeat events of that last second, said in the log.
        1 => {
            #[derive(Deserialize)]
            struct DocV1 {
                start_time_in_utc: Option<String>,
                last_event_time_in_utc: String,
            }
            let doc: DocV1 = serde_json::from_value(value).map_err(|e| invalid(e.into()))?;
            let last = time(&doc.last_event_time_in_utc)?;
            let state = ServiceState {
                start_time_in_utc: doc.start_time_in_utc,
                cursors: Cursors {
                    checkpoint: last,
                    settled: last,
                    last_sweep: None,
                },
                dedup: DedupMemory::new(),
                positions: BTreeMap::new(),
                ledger: AuditLedger::tracking_from(last),
            };
            Ok((
                state,
                LoadReport {
                    upgraded_from: Some(1),
                },
            ))
        }
        // Version 2: the same document, each position a bare length.
        2 => {
            let doc: Doc<u64> = serde_json::from_value(value).map_err(|e| invalid(e.into()))?;
            let state = from_doc(doc, Position::of_length, &invalid)?;
            Ok((
                state,
                LoadReport {
                    upgraded_from: Some(2),
                },
            ))
        }
        3 => {
            let doc: Doc<Position> =
                serde_json::from_value(value).map_err(|e| invalid(e.into()))?;
            Ok((from_doc(doc, |p| p, &invalid)?, LoadReport::default()))
        }
        // Version 4: version 3 with the dedup memory beside the document.
        4 => {
            let Some(dedup) = beside else {
                return Err(invalid(InvalidState::DedupNotBeside));
            };
            let doc: Doc<Position> =
                serde_json::from_value(value).map_err(|e| invalid(e.into()))?;
            let state = ServiceState {
                dedup,
                ..from_doc(doc, |p| p, &invalid)?
            };
            Ok((state, LoadReport::default()))
        }
        v => Err(invalid(InvalidState::TooNew(v))),
    }
}

/// The state a version 2 or 3 document holds, its positions read by `position`.
fn from_doc<P>(
    doc: Doc<P>,
    position: impl Fn(P) -> Position,
    invalid: &dyn Fn(InvalidState) -> StateError,
) -> Result<ServiceState, StateError> {
    let time = |s: &str| {
        parse_user_time(s)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| invalid(InvalidState::NotATime(s.to_owned())))
    };
    let (dedup, bad) = DedupMemory::from_records(doc.dedup.as_deref().unwrap_or_default());
    if bad > 0 {
        return Err(invalid(InvalidState::MalformedDedup(bad)));
    }
    let positions = doc
        .output_positions
        .into_iter()
        .map(|(output, tables)| {
            let tables = tables.into_iter().map(|(t, p)| (t, position(p)));
            (output, tables.collect())
        })
        .collect();
    let checkpoint = time(&doc.checkpoint_in_utc)?;
    let ledger = match &doc.audit {
        Some(l) => AuditLedger::from_doc(l)
            .ok_or_else(|| invalid(InvalidState::NotATime(l.tracked_from_in_utc.clone())))?,
        // Written before the ledger: everything after the checkpoint is still to deliver.
        None => AuditLedger::tracking_from(checkpoint),
    };
    Ok(ServiceState {
        start_time_in_utc: doc.start_time_in_utc,
        cursors: Cursors {
            checkpoint,
            settled: time(&doc.settled_until_in_utc)?,
            last_sweep: doc.last_sweep_in_utc.as_deref().map(time).transpose()?,
        },
        dedup,
        positions,
        ledger,
    })
}

/// The corrections step. Returns what was changed, for the log.
pub fn correct(state: &mut ServiceState, now: Millis, earliest: Millis) -> Vec<String> {
    let mut changes = Vec::new();
    let c = &mut state.cursors;
    if c.checkpoint > now + 60_000 {
        changes.push(format!(
            "the checkpoint {} is in the future (the clock was ahead or went back); moved to now, {}",
            format_iso(c.checkpoint),
            format_iso(now)
        ));
        c.checkpoint = now;
    }
    if c.settled > c.checkpoint {
        c.settled = c.checkpoint;
    }
    if c.last_sweep.is_some_and(|t| t > now) {
        c.last_sweep = None;
    }
    if c.settled < earliest {
        changes.push(format!(
            "the state starts at {}, beyond the API's 30-day retention: events before {} are no longer available and are skipped",
            format_iso(c.settled),
            format_iso(earliest)
        ));
        c.settled = earliest;
        c.checkpoint = c.checkpoint.max(earliest);
        state
            .dedup
            .prune(c.settled - crate::pipeline::window::EDGE_OVERLAP);
    }
    changes
}

/// Where states live.
#[derive(Debug)]
pub enum StateStore {
    Filesystem {
        directory: PathBuf,
    },
    Memory(std::sync::Mutex<BTreeMap<String, ServiceState>>),
    /// Boxed: it is far larger than the others, and there is one store per process.
    Redis(Box<redis::RedisStore>),
}

impl StateStore {
    pub fn filesystem(directory: PathBuf) -> Self {
        StateStore::Filesystem { directory }
    }

    pub fn memory() -> Self {
        StateStore::Memory(Default::default())
    }

    /// The state's name of a service: `proofpoint_isolation_<id>_<service>` (the file name
    /// without `.json`; in Redis, the hash tag of its keys).
    pub fn key(input_id: &str, service: &str) -> String {
        format!("proofpoint_isolation_{input_id}_{service}")
    }

    /// Where the state of `key` is kept, for messages.
    pub fn location(&self, key: &str) -> String {
        match self {
            StateStore::Filesystem { directory } => {
                filesystem::path(directory, key).display().to_string()
            }
            StateStore::Memory(_) => "memory".to_owned(),
            StateStore::Redis(r) => r.location(key),
        }
    }

    /// The Redis store, if this is one (it has leases).
    pub fn redis(&self) -> Option<&redis::RedisStore> {
        match self {
            StateStore::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// Loads a state, `Ok(None)` if there is none.
    pub async fn load(&self, key: &str) -> Result<Option<(ServiceState, LoadReport)>, StateError> {
        match self {
            StateStore::Memory(m) => Ok(m
                .lock()
                .expect("state lock")
                .get(key)
                .cloned()
                .map(|s| (s, LoadReport::default()))),
            StateStore::Filesystem { directory } => filesystem::load(directory, key),
            StateStore::Redis(r) => r.load(key).await,
        }
    }

    /// Looks at the Redis store's generation marker (see [`redis::RedisStore::check_generation`]):
    /// the last wipe of the store this process saw, if any (the other stores are never wiped
    /// under a running process unnoticed: `None`).
    pub async fn check_generation(&self) -> Result<Option<redis::Wipe>, StateError> {
        match self {
            StateStore::Redis(r) => r.check_generation().await,
            StateStore::Memory(_) | StateStore::Filesystem { .. } => Ok(None),
        }
    }

    /// Saves a state atomically. In Redis only while `lease` (the token of this process's
    /// tenure) holds the service's lease, checked in the same operation (the fenced write);
    /// the other stores have no leases and ignore it.
    pub async fn save(
        &self,
        key: &str,
        state: &ServiceState,
        lease: Option<&str>,
    ) -> Result<(), StateError> {
        match self {
            StateStore::Memory(m) => {
                m.lock()
                    .expect("state lock")
                    .insert(key.to_owned(), state.clone());
                Ok(())
            }
            StateStore::Filesystem { directory } => filesystem::save(directory, key, state),
            StateStore::Redis(r) => r.save(key, state, lease).await,
        }
    }

    /// Takes the filesystem store's directory lock, held until the returned guard is dropped
    /// (see [`filesystem`]); `None` for the other stores (Redis has leases, memory is this
    /// process's own).
    pub fn lock(&self) -> Result<Option<filesystem::DirectoryLock>, StateError> {
        match self {
            StateStore::Filesystem { directory } => filesystem::lock(directory).map(Some),
            StateStore::Memory(_) | StateStore::Redis(_) => Ok(None),
        }
    }

    /// Deletes a state (`state reset`). Returns whether there was one. In Redis it takes the
    /// lease for the deletion, so a running collector's state is never deleted under it.
    pub async fn reset(&self, key: &str) -> Result<bool, StateError> {
        match self {
            StateStore::Memory(m) => Ok(m.lock().expect("state lock").remove(key).is_some()),
            StateStore::Filesystem { directory } => filesystem::reset(directory, key),
            StateStore::Redis(r) => r.reset(key).await,
        }
    }
}

pub use filesystem::directory_mode_warning;

/// Builds the store `persistence` names (memory only with `no_save_state`) and its health check
/// (see [`crate::component`]): with Redis, that it answers and accepts the credentials (connect,
/// `AUTH`, `SELECT` the database, `PING`); the directory and memory stores have no far end to
/// ask. Nothing connects until the check or the first operation.
pub fn build(
    persistence: &Persistence,
    no_save_state: bool,
) -> Result<(Arc<StateStore>, Healthcheck<StateError>), StateError> {
    let store = Arc::new(StateStore::from_config(persistence, no_save_state)?);
    let checked = store.clone();
    let health = Box::pin(async move {
        match checked.redis() {
            Some(r) => r.check().await,
            None => Ok(()),
        }
    });
    Ok((store, health))
}

impl StateStore {
    /// The store `persistence` names (memory only with `no_save_state`), without its check: the
    /// commands that read or edit states build it so.
    pub fn from_config(persistence: &Persistence, no_save_state: bool) -> Result<Self, StateError> {
        Ok(match (persistence, no_save_state) {
            (Persistence::Filesystem { directory }, false) => {
                StateStore::filesystem(directory.clone())
            }
            (Persistence::Redis(r), false) => {
                StateStore::Redis(Box::new(redis::RedisStore::new(r)?))
            }
            _ => StateStore::memory(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::filesystem::{self, tmp_path};
    use super::*;

    #[test]
    fn a_lease_token_names_its_replica() {
        let token = lease_token();
        assert_eq!(replica_of(&token), Some(replica_name().as_str()));
        assert_eq!(
            replica_of("host-b:202:00ff00ff00ff00ff"),
            Some("host-b:202")
        );
        assert_eq!(replica_of(""), None, "nobody holds an expired lease");
    }

    /// A Redis nobody listens on.
    fn unreachable_redis() -> Persistence {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        Persistence::Redis(crate::config::RedisConfig {
            host: "127.0.0.1".into(),
            port,
            password: None,
            username: None,
            db: 0,
            tls: false,
            ca: None,
            key_prefix: String::new(),
            lease_ttl: std::time::Duration::from_secs(10),
            unpulled_after: None,
            sentinel: None,
        })
    }

    #[tokio::test]
    async fn the_store_is_checked_only_when_its_health_check_is_awaited() {
        let (store, health) = build(&unreachable_redis(), false).unwrap();
        // Built without connecting: the check is what finds Redis unreachable.
        let redis = store.redis().unwrap();
        assert_eq!(redis.failures(), 0);
        let e = health.await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert_eq!(redis.failures(), 1);
        // `--no-save-state`: the state is in memory, with no far end to ask.
        let (store, health) = build(&unreachable_redis(), true).unwrap();
        assert!(matches!(*store, StateStore::Memory(_)));
        health.await.unwrap();
    }
    use crate::event::Event;
    use bytes::Bytes;
    use std::path::Path;

    fn sample() -> ServiceState {
        let mut s = ServiceState::new(Some("2024-06-01T00:00:00Z".into()), 1_717_200_000_000);
        s.cursors.checkpoint = 1_717_300_000_123;
        s.cursors.last_sweep = Some(1_717_300_000_000);
        let events = [
            Event {
                date_ms: 1_717_250_000_000,
                key: [1; 32],
                json: Bytes::from_static(b"{}"),
            },
            Event {
                date_ms: 1_717_250_000_000,
                key: [1; 32],
                json: Bytes::from_static(b"{}"),
            },
        ];
        let plan = s.dedup.plan(&events, 0);
        s.dedup.apply(plan);
        s.positions.entry("local".into()).or_default().insert(
            "t".into(),
            Position {
                length: 42,
                file: Some(crate::output::file::FileIdentity {
                    path: "/srv/out/t.jsonl".into(),
                    device: 2049,
                    inode: 1_234_567,
                }),
            },
        );
        s
    }

    /// A version-2 document's positions are bare lengths: they are read as lengths of no known
    /// file, and the document counts as upgraded (it is written back as version 3).
    #[test]
    fn version_2_positions_are_lengths_of_no_known_file() {
        let v2 = br#"{"@persistence_version": 2, "start_time_in_utc": null, "checkpoint_in_utc": "2024-06-02T00:00:00Z", "settled_until_in_utc": "2024-06-02T00:00:00Z", "output_positions": {"local": {"t": 5997}}}"#;
        let (s, report) = decode(v2, "x").unwrap();
        assert_eq!(report.upgraded_from, Some(2));
        assert_eq!(s.positions["local"]["t"], Position::of_length(5997));
        let v3: serde_json::Value = serde_json::from_slice(&encode(&sample())).unwrap();
        assert_eq!(v3["@persistence_version"], 3);
        assert_eq!(
            v3["output_positions"]["local"]["t"],
            serde_json::json!({"length": 42, "file": {"path": "/srv/out/t.jsonl", "device": 2049, "inode": 1_234_567}})
        );
        assert!(sample()
            .summary()
            .contains("'output_positions': {\"local\": {\"t\": 42}}"));
    }

    /// Redis's version 4 is version 3 without the dedup memory: read with the memory kept
    /// beside it, and refused without it (a file never holds one).
    #[test]
    fn version_4_needs_its_dedup_memory_beside_it() {
        let s = sample();
        let v4 = encode_without_dedup(&s);
        let doc: serde_json::Value = serde_json::from_slice(&v4).unwrap();
        assert_eq!(doc["@persistence_version"], 4);
        assert!(doc.get("dedup").is_none(), "{doc}");
        let (back, report) = decode_beside(&v4, "x", Some(s.dedup.clone())).unwrap();
        assert_eq!((back, report), (s.clone(), LoadReport::default()));
        let e = decode(&v4, "file f.json").unwrap_err().to_string();
        assert!(e.contains("keeps its dedup memory beside it"), "{e}");
        // A version-3 document holds its own memory: one given beside it is not used.
        let (v3, _) = decode_beside(&encode(&s), "x", Some(DedupMemory::new())).unwrap();
        assert_eq!(v3, s);
        let inline: serde_json::Value = serde_json::from_slice(&encode(&s)).unwrap();
        assert_eq!(inline["dedup"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("state");
        assert!(filesystem::load(&store, "k").unwrap().is_none());
        let s = sample();
        filesystem::save(&store, "k", &s).unwrap();
        let (back, report) = filesystem::load(&store, "k").unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(report, LoadReport::default());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(filesystem::path(&store, "k"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode_of(&dir.path().join("state")), 0o700);
            assert_eq!(directory_mode_warning(&dir.path().join("state")), None);
            // An existing directory keeps its mode, with a warning when others can enter.
            let shared = dir.path().join("shared");
            std::fs::create_dir(&shared).unwrap();
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
            filesystem::save(&shared, "k", &s).unwrap();
            assert_eq!(mode_of(&shared), 0o755);
            assert!(directory_mode_warning(&shared)
                .unwrap()
                .contains("has mode 0755: other users can read the states"));
        }
        assert!(filesystem::reset(&store, "k").unwrap());
        assert!(filesystem::load(&store, "k").unwrap().is_none());
    }

    /// A second lock on one directory is refused naming the holder's pid; after the first is
    /// dropped the directory can be locked again.
    #[test]
    fn one_process_at_a_time_holds_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().join("state"));
        let held = store.lock().unwrap().expect("a filesystem store locks");
        // flock locks belong to the open file: a second open in this process is refused too.
        let e = store.lock().unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(e, StateError::Locked { holder: Some(p), .. } if p == pid),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains(&format!("is in use by another collector (pid {pid})")),
            "{e}"
        );
        drop(held);
        assert!(store.lock().unwrap().is_some());
        assert!(StateStore::memory().lock().unwrap().is_none());
    }

    #[test]
    fn a_complete_temp_file_wins_and_a_partial_one_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path();
        let old = ServiceState::new(None, 1_000);
        filesystem::save(store, "k", &old).unwrap();
        let newer = sample();
        let tmp = tmp_path(&filesystem::path(store, "k"));
        std::fs::write(&tmp, encode(&newer)).unwrap();
        assert_eq!(filesystem::load(store, "k").unwrap().unwrap().0, newer);
        assert!(!tmp.exists());
        let bytes = encode(&old);
        std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(filesystem::load(store, "k").unwrap().unwrap().0, newer);
        assert!(!tmp.exists());
    }

    #[test]
    fn devo_shaped_version_1_is_upgraded() {
        let v1 = br#"{"start_time_in_utc": "2023-05-16T00:00:00.000000Z", "last_event_time_in_utc": "2023-05-17T03:01:40.121516Z", "last_ids": ["57bd"], "@persistence_version": 1}"#;
        let (s, report) = decode(v1, "x").unwrap();
        assert_eq!(report.upgraded_from, Some(1));
        assert_eq!(format_iso(s.cursors.checkpoint), "2023-05-17T03:01:40.121Z");
        assert_eq!(s.cursors.settled, s.cursors.checkpoint);
        assert_eq!(
            s.start_time_in_utc.as_deref(),
            Some("2023-05-16T00:00:00.000000Z")
        );
    }

    #[test]
    fn garbage_and_future_versions_are_clear_errors() {
        for (bytes, needle) in [
            (&b"{"[..], "not valid"),
            (br#"{"@persistence_version": 9}"#, "newer than this build"),
            (br#"{"@persistence_version": 2, "checkpoint_in_utc": "soon", "settled_until_in_utc": "x", "start_time_in_utc": null}"#, "not a time"),
        ] {
            let e = decode(bytes, "file f.json").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("f.json"), "{e}");
        }
    }

    #[test]
    fn corrections_clamp_to_retention_and_undo_a_future_checkpoint() {
        let mut s = ServiceState::new(None, 0);
        s.cursors.checkpoint = 10_000_000;
        let changes = correct(&mut s, 5_000_000, 1_000);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(s.cursors.checkpoint, 5_000_000);
        assert_eq!(s.cursors.settled, 1_000);
        let mut fine = sample();
        assert!(correct(&mut fine, 1_717_300_000_123, 0).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_state_round_trips(checkpoint in 0i64..4_000_000_000_000, lag in 0i64..1_000_000_000, sweep in proptest::option::of(0i64..4_000_000_000_000)) {
            let mut s = ServiceState::new(None, checkpoint - lag);
            s.cursors.checkpoint = checkpoint;
            s.cursors.last_sweep = sweep;
            let (back, _) = decode(&encode(&s), "x").unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }
}
