//! `obfuscation_data` end to end: a run of thousands of events with an HMAC pseudonym
//! (`userName`), a mask (`userId`) and patterns (`url`, `parentPageURL`). For every event the
//! simulator served, no original value of an obfuscated field may reach an output (file or
//! console) or the log (at DEBUG), and everything else must arrive byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use hmac::Mac;

use crate::support::*;

const SECRET: &str = "it-hmac-key-5f1c0e7a9b2d4c6e8f0a1b3c5d7e9f11";
const HOST: &str = "https?://[^/]+";
const MASKED: &str = "****SANITIZED****";
/// The obfuscated fields of the simulator's events.
const FIELDS: [&str; 4] = ["userName", "userId", "url", "parentPageURL"];

/// `obfuscation_data` as flow-style lines (`TestEnv` indents each line as it is).
fn obfuscation_config() -> String {
    format!(
        "obfuscation_data:\n\
         - {{name: [userName], method: hmac_sha256, secret_env: IT_HMAC_KEY}}\n\
         - {{name: [userId]}}\n\
         - {{name: [url], string_patterns: [\"{HOST}\"]}}\n\
         - {{name: [parentPageURL], string_patterns: [\"{HOST}\"]}}\n"
    )
}

async fn run_once(env: &TestEnv) -> Output {
    let mut cmd = collector_command(&["run", "--once"], &env.config_path());
    cmd.env("IT_HMAC_KEY", SECRET).env("RUST_LOG", "debug");
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the collector finished within 120 s")
        .unwrap();
    assert!(
        out.status.success(),
        "run --once failed: {}",
        describe(&out)
    );
    out
}

/// The top-level members of a compact JSON object, in order, values as raw JSON text.
fn members(json: &str) -> Vec<(String, String)> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
    // `Map` sorts keys; recover the order and the raw bytes from the text itself.
    let mut out = Vec::new();
    let mut rest = &json[1..];
    while !rest.starts_with('}') {
        let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let key = de.next().unwrap().unwrap();
        rest = &rest[de.byte_offset() + 1..]; // past the key and ':'
        let mut de =
            serde_json::Deserializer::from_str(rest).into_iter::<&serde_json::value::RawValue>();
        let raw = de.next().unwrap().unwrap().get().to_owned();
        rest = &rest[de.byte_offset()..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
        out.push((key, raw));
    }
    assert_eq!(out.len(), map.len(), "{json}");
    out
}

fn token(name: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(name.as_bytes());
    format!("hmac:{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}

/// What the collector must deliver for one original event, computed independently of the
/// collector's code.
fn expected(original: &str, host: &regex::Regex) -> String {
    let parts: Vec<String> = members(original)
        .into_iter()
        .map(|(k, raw)| {
            let value = match k.as_str() {
                "userName" => {
                    let name: String = serde_json::from_str(&raw).unwrap();
                    serde_json::to_string(&token(&name)).unwrap()
                }
                "userId" => serde_json::to_string(MASKED).unwrap(),
                "url" | "parentPageURL" => {
                    let url: String = serde_json::from_str(&raw).unwrap();
                    serde_json::to_string(&host.replace_all(&url, MASKED)).unwrap()
                }
                _ => raw,
            };
            format!("{}:{value}", serde_json::to_string(&k).unwrap())
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The inside of a JSON string literal of `s` (its escaped form).
fn escaped(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap();
    q[1..q.len() - 1].to_owned()
}

/// The event without its obfuscated fields, as text: what pairs a delivered event with the
/// original it came from.
fn unobfuscated_part(json: &str) -> String {
    let kept: Vec<String> = members(json)
        .into_iter()
        .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
        .map(|(k, raw)| format!("{k}={raw}"))
        .collect();
    kept.join(",")
}

fn user_name(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["userName"].as_str().unwrap().to_owned()
}

/// Read from what the collector delivered, each event paired with its served original by the
/// fields the collector leaves alone: one user gets one token in every event, and different
/// users get different tokens. (Events alike in every other field are paired as a group.)
fn assert_pseudonyms_are_consistent(served: &[String], delivered: &[String], table: &str) {
    // Per group of alike events: the served user names, the delivered tokens.
    let mut groups: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for e in served {
        groups
            .entry(unobfuscated_part(e))
            .or_default()
            .0
            .push(user_name(e));
    }
    for d in delivered {
        let group = groups
            .get_mut(&unobfuscated_part(d))
            .unwrap_or_else(|| panic!("{table}: delivered but never served: {d}"));
        group.1.push(user_name(d));
    }
    let mut tokens_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut names_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut mixed = Vec::new();
    for (names, tokens) in groups.values() {
        assert_eq!(names.len(), tokens.len(), "{table}: {names:?} → {tokens:?}");
        if names.iter().all(|n| *n == names[0]) {
            for token in tokens {
                tokens_of.entry(&names[0]).or_default().insert(token);
                names_of.entry(token).or_default().insert(&names[0]);
            }
        } else {
            mixed.push((names, tokens));
        }
    }
    for (name, tokens) in &tokens_of {
        assert_eq!(
            tokens.len(),
            1,
            "{table}: user {name:?} got tokens {tokens:?}"
        );
    }
    for (token, names) in &names_of {
        assert_eq!(
            names.len(),
            1,
            "{table}: token {token} stands for {names:?}"
        );
    }
    assert!(names_of.len() > 100, "{table}: {} tokens", names_of.len());
    // A group of several users: its tokens are those users' tokens.
    for (names, tokens) in mixed {
        let mut want: Vec<&str> = names
            .iter()
            .map(|n| match tokens_of.get(n.as_str()).map(|t| t.first()) {
                Some(Some(token)) => *token,
                _ => panic!("{table}: user {n:?} is only in groups of alike events"),
            })
            .collect();
        let mut got: Vec<&str> = tokens.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{table}: the tokens of {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_original_value_of_an_obfuscated_field_reaches_an_output_or_the_log() {
    let mut env = TestEnv::both(3000, |c| {
        c.identical_fraction = 0.05;
        c.burst_fraction = 0.2;
    })
    .await;
    env.service_extra = obfuscation_config();
    env.outputs_extra = "  screen:\n    type: console\n".into();
    env.write_config();
    let out = run_once(&env).await;

    let host = regex::Regex::new(HOST).unwrap();
    let mut originals = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        let served = sim.visible_events();
        assert!(served.len() >= 3000, "{table}: {}", served.len());
        let got = env.delivered(table);
        assert_eq!(got.len(), served.len(), "{table}");
        assert_pseudonyms_are_consistent(&served, &got, table);
        // Exactly the expected events (count, bytes, key order, pseudonyms), once each.
        let want: Vec<String> = served.iter().map(|e| expected(e, &host)).collect();
        assert_same_multiset(&got, &want, table);
        for e in &served {
            for (k, raw) in members(e) {
                if FIELDS.contains(&k.as_str()) {
                    let v: String = serde_json::from_str(&raw).unwrap();
                    if k == "userName" {
                        names.insert(v.clone());
                    }
                    originals.insert(v);
                }
            }
        }
    }
    assert!(
        names.len() > 100 && originals.len() > 1000,
        "{}",
        originals.len()
    );

    // No original value anywhere: decoded, JSON-escaped (files) or escaped twice (the console
    // wraps the event in a JSON string).
    let mut needles = Vec::new();
    for v in &originals {
        needles.push(v.clone());
        needles.push(escaped(v));
        needles.push(escaped(&escaped(v)));
    }
    let finder = aho_corasick::AhoCorasick::new(&needles).unwrap();
    let files = [WEB_TABLE, URL_TABLE].map(|t| env.delivered(t).join("\n"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = stderr(&out);
    assert!(stdout.lines().count() >= 6000, "console output missing");
    assert!(log.contains(" DEBUG "), "not run at DEBUG:\n{log}");
    assert!(!log.contains(SECRET));
    for (what, text) in [
        ("web file", &files[0]),
        ("url file", &files[1]),
        ("console", &stdout),
        ("log", &log),
    ] {
        if let Some(m) = finder.find(text.as_str()) {
            panic!(
                "{what} holds the original value {:?} at byte {}",
                needles[m.pattern().as_usize()],
                m.start()
            );
        }
    }

    // A second run delivers nothing new: dedup runs on the originals and stays exact.
    let before = [WEB_TABLE, URL_TABLE].map(|t| env.delivered(t));
    let out = run_once(&env).await;
    assert_eq!([WEB_TABLE, URL_TABLE].map(|t| env.delivered(t)), before);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the console got events again"
    );
}

/// `expected`, for an event whose `userName` holds a lone surrogate escape (no text to hash):
/// that value must arrive masked whole with the string default, the rest as usual.
fn expected_with_fallback(original: &str, host: &regex::Regex) -> (String, bool) {
    let unreadable = regex::Regex::new(r#""userName":"\\ud800[^"\\]*""#).unwrap();
    if !unreadable.is_match(original) {
        return (expected(original, host), false);
    }
    const PLACEHOLDER: &str = "placeholder-user";
    let readable = unreadable.replace(original, format!(r#""userName":"{PLACEHOLDER}""#));
    let want = expected(&readable, host).replace(
        &serde_json::to_string(&token(PLACEHOLDER)).unwrap(),
        &serde_json::to_string(MASKED).unwrap(),
    );
    (want, true)
}

/// A value a rule cannot read (a `userName` that starts with a lone UTF-16 surrogate escape,
/// which JSON's syntax allows and the API parser accepts) is neither dropped nor let through:
/// it is masked whole with the string default, the event is delivered, every such event is
/// counted in `isolation_collector_obfuscation_fallbacks_total`, and the rule is warned about
/// once (per service), not once per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_a_rule_cannot_read_is_masked_delivered_counted_and_warned_once() {
    let mut env = TestEnv::both(1500, |c| c.unreadable_user_names = 10).await;
    env.service_extra = obfuscation_config();
    env.write_config();
    let base = listen_on_free_port(&env);
    let log = env.path("daemon.log");
    let child = spawn_logged(
        collector_command(&["run"], &env.config_path()).env("IT_HMAC_KEY", SECRET),
        &log,
    );

    let host = regex::Regex::new(HOST).unwrap();
    let mut fallbacks = BTreeMap::new();
    for (service, table, sim) in [
        ("browser_and_email_isolation", WEB_TABLE, &env.web),
        ("url_isolation", URL_TABLE, &env.url),
    ] {
        let served = sim.visible_events();
        let (want, unreadable): (Vec<String>, Vec<bool>) = served
            .iter()
            .map(|e| expected_with_fallback(e, &host))
            .unzip();
        let n = unreadable.iter().filter(|u| **u).count();
        assert!(
            n >= 10,
            "{table}: only {n} events with an unreadable userName"
        );
        wait_for(
            format!("{table} delivered"),
            Duration::from_secs(60),
            || env.delivered(table).len() >= served.len(),
        )
        .await;
        assert_same_multiset(&env.delivered(table), &want, table);
        fallbacks.insert(service, n as f64);
    }
    let rule = "obfuscation_data[0] [userName]";
    scrape_until(&base, "the fallback counters", |s| {
        fallbacks.iter().all(|(service, n)| {
            sample(
                s,
                "isolation_collector_obfuscation_fallbacks_total",
                &[("input", INPUT_ID), ("service", service), ("rule", rule)],
            ) == Some(*n)
        })
    })
    .await;
    sigterm_and_wait(child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("could not be read"))
        .collect();
    assert_eq!(warnings.len(), 2, "one per service's rule:\n{text}");
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(rule) && l.contains(" WARNING ")),
        "{text}"
    );
    assert!(!text.contains("could not be obfuscated"), "{text}");
}
