//! `state dead-letters`, `state replay` and `state discard`: the events set aside instead of
//! delivered (see [`crate::state::dead_letter`]), listed for people (`state show` too), as JSON
//! lines, or exported as the vendor's raw bytes; delivered again to the one output that refused
//! them (once its receiver is fixed); and removed once an operator has handled them.
//!
//! Why no replay of an unreadable event: its bytes are not text, and any repair (replacing the
//! bad bytes with U+FFFD, say) would deliver something the vendor never sent, indistinguishable
//! downstream from a real event. A SOC can trust the raw bytes, exported with `--export`, and
//! decide; the letter stays until `state discard` removes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{chosen_services, open_config_and_store, BadUsage, Outcome, StateFilter};
use crate::clock::SharedClock;
use crate::config::{Config, InputConfig, OutputConfig, OutputKind};
use crate::event::{Event, UNDATED};
use crate::service::Service;
use crate::state::dead_letter::DeadLetter;
use crate::state::filesystem::DirectoryLock;
use crate::state::{StateError, StateStore};
use crate::timestamp::format_iso;

/// What `state dead-letters` prints or writes.
pub struct ListArgs {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Also write each letter's raw bytes to this file, one letter per line (created with mode
    /// 0600: the bytes are the vendor's, unobfuscated).
    pub export: Option<PathBuf>,
}

/// Prints the letters of `key` under `state show`'s line for it.
pub(super) async fn show(store: &StateStore, key: &str) -> Result<(), StateError> {
    let letters = store.dead_letters(key).await?;
    if letters.is_empty() {
        return Ok(());
    }
    println!(
        "  {} event(s) set aside (dead letters; `state dead-letters --export FILE` writes their raw bytes, `state discard` removes them):",
        letters.len()
    );
    for l in &letters {
        println!("    {}", describe(l));
    }
    Ok(())
}

/// One letter for people: id, time, table, output, position and reason.
fn describe(l: &DeadLetter) -> String {
    format!(
        "{} set aside {} table {} output {}: {}: {}",
        l.id,
        format_iso(l.set_aside_at),
        l.table,
        l.output.as_deref().unwrap_or("none (unreadable)"),
        l.position,
        l.reason
    )
}

/// `state dead-letters`: the letters of the chosen services. Prints; never logs.
pub async fn list(
    path: &Path,
    only: StateFilter<'_>,
    args: ListArgs,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let (config, store) = open_config_and_store(path, clock)?;
    let mut export = match &args.export {
        Some(file) => Some(create_private(file).map_err(|e| {
            eprintln!("error: cannot create {}: {e}", file.display());
            BadUsage
        })?),
        None => None,
    };
    let mut ok = true;
    for (key, name) in chosen_services(&config, only)? {
        let letters = match store.dead_letters(&key).await {
            Ok(letters) => letters,
            Err(e) => {
                eprintln!("{name}: {e}");
                ok = false;
                continue;
            }
        };
        if !args.json {
            println!("{name}: {} event(s) set aside", letters.len());
        }
        for l in &letters {
            match args.json {
                true => println!("{}", serde_json::json!({"service": name, "letter": l})),
                false => println!("  {}", describe(l)),
            }
            if let Some(file) = export.as_mut() {
                ok &= write_raw(file, l, args.export.as_deref());
            }
        }
    }
    Ok(Outcome::succeeded_if(ok))
}

/// A new file readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn write_raw(file: &mut std::fs::File, l: &DeadLetter, path: Option<&Path>) -> bool {
    let mut raw = l.raw();
    raw.push(b'\n');
    match file.write_all(&raw) {
        Ok(()) => true,
        Err(e) => {
            let path = path.map(Path::display);
            eprintln!("error: writing {}: {e}", path.expect("an export path"));
            false
        }
    }
}

/// The config and its store under the state directory's lock, for the commands that rewrite
/// the letter files the daemon appends to (with Redis, each service's lease is taken by
/// `discard_dead_letters_now` instead). `Ok(None)`, said, when another process holds the lock.
fn open_locked(path: &Path, clock: &SharedClock) -> Result<Option<Locked>, BadUsage> {
    let (config, store) = open_config_and_store(path, clock)?;
    match store.lock() {
        Ok(lock) => Ok(Some(Locked {
            config,
            store,
            _lock: lock,
        })),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(None)
        }
    }
}

/// What [`open_locked`] opened; the lock is held until it is dropped (the command's end).
struct Locked {
    config: Config,
    store: StateStore,
    /// `None` for stores without a directory lock.
    _lock: Option<DirectoryLock>,
}

/// Whether every id given (none: all letters) was found, saying how many were not.
fn all_found(ids: Option<&[String]>, found: usize) -> bool {
    let Some(ids) = ids.filter(|ids| found < ids.len()) else {
        return true;
    };
    eprintln!(
        "error: {} of the {} id(s) given are not dead letters of the chosen service(s); `state dead-letters` lists them",
        ids.len() - found,
        ids.len()
    );
    false
}

/// `state discard`: removes the letters `ids` (every letter with `None`) of the chosen
/// services; with Redis under each service's lease, as `state reset`. Prints; never logs.
pub async fn discard(
    path: &Path,
    only: StateFilter<'_>,
    ids: Option<Vec<String>>,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let Some(opened) = open_locked(path, clock)? else {
        return Ok(Outcome::Failed);
    };
    let (config, store) = (&opened.config, &opened.store);
    let mut ok = true;
    let mut removed = 0;
    for (key, name) in chosen_services(config, only)? {
        match store.discard_dead_letters_now(&key, ids.as_deref()).await {
            Ok(n) => {
                println!("{name}: {n} dead letter(s) discarded");
                removed += n;
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                ok = false;
            }
        }
    }
    Ok(Outcome::succeeded_if(
        ok && all_found(ids.as_deref(), removed),
    ))
}

/// `state replay`: delivers each chosen letter that one output refused (`output: Some(name)`)
/// to that output alone, and discards it once the output confirmed it; the other outputs have
/// the event already. A letter the output refuses again stays. Unreadable letters are not
/// replayed (see the module doc). Prints; never logs.
pub async fn replay(
    path: &Path,
    only: StateFilter<'_>,
    ids: Option<Vec<String>>,
    clock: &SharedClock,
) -> Result<Outcome, BadUsage> {
    let Some(opened) = open_locked(path, clock)? else {
        return Ok(Outcome::Failed);
    };
    let (config, store) = (&opened.config, &opened.store);
    let mut ok = true;
    let mut matched = 0;
    for (input, key, name) in chosen_inputs_and_keys(config, only)? {
        let letters = match store.dead_letters(&key).await {
            Ok(letters) => letters,
            Err(e) => {
                eprintln!("{name}: {e}");
                ok = false;
                continue;
            }
        };
        let wanted = letters
            .iter()
            .filter(|l| ids.as_ref().is_none_or(|ids| ids.contains(&l.id)));
        for letter in wanted {
            matched += 1;
            ok &= replay_one(store, &key, &name, &input.outputs, letter, clock).await;
        }
    }
    Ok(Outcome::succeeded_if(
        ok && all_found(ids.as_deref(), matched),
    ))
}

/// The chosen inputs with each chosen service's state key and printed name.
fn chosen_inputs_and_keys<'a>(
    config: &'a Config,
    only: StateFilter<'_>,
) -> Result<Vec<(&'a InputConfig, String, String)>, BadUsage> {
    chosen_services(config, only)?; // reports an unknown service or input
    let services: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| only.service.is_none_or(|name| name == s.name()))
        .collect();
    let mut chosen = Vec::new();
    for input in super::chosen_inputs(config, only.input)? {
        for &s in &services {
            let key = StateStore::key(&input.id, s.name());
            chosen.push((input, key, super::state_label(config, &input.id, s)));
        }
    }
    Ok(chosen)
}

/// Replays one letter and discards it once delivered; prints what happened.
async fn replay_one(
    store: &StateStore,
    key: &str,
    name: &str,
    outputs: &[OutputConfig],
    letter: &DeadLetter,
    clock: &SharedClock,
) -> bool {
    let delivered = deliver_letter(outputs, letter, clock).await;
    let result = match delivered {
        Ok(output) => store
            .discard_dead_letters_now(key, Some(std::slice::from_ref(&letter.id)))
            .await
            .map(|_| output)
            .map_err(|e| {
                format!("delivered, but not discarded ({e}); `state discard --id` removes it")
            }),
        Err(e) => Err(e),
    };
    match result {
        Ok(output) => {
            println!("{name}: {} delivered to {output} and discarded", letter.id);
            true
        }
        Err(e) => {
            eprintln!("{name}: {} not replayed: {e}", letter.id);
            false
        }
    }
}

/// Delivers a letter's bytes to the output that refused them; returns that output's name.
async fn deliver_letter(
    outputs: &[OutputConfig],
    letter: &DeadLetter,
    clock: &SharedClock,
) -> Result<String, String> {
    let Some(name) = &letter.output else {
        return Err("it could not be read, and is never delivered as an event; `state dead-letters --export FILE` writes its raw bytes".to_owned());
    };
    let Some(config) = outputs.iter().find(|o| &o.name == name) else {
        return Err(format!(
            "output {name} is no longer in this input's configuration"
        ));
    };
    if matches!(config.kind, OutputKind::File(_)) {
        // A file output's bytes past its committed length are cut at its next resume.
        return Err(format!(
            "output {name} is a file output, which takes records only from the collector's windows"
        ));
    }
    let mut outputs = crate::app::outputs::build_outputs(std::slice::from_ref(config), clock)
        .map_err(|e| e.to_string())?;
    let output = outputs
        .first_mut()
        .expect("one output built from one config");
    let raw = letter.raw();
    let event = Event {
        date_ms: UNDATED,
        key: Sha256::digest(&raw).into(),
        json: Bytes::from(raw),
    };
    output
        .deliver(&letter.table, &[event])
        .await
        .map(|_| name.clone())
        .map_err(|e| e.to_string())
}
