//! Fuzzed `obfuscation_data` rules (key paths, `value`, `string_patterns`, `method`) go through
//! the config parser; a rule set that parses is applied to sample events. Never a panic; a bad
//! rule is a config problem; an obfuscated event is still one line of valid JSON.
//!
//! Input: line 1 = key path segments separated by `/`; line 2 = `mask`, `hmac` or a
//! replacement `value` (JSON if it parses, else a string); further lines = string patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PAGE: &str = r#"{"jobId":"j1","status":"COMPLETED","total":2,"data":[
{"date":"2025-03-04T10:15:27.412+0000","userId":"u-1","userName":"alice@example.com","url":"https://a.example.com/x?token=abc&y=1","categories":["News","Web"],"user":{"phone":"+1 555","tags":[1,true,null,{"k":"v"}]},"n":12.5,"ok":true},
{"date":"2025-03-04T10:15:28.000Z","userId":42,"url":null,"categories":[],"user":[["a"],{"b":"c"}]}
]}"#;

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let path: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split('/')
        .map(|seg| match seg.parse::<u32>() {
            Ok(n) if seg.len() < 4 => n.to_string(),
            _ => q(seg),
        })
        .collect();
    let mut rule = format!("          - name: [{}]\n", path.join(", "));
    match lines.next() {
        None | Some("mask") => {}
        Some("hmac") => {
            rule.push_str("            method: hmac_sha256\n            secret_env: HMAC_KEY\n")
        }
        Some(v) => {
            let value = match serde_json::from_str::<serde_json::Value>(v) {
                Ok(json) => json.to_string(),
                Err(_) => q(v),
            };
            rule.push_str(&format!("            value: {value}\n"));
        }
    }
    let patterns: Vec<String> = lines.map(q).collect();
    if !patterns.is_empty() {
        rule.push_str(&format!("            string_patterns: [{}]\n", patterns.join(", ")));
    }
    let config = format!(
        "globals:\n  id: f\n  name: f\n  persistence: {{type: memory}}\noutputs:\n  screen: {{type: console}}\ninputs:\n  proofpoint_isolation:\n    id: 1\n    credentials: {{api_key: \"1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c9z\"}}\n    services:\n      url_isolation:\n        obfuscation_data:\n{rule}"
    );
    // A fixed "now" (2026-01-01T00:00:00Z) keeps every input reproducible.
    let now = isolation_collector::timestamp::from_millis(1_767_225_600_000);
    let env = |name: &str| (name == "HMAC_KEY").then(|| "hmac-secret-0123456789abcdef".to_owned());
    let parsed = isolation_collector::config::Config::parse(&config, std::path::Path::new("/nonexistent"), &env, now);
    let config = match parsed {
        Ok(c) => c,
        Err(problems) => {
            assert!(!problems.is_empty());
            return;
        }
    };
    let rules = config.inputs[0].services[0].obfuscation.clone();
    let obfuscator = isolation_collector::pipeline::obfuscate::Obfuscator::new(rules);
    let page = isolation_collector::event::parse_page(bytes::Bytes::from_static(PAGE.as_bytes()))
        .expect("the sample page parses");
    for event in &page.events {
        let out = obfuscator.apply(event).expect("a parsed event can be obfuscated");
        assert!(!out.json.contains(&b'\n'), "an obfuscated event spans lines");
        serde_json::from_slice::<serde_json::Value>(&out.json).expect("obfuscated JSON is valid");
        assert_eq!(out.date_ms, event.date_ms);
    }
});
