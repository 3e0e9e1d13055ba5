//! `${VAR}` and `${VAR:-default}` substitution in every string value, before the tree is
//! walked (Devo's images pass secrets and addresses this way), and [`Env`], where the references
//! are looked up. The loader and the `--watch-config` watcher substitute with this one function
//! and the same [`Env`], so that the watcher watches the files the loader reads.

use std::fmt;
use std::sync::Arc;

use serde_yaml_ng::Value;

use crate::yaml_walker::{join, show, Cx};

/// Where `${VAR}` references (and the proxy variables, and `secret_env`) are looked up: the
/// process environment, or one injected by a test or the demo.
#[derive(Clone)]
pub struct Env(Arc<Lookup>);

/// A lookup of one variable by name.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Env {
    /// The process environment.
    pub fn process() -> Env {
        Env::from_fn(|name| std::env::var(name).ok())
    }

    /// The environment `lookup` describes.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Env {
        Env(Arc::new(lookup))
    }

    /// The value of `name`, if set.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// Never shows a value: the environment holds secrets.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env(..)")
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value.
pub(super) fn substitute_env(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    cx: &mut Cx,
) {
    match v {
        Value::String(s) if s.contains("${") => {
            if let Some(out) = substitute_text(s, path, env, cx) {
                *s = out;
            }
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

/// One string with its references replaced; the problem (recorded at `path`) if one is unclosed
/// or names an unset variable without a default.
fn substitute_text(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    cx: &mut Cx,
) -> Option<String> {
    substitute(s, env).map_err(|e| cx.error(path, e)).ok()
}

/// `s` with its `${VAR}` and `${VAR:-default}` references replaced from `env` (an empty value
/// counts as unset); `Err` says what is wrong when one is unclosed or names an unset variable
/// without a default.
pub fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("has `${` without a closing `}`".into());
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
                return Err(format!("refers to the environment variable `{name}`, which is not set; export it or write the value"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
