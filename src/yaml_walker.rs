//! The YAML walker: [`Obj`] reads a mapping key by key with typed getters (each records a
//! problem with its key path instead of stopping), and [`Cx`] collects the problems and warnings
//! of the whole file, so that a config with five mistakes is reported once, with five lines.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

pub(crate) struct Cx<'e> {
    pub(crate) errors: Vec<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) base_dir: PathBuf,
    /// Looks up environment variables (`${VAR}`, `secret_env`); injected so tests need none.
    pub(crate) env: &'e dyn Fn(&str) -> Option<String>,
    /// The time of the check (a `start_time_in_utc` after it is refused); from the injected clock.
    pub(crate) now: chrono::DateTime<chrono::Utc>,
    /// The sha256 of each secret file read, in order: an input's fingerprint covers the files
    /// its block reads (a rotated key file restarts that input on reload).
    pub(crate) files_read: Vec<[u8; 32]>,
}

impl Cx<'_> {
    /// Reads a file holding a secret (relative paths are relative to the config file), without
    /// the surrounding whitespace that `echo` or an editor adds. The contents never appear in
    /// an error.
    pub(crate) fn read_secret_file(&mut self, path: &str, name: &str) -> Option<Vec<u8>> {
        let file = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            self.base_dir.join(name)
        };
        match std::fs::read(&file) {
            Ok(bytes) => {
                let bytes = bytes.trim_ascii().to_vec();
                self.files_read.push(Sha256::digest(&bytes).into());
                Some(bytes)
            }
            Err(err) => {
                self.error(path, format!("cannot read {}: {err}", file.display()));
                None
            }
        }
    }

    pub(crate) fn error(&mut self, path: &str, msg: String) {
        self.errors.push(format!("{path}: {msg}"));
    }
    pub(crate) fn warn(&mut self, path: &str, msg: String) {
        self.warnings.push(format!("{path}: {msg}"));
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping being read: remembers which keys were used so the rest can be reported.
pub(crate) struct Obj<'a> {
    pub(crate) path: String,
    pub(crate) map: &'a Mapping,
    pub(crate) used: BTreeSet<String>,
    /// Keys Devo knows that mean nothing here: accepted with a warning.
    pub(crate) ignored: &'static [&'static str],
}

impl<'a> Obj<'a> {
    pub(crate) fn new(path: &str, map: &'a Mapping) -> Self {
        Obj {
            path: path.to_owned(),
            map,
            used: BTreeSet::new(),
            ignored: &[],
        }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The mapping's string keys, in file order (for sections whose keys are names).
    pub(crate) fn names(&self) -> Vec<String> {
        self.map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_owned());
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn map(&mut self, key: &str, cx: &mut Cx) -> Option<Obj<'a>> {
        let path = self.path(key);
        match self.get(key)? {
            Value::Mapping(m) => Some(Obj::new(&path, m)),
            _ => {
                cx.error(&path, "must be a mapping of keys to values".into());
                None
            }
        }
    }

    /// A mapping the file must have: absent (or not a mapping), it is an error that says
    /// `missing; {add}`.
    pub(crate) fn required_map(&mut self, key: &str, add: &str, cx: &mut Cx) -> Option<Obj<'a>> {
        let map = self.map(key, cx);
        if map.is_none() {
            cx.error(&self.path(key), format!("missing; {add}"));
        }
        map
    }

    pub(crate) fn string(&mut self, key: &str, cx: &mut Cx) -> Option<String> {
        let path = self.path(key);
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                cx.error(&path, "must be a string".into());
                None
            }
        }
    }

    /// A string under `key` or Devo's other name for it (`url` for `address`, `chain_loc` for
    /// `chain`...); giving both is an error.
    pub(crate) fn string_or_alias(
        &mut self,
        key: &str,
        alias: &str,
        cx: &mut Cx,
    ) -> Option<String> {
        match (self.string(key, cx), self.string(alias, cx)) {
            (Some(k), Some(_)) => {
                cx.error(
                    &self.path(alias),
                    format!(
                        "give either `{key}` or `{alias}` (Devo's other name for it), not both"
                    ),
                );
                Some(k)
            }
            (k, a) => k.or(a),
        }
    }

    pub(crate) fn boolean(&mut self, key: &str, default: bool, cx: &mut Cx) -> bool {
        let path = self.path(key);
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(_) => {
                cx.error(&path, "must be true or false".into());
                default
            }
        }
    }

    /// A number within `range`; `None` if absent or invalid (the error is recorded).
    pub(crate) fn number(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        integer: bool,
        cx: &mut Cx,
    ) -> Option<f64> {
        let path = self.path(key);
        let v = self.get(key)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && (!integer || n.fract() == 0.0) && n >= min && n <= max => {
                Some(n)
            }
            _ => {
                let kind = if integer {
                    "a whole number"
                } else {
                    "a number"
                };
                cx.error(
                    &path,
                    format!("must be {kind} from {min} to {max}, got {}", show(v)),
                );
                None
            }
        }
    }

    /// A number within `range`, in the unit the key's name says (`..._in_minutes`, else
    /// seconds), as a duration (`default` if absent or invalid; the error is recorded).
    pub(crate) fn duration(
        &mut self,
        key: &str,
        range: RangeInclusive<f64>,
        default: Duration,
        cx: &mut Cx,
    ) -> Duration {
        self.number(key, *range.start(), *range.end(), false, cx)
            .map(|n| Duration::from_secs_f64(n * TimeUnit::of(key).seconds()))
            .unwrap_or(default)
    }

    /// Reports keys nobody read.
    pub(crate) fn finish(self, cx: &mut Cx) {
        for key in self.map.keys() {
            let name = match key {
                Value::String(s) => s.clone(),
                other => show(other),
            };
            if self.used.contains(&name) {
                continue;
            }
            let path = join(&self.path, &name);
            if self.ignored.contains(&name.as_str()) || name.starts_with("queue_") {
                cx.warn(
                    &path,
                    format!(
                        "Devo collector setting with no effect here; ignored: {}",
                        ignored_because(&name)
                    ),
                );
            } else {
                cx.error(&path, "unknown key; check its spelling and its place in the file (see examples/config.yaml)".into());
            }
        }
    }
}

/// A list of mappings (`requests_limits`, `obfuscation_data`): each entry read by `parse`, in
/// order. `not_list` and `not_mapping` say what was expected; a wrong entry is reported and
/// skipped, and the others are still read.
pub(crate) fn each_mapping<T>(
    path: &str,
    v: &Value,
    not_list: &str,
    not_mapping: &str,
    cx: &mut Cx,
    mut parse: impl FnMut(Obj<'_>, &mut Cx) -> Option<T>,
) -> Vec<T> {
    let Value::Sequence(entries) = v else {
        cx.error(path, not_list.into());
        return Vec::new();
    };
    let mut parsed = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let epath = format!("{path}[{n}]");
        let Value::Mapping(m) = entry else {
            cx.error(&epath, not_mapping.into());
            continue;
        };
        parsed.extend(parse(Obj::new(&epath, m), cx));
    }
    parsed
}

/// What happens instead of a Devo setting this collector ignores.
fn ignored_because(key: &str) -> &'static str {
    match key {
        k if k.starts_with("queue_") => "there is no internal queue; each window is held in memory (bounded by max_events_per_window) until every output confirmed it",
        "multiprocessing" => "the collector runs one async task per service in one process",
        "balanced_output" => "every event goes to every output (Devo's default fan-out)",
        "generate_collector_details" => "the collector's own details are in its log and at globals.metrics_listen",
        "devo_sender_threshold_for_using_gzip_in_transport_layer"
        | "devo_sender_compression_level"
        | "devo_sender_compression_buffer_in_bytes"
        | "threshold_for_using_gzip_in_transport_layer"
        | "compression_level"
        | "compression_buffer_in_bytes" => "records are sent uncompressed (as Devo 1.8 does with its default threshold)",
        "type" => "TLS is used when `chain`, `cert` and `key` are given (always for devo_platform)",
        "connecting_retries" | "connecting_initial_wait_in_seconds" | "connecting_max_wait_in_seconds" => "a failed connection is retried with capped backoff on the next delivery attempt; connect_timeout_in_seconds bounds one attempt",
        "sending_timeout" | "sending_retries" | "sending_initial_wait_in_seconds" | "sending_max_wait_in_seconds" => "a batch waits confirm_timeout_in_seconds for the receiver; an unconfirmed window is delivered again",
        "concurrent_connections" => "each service uses one connection per output (Devo 1.8 also uses one)",
        "period_sender_stats_in_seconds" => "the statistics period is globals.sender_stats_period_in_sec",
        "activate_final_queue" => "nothing is queued after the output: a window counts as delivered only when the receiver confirmed it",
        "generate_metrics" => "metrics are served at globals.metrics_listen",
        "retries" => "as in Devo; request retries follow max_retries",
        "autoconfig" => "the collector has no auto-configuration",
        _ => "it has no meaning for this collector",
    }
}

pub(crate) fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The unit a duration key is written in: its name says it (`..._in_seconds`, `..._in_sec`,
/// `..._in_minutes`), so the unit is taken from the name and cannot disagree with it.
#[derive(Clone, Copy, Debug)]
enum TimeUnit {
    Seconds,
    Minutes,
}

impl TimeUnit {
    fn of(key: &str) -> TimeUnit {
        if key.ends_with("_in_minutes") {
            TimeUnit::Minutes
        } else {
            debug_assert!(
                key.ends_with("_in_seconds") || key.ends_with("_in_sec"),
                "duration key `{key}` does not name its unit"
            );
            TimeUnit::Seconds
        }
    }

    fn seconds(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1.0,
            TimeUnit::Minutes => 60.0,
        }
    }
}

/// Resolves a certificate path as Devo does: a bare file name lives in `certs/` (beside the
/// config file, or in the parent of the config directory: Devo's `/devo-collector/{config,certs}`
/// layout); a path with a directory is relative to the config file's directory.
pub(crate) fn resolve_cert(base_dir: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_owned();
    }
    if p.components().count() == 1 {
        let beside = base_dir.join("certs").join(p);
        if beside.exists() {
            return beside;
        }
        if let Some(parent) = base_dir.parent() {
            let devo = parent.join("certs").join(p);
            if devo.exists() {
                return devo;
            }
        }
        return beside;
    }
    base_dir.join(p)
}
