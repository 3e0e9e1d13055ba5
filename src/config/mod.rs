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
//!
//! Files: `walker` (the mapping reader that records problems with their key paths), `env`
//! (`${VAR}` substitution), then one file per section: `globals`, `outputs` (with the network
//! outputs' TLS files), `input` (credentials, request limits, proxy and trust), `services` and
//! `obfuscation`. Each section parser reads its keys in order, one small helper per key or
//! concern; this file holds [`Config`], loading and the check that spans sections.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_yaml_ng::Value;

mod env;
mod globals;
mod input;
mod obfuscation;
mod outputs;
mod pacing;
mod services;
mod tenants;
pub(crate) mod walker;

pub use globals::{
    Globals, Persistence, RedisConfig, SentinelConfig, DEFAULT_MAX_CONCURRENT_JOBS,
    DEFAULT_WINDOW_MEMORY_BUDGET_MB,
};
pub use input::{InputConfig, KeyPlacement};
pub use outputs::{NetworkOutputConfig, OutputConfig, OutputKind, TlsFiles};
pub use pacing::{parse_period, Limit, RequestPacing};
pub use services::ServiceConfig;
pub use tenants::InvalidInput;

use env::substitute_env;
use globals::parse_globals;
use outputs::parse_outputs;
use tenants::Origin;
use walker::{Cx, Obj};

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub globals: Globals,
    /// The global outputs, as written (each input has its effective ones).
    pub outputs: Vec<OutputConfig>,
    /// The valid inputs, in file order.
    pub inputs: Vec<InputConfig>,
    /// The input blocks with problems: `run` starts the others (`--strict` refuses).
    pub invalid_inputs: Vec<InvalidInput>,
    /// Several tenants (the list form): each input's file outputs write under
    /// `<directory>/<id>/`. Devo's single block keeps `<directory>/<table>.jsonl`.
    pub multi_tenant: bool,
    /// Warnings found while validating, to be logged once logging is up.
    pub warnings: Vec<String>,
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

/// The problems of a config's invalid inputs, each input's under its id (`validate`,
/// `run --strict`).
pub struct InputProblems<'a> {
    file: &'a Path,
    invalid: &'a [InvalidInput],
}

impl fmt::Display for InputProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count: usize = self.invalid.iter().map(|i| i.problems.len()).sum();
        writeln!(
            f,
            "Error in configuration file {}: {count} problem(s) found in {} input(s):",
            self.file.display(),
            self.invalid.len()
        )?;
        for bad in self.invalid {
            match &bad.id {
                Some(id) => writeln!(f, "  input {id} ({}):", bad.source)?,
                None => writeln!(f, "  input without a valid id ({}):", bad.source)?,
            }
            for p in &bad.problems {
                writeln!(f, "    - {p}")?;
            }
        }
        write!(
            f,
            "Fix them and run `isolation-collector validate --config {}` again.",
            self.file.display()
        )
    }
}

// What the error for a missing top-level section tells the user to add.
const ADD_GLOBALS: &str = "add a `globals:` section (at least `persistence`)";
const ADD_OUTPUTS: &str =
    "add at least one output, e.g. `outputs: {local: {type: file, config: {directory: out}}}`";
const ADD_INPUTS: &str = "add `inputs: {proofpoint_isolation: {...}}`";

impl Config {
    /// Reads, substitutes and validates a config file; `now` is the time it is checked against.
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<Config, ConfigError> {
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
        let mut config = Self::parse(&text, &base_dir, &|name| std::env::var(name).ok(), now)
            .map_err(|problems| ConfigError {
                file: path.to_owned(),
                problems,
            })?;
        if let Some(w) = inline_key_exposure(&text, path) {
            config.warnings.push(w);
        }
        if let Some(w) = inline_redis_password_exposure(&text, path) {
            config.warnings.push(w);
        }
        Ok(config)
    }

    /// Parses config text. `base_dir` is the config file's directory (certificate paths resolve
    /// against it); `env` looks up `${VAR}` references; `now` is the current time (no start time
    /// may lie after it). Problems outside the input blocks, or no valid input, fail the whole
    /// config; a block with problems is kept in [`Config::invalid_inputs`].
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        now: DateTime<Utc>,
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
            now,
            files_read: Vec::new(),
        };
        let taken = tenants::take_blocks(&mut root);
        substitute_env(&mut root, "", env, &mut cx);
        let Some(root_map) = root.as_mapping() else {
            return Err(vec![
                "the file must be a mapping with `globals`, `outputs` and `inputs`".into(),
            ]);
        };
        let mut top = Obj::new("", root_map);
        let globals = top
            .required_map("globals", ADD_GLOBALS, &mut cx)
            .and_then(|g| parse_globals(g, &mut cx));
        let read_before = cx.files_read.len();
        let outputs = top
            .required_map("outputs", ADD_OUTPUTS, &mut cx)
            .map(|o| parse_outputs(o, &mut cx))
            .unwrap_or_default();
        let digest =
            tenants::outputs_digest(root_map.get("outputs"), &cx.files_read[read_before..]);
        let blocks = input_sections(&mut top, taken, &mut cx);
        top.finish(&mut cx);
        let layout = tenants::Layout {
            global: tenants::GlobalOutputs {
                outputs: &outputs,
                digest,
            },
            multi_tenant: blocks.iter().any(|(o, _)| !matches!(o, Origin::Single)),
        };
        let (inputs, invalid_inputs) = read_blocks(blocks, &layout, &mut cx);
        let multi_tenant = layout.multi_tenant;
        match globals {
            Some(globals) if cx.errors.is_empty() && !inputs.is_empty() => Ok(Config {
                globals,
                outputs,
                inputs,
                invalid_inputs,
                multi_tenant,
                warnings: cx.warnings,
            }),
            // The whole config fails: every problem, the blocks' too.
            _ => Err(cx
                .errors
                .into_iter()
                .chain(invalid_inputs.into_iter().flat_map(|i| i.problems))
                .collect()),
        }
    }

    /// The enabled services of the valid inputs, each with its input.
    pub fn services(&self) -> impl Iterator<Item = (&InputConfig, &ServiceConfig)> {
        self.inputs
            .iter()
            .filter(|i| i.enabled)
            .flat_map(|i| i.services.iter().map(move |s| (i, s)))
    }

    /// The problems of the invalid inputs, for a message (`file` is the config file).
    pub fn input_problems<'a>(&'a self, file: &'a Path) -> InputProblems<'a> {
        InputProblems {
            file,
            invalid: &self.invalid_inputs,
        }
    }

    /// The valid input with this id.
    pub fn input(&self, id: &str) -> Option<&InputConfig> {
        self.inputs.iter().find(|i| i.id == id)
    }
}

/// The input blocks of `inputs` (`taken` from it before the substitution) and of `inputs_dir`;
/// `inputs` may be absent when `inputs_dir` is given.
fn input_sections(
    top: &mut Obj<'_>,
    taken: Option<Value>,
    cx: &mut Cx,
) -> Vec<(Origin, tenants::Block)> {
    let dir = top.string("inputs_dir", cx);
    let mut blocks = match &dir {
        None => top.required_map("inputs", ADD_INPUTS, cx),
        Some(_) => top.map("inputs", cx),
    }
    .map(|i| tenants::input_blocks(i, taken, dir.is_none(), cx))
    .unwrap_or_default();
    if let Some(dir) = dir {
        let from_dir = tenants::dir_blocks(&top.path("inputs_dir"), &dir, cx);
        if from_dir.is_empty() && blocks.is_empty() {
            cx.error(&top.path("inputs_dir"), format!("`{dir}` holds no input file; add one `<name>.yaml` per tenant, each holding one input block"));
        }
        blocks.extend(from_dir);
    }
    blocks
}

/// Reads every block (valid ones, invalid ones), then checks that no two share an id.
fn read_blocks(
    blocks: Vec<(Origin, tenants::Block)>,
    layout: &tenants::Layout<'_>,
    cx: &mut Cx,
) -> (Vec<InputConfig>, Vec<InvalidInput>) {
    let (mut inputs, mut invalid) = (Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for (origin, block) in blocks {
        match tenants::read_block(&origin, block, layout, cx) {
            Ok(input) => {
                ids.push((input.id.clone(), origin.source()));
                inputs.push(input);
            }
            Err(bad) => {
                if let Some(id) = &bad.id {
                    ids.push((id.clone(), origin.source()));
                }
                invalid.push(bad);
            }
        }
    }
    tenants::check_duplicate_ids(ids.iter().map(|(id, s)| (id.as_str(), s.clone())), cx);
    (inputs, invalid)
}

/// A warning when the file holds the API key itself (not `${VAR}` nor `api_key_file`) and
/// other users may read it.
/// A warning when the file holds the Redis password itself (not `${VAR}` nor `password_file`)
/// and other users may read it.
fn inline_redis_password_exposure(text: &str, path: &Path) -> Option<String> {
    let raw: Value = serde_yaml_ng::from_str(text).ok()?;
    let persistence = raw.get("globals")?.get("persistence")?;
    let password = persistence.get("config")?.get("password")?.as_str()?;
    if persistence.get("type")?.as_str()? != "redis" || password.contains("${") {
        return None;
    }
    let mode = mode_readable_by_others(path)?;
    Some(format!(
        "globals.persistence.config.password: the Redis password is written in {} and the file is readable by other users (mode {mode:04o}); run `chmod 600 {}`, or use \"${{REDIS_PASSWORD}}\" or password_file",
        path.display(),
        path.display()
    ))
}

/// The file's mode if users other than its owner may read it.
fn mode_readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn inline_key_exposure(text: &str, path: &Path) -> Option<String> {
    let raw: Value = serde_yaml_ng::from_str(text).ok()?;
    let section = raw.get("inputs")?.get("proofpoint_isolation")?;
    let inline = |block: &Value| {
        block
            .get("credentials")
            .and_then(|c| c.get("api_key"))
            .and_then(Value::as_str)
            .is_some_and(|key| !key.contains("${"))
    };
    // Devo's single block, or the first listed block that holds its key.
    let place = match section {
        Value::Sequence(blocks) => blocks
            .iter()
            .position(inline)
            .map(|n| format!("inputs.proofpoint_isolation[{n}]"))?,
        block if inline(block) => "inputs.proofpoint_isolation".to_owned(),
        _ => return None,
    };
    let mode = mode_readable_by_others(path)?;
    Some(format!(
        "{place}.credentials.api_key: the key is written in {} and the file is readable by other users (mode {mode:04o}); run `chmod 600 {}`, or use \"${{ISOLATION_API_KEY}}\" or api_key_file",
        path.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod connection_tests;

#[cfg(test)]
mod tenants_tests;
