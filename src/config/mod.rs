//! Configuration: YAML in Devo's layout (`globals`, `outputs`, `inputs.proofpoint_isolation`),
//! validated in one pass that reports every problem with its key path.
//!
//! Config is data: the types here hold what the file says, with paths resolved and values
//! checked (parsed URLs, durations, clamped ranges), and nothing live: no client, no TLS
//! configuration, no limiter, no channel. Components are built from them where they run (the
//! API client builds its TLS configuration from the input's [`crate::trust::ApiTrust`], the
//! daemon its limiters per tenant). A value is whole when it is made: each input's
//! [`Fingerprint`] is computed as its block is read and held beside it in
//! [`Config::fingerprints`].
//!
//! One loader ([`Loader`], file `loader`): every command and every reload reads the file's bytes
//! once into a YAML tree, kept as written in [`Loaded`] (a reload compares it with the running
//! one), and walks that tree into a [`Config`]. `${VAR}` references in string values are
//! substituted from the loader's [`Env`] (the process environment, or an injected one), and the
//! `--watch-config` watcher substitutes with the same function and the same [`Env`]. The tree
//! is walked by hand rather than through `#[serde(deny_unknown_fields)]`: serde stops at the
//! first error, and an operator fixing a config wants the whole list at once (linkerd's
//! parse-all-then-fail). Keys that Devo's collector accepts but that mean nothing here are
//! accepted with a warning, so an existing Devo config works unchanged; keys nobody knows are
//! errors, because a typo must not silently change behaviour.
//!
//! Files: `loader` (read once, the file's warnings), `walker` (the mapping reader that records
//! problems with their key paths), `env` (`${VAR}` substitution), `tenants` (the input blocks
//! and their fingerprints), then one file per section: `globals`, `outputs` (with the network
//! outputs' TLS files), `input` (credentials, request limits, proxy and trust), `services` and
//! `obfuscation`. Each section parser reads its keys in order, one small helper per key or
//! concern; this file holds [`Config`], its walk and the check that spans sections.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_yaml_ng::Value;

pub mod connection;
mod env;
mod globals;
mod input;
mod loader;
mod obfuscation;
mod outputs;
mod pacing;
mod services;
mod tenants;

pub use env::{substitute, Env};
pub use globals::{
    Globals, Persistence, RedisConfig, SentinelConfig, SpoolSettings, DEFAULT_MAX_CONCURRENT_JOBS,
    DEFAULT_WINDOW_MEMORY_BUDGET_MB,
};
pub use input::{InputConfig, KeyPlacement};
pub use loader::{read_yaml, Loaded, Loader};
pub use outputs::{NetworkOutputConfig, OutputConfig, OutputKind, TlsFiles};
pub use pacing::{parse_period, Limit, RequestPacing};
pub use services::ServiceConfig;
pub use tenants::{Fingerprint, InvalidInput};

use crate::yaml_walker::{Cx, Obj};
use env::substitute_env;
use globals::parse_globals;
use outputs::parse_outputs;
use tenants::Origin;

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub globals: Globals,
    /// The global outputs, as written (each input has its effective ones).
    pub outputs: Vec<OutputConfig>,
    /// The valid inputs, in file order.
    pub inputs: Vec<InputConfig>,
    /// Each valid input's fingerprint, by id (see [`Fingerprint`]).
    pub fingerprints: BTreeMap<String, Fingerprint>,
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
    /// Parses config text (see [`Loaded::parse`], which also keeps the tree as written).
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Config, Vec<String>> {
        Loaded::parse(text, base_dir, env, now).map(|loaded| loaded.config)
    }

    /// Substitutes and walks the file's tree (`root`, as written); the arguments are
    /// [`Loaded::parse`]'s.
    fn from_tree(
        mut root: Value,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Config, Vec<String>> {
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
        let (tenants, invalid_inputs) = read_blocks(blocks, &layout, &mut cx);
        let multi_tenant = layout.multi_tenant;
        match globals {
            Some(globals) if cx.errors.is_empty() && !tenants.is_empty() => Ok(Config {
                globals,
                outputs,
                fingerprints: tenants.iter().map(|(i, f)| (i.id.clone(), *f)).collect(),
                inputs: tenants.into_iter().map(|(input, _)| input).collect(),
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

/// Reads every block (valid ones with their fingerprints, invalid ones), then checks that no
/// two share an id.
fn read_blocks(
    blocks: Vec<(Origin, tenants::Block)>,
    layout: &tenants::Layout<'_>,
    cx: &mut Cx,
) -> (Vec<(InputConfig, Fingerprint)>, Vec<InvalidInput>) {
    let (mut inputs, mut invalid) = (Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for (origin, block) in blocks {
        match tenants::read_block(&origin, block, layout, cx) {
            Ok((input, fingerprint)) => {
                ids.push((input.id.clone(), origin.source()));
                inputs.push((input, fingerprint));
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

#[cfg(test)]
mod tests;
