//! The filesystem store: one `<key>.json` file per (input id, service) in a directory.
//!
//! Written atomically: a temp file beside the target, `fsync`, `rename`, then `fsync` of the
//! directory, so that after a crash at any instant the file is either the old state or the new
//! one. A leftover temp file that parses completely is a newer state whose rename was cut short
//! (its batch was already confirmed), so it wins; a partial one is discarded. Files are mode 0600
//! and a directory this creates is 0700, both set explicitly so that no umask widens or narrows
//! them: they hold no secret, but they do hold event dates and hashes. An existing directory
//! keeps its mode; [`directory_mode_warning`] says when others can read it.
//!
//! One process at a time: [`lock`] takes an exclusive `flock` on `collector.lock` in the
//! directory, held for the process's life (the kernel drops it when the process ends, however it
//! ends), with the holder's pid written in the file for the next one's error. Two processes on
//! one state (a `run --once` beside the daemon) would both read the same checkpoint and deliver
//! the same windows, and each would cut the other's file lines on resume. `state show` reads
//! without the lock; `run`, `demo`, `state reset` and `state copy` take it.
//!
//! Synchronous: a state is a few kilobytes, and the caller (one service's task) has nothing to
//! do until its write is durable.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{decode, encode, LoadReport, ServiceState, StateError};

/// The state file of `key` in `directory`: `<key>.json`.
pub fn path(directory: &Path, key: &str) -> PathBuf {
    directory.join(format!("{key}.json"))
}

/// Loads a state, `Ok(None)` if there is none; a complete temp file left by a crash wins.
pub fn load(directory: &Path, key: &str) -> Result<Option<(ServiceState, LoadReport)>, StateError> {
    let path = path(directory, key);
    let tmp = tmp_path(&path);
    if let Ok(bytes) = std::fs::read(&tmp) {
        match decode(&bytes, &file_location(&tmp)) {
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
        Ok(bytes) => decode(&bytes, &file_location(&path)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// The lock file in a state directory.
pub const LOCK_FILE: &str = "collector.lock";

/// An exclusive lock on a state directory; released when dropped (or the process ends).
#[derive(Debug)]
pub struct DirectoryLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock on `directory` (created, mode 0700, if missing), without waiting:
/// [`StateError::Locked`], naming the holder's pid, when another process holds it.
pub fn lock(directory: &Path) -> Result<DirectoryLock, StateError> {
    use rustix::fs::{flock, FlockOperation};
    use std::io::{Read, Seek};
    let path = directory.join(LOCK_FILE);
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    create_directory(directory).map_err(|source| StateError::Io {
        action: "create directory",
        path: directory.to_owned(),
        source,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io("open"))?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e != rustix::io::Errno::WOULDBLOCK {
            return Err(io("lock")(e.into()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(StateError::Locked {
            directory: directory.to_owned(),
            holder: holder.trim().parse().ok(),
        });
    }
    // The pid only names the holder in the next process's error: the lock is the flock. A
    // full disk must not stop the collector here; its state writes say what is wrong.
    let named = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all());
    if let Err(e) = named {
        tracing::warn!(
            "Holding the lock on {}, but its pid could not be written ({e}): another process will be refused without the holder's pid.",
            path.display()
        );
    }
    Ok(DirectoryLock { _file: file })
}

/// How a state file is named in errors.
fn file_location(path: &Path) -> String {
    format!("file {}", path.display())
}

/// Saves a state atomically.
pub fn save(directory: &Path, key: &str, state: &ServiceState) -> Result<(), StateError> {
    write_atomically(directory, &path(directory, key), &encode(state))
}

/// Deletes a state. Returns whether there was one.
pub fn reset(directory: &Path, key: &str) -> Result<bool, StateError> {
    let path = path(directory, key);
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

pub(super) fn tmp_path(path: &Path) -> PathBuf {
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

pub(super) fn write_atomically(
    directory: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StateError> {
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
/// `test-hooks`, which only the test command names: a release build never reads the variable.
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

    /// Armed only by a non-empty value, and only in a build with `test-hooks` (the test command's);
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
