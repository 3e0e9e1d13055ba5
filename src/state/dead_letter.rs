//! The dead-letter store: events set aside instead of delivered, with their raw bytes.
//!
//! An event is set aside when it can never be delivered as it is: the vendor sent bytes that do
//! not parse as an event (not UTF-8, nested deeper than the parser allows), or one output refuses
//! that single event for good (a 400 or 413 for a request of one event, a RELP record over the
//! receiver's size limit) after a bounded number of tries. Setting it aside lets the service go
//! on; without it the window would fail on every cycle until the API's retention deleted it.
//!
//! Letters are written *before* the window that set them aside commits, and they are keyed by
//! an id derived from what they hold ([`DeadLetter::id`]), so writing the same letter again
//! (the window failed later and was fetched again, or the process crashed before its commit)
//! stores it once: nothing is lost, nothing doubles.
//!
//! The store follows the state's: a JSON Lines file per service beside the state file
//! (`<key>.dead_letters.jsonl`), a Redis hash beside the state key (`…:dead_letters`, field =
//! id), or memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StateError, StateStore};
use crate::timestamp::Millis;

/// One event set aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Hex SHA-256 of the output (or "parse"), the table and the raw bytes: equal letters have
    /// equal ids, so storing one twice keeps one.
    pub id: String,
    /// When it was first set aside (ms since the epoch, UTC).
    pub set_aside_at: Millis,
    /// The Devo table the event belongs to.
    pub table: String,
    /// `None`: the event could not be read, and no output has it. `Some(name)`: only that
    /// output refused it; every other output has it.
    pub output: Option<String>,
    /// Why, with secrets masked (an answer body is redacted before it gets here).
    pub reason: String,
    /// Where it was found, for people: e.g. `job 123 page 4 event 17` or the window's range.
    pub position: String,
    /// The event's bytes as received, hex-encoded (they may not be UTF-8).
    pub raw_hex: String,
}

impl DeadLetter {
    /// A letter for `raw`, set aside at `now` from `table` by `output` (`None`: unreadable).
    pub fn new(
        table: &str,
        output: Option<&str>,
        reason: String,
        position: String,
        raw: &[u8],
        now: Millis,
    ) -> DeadLetter {
        DeadLetter {
            id: Self::id(table, output, raw),
            set_aside_at: now,
            table: table.to_owned(),
            output: output.map(str::to_owned),
            reason,
            position,
            raw_hex: hex::encode(raw),
        }
    }

    /// The id of a letter: what it is about, not when it was written.
    pub fn id(table: &str, output: Option<&str>, raw: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(output.unwrap_or("parse").as_bytes());
        h.update([0]);
        h.update(table.as_bytes());
        h.update([0]);
        h.update(raw);
        hex::encode(h.finalize())
    }

    /// The raw bytes.
    pub fn raw(&self) -> Vec<u8> {
        hex::decode(&self.raw_hex).unwrap_or_default()
    }
}

/// The dead-letter file of `key` in `directory`.
pub fn path(directory: &Path, key: &str) -> PathBuf {
    directory.join(format!("{key}.dead_letters.jsonl"))
}

impl StateStore {
    /// Stores `letters` for the service `key`, each once (by id); returns how many were new.
    /// Durable when it returns (fsynced file, Redis reply). In Redis only while `lease` holds
    /// the service's lease.
    pub async fn set_aside(
        &self,
        key: &str,
        letters: &[DeadLetter],
        lease: Option<&str>,
    ) -> Result<usize, StateError> {
        if letters.is_empty() {
            return Ok(0);
        }
        match self {
            StateStore::Memory(_) => Ok(memory_set_aside(key, letters)),
            StateStore::Filesystem { directory } => file_set_aside(directory, key, letters),
            StateStore::Redis(r) => r.set_aside(key, letters, lease).await,
        }
    }

    /// Every letter of the service `key`, in the order they were set aside.
    pub async fn dead_letters(&self, key: &str) -> Result<Vec<DeadLetter>, StateError> {
        match self {
            StateStore::Memory(_) => Ok(memory_letters(key)),
            StateStore::Filesystem { directory } => file_letters(directory, key),
            StateStore::Redis(r) => r.dead_letters(key).await,
        }
    }

    /// Removes the letters whose ids are in `ids` (all of them with `None`); returns how many
    /// were removed.
    pub async fn discard_dead_letters(
        &self,
        key: &str,
        ids: Option<&[String]>,
        lease: Option<&str>,
    ) -> Result<usize, StateError> {
        match self {
            StateStore::Memory(_) => Ok(memory_discard(key, ids)),
            StateStore::Filesystem { directory } => file_discard(directory, key, ids),
            StateStore::Redis(r) => r.discard_dead_letters(key, ids, lease).await,
        }
    }
}

impl StateStore {
    /// [`discard_dead_letters`](Self::discard_dead_letters) for a command run beside the
    /// collectors: with Redis it takes the service's lease for the time of the removal (as
    /// `state reset` does), so that it never races a collector that holds it (the error names
    /// the holder).
    pub async fn discard_dead_letters_now(
        &self,
        key: &str,
        ids: Option<&[String]>,
    ) -> Result<usize, StateError> {
        let StateStore::Redis(r) = self else {
            return self.discard_dead_letters(key, ids, None).await;
        };
        let token = r.take_for_a_command(key).await?;
        let discarded = r.discard_dead_letters(key, ids, Some(&token)).await;
        let released = r.release(key, &token).await;
        let n = discarded?;
        released?;
        Ok(n)
    }
}

/// The memory store's letters live beside its states, for the life of the process (a `--no-save-state`
/// run or a backfill has nowhere durable to put them; the letters are still logged).
type MemoryLetters = std::sync::Mutex<BTreeMap<String, Vec<DeadLetter>>>;

fn memory() -> &'static MemoryLetters {
    static LETTERS: std::sync::OnceLock<MemoryLetters> = std::sync::OnceLock::new();
    LETTERS.get_or_init(Default::default)
}

fn memory_set_aside(key: &str, letters: &[DeadLetter]) -> usize {
    let mut all = memory().lock().expect("dead letters lock");
    let kept = all.entry(key.to_owned()).or_default();
    let mut new = 0;
    for l in letters {
        if !kept.iter().any(|k| k.id == l.id) {
            kept.push(l.clone());
            new += 1;
        }
    }
    new
}

fn memory_letters(key: &str) -> Vec<DeadLetter> {
    let all = memory().lock().expect("dead letters lock");
    all.get(key).cloned().unwrap_or_default()
}

fn memory_discard(key: &str, ids: Option<&[String]>) -> usize {
    let mut all = memory().lock().expect("dead letters lock");
    let Some(kept) = all.get_mut(key) else {
        return 0;
    };
    let before = kept.len();
    kept.retain(|l| ids.is_some_and(|ids| !ids.contains(&l.id)));
    before - kept.len()
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Reads the file's letters; a line that does not parse (a write cut by a crash) is skipped:
/// its letter is written again when its window is fetched again, as it did not commit.
fn file_letters(directory: &Path, key: &str) -> Result<Vec<DeadLetter>, StateError> {
    let path = path(directory, key);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error("read", &path, e)),
    }
}

fn file_set_aside(
    directory: &Path,
    key: &str,
    letters: &[DeadLetter],
) -> Result<usize, StateError> {
    let path = path(directory, key);
    let known: Vec<String> = file_letters(directory, key)?
        .into_iter()
        .map(|l| l.id)
        .collect();
    let mut lines = Vec::new();
    let mut new = 0;
    for l in letters {
        if known.contains(&l.id) {
            continue;
        }
        // A partial line a crash left is ended first, so the next letter starts on its own line.
        lines.push(b'\n');
        lines.extend(serde_json::to_vec(l).expect("a letter serialises"));
        new += 1;
    }
    if new == 0 {
        return Ok(0);
    }
    lines.push(b'\n');
    std::fs::create_dir_all(directory).map_err(|e| io_error("create", directory, e))?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    file.write_all(&lines)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", &path, e))?;
    Ok(new)
}

fn file_discard(directory: &Path, key: &str, ids: Option<&[String]>) -> Result<usize, StateError> {
    let letters = file_letters(directory, key)?;
    let (gone, kept): (Vec<_>, Vec<_>) = letters
        .into_iter()
        .partition(|l| ids.is_none_or(|ids| ids.contains(&l.id)));
    if gone.is_empty() {
        return Ok(0);
    }
    let path = path(directory, key);
    let mut text = Vec::new();
    for l in &kept {
        text.extend(serde_json::to_vec(l).expect("a letter serialises"));
        text.push(b'\n');
    }
    super::filesystem::write_atomically(directory, &path, &text)?;
    Ok(gone.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &[u8]) -> DeadLetter {
        DeadLetter::new(
            "t",
            None,
            "not UTF-8".into(),
            "job 1 page 1 event 0".into(),
            raw,
            5,
        )
    }

    #[tokio::test]
    async fn a_letter_is_stored_once_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().to_owned());
        let a = letter(b"{\"a\":\"\xff\"}");
        let b = letter(b"{\"b\":1}");
        assert_eq!(
            store
                .set_aside("k", std::slice::from_ref(&a), None)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .set_aside("k", &[a.clone(), b.clone()], None)
                .await
                .unwrap(),
            1
        );
        let kept = store.dead_letters("k").await.unwrap();
        assert_eq!(kept, vec![a.clone(), b.clone()]);
        assert_eq!(kept[0].raw(), b"{\"a\":\"\xff\"}");
        let discarded = store
            .discard_dead_letters("k", Some(std::slice::from_ref(&a.id)), None)
            .await
            .unwrap();
        assert_eq!(discarded, 1);
        assert_eq!(store.dead_letters("k").await.unwrap(), vec![b]);
    }

    #[tokio::test]
    async fn a_line_cut_by_a_crash_is_skipped_and_the_next_letter_starts_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::filesystem(dir.path().to_owned());
        std::fs::write(path(dir.path(), "k"), b"{\"id\":\"abc").unwrap();
        let a = letter(b"x");
        assert_eq!(
            store
                .set_aside("k", std::slice::from_ref(&a), None)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.dead_letters("k").await.unwrap(), vec![a]);
    }
}
