//! A service's `obfuscation_data`: Devo's entries (`name`, `value`, `string_patterns`) and the
//! HMAC pseudonyms (`method: hmac_sha256`, key from `secret_env` or `secret_file`).

use serde_yaml_ng::Value;

use crate::pipeline::obfuscate::{Action, HmacKey, ObfuscationRule, PathSegment, MASK};
use crate::yaml_walker::{each_mapping, Cx, Obj};

/// `obfuscation_data`: Devo's entries (`name`, `value`, `string_patterns`) plus `method:
/// hmac_sha256` with `secret_env` or `secret_file`. Secrets are never accepted inline, so a
/// config file can be shared or logged without leaking the key that protects the pseudonyms.
pub(super) fn parse_obfuscation(path: &str, v: &Value, cx: &mut Cx) -> Vec<ObfuscationRule> {
    each_mapping(
        path,
        v,
        "must be a list of entries such as `- name: [userName]`",
        "must be a mapping with at least `name` (the key path)",
        cx,
        parse_obfuscation_entry,
    )
}

/// One entry: the field's key path, then what replaces it (a mask, pattern replacements or an
/// HMAC token).
fn parse_obfuscation_entry(mut e: Obj<'_>, cx: &mut Cx) -> Option<ObfuscationRule> {
    let path = key_path(&mut e, cx);
    let value = replacement_value(&mut e, cx);
    let patterns = string_patterns(&mut e, cx);
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
            mask_action(&e, value, patterns, cx)
        }
        Some("hmac_sha256") => hmac_action(&e, secret_env, secret_file, cx),
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

/// A YAML scalar as a key path segment.
fn segment_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `name`: the field's key path, a list of keys (`"*"` matches any) or one key.
fn key_path(e: &mut Obj<'_>, cx: &mut Cx) -> Option<Vec<PathSegment>> {
    let name_path = e.path("name");
    match e.get("name") {
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
    }
}

/// `value`: what replaces the field, a scalar of the field's own type.
fn replacement_value(e: &mut Obj<'_>, cx: &mut Cx) -> Option<serde_json::Value> {
    let value_path = e.path("value");
    match e.get("value") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
            serde_json::to_value(v).ok()
        }
        Some(_) => {
            cx.error(&value_path, "must be a string, number or boolean of the field's own type (objects and lists cannot replace a field)".into());
            None
        }
    }
}

/// `string_patterns`: one regular expression or a list; `None` if absent. Invalid ones are
/// reported and left out.
fn string_patterns(e: &mut Obj<'_>, cx: &mut Cx) -> Option<Vec<regex::Regex>> {
    let patterns_path = e.path("string_patterns");
    let v = e.get("string_patterns")?;
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
            "must be a non-empty list of regular expressions, e.g. [\"token=[^&]+\"]".into(),
        );
    }
    let mut regexes = Vec::new();
    for (p, item) in items {
        let Value::String(text) = item else {
            cx.error(&p, "must be a regular expression (a string)".into());
            continue;
        };
        if let Some(re) = pattern(&p, text, cx) {
            regexes.push(re);
        }
    }
    Some(regexes)
}

/// One pattern: a valid regex that cannot match the empty string.
fn pattern(p: &str, text: &str, cx: &mut Cx) -> Option<regex::Regex> {
    match regex::Regex::new(text) {
        Ok(re) if re.is_match("") => {
            cx.error(p, format!("`{text}` matches the empty string, so it would insert the replacement everywhere; make it match at least one character"));
            None
        }
        Ok(re) => Some(re),
        Err(err) => {
            // The crate's message is several lines (pattern, caret, cause): keep the cause.
            let msg = err.to_string();
            let cause = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ");
            cx.error(p, format!("invalid regex `{text}`: {cause}"));
            None
        }
    }
}

/// `method: mask` (the default): the field becomes `value` (or is masked), or with
/// `string_patterns` each match becomes `value` (a string) or the mask.
fn mask_action(
    e: &Obj<'_>,
    value: Option<serde_json::Value>,
    patterns: Option<Vec<regex::Regex>>,
    cx: &mut Cx,
) -> Option<Action> {
    let Some(regexes) = patterns else {
        return Some(Action::Mask { value });
    };
    let replacement = match &value {
        None => Some(MASK.to_owned()),
        Some(serde_json::Value::String(r)) => Some(r.clone()),
        Some(_) => {
            cx.error(&e.path("value"), "with `string_patterns`, `value` is the text that replaces each match and must be a string".into());
            None
        }
    };
    replacement.map(|replacement| Action::Patterns {
        regexes,
        replacement,
    })
}

/// `method: hmac_sha256`: the token replaces the whole value, so `value` and `string_patterns`
/// cannot be given; the key comes from `secret_env` or `secret_file`.
fn hmac_action(
    e: &Obj<'_>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    cx: &mut Cx,
) -> Option<Action> {
    if e.map.get("value").is_some_and(|v| !v.is_null()) {
        cx.error(
            &e.path("value"),
            "cannot be combined with `method: hmac_sha256` (the token replaces the value)".into(),
        );
    }
    if e.map.get("string_patterns").is_some_and(|v| !v.is_null()) {
        cx.error(
            &e.path("string_patterns"),
            "cannot be combined with `method: hmac_sha256` (the token replaces the whole value)"
                .into(),
        );
    }
    let secret = hmac_secret(e, &secret_env, &secret_file, cx)?;
    // A short key can be guessed from one known (value, token) pair, and then every pseudonym
    // is reversible by trying the field's likely values.
    if secret.len() < 16 {
        let k = if secret_env.is_some() {
            "secret_env"
        } else {
            "secret_file"
        };
        cx.error(&e.path(k), format!("the HMAC key has {} byte(s); use at least 16 (32 random bytes recommended, e.g. `openssl rand -hex 32`)", secret.len()));
        return None;
    }
    Some(Action::Hmac {
        key: HmacKey::new(&secret),
    })
}

/// The HMAC key from `secret_env` or `secret_file` (exactly one), trimmed.
fn hmac_secret(
    e: &Obj<'_>,
    secret_env: &Option<String>,
    secret_file: &Option<String>,
    cx: &mut Cx,
) -> Option<Vec<u8>> {
    match (secret_env, secret_file) {
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
    }
}
