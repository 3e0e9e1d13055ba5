//! The one loader of the configuration. `run`, `validate`, every reload (SIGHUP and
//! `--watch-config`), `backfill` and the `state` subcommands read the file through a [`Loader`];
//! the demo, which has no file, gives its text to [`Loaded::parse`], the same path minus the read.
//!
//! A load reads the file's bytes once and turns them into a [`Loaded`]: the tree as written
//! (what a reload compares with the running configuration to name the changed `globals` and
//! `outputs` keys) and the validated [`Config`] walked from that same tree, so a write that
//! lands between two reads can never give a reload one file to compare and another to apply.
//! The loader carries its [`Env`]: `${VAR}` references are substituted from it, and the
//! `--watch-config` watcher takes the loader to find the files it watches with the same values.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_yaml_ng::Value;

use super::{Config, ConfigError, Env};

/// Loads the config file at its path, with its environment.
#[derive(Clone, Debug)]
pub struct Loader {
    path: PathBuf,
    env: Env,
}

/// One load of the configuration: the tree as written and the config read from it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file's YAML tree as written (`${VAR}` references not substituted).
    pub written: Value,
    pub config: Config,
}

impl Loader {
    /// The loader of the file at `path` (certificate and tenant paths resolve against its
    /// directory), substituting from `env`.
    pub fn new(path: PathBuf, env: Env) -> Loader {
        Loader { path, env }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `${VAR}` references are looked up.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Reads the file once, then substitutes and validates it; `now` is the time it is checked
    /// against.
    pub fn load(&self, now: DateTime<Utc>) -> Result<Loaded, ConfigError> {
        let path = &self.path;
        let fail = |problems: Vec<String>| ConfigError {
            file: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![format!(
                "cannot read the file: {e}; pass an existing YAML file with --config"
            )])
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut loaded =
            Loaded::parse(&text, &base_dir, &|name| self.env.var(name), now).map_err(fail)?;
        let exposed = [
            inline_key_exposure(&loaded.written, path),
            inline_redis_password_exposure(&loaded.written, path),
        ];
        loaded.config.warnings.extend(exposed.into_iter().flatten());
        Ok(loaded)
    }
}

impl Loaded {
    /// Parses config text. `base_dir` is the config file's directory (certificate paths resolve
    /// against it); `env` looks up `${VAR}` references; `now` is the current time (no start time
    /// may lie after it). Problems outside the input blocks, or no valid input, fail the whole
    /// config; a block with problems is kept in [`Config::invalid_inputs`].
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Loaded, Vec<String>> {
        let written =
            read_yaml(text).map_err(|e| vec![format!("the file is not valid YAML: {e}")])?;
        let config = Config::from_tree(written.clone(), base_dir, env, now)?;
        Ok(Loaded { written, config })
    }
}

/// YAML text as a tree: the config file's, an `inputs_dir` file's, and what the watcher reads.
pub fn read_yaml(text: &str) -> Result<Value, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(text)
}

/// A warning when the file holds the API key itself (not `${VAR}` nor `api_key_file`) and
/// other users may read it.
fn inline_key_exposure(raw: &Value, path: &Path) -> Option<String> {
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

/// A warning when the file holds the Redis password itself (not `${VAR}` nor `password_file`)
/// and other users may read it.
fn inline_redis_password_exposure(raw: &Value, path: &Path) -> Option<String> {
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
