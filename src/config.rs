//! Configuration: YAML in Devo's layout (`globals`, `outputs`, `inputs.proofpoint_isolation`),
//! validated in one pass that reports every problem with its key path.
//!
//! The file is read into a YAML tree, `${VAR}` references in string values are substituted, and
//! the tree is walked by hand rather than through `#[serde(deny_unknown_fields)]`: serde stops at
//! the first error, and an operator fixing a config wants the whole list at once (linkerd's
//! parse-all-then-fail). The walk produces a runtime [`Config`] whose values are valid by
//! construction (parsed URLs, durations, clamped ranges). Keys that Devo's collector accepts but
//! that mean nothing here are accepted with a warning, so an existing Devo config works
//! unchanged; keys nobody knows are errors, because a typo must not silently change behaviour.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_yaml_ng::{Mapping, Value};

use crate::isolation::connection::{self, ApiConnection};
use crate::isolation::limiter::{Limit, RequestLimits, SharedLimits};
use crate::pipeline::obfuscate::{Action, HmacKey, ObfuscationRule, PathSegment, MASK};
use crate::secret::ApiKey;

/// The two services of the Proofpoint Isolation input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    BrowserAndEmailIsolation,
    UrlIsolation,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::BrowserAndEmailIsolation, Service::UrlIsolation];

    /// The service name in the config and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "browser_and_email_isolation",
            Service::UrlIsolation => "url_isolation",
        }
    }

    /// The Devo table its events go to: [`BASE_TAG`] and the service's [`Service::tag_suffix`].
    pub fn table(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "tap.proofpoint.isolation.browser_and_email",
            Service::UrlIsolation => "tap.proofpoint.isolation.url_isolation",
        }
    }

    /// What the service appends to the base tag (`override_base_tag` replaces the base only).
    pub fn tag_suffix(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "browser_and_email",
            Service::UrlIsolation => "url_isolation",
        }
    }

    /// The vendor's host for the service.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "https://proofpointisolation.com",
            Service::UrlIsolation => "https://urlisolation.com",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The base tag of the definitions; each service appends its suffix (`override_base_tag`).
pub const BASE_TAG: &str = "tap.proofpoint.isolation";

/// The API path the collector appends to a service's base URL.
pub const API_PATH: &str = "/api/v2/reporting/usage-data";

/// How long the vendor keeps data (isolation-api.md §3).
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub globals: Globals,
    pub outputs: Vec<OutputConfig>,
    pub input: InputConfig,
    /// Warnings found while validating, to be logged once logging is up.
    pub warnings: Vec<String>,
}

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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// One JSON file per (input id, service) in this directory.
    Filesystem { directory: PathBuf },
    /// Nothing survives a restart (`--no-save-state`, or `type: memory`).
    Memory,
}

#[derive(Clone, Debug)]
pub struct OutputConfig {
    pub name: String,
    pub kind: OutputKind,
}

#[derive(Clone, Debug)]
pub enum OutputKind {
    File {
        directory: PathBuf,
        /// The mode of the files it creates (`mode`, default 0640).
        mode: u32,
    },
    Console,
    /// `devo_platform` (TLS mandatory) or `syslog` (TLS optional).
    Network(NetworkOutputConfig),
}

pub use crate::output::syslog::{NetworkOutputConfig, TlsFiles};

/// Where the API key travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPlacement {
    /// `Authorization: Bearer <key>` (Proofpoint's own tools; keeps the key out of URLs).
    BearerHeader,
    /// `?key=<key>` (older clients). The key is still never logged.
    QueryParameter,
}

#[derive(Clone, Debug)]
pub struct InputConfig {
    /// `inputs.<name>`: always `proofpoint_isolation`.
    pub name: String,
    pub id: String,
    pub enabled: bool,
    pub api_key: ApiKey,
    pub key_placement: KeyPlacement,
    /// Minimum spacing of API requests, from the input's `requests_per_second`; a service's own
    /// setting wins (see [`InputConfig::request_interval`]).
    pub min_request_interval: Option<Duration>,
    /// The input's `requests_limits`, as configured.
    pub requests_limits: Vec<Limit>,
    /// The input's limiter, built from `requests_limits`: one for all its services, because
    /// they share one API key (and the vendor's quota is per key). Cloning the config shares it.
    pub input_limiter: Arc<Mutex<RequestLimits>>,
    /// `environment`: added to every delivered event as `"@devo_environment"`.
    pub environment: Option<String>,
    pub services: Vec<ServiceConfig>,
}

impl InputConfig {
    /// A service's request spacing: the narrowest level that sets `requests_per_second` wins.
    pub fn request_interval(&self, svc: &ServiceConfig) -> Option<Duration> {
        svc.min_request_interval.or(self.min_request_interval)
    }

    /// Every limiter a service's requests must pass: the input's (shared) and its own.
    pub fn limits_for(&self, svc: &ServiceConfig) -> SharedLimits {
        SharedLimits::default()
            .with("inputs.proofpoint_isolation", self.input_limiter.clone())
            .with(
                &format!("services.{}", svc.service),
                Arc::new(Mutex::new(RequestLimits::new(&svc.requests_limits))),
            )
    }
}

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub service: Service,
    /// The Devo table (`override_tag`, else `override_base_tag` + suffix, else the service's).
    pub table: String,
    /// Devo's "Overriding rule" lines for the `override_*` keys given, logged at start.
    pub overrides: Vec<String>,
    pub request_period: Duration,
    /// `use_time_slots_for_retrievals`: daemon cycles start at wall-clock multiples of
    /// `request_period` (after the first, which starts at once).
    pub use_time_slots: bool,
    /// The service's own `requests_per_second`, as a minimum spacing of its requests.
    pub min_request_interval: Option<Duration>,
    /// The service's own `requests_limits` (its limiter is built per puller).
    pub requests_limits: Vec<Limit>,
    /// `start_time_in_utc` as configured (`None`: the API's 30-day retention).
    pub start_time: Option<DateTime<Utc>>,
    /// `start_time_in_utc` exactly as written, stored in state to detect a change.
    pub start_time_text: Option<String>,
    pub window_offset: Duration,
    pub lookback: Duration,
    pub sweep_interval: Duration,
    /// Base URL without trailing slash; [`API_PATH`] is appended.
    pub base_url: url::Url,
    pub page_size: u32,
    pub max_events_per_window: usize,
    pub request_timeout: Duration,
    pub job_poll_initial: Duration,
    pub job_poll_max: Duration,
    pub job_timeout: Duration,
    pub max_retries: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `obfuscation_data`, in config order: applied to every event before any output sees it.
    /// (`Debug` never shows an HMAC secret.)
    pub obfuscation: Vec<ObfuscationRule>,
    /// The input's `proxy_url`/`ca_file`/`ca_file_only`/`system_trust_store`, with the route
    /// resolved for this service's `base_url`. (`Debug` never shows proxy credentials.)
    pub connection: ApiConnection,
}

impl ServiceConfig {
    /// The full endpoint URL.
    pub fn endpoint(&self) -> String {
        format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            API_PATH
        )
    }

    /// Defaults for a service, as if its config section were empty.
    pub fn defaults(service: Service) -> ServiceConfig {
        ServiceConfig {
            service,
            table: service.table().to_owned(),
            overrides: Vec::new(),
            request_period: Duration::from_secs(60),
            use_time_slots: false,
            min_request_interval: None,
            requests_limits: Vec::new(),
            start_time: None,
            start_time_text: None,
            window_offset: Duration::ZERO,
            lookback: Duration::from_secs(35 * 60),
            sweep_interval: Duration::from_secs(15 * 60),
            base_url: url::Url::parse(service.default_base_url()).expect("constant URL"),
            page_size: 10_000,
            max_events_per_window: 50_000,
            request_timeout: Duration::from_secs(300),
            job_poll_initial: Duration::from_secs(2),
            job_poll_max: Duration::from_secs(30),
            job_timeout: Duration::from_secs(30 * 60),
            max_retries: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            obfuscation: Vec::new(),
            connection: ApiConnection::default(),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Error in configuration file {}: {} problem(s) found:",
            self.file.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        write!(
            f,
            "Fix them and run `isolation-collector validate --config {}` again.",
            self.file.display()
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, substitutes and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |p: String| ConfigError {
            file: path.to_owned(),
            problems: vec![p],
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!(
                "cannot read the file: {e}; pass an existing YAML file with --config"
            ))
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut config = Self::parse(&text, &base_dir, &|name| std::env::var(name).ok()).map_err(
            |problems| ConfigError {
                file: path.to_owned(),
                problems,
            },
        )?;
        if let Some(w) = inline_key_exposure(&text, path) {
            config.warnings.push(w);
        }
        Ok(config)
    }

    /// Parses config text. `base_dir` is the config file's directory (certificate paths resolve
    /// against it); `env` looks up `${VAR}` references.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<String>> {
        let mut root: Value = match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => return Err(vec![format!("the file is not valid YAML: {e}")]),
        };
        let mut cx = Cx {
            errors: Vec::new(),
            warnings: Vec::new(),
            base_dir: base_dir.to_owned(),
            env,
        };
        substitute_env(&mut root, "", env, &mut cx);
        let Some(root_map) = root.as_mapping() else {
            return Err(vec![
                "the file must be a mapping with `globals`, `outputs` and `inputs`".into(),
            ]);
        };
        let mut top = Obj::new("", root_map);
        let globals = match top.map("globals", &mut cx) {
            Some(g) => parse_globals(g, &mut cx),
            None => {
                cx.error(
                    "globals",
                    "missing; add a `globals:` section (at least `persistence`)".into(),
                );
                None
            }
        };
        let outputs = match top.map("outputs", &mut cx) {
            Some(o) => parse_outputs(o, &mut cx),
            None => {
                cx.error("outputs", "missing; add at least one output, e.g. `outputs: {local: {type: file, config: {directory: out}}}`".into());
                Vec::new()
            }
        };
        let input = match top.map("inputs", &mut cx) {
            Some(i) => parse_inputs(i, &mut cx),
            None => {
                cx.error(
                    "inputs",
                    "missing; add `inputs: {proofpoint_isolation: {...}}`".into(),
                );
                None
            }
        };
        top.finish(&mut cx);
        if let Some(input) = &input {
            // Each service keeps its own committed length of its table's file; two services
            // writing one file would cut each other's lines when rewinding after a crash.
            let has_file = outputs
                .iter()
                .any(|o| matches!(o.kind, OutputKind::File { .. }));
            for (i, a) in input.services.iter().enumerate() {
                if let Some(b) = input.services[i + 1..].iter().find(|b| b.table == a.table) {
                    if has_file {
                        cx.error(
                            &format!("inputs.proofpoint_isolation.services.{}.override_tag", b.service),
                            format!("`{}` is also the table of {}; with a file output both would write one file; give each service its own table", b.table, a.service),
                        );
                    }
                }
            }
        }
        match (globals, input, cx.errors.is_empty()) {
            (Some(globals), Some(input), true) => Ok(Config {
                globals,
                outputs,
                input,
                warnings: cx.warnings,
            }),
            _ => Err(cx.errors),
        }
    }

    /// The enabled services.
    pub fn services(&self) -> impl Iterator<Item = &ServiceConfig> {
        self.input.services.iter().filter(|_| self.input.enabled)
    }
}

/// A warning when the file holds the API key itself (not `${VAR}` nor `api_key_file`) and
/// other users may read it.
fn inline_key_exposure(text: &str, path: &Path) -> Option<String> {
    let raw: Value = serde_yaml_ng::from_str(text).ok()?;
    let key = raw
        .get("inputs")?
        .get("proofpoint_isolation")?
        .get("credentials")?
        .get("api_key")?
        .as_str()?;
    if key.contains("${") {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            return Some(format!(
                "inputs.proofpoint_isolation.credentials.api_key: the key is written in {} and the file is readable by other users (mode {mode:04o}); run `chmod 600 {}`, or use \"${{ISOLATION_API_KEY}}\" or api_key_file",
                path.display(),
                path.display()
            ));
        }
    }
    None
}

// === The walker ===

struct Cx<'e> {
    errors: Vec<String>,
    warnings: Vec<String>,
    base_dir: PathBuf,
    /// Looks up environment variables (`${VAR}`, `secret_env`); injected so tests need none.
    env: &'e dyn Fn(&str) -> Option<String>,
}

impl Cx<'_> {
    /// Reads a file holding a secret (relative paths are relative to the config file), without
    /// the surrounding whitespace that `echo` or an editor adds. The contents never appear in
    /// an error.
    fn read_secret_file(&mut self, path: &str, name: &str) -> Option<Vec<u8>> {
        let file = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            self.base_dir.join(name)
        };
        match std::fs::read(&file) {
            Ok(bytes) => Some(bytes.trim_ascii().to_vec()),
            Err(err) => {
                self.error(path, format!("cannot read {}: {err}", file.display()));
                None
            }
        }
    }

    fn error(&mut self, path: &str, msg: String) {
        self.errors.push(format!("{path}: {msg}"));
    }
    fn warn(&mut self, path: &str, msg: String) {
        self.warnings.push(format!("{path}: {msg}"));
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping being read: remembers which keys were used so the rest can be reported.
struct Obj<'a> {
    path: String,
    map: &'a Mapping,
    used: BTreeSet<String>,
    /// Keys Devo knows that mean nothing here: accepted with a warning.
    ignored: &'static [&'static str],
}

impl<'a> Obj<'a> {
    fn new(path: &str, map: &'a Mapping) -> Self {
        Obj {
            path: path.to_owned(),
            map,
            used: BTreeSet::new(),
            ignored: &[],
        }
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_owned());
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn map(&mut self, key: &str, cx: &mut Cx) -> Option<Obj<'a>> {
        let path = self.path(key);
        match self.get(key)? {
            Value::Mapping(m) => Some(Obj::new(&path, m)),
            _ => {
                cx.error(&path, "must be a mapping of keys to values".into());
                None
            }
        }
    }

    fn string(&mut self, key: &str, cx: &mut Cx) -> Option<String> {
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
    fn string_or_alias(&mut self, key: &str, alias: &str, cx: &mut Cx) -> Option<String> {
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

    fn boolean(&mut self, key: &str, default: bool, cx: &mut Cx) -> bool {
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
    fn number(&mut self, key: &str, min: f64, max: f64, integer: bool, cx: &mut Cx) -> Option<f64> {
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

    fn seconds(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        default: Duration,
        cx: &mut Cx,
    ) -> Duration {
        self.duration(key, min, max, default, 1.0, cx)
    }

    fn minutes(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        default: Duration,
        cx: &mut Cx,
    ) -> Duration {
        self.duration(key, min, max, default, 60.0, cx)
    }

    /// A number of `unit_secs`-second units within `min..=max`, as a duration.
    fn duration(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        default: Duration,
        unit_secs: f64,
        cx: &mut Cx,
    ) -> Duration {
        self.number(key, min, max, false, cx)
            .map(|n| Duration::from_secs_f64(n * unit_secs))
            .unwrap_or(default)
    }

    /// Reports keys nobody read.
    fn finish(self, cx: &mut Cx) {
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

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value.
fn substitute_env(v: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>, cx: &mut Cx) {
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    cx.error(path, "has `${` without a closing `}`".into());
                    return;
                };
                let expr = &after[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                match (env(name).filter(|v| !v.is_empty()), default) {
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        cx.error(path, format!("refers to the environment variable `{name}`, which is not set; export it or write the value"));
                        return;
                    }
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.as_str().map(str::to_owned).unwrap_or_else(|| show(k));
                substitute_env(val, &join(path, &key), env, cx);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env, cx);
            }
        }
        _ => {}
    }
}

// === Sections ===

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

fn parse_globals(mut g: Obj<'_>, cx: &mut Cx) -> Option<Globals> {
    g.ignored = DEVO_GLOBALS_IGNORED;
    let id = g.string("id", cx).unwrap_or_else(|| "unknown".into());
    let name = g
        .string("name", cx)
        .map(|n| devo_name(&g.path("name"), n, cx))
        .unwrap_or_else(|| "isolation-collector".into());
    let debug = g.boolean("debug", false, cx);
    let shutdown_grace_period = g.seconds(
        "shutdown_grace_period_in_seconds",
        1.0,
        3600.0,
        Duration::from_secs(30),
        cx,
    );
    // Devo allows 60..1800; shorter periods are allowed here for tests and debugging.
    let sender_stats_period = g.seconds(
        "sender_stats_period_in_sec",
        1.0,
        1800.0,
        Duration::from_secs(300),
        cx,
    );
    let persistence = match g.map("persistence", cx) {
        None => {
            cx.warn(&g.path("persistence"), "not set; state is kept in memory only and a restart collects again from `start_time_in_utc` (set `type: filesystem`)".into());
            Some(Persistence::Memory)
        }
        Some(mut p) => {
            let kind = p.string("type", cx);
            let persistence = match kind.as_deref() {
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
                            cx.error(&p.path("config.directory_name"), "missing; the filesystem persistence needs a directory, e.g. `state`".into());
                            None
                        }
                    }
                }
                Some("memory") => {
                    p.get("config");
                    Some(Persistence::Memory)
                }
                Some(other) => {
                    cx.error(
                        &p.path("type"),
                        format!("`{other}` is not supported; use `filesystem` or `memory`"),
                    );
                    None
                }
                None => {
                    cx.error(
                        &p.path("type"),
                        "missing; use `filesystem` (with `config.directory_name`) or `memory`"
                            .into(),
                    );
                    None
                }
            };
            p.finish(cx);
            persistence
        }
    };
    let metrics_listen = g.string("metrics_listen", cx).and_then(|text| {
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
    });
    let memory_log_period = g.seconds(
        "memory_log_period_in_sec",
        10.0,
        86400.0,
        Duration::from_secs(300),
        cx,
    );
    g.finish(cx);
    Some(Globals {
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

/// A file output's `mode`: an octal string such as "0640" (unquoted `0640` is a string too, in
/// YAML 1.2). A YAML number (`640`) is refused rather than guessed at: decimal or octal? The
/// collector must be able to read and write its own files. `None` (the error recorded) if
/// invalid.
fn file_mode(c: &mut Obj<'_>, cx: &mut Cx) -> Option<u32> {
    let path = c.path("mode");
    let Some(value) = c.get("mode") else {
        return Some(crate::output::file::DEFAULT_MODE);
    };
    let fix = "write it as a quoted octal string of permission bits that include owner read and write, e.g. \"0640\" or \"0600\"";
    let mode = match value {
        Value::String(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777 && m & 0o600 == 0o600),
        _ => None,
    };
    if mode.is_none() {
        cx.error(
            &path,
            format!("{} is not a valid file mode; {fix}", show(value)),
        );
    }
    mode
}

fn parse_outputs(mut o: Obj<'_>, cx: &mut Cx) -> Vec<OutputConfig> {
    let names: Vec<String> = o
        .map
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        cx.error(
            &o.path,
            "no output configured; add at least one (devo_platform, syslog, file or console)"
                .into(),
        );
    }
    let mut outputs = Vec::new();
    for name in names {
        let Some(mut out) = o.map(&name, cx) else {
            cx.error(
                &o.path(&name),
                "must be a mapping with `type` and `config`".into(),
            );
            continue;
        };
        let kind = out.string("type", cx);
        let config_obj = out.map("config", cx);
        let path = out.path.clone();
        let kind = match kind.as_deref() {
            Some("file") => {
                let (dir, mode) = match config_obj {
                    Some(mut c) => {
                        let dir = c.string("directory", cx);
                        let mode = file_mode(&mut c, cx);
                        c.finish(cx);
                        (dir, mode)
                    }
                    None => (None, None),
                };
                if dir.is_none() {
                    cx.error(
                        &join(&path, "config.directory"),
                        "missing; the file output needs a directory, e.g. `out`".into(),
                    );
                }
                dir.zip(mode).map(|(d, mode)| OutputKind::File {
                    directory: PathBuf::from(d),
                    mode,
                })
            }
            Some("console" | "stdout") => {
                if let Some(c) = config_obj {
                    c.finish(cx);
                }
                Some(OutputKind::Console)
            }
            Some(t @ ("devo_platform" | "relay" | "syslog" | "in_house_relay" | "sidecar")) => {
                let devo = matches!(t, "devo_platform" | "relay");
                match config_obj {
                    Some(c) => parse_network_output(c, devo, cx).map(OutputKind::Network),
                    None => {
                        cx.error(
                            &join(&path, "config"),
                            "missing; needs at least `address` and `port`".into(),
                        );
                        None
                    }
                }
            }
            Some(other) => {
                cx.error(&join(&path, "type"), format!("`{other}` is not an output type; use devo_platform, syslog, file or console"));
                None
            }
            None => {
                cx.error(
                    &join(&path, "type"),
                    "missing; use devo_platform, syslog, file or console".into(),
                );
                None
            }
        };
        out.finish(cx);
        if let Some(kind) = kind {
            outputs.push(OutputConfig { name, kind });
        }
    }
    o.finish(cx);
    outputs
}

const DEVO_SENDER_IGNORED: &[&str] = &[
    "type",
    "connecting_retries",
    "connecting_initial_wait_in_seconds",
    "connecting_max_wait_in_seconds",
    "sending_timeout",
    "sending_retries",
    "sending_initial_wait_in_seconds",
    "sending_max_wait_in_seconds",
    "concurrent_connections",
    "period_sender_stats_in_seconds",
    "activate_final_queue",
    "threshold_for_using_gzip_in_transport_layer",
    "compression_level",
    "compression_buffer_in_bytes",
    "generate_metrics",
];

/// Resolves a certificate path as Devo does: a bare file name lives in `certs/` (beside the
/// config file, or in the parent of the config directory: Devo's `/devo-collector/{config,certs}`
/// layout); a path with a directory is relative to the config file's directory.
fn resolve_cert(base_dir: &Path, name: &str) -> PathBuf {
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

/// An output's `ca_file` and `system_trust_store`: roots added to Devo's `chain`.
struct OutputTrustKeys {
    ca_file: Option<PathBuf>,
    system_trust_store: bool,
}

impl OutputTrustKeys {
    fn given(&self) -> bool {
        self.ca_file.is_some() || self.system_trust_store
    }
}

fn output_trust_keys(c: &mut Obj<'_>, cx: &mut Cx) -> OutputTrustKeys {
    if c.get("ca_file_only").is_some() {
        cx.error(&c.path("ca_file_only"), "is an input setting; an output never trusts built-in roots, only `chain`, `ca_file` and (with system_trust_store: true) the system store; remove it".into());
    }
    OutputTrustKeys {
        ca_file: c
            .string("ca_file", cx)
            .map(|f| resolve_cert(&cx.base_dir, &f)),
        system_trust_store: c.boolean("system_trust_store", false, cx),
    }
}

fn parse_network_output(mut c: Obj<'_>, devo: bool, cx: &mut Cx) -> Option<NetworkOutputConfig> {
    c.ignored = DEVO_SENDER_IGNORED;
    let address = c.string_or_alias("address", "url", cx);
    if address.is_none() {
        cx.error(
            &c.path("address"),
            "missing; e.g. collector-eu.devo.io".into(),
        );
    }
    let port = c.number("port", 1.0, 65535.0, true, cx).map(|p| p as u16);
    if port.is_none() && !c.map.contains_key("port") {
        cx.error(&c.path("port"), "missing; Devo listens on 443".into());
    }
    let chain = c.string_or_alias("chain", "chain_loc", cx);
    let cert = c.string_or_alias("cert", "cert_loc", cx);
    let key = c.string_or_alias("key", "key_loc", cx);
    let check_hostname = c.boolean("check_hostname", true, cx);
    let tls_wanted = c.boolean("tls", devo, cx);
    let roots = output_trust_keys(&mut c, cx);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) if chain.is_some() || roots.given() => {
            let files = TlsFiles {
                chain: chain.map(|f| resolve_cert(&cx.base_dir, &f)),
                ca_file: roots.ca_file,
                system_trust_store: roots.system_trust_store,
                cert: resolve_cert(&cx.base_dir, &cert),
                key: resolve_cert(&cx.base_dir, &key),
                check_hostname,
            };
            for (k, p) in [
                ("chain", files.chain.as_ref()),
                ("ca_file", files.ca_file.as_ref()),
                ("cert", Some(&files.cert)),
                ("key", Some(&files.key)),
            ] {
                if let Some(p) = p.filter(|p| !p.is_file()) {
                    cx.error(&c.path(k), format!("file {} does not exist; put the Devo domain certificates there (bare names are looked up in certs/)", p.display()));
                }
            }
            Some(files)
        }
        (None, None) if chain.is_none() && !roots.given() && !tls_wanted => None,
        _ => {
            cx.error(&c.path("chain"), "TLS needs `cert` and `key`, and `chain` (or `ca_file`, or system_trust_store: true) to verify the server (Devo: Administration > Credentials > X.509 Certificates)".into());
            None
        }
    };
    let hostname = c.string("hostname", cx);
    let internal_messages = c.boolean("internal_messages", false, cx);
    let max_record_bytes = c
        .number("max_record_bytes", 1024.0, 64.0 * 1024.0 * 1024.0, true, cx)
        .map(|n| n as usize)
        .unwrap_or(256 * 1024);
    let confirm_timeout = c.seconds(
        "confirm_timeout_in_seconds",
        0.1,
        600.0,
        Duration::from_secs(30),
        cx,
    );
    let connect_timeout = c.seconds(
        "connect_timeout_in_seconds",
        0.1,
        600.0,
        Duration::from_secs(10),
        cx,
    );
    if devo {
        if let Some(a) = &address {
            if !a.starts_with("collector-")
                && !a.ends_with(".devo.io")
                && a != "127.0.0.1"
                && a != "localhost"
            {
                cx.warn(
                    &c.path("address"),
                    format!(
                        "`{a}` is not one of Devo's collector-{{us,eu,ca,ap}}.devo.io addresses"
                    ),
                );
            }
        }
    }
    c.finish(cx);
    Some(NetworkOutputConfig {
        devo,
        address: address?,
        port: port?,
        tls,
        hostname,
        max_record_bytes,
        confirm_timeout,
        connect_timeout,
        internal_messages,
    })
}

fn parse_inputs(mut inputs: Obj<'_>, cx: &mut Cx) -> Option<InputConfig> {
    let names: Vec<String> = inputs
        .map
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let mut result = None;
    for name in names {
        if name != "proofpoint_isolation" {
            inputs.get(&name);
            cx.error(
                &inputs.path(&name),
                "unknown input; this collector has one input, `proofpoint_isolation`".into(),
            );
            continue;
        }
        if let Some(input) = inputs.map(&name, cx) {
            result = parse_input(input, cx);
        }
    }
    if !inputs.map.contains_key("proofpoint_isolation") {
        cx.error(
            &inputs.path("proofpoint_isolation"),
            "missing; add the input with its `id`, `credentials` and `services`".into(),
        );
    }
    inputs.finish(cx);
    result
}

fn parse_input(mut i: Obj<'_>, cx: &mut Cx) -> Option<InputConfig> {
    i.ignored = &["autoconfig"];
    let id = i.string("id", cx);
    match &id {
        None => cx.error(&i.path("id"), "missing; a unique number of at least 5 digits such as \"10001\" (it names the state files)".into()),
        Some(id) if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            cx.error(&i.path("id"), format!("`{id}` may only hold letters, digits, `-` and `_` (Devo uses 5+ digits)"))
        }
        _ => {}
    }
    let enabled = i.boolean("enabled", true, cx);
    if !enabled {
        cx.warn(
            &i.path("enabled"),
            "The \"input\" configuration entry for proofpoint_isolation is not enabled".into(),
        );
    }
    let min_request_interval = requests_per_second(&mut i, cx);
    let requests_limits = requests_limits(&mut i, cx);
    let environment = i.string("environment", cx);
    let (api_key, key_placement) = match i.map("credentials", cx) {
        None => {
            cx.error(&i.path("credentials"), "missing; add `credentials: {api_key: ...}` (Isolation console: Product Settings > Reporting API)".into());
            (None, KeyPlacement::BearerHeader)
        }
        Some(mut c) => {
            let inline = c.string("api_key", cx);
            let file = c.string("api_key_file", cx);
            let key = match (inline, file) {
                (Some(_), Some(_)) => {
                    cx.error(
                        &c.path("api_key"),
                        "give either `api_key` or `api_key_file`, not both".into(),
                    );
                    None
                }
                (Some(k), None) => Some(k),
                (None, Some(f)) => cx
                    .read_secret_file(&c.path("api_key_file"), &f)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                (None, None) => {
                    cx.error(
                        &c.path("api_key"),
                        "missing; set `api_key` (e.g. \"${ISOLATION_API_KEY}\") or `api_key_file`"
                            .into(),
                    );
                    None
                }
            };
            let key = key.and_then(|k| {
                let k = k.trim().to_owned();
                if k.is_empty() || k.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
                    cx.error(&c.path("api_key"), "is empty or holds spaces or control characters; paste the key from the Isolation console".into());
                    None
                } else {
                    Some(ApiKey::new(k))
                }
            });
            let placement = match c.string("send_key_as", cx).as_deref() {
                None | Some("bearer_header") => KeyPlacement::BearerHeader,
                Some("query_parameter") => KeyPlacement::QueryParameter,
                Some(other) => {
                    cx.error(&c.path("send_key_as"), format!("`{other}` is not valid; use `bearer_header` (default) or `query_parameter`"));
                    KeyPlacement::BearerHeader
                }
            };
            c.finish(cx);
            (key, placement)
        }
    };
    let connection = parse_api_connection(&mut i, cx);
    let mut services = Vec::new();
    match i.get("services") {
        None => {
            services = Service::ALL
                .iter()
                .map(|s| ServiceConfig::defaults(*s))
                .collect()
        }
        Some(Value::Mapping(m)) => {
            let path = i.path("services");
            let mut seen = BTreeSet::new();
            for (k, v) in m {
                let name = k.as_str().map(str::to_owned).unwrap_or_else(|| show(k));
                let spath = join(&path, &name);
                let Some(service) = Service::from_name(&name) else {
                    cx.error(
                        &spath,
                        "unknown service; use browser_and_email_isolation or url_isolation".into(),
                    );
                    continue;
                };
                seen.insert(service);
                let empty = Mapping::new();
                let map = match v {
                    Value::Null => &empty,
                    Value::Mapping(m) => m,
                    _ => {
                        cx.error(
                            &spath,
                            "must be a mapping of service settings (or empty)".into(),
                        );
                        continue;
                    }
                };
                if let Some(s) = parse_service(service, Obj::new(&spath, map), cx) {
                    services.push(s);
                }
            }
            if m.is_empty() {
                cx.error(
                    &path,
                    "no service listed; add browser_and_email_isolation and/or url_isolation"
                        .into(),
                );
            }
        }
        Some(_) => cx.error(
            &i.path("services"),
            "must be a mapping of service names to settings".into(),
        ),
    }
    if let Some(connection) = connection {
        connect_services(&i, connection, &mut services, cx);
    }
    i.finish(cx);
    Some(InputConfig {
        name: "proofpoint_isolation".into(),
        id: id?,
        enabled,
        api_key: api_key?,
        key_placement,
        min_request_interval,
        input_limiter: Arc::new(Mutex::new(RequestLimits::new(&requests_limits))),
        requests_limits,
        environment,
        services,
    })
}

/// The input's connection keys, read before the services (whose base URLs decide the route).
struct ConnectionKeys {
    proxy_url: Option<url::Url>,
    tls: std::sync::Arc<rustls::ClientConfig>,
    trust: String,
}

/// `proxy_url`, `ca_file`, `ca_file_only`, `system_trust_store` of the input block. `None` if
/// any is invalid (the errors are recorded).
fn parse_api_connection(i: &mut Obj<'_>, cx: &mut Cx) -> Option<ConnectionKeys> {
    let proxy_url = match i.string("proxy_url", cx) {
        None => Ok(None),
        Some(text) => connection::parse_proxy_url(&text).map(Some).map_err(|e| {
            cx.error(&i.path("proxy_url"), e);
        }),
    };
    let ca_file = i
        .string("ca_file", cx)
        .map(|f| resolve_cert(&cx.base_dir, &f));
    let ca_file_only = i.boolean("ca_file_only", false, cx);
    let system = i.boolean("system_trust_store", false, cx);
    if ca_file_only && ca_file.is_none() {
        cx.error(
            &i.path("ca_file_only"),
            "is true but `ca_file` is not set; set ca_file to your CA bundle (PEM), or remove ca_file_only".into(),
        );
        return None;
    }
    if ca_file_only && system {
        cx.error(&i.path("ca_file_only"), "trusts `ca_file` alone, which contradicts system_trust_store: true; remove one of them".into());
        return None;
    }
    let roots = crate::trust::Roots {
        builtin: !ca_file_only,
        system,
        files: ca_file.iter().map(|p| ("ca_file", p.as_path())).collect(),
    };
    let store = crate::trust::root_store(&roots).map_err(|e| {
        let key = match e {
            crate::trust::TrustError::SystemStoreEmpty { .. } => "system_trust_store",
            _ => "ca_file",
        };
        cx.error(&i.path(key), e.to_string());
    });
    let mut trust: Vec<String> = Vec::new();
    if !ca_file_only {
        trust.push("the built-in roots".into());
    }
    if system {
        trust.push("the system trust store".into());
    }
    if let Some(f) = &ca_file {
        trust.push(format!("ca_file {}", f.display()));
    }
    Some(ConnectionKeys {
        proxy_url: proxy_url.ok()?,
        tls: crate::trust::client_config(store.ok()?),
        trust: trust.join(" + "),
    })
}

/// Gives every service the input's trust and the route to its own base URL.
fn connect_services(
    i: &Obj<'_>,
    keys: ConnectionKeys,
    services: &mut [ServiceConfig],
    cx: &mut Cx,
) {
    let mut reported = BTreeSet::new();
    for s in services {
        match connection::resolve(keys.proxy_url.clone(), &s.base_url, cx.env) {
            Ok(proxy) => {
                s.connection = ApiConnection {
                    proxy,
                    tls: keys.tls.clone(),
                    trust: keys.trust.clone(),
                }
            }
            // Both services usually read the same variable: say it once.
            Err(e) if reported.insert(e.clone()) => cx.error(
                &i.path("proxy_url"),
                format!("not set, and {e}; fix the variable or set proxy_url"),
            ),
            Err(_) => {}
        }
    }
}

/// `requests_per_second` (any number above zero, up to 1000) as a minimum request spacing.
fn requests_per_second(o: &mut Obj<'_>, cx: &mut Cx) -> Option<Duration> {
    o.number("requests_per_second", 0.001, 1000.0, false, cx)
        .map(|rps| Duration::from_secs_f64(1.0 / rps))
}

/// `requests_limits`: Devo's list of `{period: "<n><unit>", number_of_requests}`.
fn requests_limits(o: &mut Obj<'_>, cx: &mut Cx) -> Vec<Limit> {
    let path = o.path("requests_limits");
    let Some(v) = o.get("requests_limits") else {
        return Vec::new();
    };
    let Value::Sequence(entries) = v else {
        cx.error(
            &path,
            "must be a list such as `[{period: 1m, number_of_requests: 60}]`".into(),
        );
        return Vec::new();
    };
    let mut limits = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let epath = format!("{path}[{n}]");
        let Value::Mapping(m) = entry else {
            cx.error(
                &epath,
                "must be a mapping with `period` and `number_of_requests`".into(),
            );
            continue;
        };
        let mut e = Obj::new(&epath, m);
        let period = match e.string("period", cx) {
            None => {
                cx.error(&e.path("period"), "missing; e.g. \"1m\" (units s, m, h, d, w, M, y)".into());
                None
            }
            Some(text) => parse_period(&text).map(|d| (d, text.clone())).or_else(|| {
                cx.error(&e.path("period"), format!("`{text}` is not a period; write a whole number and a unit: s, m, h, d, w, M (30 days) or y (365 days), e.g. \"5m\""));
                None
            }),
        };
        let number = match e.get("number_of_requests") {
            None => {
                cx.error(
                    &e.path("number_of_requests"),
                    "missing; 1 to 9999999, or -1 for no limit".into(),
                );
                None
            }
            Some(Value::Number(x)) if x.as_i64() == Some(-1) => Some(None),
            Some(Value::Number(x)) if x.as_i64().is_some_and(|x| (1..=9_999_999).contains(&x)) => {
                x.as_i64().map(|x| Some(x as u32))
            }
            Some(other) => {
                cx.error(
                    &e.path("number_of_requests"),
                    format!(
                        "must be a whole number from 1 to 9999999, or -1 for no limit, got {}",
                        show(other)
                    ),
                );
                None
            }
        };
        e.finish(cx);
        if let (Some((period, text)), Some(max_requests)) = (period, number) {
            limits.push(Limit {
                period,
                max_requests,
                text,
            });
        }
    }
    limits
}

/// Devo's period text: a whole number and one of s, m, h, d, w, M (taken as 30 days) or y
/// (365 days).
pub fn parse_period(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'M' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    if n == 0 {
        return None;
    }
    n.checked_mul(secs).map(Duration::from_secs)
}

fn parse_service(service: Service, mut s: Obj<'_>, cx: &mut Cx) -> Option<ServiceConfig> {
    let d = ServiceConfig::defaults(service);
    let request_period = s.seconds(
        "request_period_in_seconds",
        1.0,
        604_800.0,
        d.request_period,
        cx,
    );
    let start_time_text = s.string("start_time_in_utc", cx);
    let start_time =
        start_time_text
            .as_deref()
            .and_then(|t| match crate::time::parse_user_time(t) {
                Some(t) if t > Utc::now() + chrono::Duration::minutes(5) => {
                    cx.error(
                        &s.path("start_time_in_utc"),
                        format!(
                        "`{t}` is in the future; use a past UTC time such as 2024-06-01T00:00:00Z"
                    ),
                    );
                    None
                }
                Some(t) => Some(t),
                None => {
                    cx.error(
                        &s.path("start_time_in_utc"),
                        format!(
                            "`{t}` is not a date; use ISO 8601 in UTC such as 2024-06-01T00:00:00Z"
                        ),
                    );
                    None
                }
            });
    let window_offset = s.minutes(
        "override_query_window_offset_in_minutes",
        0.0,
        1440.0,
        d.window_offset,
        cx,
    );
    let lookback = s.minutes(
        "late_arrival_lookback_in_minutes",
        0.0,
        1440.0,
        d.lookback,
        cx,
    );
    let sweep_interval = s.minutes(
        "late_arrival_sweep_interval_in_minutes",
        0.0167,
        1440.0,
        d.sweep_interval,
        cx,
    );
    let base_url = match s.string("override_base_url", cx) {
        None => d.base_url.clone(),
        Some(text) => {
            match url::Url::parse(&text) {
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                        cx.error(&s.path("override_base_url"), "must not carry credentials or a query; give scheme, host and port only".into());
                    }
                    if u.path().trim_end_matches('/').ends_with("usage-data") {
                        cx.error(&s.path("override_base_url"), format!("give only scheme, host and port: the collector appends {API_PATH} itself"));
                    }
                    if u.scheme() == "http" {
                        cx.warn(&s.path("override_base_url"), format!("`{text}` is plain http: the API key travels unencrypted; use it only for a local simulator or proxy"));
                    }
                    u
                }
                _ => {
                    cx.error(&s.path("override_base_url"), format!("`{text}` is not an http(s) URL with a host, e.g. https://proofpointisolation.com or http://127.0.0.1:8080"));
                    d.base_url.clone()
                }
            }
        }
    };
    let page_size = s
        .number("page_size", 1.0, 10_000.0, true, cx)
        .map(|n| n as u32)
        .unwrap_or(d.page_size);
    let max_events_per_window = s
        .number("max_events_per_window", 1.0, 10_000_000.0, true, cx)
        .map(|n| n as usize)
        .unwrap_or(d.max_events_per_window);
    if max_events_per_window < page_size as usize {
        cx.error(
            &s.path("max_events_per_window"),
            format!("({max_events_per_window}) must be at least `page_size` ({page_size})"),
        );
    }
    let request_timeout = s.seconds(
        "request_timeout_in_seconds",
        0.1,
        3600.0,
        d.request_timeout,
        cx,
    );
    let job_poll_initial = s.seconds(
        "job_poll_initial_interval_in_seconds",
        0.001,
        600.0,
        d.job_poll_initial,
        cx,
    );
    let job_poll_max = s.seconds(
        "job_poll_max_interval_in_seconds",
        0.001,
        3600.0,
        d.job_poll_max,
        cx,
    );
    let job_timeout = s.minutes("job_timeout_in_minutes", 0.001, 1440.0, d.job_timeout, cx);
    let max_retries = s
        .number("max_retries", 0.0, 100.0, true, cx)
        .map(|n| n as u32)
        .unwrap_or(d.max_retries);
    let retry_initial = s.seconds(
        "retry_initial_interval_in_seconds",
        0.001,
        600.0,
        d.retry_initial,
        cx,
    );
    let retry_max = s.seconds(
        "retry_max_interval_in_seconds",
        0.001,
        3600.0,
        d.retry_max,
        cx,
    );
    let (table, overrides) = service_table(service, &mut s, cx);
    let obfuscation = match s.get("obfuscation_data") {
        None => Vec::new(),
        Some(v) => parse_obfuscation(&s.path("obfuscation_data"), v, cx),
    };
    let min_request_interval = requests_per_second(&mut s, cx);
    let requests_limits = requests_limits(&mut s, cx);
    let use_time_slots = s.boolean("use_time_slots_for_retrievals", false, cx);
    if use_time_slots {
        cx.warn(&s.path("use_time_slots_for_retrievals"), format!("pull cycles after the first start at wall-clock multiples of request_period_in_seconds ({} s); each cycle still asks for everything up to its start", request_period.as_secs_f64()));
    }
    s.ignored = &["retries"];
    s.finish(cx);
    Some(ServiceConfig {
        service,
        table,
        overrides,
        request_period,
        use_time_slots,
        min_request_interval,
        requests_limits,
        start_time,
        start_time_text,
        window_offset,
        lookback,
        sweep_interval,
        base_url,
        page_size,
        max_events_per_window,
        request_timeout,
        job_poll_initial,
        job_poll_max,
        job_timeout,
        max_retries,
        retry_initial,
        retry_max,
        obfuscation,
        // The input's trust and route, set once all services are read.
        connection: d.connection,
    })
}

/// A valid Devo table name (or base tag): 1 to 1024 characters, no spaces or colons.
fn table_name(s: &mut Obj<'_>, key: &str, cx: &mut Cx) -> Option<String> {
    let t = s.string(key, cx)?;
    if !t.is_empty() && t.len() <= 1024 && !t.chars().any(|c| c.is_whitespace() || c == ':') {
        return Some(t);
    }
    cx.error(
        &s.path(key),
        format!("`{t}` is not a Devo table name (1 to 1024 characters, no spaces or colons)"),
    );
    None
}

/// The service's table: `override_tag` replaces it whole and wins; `override_base_tag` replaces
/// the base (`tap.proofpoint.isolation`) before the service's suffix. Returns the table and
/// Devo's "Overriding rule" lines for the log.
fn service_table(service: Service, s: &mut Obj<'_>, cx: &mut Cx) -> (String, Vec<String>) {
    let tag = table_name(s, "override_tag", cx);
    let base = table_name(s, "override_base_tag", cx);
    let mut overrides = Vec::new();
    if let Some(b) = &base {
        overrides.push(format!(
            "Overriding rule #{} - base_tag: \"{BASE_TAG}\" -> \"{b}\"",
            overrides.len() + 1
        ));
    }
    if let Some(t) = &tag {
        overrides.push(format!(
            "Overriding rule #{} - tag: \"{}\" -> \"{t}\"",
            overrides.len() + 1,
            service.table()
        ));
        if base.is_some() {
            cx.warn(
                &s.path("override_base_tag"),
                format!(
                    "has no effect on this service: `override_tag` sets its whole table (`{t}`)"
                ),
            );
        }
    }
    let table = match (tag, base) {
        (Some(t), _) => t,
        (None, Some(b)) => format!("{}.{}", b.trim_end_matches('.'), service.tag_suffix()),
        (None, None) => service.table().to_owned(),
    };
    (table, overrides)
}

/// `obfuscation_data`: Devo's entries (`name`, `value`, `string_patterns`) plus `method:
/// hmac_sha256` with `secret_env` or `secret_file`. Secrets are never accepted inline, so a
/// config file can be shared or logged without leaking the key that protects the pseudonyms.
fn parse_obfuscation(path: &str, v: &Value, cx: &mut Cx) -> Vec<ObfuscationRule> {
    let Value::Sequence(entries) = v else {
        cx.error(
            path,
            "must be a list of entries such as `- name: [userName]`".into(),
        );
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let epath = format!("{path}[{i}]");
        let Value::Mapping(m) = entry else {
            cx.error(
                &epath,
                "must be a mapping with at least `name` (the key path)".into(),
            );
            continue;
        };
        if let Some(rule) = parse_obfuscation_entry(Obj::new(&epath, m), cx) {
            rules.push(rule);
        }
    }
    rules
}

fn parse_obfuscation_entry(mut e: Obj<'_>, cx: &mut Cx) -> Option<ObfuscationRule> {
    let name_path = e.path("name");
    let segment_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let path: Option<Vec<PathSegment>> = match e.get("name") {
        None => {
            cx.error(&name_path, "missing; give the key path of the field, e.g. `name: [user, email]` (`\"*\"` matches every key or list item)".into());
            None
        }
        Some(Value::Sequence(items)) if !items.is_empty() => {
            let mut segments = Vec::new();
            for (j, item) in items.iter().enumerate() {
                match segment_text(item) {
                    Some(t) => segments.push(PathSegment::parse(&t)),
                    None => cx.error(
                        &format!("{name_path}[{j}]"),
                        "must be a key (a string) or \"*\"".into(),
                    ),
                }
            }
            (segments.len() == items.len()).then_some(segments)
        }
        Some(v @ (Value::String(_) | Value::Number(_))) => {
            let t = segment_text(v).unwrap_or_default();
            if t.contains('.') {
                cx.warn(&name_path, format!("`{t}` is taken as one key, dots included; for a nested field write a list such as [{}]", t.replace('.', ", ")));
            }
            Some(vec![PathSegment::parse(&t)])
        }
        Some(_) => {
            cx.error(
                &name_path,
                "must be a non-empty list of keys, e.g. [user, email]".into(),
            );
            None
        }
    };
    let value_path = e.path("value");
    let value = match e.get("value") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
            serde_json::to_value(v).ok()
        }
        Some(_) => {
            cx.error(&value_path, "must be a string, number or boolean of the field's own type (objects and lists cannot replace a field)".into());
            None
        }
    };
    let patterns_path = e.path("string_patterns");
    let patterns: Option<Vec<regex::Regex>> = match e.get("string_patterns") {
        None => None,
        Some(v) => {
            let items: Vec<(String, &Value)> = match v {
                Value::Sequence(items) => items
                    .iter()
                    .enumerate()
                    .map(|(j, p)| (format!("{patterns_path}[{j}]"), p))
                    .collect(),
                Value::String(_) => vec![(patterns_path.clone(), v)],
                _ => Vec::new(),
            };
            if items.is_empty() {
                cx.error(
                    &patterns_path,
                    "must be a non-empty list of regular expressions, e.g. [\"token=[^&]+\"]"
                        .into(),
                );
            }
            let mut regexes = Vec::new();
            for (p, item) in items {
                let Value::String(text) = item else {
                    cx.error(&p, "must be a regular expression (a string)".into());
                    continue;
                };
                match regex::Regex::new(text) {
                    Ok(re) if re.is_match("") => cx.error(&p, format!("`{text}` matches the empty string, so it would insert the replacement everywhere; make it match at least one character")),
                    Ok(re) => regexes.push(re),
                    Err(err) => {
                        // The crate's message is several lines (pattern, caret, cause): keep the cause.
                        let msg = err.to_string();
                        let cause = msg.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().trim_start_matches("error: ");
                        cx.error(&p, format!("invalid regex `{text}`: {cause}"));
                    }
                }
            }
            Some(regexes)
        }
    };
    let method = e.string("method", cx);
    let secret_env = e.string("secret_env", cx);
    let secret_file = e.string("secret_file", cx);
    for inline in ["secret", "key", "hmac_key"] {
        if e.get(inline).is_some() {
            cx.error(&e.path(inline), "secrets are not accepted inline; put the HMAC key in an environment variable (`secret_env`) or a file (`secret_file`)".into());
        }
    }
    let action = match method.as_deref() {
        None | Some("mask") => {
            for (k, given) in [("secret_env", &secret_env), ("secret_file", &secret_file)] {
                if given.is_some() {
                    cx.error(&e.path(k), "only used with `method: hmac_sha256`".into());
                }
            }
            match patterns {
                Some(regexes) => {
                    let replacement = match &value {
                        None => Some(MASK.to_owned()),
                        Some(serde_json::Value::String(r)) => Some(r.clone()),
                        Some(_) => {
                            cx.error(&value_path, "with `string_patterns`, `value` is the text that replaces each match and must be a string".into());
                            None
                        }
                    };
                    replacement.map(|replacement| Action::Patterns {
                        regexes,
                        replacement,
                    })
                }
                None => Some(Action::Mask { value }),
            }
        }
        Some("hmac_sha256") => {
            if e.map.get("value").is_some_and(|v| !v.is_null()) {
                cx.error(
                    &value_path,
                    "cannot be combined with `method: hmac_sha256` (the token replaces the value)"
                        .into(),
                );
            }
            if e.map.get("string_patterns").is_some_and(|v| !v.is_null()) {
                cx.error(&patterns_path, "cannot be combined with `method: hmac_sha256` (the token replaces the whole value)".into());
            }
            let secret: Option<Vec<u8>> = match (&secret_env, &secret_file) {
                (Some(_), Some(_)) => {
                    cx.error(
                        &e.path("secret_env"),
                        "give either `secret_env` or `secret_file`, not both".into(),
                    );
                    None
                }
                (None, None) => {
                    cx.error(&e.path("secret_env"), "missing; `method: hmac_sha256` needs its key from `secret_env: VARIABLE` or `secret_file: PATH` (e.g. generated with `openssl rand -hex 32`)".into());
                    None
                }
                (Some(var), None) => match (cx.env)(var).filter(|v| !v.trim().is_empty()) {
                    Some(v) => Some(v.trim().as_bytes().to_vec()),
                    None => {
                        cx.error(&e.path("secret_env"), format!("the environment variable `{var}` is not set or empty; export the HMAC key there"));
                        None
                    }
                },
                (None, Some(f)) => cx.read_secret_file(&e.path("secret_file"), f),
            };
            let secret = secret.filter(|s| {
                // A short key can be guessed from one known (value, token) pair, and then
                // every pseudonym is reversible by trying the field's likely values.
                let ok = s.len() >= 16;
                if !ok {
                    let k = if secret_env.is_some() { "secret_env" } else { "secret_file" };
                    cx.error(&e.path(k), format!("the HMAC key has {} byte(s); use at least 16 (32 random bytes recommended, e.g. `openssl rand -hex 32`)", s.len()));
                }
                ok
            });
            secret.map(|s| Action::Hmac {
                key: HmacKey::new(&s),
            })
        }
        Some(other) => {
            cx.error(
                &e.path("method"),
                format!("`{other}` is not supported; use `mask` (default) or `hmac_sha256`"),
            );
            None
        }
    };
    e.finish(cx);
    Some(ObfuscationRule {
        path: path?,
        action: action?,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod connection_tests;
