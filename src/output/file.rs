//! The `file` output: JSON Lines, one file per Devo table (`<directory>/<table>.jsonl`), each
//! line exactly the JSON that goes to Devo.
//!
//! A batch is confirmed after `fsync`, and the confirmation carries the file's length, which the
//! puller stores with its checkpoint. On resume, bytes past the committed length are the batch a
//! crash interrupted before its checkpoint: they are cut off, and the batch is written again
//! whole. So the file holds every event exactly once, even across `kill -9`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OutputError;
use crate::event::Event;

/// Writes each table to its own JSON Lines file.
pub struct FileOutput {
    name: String,
    directory: PathBuf,
    /// Open files by table, with their current length.
    files: HashMap<String, (File, u64)>,
}

impl FileOutput {
    pub fn new(name: String, directory: PathBuf) -> Self {
        Self {
            name,
            directory,
            files: HashMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file a table is written to.
    pub fn path_for(directory: &Path, table: &str) -> PathBuf {
        directory.join(format!("{table}.jsonl"))
    }

    fn io(&self, action: String) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
        move |source| OutputError::Io {
            output: self.name.clone(),
            action,
            source,
        }
    }

    fn open(&mut self, table: &str) -> Result<&mut (File, u64), OutputError> {
        if !self.files.contains_key(table) {
            let path = Self::path_for(&self.directory, table);
            std::fs::create_dir_all(&self.directory)
                .map_err(self.io(format!("creating directory {}", self.directory.display())))?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(self.io(format!("opening {}", path.display())))?;
            let len = file
                .metadata()
                .map_err(self.io(format!("reading {}", path.display())))?
                .len();
            self.files.insert(table.to_owned(), (file, len));
        }
        Ok(self.files.get_mut(table).expect("inserted above"))
    }

    /// Cuts off anything written after the committed length (see the module doc).
    pub async fn resume(
        &mut self,
        table: &str,
        committed: Option<u64>,
    ) -> Result<Option<u64>, OutputError> {
        let name = self.name.clone();
        let path = Self::path_for(&self.directory, table);
        let (file, len) = self.open(table)?;
        match committed {
            Some(committed) if *len > committed => {
                tracing::warn!(
                    output = %name,
                    file = %path.display(),
                    "Removing {} byte(s) written after the last checkpoint; they will be delivered again.",
                    *len - committed
                );
                file.set_len(committed)
                    .and_then(|()| file.sync_all())
                    .map_err(|source| OutputError::Io {
                        output: name,
                        action: format!("truncating {}", path.display()),
                        source,
                    })?;
                *len = committed;
            }
            Some(committed) if *len < committed => {
                tracing::warn!(
                    output = %name,
                    file = %path.display(),
                    "The file is shorter than at the last checkpoint ({} < {} bytes): it was rotated or truncated by someone else; appending.",
                    *len,
                    committed
                );
            }
            _ => {}
        }
        Ok(Some(*len))
    }

    /// Appends the batch and fsyncs it.
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        let path = Self::path_for(&self.directory, table);
        let name = self.name.clone();
        let (file, len) = self.open(table)?;
        // Synchronous: one sequential write plus fsync, which the puller awaits anyway;
        // block_in_place keeps the runtime's other tasks going meanwhile. A 1 MiB buffer
        // rather than the whole batch in one Vec keeps the peak memory flat.
        let result = tokio::task::block_in_place(|| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &*file);
            let mut written = 0u64;
            for event in events {
                w.write_all(&event.json)?;
                w.write_all(b"\n")?;
                written += event.json.len() as u64 + 1;
            }
            w.flush()?;
            drop(w);
            file.sync_data()?;
            Ok(written)
        });
        let written = result.map_err(|source| OutputError::Io {
            output: name,
            action: format!("writing {}", path.display()),
            source,
        })?;
        *len += written;
        Ok(Some(*len))
    }

    /// Checks that the directory can be created and written.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        std::fs::create_dir_all(&self.directory)
            .map_err(self.io(format!("creating directory {}", self.directory.display())))?;
        let probe = self.directory.join(".isolation-collector-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(self.io(format!("writing in {}", self.directory.display())))
    }
}
