//! Persistence: one versioned JSON document per (input id, service).
//!
//! Written atomically: a temp file beside the target, `fsync`, `rename`, then `fsync` of the
//! directory, so that after a crash at any instant the file is either the old state or the new
//! one. A leftover temp file that parses completely is a newer state whose rename was cut short
//! (its batch was already confirmed), so it wins; a partial one is discarded. Files are mode 0600
//! and a directory this creates is 0700, both set explicitly so that no umask widens or narrows
//! them: they hold no secret, but they do hold event dates and hashes. An existing directory
//! keeps its mode; [`directory_mode_warning`] says when others can read it.
//!
//! Loading follows Devo's `pre_pull` steps and log lines: read, default if empty, *upgrade*
//! older `@persistence_version`s, *corrections* (clamp to the API's retention, undo a checkpoint
//! from a clock that ran ahead), and *reset* when the configured `start_time_in_utc` changed
//! (Devo's "Restart the persistence").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::dedup::{DedupMemory, DedupRecord};
use crate::pipeline::window::Cursors;
use crate::time::{format_iso, parse_user_time, Millis};

/// The version this build writes.
pub const PERSISTENCE_VERSION: u32 = 2;

/// The state of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceState {
    /// `start_time_in_utc` as configured when the state was created (`None`: the default).
    pub start_time_in_utc: Option<String>,
    pub cursors: Cursors,
    pub dedup: DedupMemory,
    /// Committed positions by output name, then table (file output: byte length).
    pub positions: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ServiceState {
    pub fn new(start_time_in_utc: Option<String>, start: Millis) -> Self {
        ServiceState {
            start_time_in_utc,
            cursors: Cursors::new(start),
            dedup: DedupMemory::new(),
            positions: BTreeMap::new(),
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
            self.positions,
            PERSISTENCE_VERSION,
        )
    }
}

/// The document on disk (version 2).
#[derive(Serialize, Deserialize)]
struct DocV2 {
    #[serde(rename = "@persistence_version")]
    version: u32,
    start_time_in_utc: Option<String>,
    checkpoint_in_utc: String,
    settled_until_in_utc: String,
    #[serde(default)]
    last_sweep_in_utc: Option<String>,
    /// `[date_ms | null, sha256 hex, copies, expires_ms]`
    #[serde(default)]
    dedup: Vec<DedupRecord>,
    #[serde(default)]
    output_positions: BTreeMap<String, BTreeMap<String, u64>>,
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
    #[error("state file {path} is not valid: {reason}; move it away to start again from start_time_in_utc")]
    Invalid { path: PathBuf, reason: String },
}

/// Encodes a state as the current document version.
pub fn encode(state: &ServiceState) -> Vec<u8> {
    let doc = DocV2 {
        version: PERSISTENCE_VERSION,
        start_time_in_utc: state.start_time_in_utc.clone(),
        checkpoint_in_utc: format_iso(state.cursors.checkpoint),
        settled_until_in_utc: format_iso(state.cursors.settled),
        last_sweep_in_utc: state.cursors.last_sweep.map(format_iso),
        dedup: state.dedup.to_records(),
        output_positions: state.positions.clone(),
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

/// Decodes any supported version, running the upgrade steps.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(ServiceState, LoadReport), StateError> {
    let invalid = |reason: String| StateError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let version = value
        .get("@persistence_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    let time = |s: &str| {
        parse_user_time(s)
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| invalid(format!("`{s}` is not a time")))
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
            let doc: DocV1 = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
            let last = time(&doc.last_event_time_in_utc)?;
            let state = ServiceState {
                start_time_in_utc: doc.start_time_in_utc,
                cursors: Cursors { checkpoint: last, settled: last, last_sweep: None },
                dedup: DedupMemory::new(),
                positions: BTreeMap::new(),
            };
            Ok((state, LoadReport { upgraded_from: Some(1) }))
        }
        2 => {
            let doc: DocV2 = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
            let (dedup, bad) = DedupMemory::from_records(&doc.dedup);
            if bad > 0 {
                return Err(invalid(format!("{bad} dedup record(s) are malformed")));
            }
            let state = ServiceState {
                start_time_in_utc: doc.start_time_in_utc,
                cursors: Cursors {
                    checkpoint: time(&doc.checkpoint_in_utc)?,
                    settled: time(&doc.settled_until_in_utc)?,
                    last_sweep: doc.last_sweep_in_utc.as_deref().map(time).transpose()?,
                },
                dedup,
                positions: doc.output_positions,
            };
            Ok((state, LoadReport::default()))
        }
        v => Err(invalid(format!("@persistence_version {v} is newer than this build understands ({PERSISTENCE_VERSION}); upgrade the collector"))),
    }
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
    Filesystem { directory: PathBuf },
    Memory(std::sync::Mutex<BTreeMap<String, ServiceState>>),
}

impl StateStore {
    pub fn filesystem(directory: PathBuf) -> Self {
        StateStore::Filesystem { directory }
    }

    pub fn memory() -> Self {
        StateStore::Memory(Default::default())
    }

    /// The state file name of a service: `proofpoint_isolation_<id>_<service>.json`.
    pub fn key(input_id: &str, service: &str) -> String {
        format!("proofpoint_isolation_{input_id}_{service}")
    }

    pub fn path(&self, key: &str) -> Option<PathBuf> {
        match self {
            StateStore::Filesystem { directory } => Some(directory.join(format!("{key}.json"))),
            StateStore::Memory(_) => None,
        }
    }

    /// Loads a state, `Ok(None)` if there is none.
    pub fn load(&self, key: &str) -> Result<Option<(ServiceState, LoadReport)>, StateError> {
        let path = match self {
            StateStore::Memory(m) => {
                return Ok(m
                    .lock()
                    .expect("state lock")
                    .get(key)
                    .cloned()
                    .map(|s| (s, LoadReport::default())));
            }
            StateStore::Filesystem { .. } => self.path(key).expect("filesystem store has paths"),
        };
        let tmp = tmp_path(&path);
        if let Ok(bytes) = std::fs::read(&tmp) {
            match decode(&bytes, &tmp) {
                Ok(state) => {
                    tracing::warn!(file = %tmp.display(), "Found a complete state written just before a crash; using it.");
                    std::fs::rename(&tmp, &path).map_err(|source| StateError::Io {
                        action: "rename",
                        path: tmp.clone(),
                        source,
                    })?;
                    return Ok(Some(state));
                }
                Err(_) => {
                    tracing::warn!(file = %tmp.display(), "Discarding a partial state left by a crash during a write.");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
        match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Saves a state atomically.
    pub fn save(&self, key: &str, state: &ServiceState) -> Result<(), StateError> {
        match self {
            StateStore::Memory(m) => {
                m.lock()
                    .expect("state lock")
                    .insert(key.to_owned(), state.clone());
                Ok(())
            }
            StateStore::Filesystem { directory } => {
                let path = self.path(key).expect("filesystem store has paths");
                write_atomically(directory, &path, &encode(state))
            }
        }
    }

    /// Deletes a state (`state reset`). Returns whether there was one.
    pub fn reset(&self, key: &str) -> Result<bool, StateError> {
        match self {
            StateStore::Memory(m) => Ok(m.lock().expect("state lock").remove(key).is_some()),
            StateStore::Filesystem { .. } => {
                let path = self.path(key).expect("filesystem store has paths");
                let _ = std::fs::remove_file(tmp_path(&path));
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(source) => Err(StateError::Io {
                        action: "delete",
                        path,
                        source,
                    }),
                }
            }
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates the state directory, and missing parents, with mode 0700; an existing one is left
/// as it is.
fn create_directory(directory: &Path) -> std::io::Result<()> {
    if directory.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(directory)?;
        // The mode given to mkdir(2) is narrowed by the umask; set it exactly.
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    builder.create(directory)
}

/// A warning when an existing state directory lets other users in (group or other bits set).
/// The mode is not changed: the operator may share the directory on purpose.
pub fn directory_mode_warning(directory: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(directory).ok()?.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "The state directory {} has mode {mode:04o}: other users can read the states (event dates and hashes). It is left as it is; `chmod 700 {}` to restrict it (new state directories are created 0700).",
                directory.display(),
                directory.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = directory;
        None
    }
}

fn write_atomically(directory: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| StateError::Io {
            action,
            path: p,
            source,
        }
    };
    create_directory(directory).map_err(io("create directory", directory))?;
    let tmp = tmp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io("create", &tmp))?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io("set the mode of", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    if crash_before_rename_requested() {
        // Test hook: die exactly between the temp-file write and the rename.
        std::process::abort();
    }
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    std::fs::File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", directory))?;
    Ok(())
}

/// The crash test hook: `ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME=1` aborts the process
/// between the temp-file write and the rename. It exists only in a build with the cargo feature
/// `test-hooks`, which only the tests enable: a release build never reads the variable.
#[cfg(feature = "test-hooks")]
fn crash_before_rename_requested() -> bool {
    crash_hook_armed(std::env::var_os("ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME").as_deref())
}

#[cfg(not(feature = "test-hooks"))]
fn crash_before_rename_requested() -> bool {
    false
}

/// Whether the crash hook's variable arms it: only a non-empty value does (an empty line left in
/// an env file must not crash anything).
#[cfg(feature = "test-hooks")]
fn crash_hook_armed(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use bytes::Bytes;

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
        s.positions
            .entry("local".into())
            .or_default()
            .insert("t".into(), 42);
        s
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().join("state"));
        assert!(store.load("k").unwrap().is_none());
        let s = sample();
        store.save("k", &s).unwrap();
        let (back, report) = store.load("k").unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(report, LoadReport::default());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path("k").unwrap())
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
            StateStore::filesystem(shared.clone())
                .save("k", &s)
                .unwrap();
            assert_eq!(mode_of(&shared), 0o755);
            assert!(directory_mode_warning(&shared)
                .unwrap()
                .contains("has mode 0755: other users can read the states"));
        }
        assert!(store.reset("k").unwrap());
        assert!(store.load("k").unwrap().is_none());
    }

    #[test]
    fn a_complete_temp_file_wins_and_a_partial_one_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().to_owned());
        let old = ServiceState::new(None, 1_000);
        store.save("k", &old).unwrap();
        let newer = sample();
        let tmp = tmp_path(&store.path("k").unwrap());
        std::fs::write(&tmp, encode(&newer)).unwrap();
        assert_eq!(store.load("k").unwrap().unwrap().0, newer);
        assert!(!tmp.exists());
        let bytes = encode(&old);
        std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(store.load("k").unwrap().unwrap().0, newer);
        assert!(!tmp.exists());
    }

    #[test]
    fn devo_shaped_version_1_is_upgraded() {
        let v1 = br#"{"start_time_in_utc": "2023-05-16T00:00:00.000000Z", "last_event_time_in_utc": "2023-05-17T03:01:40.121516Z", "last_ids": ["57bd"], "@persistence_version": 1}"#;
        let (s, report) = decode(v1, Path::new("x")).unwrap();
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
            let e = decode(bytes, Path::new("f.json")).unwrap_err().to_string();
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
            let (back, _) = decode(&encode(&s), Path::new("x")).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }

    /// Armed only by a non-empty value, and only in a build with `test-hooks` (the tests' build);
    /// without the feature nothing arms it.
    #[test]
    fn the_crash_hook_needs_the_feature_and_a_value() {
        #[cfg(feature = "test-hooks")]
        {
            assert!(crash_hook_armed(Some("1".as_ref())));
            assert!(!crash_hook_armed(Some("".as_ref())));
            assert!(!crash_hook_armed(None));
        }
        #[cfg(not(feature = "test-hooks"))]
        assert!(!crash_before_rename_requested());
    }
}
