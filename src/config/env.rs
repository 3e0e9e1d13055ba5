//! `${VAR}` and `${VAR:-default}` substitution in every string value, before the tree is
//! walked (Devo's images pass secrets and addresses this way).

use serde_yaml_ng::Value;

use super::walker::{join, show, Cx};

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

/// One string with its references replaced; `None` (the error recorded) if one is unclosed or
/// names an unset variable without a default.
fn substitute_text(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    cx: &mut Cx,
) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            cx.error(path, "has `${` without a closing `}`".into());
            return None;
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
                return None;
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}
