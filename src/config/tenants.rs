//! The input blocks of a config, one per tenant: Devo's single `inputs.proofpoint_isolation`
//! mapping, a list of blocks of the same form, and one block per `*.yml`/`*.yaml` file of
//! `inputs_dir` (sorted by file name; operators generate them).
//!
//! Each block is read on its own ([`read_block`]): its `${VAR}` substitution and its keys are
//! checked in a window of the shared [`Cx`], and the problems found there are taken out of the
//! config's problems and kept with the block. A block with problems is an [`InvalidInput`]: the
//! others still run (`run --strict` refuses instead). Every problem of a list element names the
//! element and its id (`inputs.proofpoint_isolation[2] (id 10003).credentials.api_key: ...`);
//! a file's problems name the file and the id (`tenants.d/acme.yaml (id 10003): credentials...`);
//! Devo's single block keeps its paths (`inputs.proofpoint_isolation.credentials.api_key: ...`).
//!
//! What the block decides is summed up in its [`Fingerprint`] (sha256 of the block after
//! substitution, its effective outputs and the secret files it reads), computed as the block is
//! read and held beside its input ([`Config::fingerprints`](super::Config::fingerprints)): a
//! reload compares fingerprints to tell a changed tenant from an untouched one.

use std::path::Path;

use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

use super::env::substitute_env;
use super::input::{parse_input, InputConfig};
use super::loader::read_yaml;
use super::outputs::OutputConfig;
use crate::yaml_walker::{Cx, Obj};

/// What defines a tenant: equal fingerprints, same tenant (a reload leaves it untouched).
pub type Fingerprint = [u8; 32];

/// An input block with problems: `run` starts the other inputs and reports this one.
#[derive(Clone, Debug)]
pub struct InvalidInput {
    /// The block's `id`, when it has a readable one.
    pub id: Option<String>,
    /// Where the block is: `inputs.proofpoint_isolation[2]`.
    pub source: String,
    /// Every problem, each naming the block and its id.
    pub problems: Vec<String>,
}

/// An input block as read from the file, or why a file of `inputs_dir` holds none.
pub(super) type Block = Result<Value, String>;

/// Where a block is written, which every one of its problems names.
#[derive(Clone, Debug)]
pub(super) enum Origin {
    /// Devo's single block.
    Single,
    /// The n-th element of the list.
    ListItem(usize),
    /// A file of `inputs_dir`, as the config names it (`tenants.d/acme.yaml`).
    File(String),
}

impl Origin {
    /// The block's place in the file.
    pub(super) fn source(&self) -> String {
        match self {
            Origin::Single => "inputs.proofpoint_isolation".into(),
            Origin::ListItem(n) => format!("inputs.proofpoint_isolation[{n}]"),
            Origin::File(name) => name.clone(),
        }
    }

    /// The block's place and id, as its problems start.
    fn scope(&self, id: Option<&str>) -> String {
        match (self, id) {
            (Origin::Single, _) | (_, None) => self.source(),
            (_, Some(id)) => format!("{} (id {id})", self.source()),
        }
    }

    /// A problem found in the block (`<key path>: <what>`, the key path relative to the block),
    /// named with the block's `scope`.
    fn locate(&self, scope: &str, problem: &str) -> String {
        match (problem.strip_prefix(": "), self) {
            // The block itself.
            (Some(what), _) => format!("{scope}: {what}"),
            // A file's keys start at its top: `tenants.d/acme.yaml (id 10003): credentials...`.
            (None, Origin::File(_)) => format!("{scope}: {problem}"),
            (None, _) => format!("{scope}.{problem}"),
        }
    }
}

/// The global outputs, as every block that does not override them gets them.
pub(super) struct GlobalOutputs<'a> {
    pub(super) outputs: &'a [OutputConfig],
    /// What defines them, for the fingerprints: the section after substitution, and the
    /// secret files it reads.
    pub(super) digest: [u8; 32],
}

/// How the blocks of one config are read.
pub(super) struct Layout<'a> {
    pub(super) global: GlobalOutputs<'a>,
    /// Several tenants (list form): each input's file outputs write under `<directory>/<id>/`.
    pub(super) multi_tenant: bool,
}

/// Reads one block, and its fingerprint. Its problems are taken out of `cx` (its warnings stay
/// there, named).
pub(super) fn read_block(
    origin: &Origin,
    block: Block,
    layout: &Layout<'_>,
    cx: &mut Cx,
) -> Result<(InputConfig, Fingerprint), InvalidInput> {
    let (errors, warnings, files) = (cx.errors.len(), cx.warnings.len(), cx.files_read.len());
    let env = cx.env;
    let mut block = block.unwrap_or_else(|why| {
        cx.error("", why);
        Value::Null
    });
    substitute_env(&mut block, "", env, cx);
    let input = match block.as_mapping() {
        Some(m) => parse_input(
            Obj::new("", m),
            layout.global.outputs,
            layout.multi_tenant,
            cx,
        ),
        None if cx.errors.len() > errors => None,
        None => {
            cx.error(
                "",
                "must be an input block: a mapping with `id`, `credentials` and `services`".into(),
            );
            None
        }
    };
    let id = match &input {
        Some(i) => Some(i.id.clone()),
        None => raw_id(&block),
    };
    let scope = origin.scope(id.as_deref());
    let problems: Vec<String> = cx
        .errors
        .drain(errors..)
        .map(|p| origin.locate(&scope, &p))
        .collect();
    for w in &mut cx.warnings[warnings..] {
        *w = origin.locate(&scope, w);
    }
    let secrets: Vec<[u8; 32]> = cx.files_read.drain(files..).collect();
    match input {
        Some(input) if problems.is_empty() => {
            let own_outputs = block.get("outputs").is_some_and(|o| !o.is_null());
            Ok((input, fingerprint(&block, own_outputs, layout, &secrets)))
        }
        _ => Err(InvalidInput {
            id,
            source: origin.source(),
            problems,
        }),
    }
}

/// The block's `id` as written, to name a block whose problems kept it from being read.
fn raw_id(block: &Value) -> Option<String> {
    match block.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// sha256 of what defines a tenant: its block after substitution, its effective outputs (the
/// block's own are in the block; else the global ones), the layout, and the secret files it
/// reads (their digests: the key bytes never leave the parser).
fn fingerprint(
    block: &Value,
    own_outputs: bool,
    layout: &Layout<'_>,
    secrets: &[[u8; 32]],
) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(
        serde_yaml_ng::to_string(block)
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update([u8::from(own_outputs), u8::from(layout.multi_tenant)]);
    if !own_outputs {
        h.update(layout.global.digest);
    }
    for s in secrets {
        h.update(s);
    }
    h.finalize().into()
}

/// The digest of the global outputs: their section after substitution and the secret files
/// they read.
pub(super) fn outputs_digest(section: Option<&Value>, secrets: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(section) = section {
        h.update(
            serde_yaml_ng::to_string(section)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    for s in secrets {
        h.update(s);
    }
    h.finalize().into()
}

/// Two inputs with one id would share their state and their metrics: a config error naming
/// both places.
pub(super) fn check_duplicate_ids<'a>(ids: impl Iterator<Item = (&'a str, String)>, cx: &mut Cx) {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (id, source) in ids {
        match seen.iter().find(|(s, _)| *s == id) {
            Some((_, first)) => cx.error(
                &format!("{source} (id {id})"),
                format!("{first} has the same id; give each input its own id (it names the input's state, metrics and file output directory)"),
            ),
            None => seen.push((id, source)),
        }
    }
}

/// Takes `inputs.proofpoint_isolation` out of the tree before the global `${VAR}` substitution:
/// each block is substituted on its own, so that its problems stay its own.
pub(super) fn take_blocks(root: &mut Value) -> Option<Value> {
    let section = root.get_mut("inputs")?.get_mut("proofpoint_isolation")?;
    Some(std::mem::take(section))
}

/// The `inputs` section: its one known input, and the blocks `taken` from it (a mapping: Devo's
/// single block; a list: one block per tenant).
pub(super) fn input_blocks(
    mut inputs: Obj<'_>,
    taken: Option<Value>,
    required: bool,
    cx: &mut Cx,
) -> Vec<(Origin, Block)> {
    for name in inputs.names() {
        if name != "proofpoint_isolation" {
            inputs.get(&name);
            cx.error(
                &inputs.path(&name),
                "unknown input; this collector has one kind of input, `proofpoint_isolation` (a block, or a list of blocks for several tenants)".into(),
            );
        }
    }
    inputs.get("proofpoint_isolation");
    let path = inputs.path("proofpoint_isolation");
    inputs.finish(cx);
    match taken {
        Some(block @ Value::Mapping(_)) => vec![(Origin::Single, Ok(block))],
        Some(Value::Sequence(list)) if list.is_empty() => {
            cx.error(&path, "the list is empty; add at least one input block with its `id`, `credentials` and `services`".into());
            Vec::new()
        }
        Some(Value::Sequence(list)) => list
            .into_iter()
            .enumerate()
            .map(|(n, block)| (Origin::ListItem(n), Ok(block)))
            .collect(),
        None | Some(Value::Null) if !required => Vec::new(),
        None | Some(Value::Null) => {
            cx.error(
                &path,
                "missing; add the input with its `id`, `credentials` and `services` (or give `inputs_dir`)".into(),
            );
            Vec::new()
        }
        Some(_) => {
            cx.error(&path, "must be an input block (a mapping with `id`, `credentials` and `services`) or a list of them, one per tenant".into());
            Vec::new()
        }
    }
}

/// The blocks of `inputs_dir` (relative to the config's directory): one per `*.yml`/`*.yaml`
/// file, sorted by file name. A file that cannot be read or is not YAML is a block with that
/// problem (its input is invalid, the others still run); a directory that cannot be listed is
/// a config error.
pub(super) fn dir_blocks(dir_key: &str, written: &str, cx: &mut Cx) -> Vec<(Origin, Block)> {
    let dir = cx.base_dir.join(written);
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
            })
            .collect(),
        Err(e) => {
            cx.error(dir_key, format!("cannot list {}: {e}; give a directory of input block files (one `*.yaml` per tenant), relative to the config file", dir.display()));
            return Vec::new();
        }
    };
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let origin = Origin::File(Path::new(written).join(&*name).display().to_string());
            (origin, read_block_file(&file))
        })
        .collect()
}

/// One file of `inputs_dir` as a YAML value, or why it is not one.
fn read_block_file(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot be read: {e}"))?;
    read_yaml(&text).map_err(|e| format!("is not valid YAML: {e}"))
}
