//! `run --watch-config`: polls the configuration's bytes and asks for a reload when they changed
//! and have settled.
//!
//! What is watched: the config file, every `*.yml`/`*.yaml` file of its `inputs_dir` (the files
//! the config reads its tenants from), and the files these name under a `*_file` key (keys,
//! passwords, tokens, obfuscation secrets, CA bundles: a rotated key is a changed tenant). Each poll hashes their
//! names and bytes into one [`Digest`]; modification times are not trusted alone, since a copy
//! that keeps them (`cp -p`, `rsync -t`), a write within the same clock tick, or a Kubernetes
//! ConfigMap's symlink swap can change the bytes and not the time. Reading a thousand small
//! tenant files every two seconds costs a few milliseconds on a blocking thread. The `${VAR}`
//! references in `inputs_dir` and the `*_file` keys are substituted from the [`Loader`]'s
//! environment with the loader's own substitution, so the watcher watches the files the loader
//! reads.
//!
//! A change is acted upon once two polls in a row saw the same new bytes ([`Settle`]), so an
//! editor or a generator caught half-way through writing does not start a reload of a
//! half-written file (which could parse, with fewer tenants). A reload therefore starts two to
//! four seconds after the last write. Writing to a temporary file and renaming it over the old
//! one is still the safe way to change a config that a daemon reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Cause, Trigger};
use crate::config::{read_yaml, substitute, Env, Loader};

/// How often `--watch-config` reads the configuration.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// The hash of everything `--watch-config` watches.
pub type Digest = [u8; 32];

/// Hashes the config file of `loader`, the tenant files of its `inputs_dir` and the files they
/// name. An unreadable file hashes as its error, so that a file that disappears or comes back
/// is a change too.
pub fn digest(loader: &Loader) -> Digest {
    let mut hash = Sha256::new();
    let (config, env) = (loader.path(), loader.env());
    let base = config.parent().unwrap_or(Path::new(""));
    match std::fs::read(config) {
        Ok(bytes) => {
            add_file(&mut hash, b"config", &bytes);
            add_named_files(&mut hash, &bytes, base, env);
            if let Some(dir) = inputs_dir(&bytes, config, env) {
                add_dir(&mut hash, &dir, base, env);
            }
        }
        Err(e) => add_file(
            &mut hash,
            b"config unreadable",
            e.kind().to_string().as_bytes(),
        ),
    }
    hash.finalize().into()
}

/// YAML bytes as a tree, if they are YAML.
fn tree(bytes: &[u8]) -> Option<Value> {
    read_yaml(std::str::from_utf8(bytes).ok()?).ok()
}

/// `raw` with its environment references replaced from `env`; `None` when one is unclosed or
/// unset without a default (the loader refuses it; there is then nothing to watch).
fn substituted(raw: &str, env: &Env) -> Option<String> {
    substitute(raw, &|name| env.var(name)).ok()
}

/// One named part of the digest, length-prefixed so that no two sequences of parts collide.
fn add_file(hash: &mut Sha256, name: &[u8], bytes: &[u8]) {
    for part in [name, bytes] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
}

/// The files a config text names under a `*_file` key (`api_key_file`, `password_file`,
/// `secret_file`, `token_file`, `ca_file`), relative to `base`: a key or secret rotated in
/// its file changes the fingerprint of the inputs that read it, so it is a change to reload.
fn add_named_files(hash: &mut Sha256, text: &[u8], base: &Path, env: &Env) {
    let Some(root) = tree(text) else {
        return;
    };
    let mut named = Vec::new();
    collect_named_files(&root, &mut named);
    for written in named {
        let Some(path) = substituted(&written, env).map(PathBuf::from) else {
            continue;
        };
        match std::fs::read(base.join(path)) {
            Ok(bytes) => add_file(hash, written.as_bytes(), &bytes),
            Err(e) => add_file(hash, written.as_bytes(), e.kind().to_string().as_bytes()),
        }
    }
}

/// Every string value under a key ending in `_file`, anywhere in the tree, in document order.
fn collect_named_files(value: &Value, named: &mut Vec<String>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    (Some(key), Some(file)) if key.ends_with("_file") => named.push(file.into()),
                    _ => collect_named_files(v, named),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_named_files(v, named)),
        _ => {}
    }
}

/// The directory's `*.yml`/`*.yaml` files, in name order, each with its name and bytes and the
/// files it names (relative to `base`, the config file's directory).
fn add_dir(hash: &mut Sha256, dir: &Path, base: &Path, env: &Env) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return add_file(
                hash,
                b"inputs_dir unreadable",
                e.kind().to_string().as_bytes(),
            );
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap_or_default().as_encoded_bytes();
        match std::fs::read(&file) {
            Ok(bytes) => {
                add_file(hash, name, &bytes);
                add_named_files(hash, &bytes, base, env);
            }
            Err(e) => add_file(hash, name, e.kind().to_string().as_bytes()),
        }
    }
}

/// The `inputs_dir` the config text names, relative to the config file's directory, its
/// references substituted from `env` as the loader does.
fn inputs_dir(text: &[u8], config: &Path, env: &Env) -> Option<PathBuf> {
    let root = tree(text)?;
    let raw = root.get("inputs_dir")?.as_str()?;
    let dir = PathBuf::from(substituted(raw, env)?);
    Some(match config.parent() {
        Some(base) if dir.is_relative() => base.join(dir),
        _ => dir,
    })
}

/// Tells a settled change from bytes still being written: a digest counts once two polls in a
/// row saw it and it differs from the one last acted upon.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settle {
    acted_upon: Digest,
    last_seen: Digest,
}

impl Settle {
    /// Starts from the digest of the configuration the daemon runs.
    pub(super) fn new(running: Digest) -> Settle {
        Settle {
            acted_upon: running,
            last_seen: running,
        }
    }

    /// Records one poll's digest; `true` when it is a settled change (acted upon from now on).
    pub(super) fn observe(&mut self, now: Digest) -> bool {
        let settled = now == self.last_seen && now != self.acted_upon;
        self.last_seen = now;
        if settled {
            self.acted_upon = now;
        }
        settled
    }
}

/// Polls the configuration `loader` reads every `period` until `stop`, asking `trigger` for a
/// reload at each settled change. `running` is the digest taken before the running
/// configuration was loaded, so that a change made while it loaded is not missed.
pub async fn watch(
    loader: Loader,
    running: Digest,
    period: Duration,
    trigger: Trigger,
    stop: CancellationToken,
) {
    let mut settle = Settle::new(running);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let loader = loader.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || digest(&loader)).await else {
            return;
        };
        if settle.observe(now) {
            trigger.request(Cause::FileChanged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of the config at `path`, substituting from the process environment.
    fn digest(path: &Path) -> Digest {
        super::digest(&process_loader(path))
    }

    fn process_loader(path: &Path) -> Loader {
        Loader::new(path.to_owned(), Env::process())
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn new_bytes_with_the_old_modification_time_are_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        write(&config, "globals: {name: a}\n");
        let mtime = std::fs::metadata(&config).unwrap().modified().unwrap();
        let before = digest(&config);
        assert_eq!(digest(&config), before, "unchanged bytes, same digest");
        write(&config, "globals: {name: b}\n");
        std::fs::File::options()
            .write(true)
            .open(&config)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&config).unwrap().modified().unwrap(),
            mtime
        );
        assert_ne!(digest(&config), before);
    }

    #[test]
    fn the_tenant_files_of_inputs_dir_are_watched_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let tenants = dir.path().join("tenants.d");
        std::fs::create_dir(&tenants).unwrap();
        write(&config, "globals: {}\ninputs_dir: tenants.d\n");
        write(&tenants.join("acme.yaml"), "id: 1\n");
        let before = digest(&config);
        write(&tenants.join("notes.txt"), "not a tenant");
        write(&tenants.join(".acme.yaml.swp"), "an editor's");
        assert_eq!(digest(&config), before);
        write(&tenants.join("acme.yaml"), "id: 2\n");
        let changed = digest(&config);
        assert_ne!(changed, before);
        write(&tenants.join("beta.yml"), "id: 3\n");
        assert_ne!(digest(&config), changed);
        std::fs::remove_file(tenants.join("beta.yml")).unwrap();
        assert_eq!(digest(&config), changed, "the same files, the same digest");
    }

    #[test]
    fn a_rotated_key_file_is_a_change_in_the_config_or_a_tenant_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::create_dir(dir.path().join("tenants.d")).unwrap();
        write(
            &config,
            "globals: {persistence: {config: {password_file: redis.pw}}}\ninputs_dir: tenants.d\n",
        );
        write(&dir.path().join("redis.pw"), "one");
        write(
            &dir.path().join("tenants.d/a.yaml"),
            "id: 1\ncredentials: {api_key_file: keys/a.key}\n",
        );
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        write(&dir.path().join("keys/a.key"), "key one");
        let before = digest(&config);
        assert_eq!(digest(&config), before);
        write(&dir.path().join("keys/a.key"), "key two");
        let rotated = digest(&config);
        assert_ne!(rotated, before);
        write(&dir.path().join("redis.pw"), "two");
        assert_ne!(digest(&config), rotated);
    }

    #[test]
    fn a_missing_config_has_a_digest_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        write(&config, "globals: {}\n");
        let present = digest(&config);
        std::fs::remove_file(&config).unwrap();
        let missing = digest(&config);
        assert_ne!(missing, present);
        write(&config, "globals: {}\n");
        assert_eq!(digest(&config), present);
    }

    #[test]
    fn inputs_dir_substitutes_the_environment_and_resolves_against_the_config() {
        let config = Path::new("/etc/collector/config.yaml");
        let dir = |text: &str| inputs_dir(text.as_bytes(), config, &Env::process());
        assert_eq!(
            dir("inputs_dir: tenants.d"),
            Some(PathBuf::from("/etc/collector/tenants.d"))
        );
        assert_eq!(dir("inputs_dir: /srv/t"), Some(PathBuf::from("/srv/t")));
        assert_eq!(
            dir("inputs_dir: \"${RELOAD_TEST_UNSET_VARIABLE:-t.d}\""),
            Some(PathBuf::from("/etc/collector/t.d"))
        );
        assert_eq!(dir("inputs_dir: \"${RELOAD_TEST_UNSET_VARIABLE}\""), None);
        assert_eq!(dir("inputs: {}"), None);
    }

    /// The watcher reads the environment the loader reads: with an `inputs_dir` named by a
    /// variable that only the injected environment holds, a change to a tenant file the config
    /// reads is a change to the watcher too.
    #[test]
    fn the_watcher_substitutes_with_the_loaders_environment() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::create_dir(dir.path().join("t.d")).unwrap();
        let head = "globals: {persistence: {type: filesystem, config: {directory_name: state}}}\noutputs: {local: {type: file, config: {directory: out}}}\n";
        write(
            &config,
            &format!("{head}inputs_dir: \"${{RELOAD_TEST_INJECTED_DIR}}\"\n"),
        );
        let tenant = dir.path().join("t.d/a.yaml");
        write(
            &tenant,
            "id: 10001\ncredentials: {api_key: aaaaaaaaaaaaaaaaaaaa}\n",
        );
        let env = Env::from_fn(|name| (name == "RELOAD_TEST_INJECTED_DIR").then(|| "t.d".into()));
        assert!(std::env::var("RELOAD_TEST_INJECTED_DIR").is_err());
        let loader = Loader::new(config, env);
        let now = crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap();
        let loaded = loader.load(now).unwrap();
        assert_eq!(
            loaded.config.inputs[0].id, "10001",
            "the loader reads t.d/a.yaml"
        );
        let before = super::digest(&loader);
        write(
            &tenant,
            "id: 10002\ncredentials: {api_key: aaaaaaaaaaaaaaaaaaaa}\n",
        );
        assert_ne!(
            super::digest(&loader),
            before,
            "the watcher missed a change of t.d/a.yaml"
        );
    }

    #[test]
    fn a_change_counts_once_two_polls_saw_it() {
        let (running, half, whole) = ([0; 32], [1; 32], [2; 32]);
        let mut settle = Settle::new(running);
        assert!(!settle.observe(running));
        // Caught half-way through a write, then complete: only the complete bytes count.
        assert!(!settle.observe(half));
        assert!(!settle.observe(whole));
        assert!(settle.observe(whole));
        // Acted upon: no second reload for the same bytes.
        assert!(!settle.observe(whole));
        // Back to the old bytes: that is a change too.
        assert!(!settle.observe(running));
        assert!(settle.observe(running));
    }

    #[tokio::test]
    async fn watch_asks_for_one_reload_per_settled_change() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        write(&config, "globals: {name: a}\n");
        let (trigger, mut requests) = super::super::channel();
        let stop = CancellationToken::new();
        let period = Duration::from_millis(20);
        let task = tokio::spawn(watch(
            process_loader(&config),
            digest(&config),
            period,
            trigger,
            stop.clone(),
        ));
        write(&config, "globals: {name: b}\n");
        let got = tokio::time::timeout(Duration::from_secs(10), requests.next()).await;
        assert_eq!(got, Ok(Some(Cause::FileChanged)));
        // Nothing more changed: no second request within many polls.
        let again = tokio::time::timeout(period * 10, requests.next()).await;
        assert!(again.is_err(), "{again:?}");
        stop.cancel();
        task.await.unwrap();
        // The watcher held the last trigger: the queue is closed.
        assert_eq!(requests.next().await, None);
    }
}
