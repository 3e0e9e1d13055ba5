//! The `outputs` section: each output's name, `type` and `config`. The kinds and their keys are
//! the output module's ([`crate::output::registry`]): each kind reads its own `config` into its
//! configuration type (plain data). Read here: what concerns several outputs together (a
//! directory two file outputs would share).

use std::path::Path;

use crate::output::file::FileConfig;
pub use crate::output::net::{NetworkOutputConfig, TlsFiles};
pub use crate::output::registry::OutputKind;
use crate::output::registry::TYPES;
use crate::yaml_walker::{join, Cx, Obj};

#[derive(Clone, Debug)]
pub struct OutputConfig {
    pub name: String,
    pub kind: OutputKind,
}

pub(super) fn parse_outputs(mut o: Obj<'_>, cx: &mut Cx) -> Vec<OutputConfig> {
    let names = o.names();
    if names.is_empty() {
        cx.error(
            &o.path,
            format!("no output configured; add at least one ({TYPES})"),
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
        let kind = output_kind(&mut out, cx);
        let path = out.path.clone();
        out.finish(cx);
        if let Some(kind) = kind {
            check_own_directory(&outputs, &name, &kind, &path, cx);
            outputs.push(OutputConfig { name, kind });
        }
    }
    o.finish(cx);
    outputs
}

/// Two file outputs on one directory would write the same files, and each would cut the other's
/// lines back to its own committed length on resume: the second one's `directory` is an error.
/// Compared as written, `.` segments and trailing slashes aside (the directories may not exist
/// yet; a symbolic link to the same place is not seen).
fn check_own_directory(
    earlier: &[OutputConfig],
    name: &str,
    kind: &OutputKind,
    path: &str,
    cx: &mut Cx,
) {
    let OutputKind::File(FileConfig { directory, .. }) = kind else {
        return;
    };
    let parts = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .map(|c| c.as_os_str().to_owned())
            .collect()
    };
    let same = |d: &Path| parts(d) == parts(directory);
    let clash = earlier.iter().find(
        |o| matches!(&o.kind, OutputKind::File(FileConfig { directory: d, .. }) if o.name != name && same(d)),
    );
    if let Some(other) = clash {
        cx.error(
            &join(path, "config.directory"),
            format!(
                "`{}` is also the directory of file output `{}`; both would write the same `<table>.jsonl` files and cut each other's lines; give each file output its own directory",
                directory.display(),
                other.name
            ),
        );
    }
}

/// An output's `type` and its `config`.
fn output_kind(out: &mut Obj<'_>, cx: &mut Cx) -> Option<OutputKind> {
    let kind = out.string("type", cx);
    let config = out.map("config", cx);
    let path = out.path.clone();
    OutputKind::parse(kind.as_deref(), config, &path, cx)
}
