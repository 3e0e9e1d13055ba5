//! The `console` output's configuration: it has no keys.

use crate::yaml_walker::{Cx, Obj};

/// A `console` output's keys: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleConfig;

impl ConsoleConfig {
    /// Checks that `config`, if given, holds no key.
    pub(crate) fn parse(config: Option<Obj<'_>>, cx: &mut Cx) -> ConsoleConfig {
        if let Some(c) = config {
            c.finish(cx);
        }
        ConsoleConfig
    }
}
