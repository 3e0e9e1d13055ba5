//! The `file` output's configuration (`outputs.<name>.config`): plain data, read from the YAML.

use std::path::PathBuf;

use serde_yaml_ng::Value;

use crate::yaml_walker::{join, show, Cx, Obj};

/// The mode of new files when the config sets none: owner read/write, group read.
pub const DEFAULT_MODE: u32 = 0o640;

/// A `file` output's keys.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Where the `<table>.jsonl` files are written.
    pub directory: PathBuf,
    /// The mode of the files it creates (`mode`, default 0640).
    pub mode: u32,
}

impl FileConfig {
    /// A `file` output: `config.directory` and the files' `mode`.
    pub(crate) fn parse(
        config_obj: Option<Obj<'_>>,
        path: &str,
        cx: &mut Cx,
    ) -> Option<FileConfig> {
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
                &join(path, "config.directory"),
                "missing; the file output needs a directory, e.g. `out`".into(),
            );
        }
        dir.zip(mode).map(|(d, mode)| FileConfig {
            directory: PathBuf::from(d),
            mode,
        })
    }
}

/// A file output's `mode`: an octal string such as "0640" (unquoted `0640` is a string too, in
/// YAML 1.2). A YAML number (`640`) is refused rather than guessed at: decimal or octal? The
/// collector must be able to read and write its own files. `None` (the error recorded) if
/// invalid.
fn file_mode(c: &mut Obj<'_>, cx: &mut Cx) -> Option<u32> {
    let path = c.path("mode");
    let Some(value) = c.get("mode") else {
        return Some(DEFAULT_MODE);
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
