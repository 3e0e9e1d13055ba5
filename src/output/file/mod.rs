//! The `file` output: JSON Lines, one file per Devo table (`<directory>/<table>.jsonl`), each
//! line exactly the JSON that goes to Devo.
//!
//! A batch is confirmed after `fsync`, and the confirmation carries the file's length, which the
//! puller stores with its checkpoint. On resume, bytes past the committed length are the batch a
//! crash interrupted before its checkpoint: they are cut off, and the batch is written again
//! whole. So the file holds every event exactly once, even across `kill -9`.
//!
//! ## Which file a position is of
//!
//! A committed length is only meaningful for the file it was taken from. The directory may
//! change between runs (A, then B, then A again), the layout may switch between the single
//! input's `<directory>/<table>.jsonl` and the tenants' `<directory>/<input id>/<table>.jsonl`,
//! a file may be rotated away and a new one created at its path: cutting the file found now to
//! a length taken from another file would remove its lines. So a position carries its file's
//! [`FileIdentity`] (canonical path, device and inode, as opened), and [`FileOutput::resume`]
//! applies it only to the same file: the same path and inode (not the device, which a network
//! filesystem numbers per mount: replicas sharing a directory must mount it at one path). A position of another file is ignored,
//! said in a warning that names both files: nothing is cut, the file as it is now is the
//! start, and its own position is recorded. (Should the process have stopped between a write
//! and its checkpoint, that batch can then appear twice in this file: a bounded repeat, where
//! applying the wrong length would lose the whole file.)
//!
//! A position from a state written before `@persistence_version` 3 names no file. It is applied
//! to the file this output writes now, as the build that wrote it did, but only where it ends a
//! line of that file (or the file is not longer than it): a length that cuts inside a line is
//! not this file's, and is ignored as above. The next commit stores the identity.
//!
//! With no position to apply, the file's last line may still be partial (a writer stopped in
//! the middle of a line, whose record was never committed): new records must not be glued to
//! it, so it is cut back to its last newline, and the warning says how many bytes of which
//! file went. An uncommitted partial record is never valid data.
//!
//! A write or `fsync` that fails (a full disk, an I/O error) is never confirmed, and it must not
//! leave its bytes behind either: the retry would append after a partial line and confirm a
//! length that no longer ends where the file does. So after a failure the handle is dropped (after
//! a failed `fsync` the page cache no longer says what is on disk), and the file is reopened and
//! cut back to the last confirmed length, checked by reading the length back, before anything
//! else is written. If even that fails, the next `deliver` or `resume` tries it again first. A
//! confirmed batch is therefore exactly the bytes between two confirmed lengths.
//!
//! ## Another writer: two replicas on one shared directory
//!
//! With Redis persistence, replicas may share the directory (a network volume). The lease makes
//! one of them the holder, and the fan-out asks its gate before each output's turn and each
//! resume. But a former holder A, paused past its lease (SIGSTOP, a stalled VM) in the middle of
//! a batch here, wakes inside the batch: between two `writev` calls, or between a check and a
//! write or a cut. Meanwhile B took over, cut the file back to its committed length and appended
//! committed lines. So this output cuts only bytes it can show it wrote itself:
//! - Before a batch, and before each `writev` of it (512 lines), the file's length must be what
//!   this output's writes make it: the confirmed length plus the bytes its own calls reported
//!   written in this batch. Longer means another process appended: nothing more is written,
//!   nothing is cut, the batch fails naming the problem, and so does every later batch until a
//!   resume. Shorter in the middle of a batch means someone cut the file: the batch fails and
//!   nothing is cut either. Shorter before a batch is a truncated or rotated file: the batch is
//!   appended to what is there.
//! - After a failed write or `fsync`, the file is cut back to the batch's start only if it is
//!   not longer than that start plus the bytes this output's calls reported written.
//! - [`FileOutput::resume`] cuts to the committed length whatever it finds. The committed length
//!   is the lease holder's (the state is fenced), and the gate is asked first: this is the one
//!   cut of another writer's bytes that is allowed, and what makes the holder end exact.
//!
//! How a takeover ends: B's next batch finds A's bytes past its own length and fails (after
//! the fan-out's retries), so the window fails; B's resume cuts to B's committed length
//! (removing A's bytes and B's confirmed but uncommitted lines) and B delivers those again: the
//! file ends exact. A, once awake, writes no further `writev` after B's lines (the length check
//! before it sees them; only if B's lines happen to end exactly where A's own would does A's
//! rest follow them, and B's resume removes it the same way), cuts nothing, and its gate refuses
//! its next turn and its next resume. A stale holder can therefore leave bytes of its one batch,
//! which B's resume removes, but never removes a committed line, except in the microseconds
//! between a check and the call it guards: `fstat` then `ftruncate` when cutting back a failed
//! write (B's lines past A's batch start would go), and the gate then `ftruncate` in a resume
//! (B's lines past A's committed length would go). (`fstat` then `writev` only lets one `writev`
//! of A's land after B's lines, removed by B's resume.) The resume cannot instead refuse to cut
//! bytes it did not write: B must cut A's bytes, and locally B and a stale A look alike; only
//! the lease tells them apart, hence the gate. Closing the last microseconds needs a lock
//! shared by the replicas, which a stopped holder would keep, stopping the other: left open.
//!
//! New files are created with the output's `mode` (0640 by default), set explicitly so that the
//! process umask can neither widen nor narrow it. Existing files keep their mode (an operator
//! may have chosen it); a different one is warned about once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod config;

pub use self::config::{FileConfig, DEFAULT_MODE};
use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::{OutputError, Position};
use crate::event::Event;

/// Which file a position is of: the same path, device and inode.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    /// The canonical path (symbolic links and `..` resolved) when the file was opened.
    pub path: String,
    pub device: u64,
    pub inode: u64,
}

impl FileIdentity {
    /// Whether `other` is the same file: the same canonical path and inode. The device is not
    /// compared: a network filesystem numbers its devices per mount, so a replica on another
    /// host sees the file of a shared directory under another device number (and a lease
    /// holder's resume must still cut the former holder's bytes there). A file rotated away and
    /// replaced has another inode; another directory or layout, another path.
    pub fn is_same_file(&self, other: &FileIdentity) -> bool {
        self.path == other.path && self.inode == other.inode
    }
}

impl std::fmt::Display for FileIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (device {}, inode {})",
            self.path, self.device, self.inode
        )
    }
}

/// Writes each table to its own JSON Lines file.
pub struct FileOutput {
    name: String,
    directory: PathBuf,
    /// The mode of files this output creates.
    mode: u32,
    files: HashMap<String, TableFile>,
    /// How each batch's bytes reach its file: straight ([`Direct`]), or, in a test, through a
    /// writer that fails midway or lets another process write between two calls.
    writes: Box<dyn BatchWrites>,
}

/// How a batch's bytes reach its table's file: the seam where a test puts a faulty writer
/// (a disk that fills midway, another process appending between two `writev` calls) in place
/// of the file itself.
trait BatchWrites: Send + Sync {
    /// The writer one batch appended to `file` goes through; the batch checks the file's
    /// length itself, so the writer may write less, fail, or let others write.
    fn writer<'f>(&mut self, file: &'f File) -> Box<dyn Write + 'f>;
}

/// The production writes: straight to the file.
struct Direct;

impl BatchWrites for Direct {
    fn writer<'f>(&mut self, file: &'f File) -> Box<dyn Write + 'f> {
        Box::new(file)
    }
}

/// One table's file.
struct TableFile {
    /// `None` after a failure left the file's contents unknown: it is reopened and cut back to
    /// `len` before the next write.
    file: Option<File>,
    /// The length that ends the last confirmed batch (or the length found on opening, before
    /// any batch). Everything after it is unconfirmed.
    len: u64,
    /// The end of what this output wrote itself (`len` plus a failed batch's bytes): a cut back
    /// after a failure removes nothing if the file is longer, as another process appended.
    own_end: u64,
    /// The file `file` is (or was, when it was last opened).
    identity: FileIdentity,
}

/// Why a batch was not confirmed.
enum BatchError {
    /// This process's write, `fsync` or length read failed.
    Io(std::io::Error),
    /// The file is `len` bytes where this output's own writes make it `own_end`: another
    /// process appended to it or cut it during the batch.
    Foreign { len: u64, own_end: u64 },
}

impl FileOutput {
    pub fn new(name: String, directory: PathBuf, mode: u32) -> Self {
        Self {
            name,
            directory,
            mode,
            files: HashMap::new(),
            writes: Box::new(Direct),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file a table is written to.
    pub fn path_for(directory: &Path, table: &str) -> PathBuf {
        directory.join(format!("{table}.jsonl"))
    }

    fn io_error(&self, action: String, source: std::io::Error) -> OutputError {
        OutputError::Io {
            output: self.name.clone(),
            action,
            source,
        }
    }

    /// Opens (creating it with the output's mode) a table's file for appending.
    fn open_file(&self, path: &Path) -> Result<File, OutputError> {
        std::fs::create_dir_all(&self.directory).map_err(|e| {
            self.io_error(
                format!("creating directory {}", self.directory.display()),
                e,
            )
        })?;
        let opening = |e| self.io_error(format!("opening {}", path.display()), e);
        let mut options = OpenOptions::new();
        // Readable too: a resume reads the bytes around a position (a line's end).
        options.read(true).append(true).mode(self.mode);
        match options.clone().create_new(true).open(path) {
            Ok(file) => {
                // The mode given to open(2) is narrowed by the umask; set it exactly.
                file.set_permissions(std::fs::Permissions::from_mode(self.mode))
                    .map_err(|e| {
                        self.io_error(format!("setting the mode of {}", path.display()), e)
                    })?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                options.open(path).map_err(opening)
            }
            Err(e) => Err(opening(e)),
        }
    }

    /// The table's entry, opening the file on first use (its length is then the file's).
    fn entry(&mut self, table: &str) -> Result<&mut TableFile, OutputError> {
        if !self.files.contains_key(table) {
            let path = Self::path_for(&self.directory, table);
            let file = self.open_file(&path)?;
            let meta = file
                .metadata()
                .map_err(|e| self.io_error(format!("reading {}", path.display()), e))?;
            let mode = meta.permissions().mode() & 0o7777;
            if mode != self.mode {
                tracing::warn!(
                    output = %self.name,
                    file = %path.display(),
                    "The file exists with mode {mode:04o}, not the output's mode {:04o}; it is left as it is (`chmod {:o} {}` to change it).",
                    self.mode,
                    self.mode,
                    path.display()
                );
            }
            let len = meta.len();
            let identity = self.identity(&path, &meta)?;
            self.files.insert(
                table.to_owned(),
                TableFile {
                    file: Some(file),
                    len,
                    own_end: len,
                    identity,
                },
            );
        }
        Ok(self.files.get_mut(table).expect("inserted above"))
    }

    /// The identity of the file just opened at `path`, whose metadata is `meta`.
    fn identity(&self, path: &Path, meta: &std::fs::Metadata) -> Result<FileIdentity, OutputError> {
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| self.io_error(format!("resolving the path of {}", path.display()), e))?;
        Ok(FileIdentity {
            path: canonical.to_string_lossy().into_owned(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// The position that ends at `length` in the table's file.
    fn position(&self, table: &str, length: u64) -> Position {
        Position {
            length,
            file: Some(self.files[table].identity.clone()),
        }
    }

    /// Makes the table's file usable after a failure: reopens it and cuts off whatever is past
    /// the last confirmed length (the remains of the failed write), unless the file is longer
    /// than this output's own writes made it (another process appended: nothing is cut, and the
    /// next batch fails on those bytes until a resume cuts to the committed length).
    fn repair(&mut self, table: &str) -> Result<(), OutputError> {
        if self.entry(table)?.file.is_some() {
            return Ok(());
        }
        self.reopen(table)?;
        self.cut_failed_write(table)
    }

    /// Opens the table's file again after a failure dropped its handle; cuts nothing.
    fn reopen(&mut self, table: &str) -> Result<(), OutputError> {
        let path = Self::path_for(&self.directory, table);
        let file = self.open_file(&path)?;
        let meta = file
            .metadata()
            .map_err(|e| self.io_error(format!("reading {}", path.display()), e))?;
        let identity = self.identity(&path, &meta)?;
        let entry = self.files.get_mut(table).expect("entry() created it");
        entry.file = Some(file);
        entry.identity = identity;
        Ok(())
    }

    /// The second half of [`FileOutput::repair`], on a reopened handle: cuts the remains of a
    /// failed write. If that fails, the handle is dropped again (the next call retries).
    fn cut_failed_write(&mut self, table: &str) -> Result<(), OutputError> {
        let path = Self::path_for(&self.directory, table);
        let entry = self.files.get_mut(table).expect("entry() created it");
        let file = entry.file.take().expect("reopen() opened it");
        let (confirmed, own_end) = (entry.len, entry.own_end);
        let found = file
            .metadata()
            .map_err(|e| self.io_error(format!("reading {}", path.display()), e))?
            .len();
        let len = if found > own_end {
            confirmed
        } else {
            self.cut_back_warned(&path, &file, confirmed, CutReason::FailedWrite)
                .map_err(|e| {
                    self.io_error(
                        format!("removing a failed write from {}", path.display()),
                        e,
                    )
                })?
        };
        let entry = self.files.get_mut(table).expect("entry() created it");
        entry.len = len;
        entry.own_end = len;
        entry.file = Some(file);
        Ok(())
    }

    /// Cuts `file` back to `len` ([`cut_back`]) and warns about what it found there, in the
    /// words of `reason`; returns the file's length now (shorter than `len` if someone else
    /// truncated it: it is never extended).
    fn cut_back_warned(
        &self,
        path: &Path,
        file: &File,
        len: u64,
        reason: CutReason,
    ) -> std::io::Result<u64> {
        let (message, now) = match cut_back(file, len)? {
            CutBack::Unchanged => return Ok(len),
            CutBack::Cut(removed) => (reason.cut(removed), len),
            CutBack::Shorter(actual) => (reason.shorter(actual, len), actual),
        };
        tracing::warn!(output = %self.name, file = %path.display(), "{message}");
        Ok(now)
    }

    /// Cuts off anything written after the committed length, if the position is this file's;
    /// without one (or with another file's), cuts a partial last line (see the module doc).
    /// Returns the position the file is at now.
    pub async fn resume(
        &mut self,
        table: &str,
        committed: Option<Position>,
    ) -> Result<Option<Position>, OutputError> {
        let path = Self::path_for(&self.directory, table);
        // A broken handle is opened again, and cut once it is known what to cut to: the
        // position must be of the file open now.
        let broken = self.entry(table)?.file.is_none();
        if broken {
            self.reopen(table)?;
        }
        let Some(committed) = committed.and_then(|p| self.applicable(table, &path, p)) else {
            if broken {
                self.cut_failed_write(table)?;
            }
            self.cut_partial_line(table, &path)?;
            return Ok(Some(self.position(table, self.files[table].len)));
        };
        // The committed length overrides whatever this process believed, and it may cut what
        // another process appended (see the module doc).
        let entry = self.files.get_mut(table).expect("opened above");
        entry.len = committed;
        entry.own_end = u64::MAX;
        let file = entry.file.take().expect("opened above");
        let len = match self.cut_back_warned(&path, &file, committed, CutReason::Checkpoint) {
            Ok(len) => len,
            Err(e) => {
                // The handle stays dropped: the next call reopens and cuts again.
                return Err(self.io_error(format!("truncating {}", path.display()), e));
            }
        };
        let entry = self.files.get_mut(table).expect("opened above");
        entry.len = len;
        entry.own_end = len;
        entry.file = Some(file);
        Ok(Some(self.position(table, len)))
    }

    /// The committed length to cut the table's file to, if `committed` is this file's: the
    /// same identity, or (a position from before identities) a length that ends a line of it.
    /// Otherwise `None`, with a warning naming both files.
    fn applicable(&self, table: &str, path: &Path, committed: Position) -> Option<u64> {
        let entry = &self.files[table];
        let found = &entry.identity;
        let why = match &committed.file {
            Some(file) if file.is_same_file(found) => return Some(committed.length),
            Some(file) => format!("was committed for another file, {file}"),
            None => match ends_a_line(entry.file.as_ref()?, committed.length) {
                Ok(true) => return Some(committed.length),
                Ok(false) => "names no file (it was stored before positions named their file) and does not end a line of this one".to_owned(),
                Err(e) => format!("names no file and cannot be checked against this one ({e})"),
            },
        };
        tracing::warn!(
            output = %self.name,
            file = %path.display(),
            "The position stored for {table} ({} bytes) {why}, not for {found}: it is not applied. Nothing is cut; {} as it is now is where delivery continues.",
            committed.length,
            path.display()
        );
        None
    }

    /// With no position to apply: cuts the file back to its last newline, so that new records
    /// are not glued to a partial line a writer left, and says what went.
    fn cut_partial_line(&mut self, table: &str, path: &Path) -> Result<(), OutputError> {
        let entry = &self.files[table];
        let file = entry.file.as_ref().expect("opened above");
        let reading = |e| self.io_error(format!("reading {}", path.display()), e);
        let len = file.metadata().map_err(reading)?.len();
        let keep = complete_lines_length(file, len).map_err(reading)?;
        if keep == len {
            return Ok(());
        }
        let now = match cut_back(file, keep) {
            // Someone truncated it meanwhile: nothing of it was cut here.
            Ok(CutBack::Shorter(actual)) => actual,
            Ok(_) => keep,
            Err(e) => {
                let action = format!("cutting a partial line from {}", path.display());
                return Err(self.io_error(action, e));
            }
        };
        if now == keep {
            tracing::warn!(
                output = %self.name,
                file = %path.display(),
                "Removed a partial last line ({} bytes) from {}: no committed position covers it (a writer stopped in the middle of a line); new records start on a line of their own.",
                len - keep,
                path.display()
            );
        }
        let entry = self.files.get_mut(table).expect("opened above");
        entry.len = now;
        entry.own_end = now;
        Ok(())
    }

    /// Appends the batch and fsyncs it. On failure, nothing of the batch is left in the file
    /// (or, if cutting it off failed too, it is cut off before anything else is written), unless
    /// another process appended meanwhile: then nothing is cut (see the module doc).
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<Position>, OutputError> {
        let path = Self::path_for(&self.directory, table);
        self.repair(table)?;
        let start = self.length_before_batch(table, &path)?;
        let entry = self.files.get_mut(table).expect("repair() opened it");
        let file = entry.file.as_ref().expect("repair() opened it");
        // The bytes this output's own write calls reported written, also when the batch fails.
        let mut own = 0;
        // Synchronous: one sequential write plus fsync, which the puller awaits anyway;
        // block_in_place keeps the runtime's other tasks going meanwhile.
        let result = tokio::task::block_in_place(|| {
            let mut out = self.writes.writer(file);
            append_batch(&mut out, file, start, events, &mut own)
        });
        let error = match result {
            Ok(()) => {
                entry.len = start + own;
                entry.own_end = entry.len;
                let length = entry.len;
                return Ok(Some(self.position(table, length)));
            }
            Err(BatchError::Io(source)) => match file.metadata() {
                // Longer than this output's writes make it: another process appended.
                Ok(m) if m.len() > start + own => {
                    entry.own_end = start;
                    Self::foreign_error(&self.name, &path, m.len(), start + own)
                }
                _ => {
                    entry.own_end = start + own;
                    self.io_error(format!("writing {}", path.display()), source)
                }
            },
            Err(BatchError::Foreign { len, own_end }) => {
                // Nothing of this output's past `start` is cut: it cannot tell its bytes apart.
                entry.own_end = start;
                Self::foreign_error(&self.name, &path, len, own_end)
            }
        };
        // The file's contents and the page cache are unknown now: reopen and cut back at once
        // (what this output can show it wrote), so that no partial line stays behind even if
        // the process stops here.
        self.files.get_mut(table).expect("opened above").file = None;
        if let Err(e) = tokio::task::block_in_place(|| self.repair(table)) {
            tracing::warn!("{e}; retried before the next write.");
        }
        Err(error)
    }

    /// The length a batch starts at: the confirmed one. A file that is longer has bytes another
    /// process appended, which this output never writes after (the batch fails until a resume
    /// cuts to the committed length); a shorter one was truncated or rotated: appended to.
    fn length_before_batch(&mut self, table: &str, path: &Path) -> Result<u64, OutputError> {
        let entry = &self.files[table];
        let file = entry.file.as_ref().expect("repair() opened it");
        let found = file
            .metadata()
            .map_err(|e| self.io_error(format!("reading {}", path.display()), e))?
            .len();
        if found > entry.len {
            return Err(Self::foreign_error(&self.name, path, found, entry.len));
        }
        if found < entry.len {
            let message = CutReason::FailedWrite.shorter(found, entry.len);
            tracing::warn!(output = %self.name, file = %path.display(), "{message}");
            let entry = self.files.get_mut(table).expect("looked up above");
            entry.len = found;
            entry.own_end = found;
        }
        Ok(found)
    }

    /// The error of a batch that found the file at `len` bytes where this output's own writes
    /// make it `own_end`.
    fn foreign_error(output: &str, path: &Path, len: u64, own_end: u64) -> OutputError {
        let what = if len > own_end { "appended to" } else { "cut" };
        OutputError::Io {
            output: output.to_owned(),
            action: format!("writing {}", path.display()),
            source: std::io::Error::other(format!(
                "another process {what} {} while this one wrote; not cutting anything; if two collectors share this directory check that they use the same Redis persistence (the file is {len} bytes, this output's writes make it {own_end})",
                path.display()
            )),
        }
    }

    /// Checks that the directory can be created and written.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        std::fs::create_dir_all(&self.directory).map_err(|e| {
            self.io_error(
                format!("creating directory {}", self.directory.display()),
                e,
            )
        })?;
        let probe = self.directory.join(".isolation-collector-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| self.io_error(format!("writing in {}", self.directory.display()), e))
    }
}

/// Writes `events` as lines through `out` (appending to `file`, which is `start` bytes long),
/// fsyncs, and checks that the file grew by exactly what was written. `own` counts the bytes
/// the write calls reported written (on failure too). The length is also checked before each
/// `writev` (an `fstat`): a batch stops as soon as another process changed the file.
fn append_batch(
    out: &mut dyn Write,
    file: &File,
    start: u64,
    events: &[Event],
    own: &mut u64,
) -> Result<(), BatchError> {
    let check = |own: u64| {
        let len = file.metadata().map_err(BatchError::Io)?.len();
        if len == start + own {
            Ok(())
        } else {
            Err(BatchError::Foreign {
                len,
                own_end: start + own,
            })
        }
    };
    write_lines(out, events, own, check)?;
    file.sync_data().map_err(BatchError::Io)?;
    check(*own)
}

/// Slices per `writev`: Linux's `IOV_MAX`.
const SLICES_PER_WRITE: usize = 1024;

/// Writes every event and a newline after it, straight from the events' bytes with `writev`
/// (a few hundred events a call), adding to `written` what each call reports written, and
/// calling `check(written)` before each chunk of events. A `BufWriter` copied the whole batch
/// once more on its way to the kernel; this keeps no copy, and memory stays flat (one small
/// vector of slices).
fn write_lines(
    out: &mut dyn Write,
    events: &[Event],
    written: &mut u64,
    check: impl Fn(u64) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    use std::io::IoSlice;
    let mut slices = Vec::with_capacity(SLICES_PER_WRITE.min(2 * events.len()));
    for chunk in events.chunks(SLICES_PER_WRITE / 2) {
        check(*written)?;
        slices.clear();
        for event in chunk {
            slices.push(IoSlice::new(&event.json));
            slices.push(IoSlice::new(b"\n"));
        }
        // `Write::write_all_vectored` is not stable yet: this is its loop.
        let mut rest = slices.as_mut_slice();
        while !rest.is_empty() {
            match out.write_vectored(rest) {
                Ok(0) => return Err(BatchError::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    *written += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BatchError::Io(e)),
            }
        }
    }
    Ok(())
}

/// Why a file is cut back, which decides how the warnings read.
#[derive(Clone, Copy)]
enum CutReason {
    /// A write failed: its remains are removed before the batch is written again.
    FailedWrite,
    /// A restart: what was written after the last checkpoint is removed and delivered again.
    Checkpoint,
}

impl CutReason {
    fn cut(self, removed: u64) -> String {
        match self {
            CutReason::FailedWrite => format!("Removed {removed} byte(s) left by a failed write; the batch is written again whole."),
            CutReason::Checkpoint => format!("Removing {removed} byte(s) written after the last checkpoint; they will be delivered again."),
        }
    }

    fn shorter(self, actual: u64, len: u64) -> String {
        match self {
            CutReason::FailedWrite => format!("The file is shorter than its last confirmed length ({actual} < {len} bytes): it was truncated by someone else; appending."),
            CutReason::Checkpoint => format!("The file is shorter than at the last checkpoint ({actual} < {len} bytes): it was rotated or truncated by someone else; appending."),
        }
    }
}

/// What [`cut_back`] found.
#[derive(Debug, PartialEq, Eq)]
enum CutBack {
    /// The file ended at the length already.
    Unchanged,
    /// This many bytes past the length were removed.
    Cut(u64),
    /// The file was shorter than the length (this many bytes); it is not extended.
    Shorter(u64),
}

/// Whether `length` ends a line of `file` (the byte before it is a newline), or is at or past
/// its end (nothing of the file would be cut).
fn ends_a_line(file: &File, length: u64) -> std::io::Result<bool> {
    if length == 0 || length >= file.metadata()?.len() {
        return Ok(true);
    }
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, length - 1)?;
    Ok(byte[0] == b'\n')
}

/// The length of `file` (`len` bytes) up to and including its last newline: 0 if it has none.
/// Read backwards in blocks, so a complete file costs one small read.
fn complete_lines_length(file: &File, len: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Truncates `file` to `len`, syncs, and reads the length back.
fn cut_back(file: &File, len: u64) -> std::io::Result<CutBack> {
    let actual = file.metadata()?.len();
    if actual < len {
        return Ok(CutBack::Shorter(actual));
    }
    if actual > len {
        file.set_len(len)?;
    }
    // Also when nothing was cut: a failed fsync may have left pages unwritten.
    file.sync_all()?;
    let now = file.metadata()?.len();
    if now != len {
        return Err(std::io::Error::other(format!(
            "the file is {now} bytes after truncating it to {len}"
        )));
    }
    Ok(if actual > len {
        CutBack::Cut(actual - len)
    } else {
        CutBack::Unchanged
    })
}

impl OutputBuilder for FileConfig {
    type Output = FileOutput;

    fn build(&self, name: &str, _: &OutputContext) -> Result<FileOutput, OutputError> {
        let output = FileOutput::new(name.to_owned(), self.directory.clone(), self.mode);
        Ok(output)
    }

    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError> {
        let mut output = self.build(name, cx)?;
        Ok(Box::pin(async move { output.check().await }))
    }
}

#[cfg(test)]
mod tests;
