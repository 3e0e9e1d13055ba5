use std::time::Duration;

use super::*;
use crate::pipeline::obfuscate::{Action, HmacKey, PathSegment};
use crate::service::Service;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z".into()),
        "HMAC_KEY" => Some("hmac-secret-0123456789abcdef".into()),
        "SHORT_KEY" => Some("short".into()),
        _ => None,
    }
}

/// The time the configs are checked at: fixed, after every start time in these tests.
fn now() -> chrono::DateTime<chrono::Utc> {
    crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap()
}

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(text, Path::new("."), &env, now())
}

const GOOD: &str = r#"
globals:
  id: "pp01"
  name: proofpoint_isolation_eu
  persistence: {type: filesystem, config: {directory_name: state}}
  queue_max_size_in_mb: 1024
outputs:
  local: {type: file, config: {directory: out}}
  screen: {type: console}
inputs:
  proofpoint_isolation:
    id: 10001
    credentials: {api_key: "${KEY}"}
    services:
      browser_and_email_isolation:
        request_period_in_seconds: 300
        start_time_in_utc: "2024-06-01T00:00:00Z"
      url_isolation:
        override_base_url: http://127.0.0.1:8081
        page_size: 500
"#;

#[test]
fn a_devo_style_config_loads() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.inputs[0].id, "10001");
    assert_eq!(
        c.inputs[0].api_key.expose(),
        "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z"
    );
    assert_eq!(
        c.globals.persistence,
        Persistence::Filesystem {
            directory: "state".into()
        }
    );
    assert_eq!(c.outputs.len(), 2);
    assert_eq!(c.inputs[0].services.len(), 2);
    let web = &c.inputs[0].services[0];
    assert_eq!(web.service, Service::BrowserAndEmailIsolation);
    assert_eq!(web.request_period, Duration::from_secs(300));
    assert_eq!(
        web.endpoint(),
        "https://proofpointisolation.com/api/v2/reporting/usage-data"
    );
    let url = &c.inputs[0].services[1];
    assert_eq!(
        url.endpoint(),
        "http://127.0.0.1:8081/api/v2/reporting/usage-data"
    );
    assert_eq!(url.page_size, 500);
    assert_eq!(url.table, "tap.proofpoint.isolation.url_isolation");
    // Devo's queue setting is accepted with a warning; plain http is warned about.
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("globals.queue_max_size_in_mb")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("plain http")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let bad = r#"
globals:
  persistence: {type: filesystem}
  colour: blue
outputs:
  x: {type: kafka}
inputs:
  proofpoint_isolation:
    id: 10001
    credentials: {api_key: "${MISSING_VAR}"}
    services:
      url_isolation:
        request_period_in_seconds: 0
        start_time_in_utc: yesterday
        page_size: 20000
        override_query_window_offset_in_minutes: -5
        override_base_url: "ftp://x"
        pagesize: 10
      mail_isolation: {}
"#;
    let errors = parse(bad).unwrap_err();
    let expect = [
        "globals.persistence.config.directory_name",
        "globals.colour: unknown key",
        "outputs.x.type: `kafka` is not an output type",
        "inputs.proofpoint_isolation.credentials.api_key: refers to the environment variable `MISSING_VAR`",
        "inputs.proofpoint_isolation.services.url_isolation.request_period_in_seconds: must be a number from 1 to 604800",
        "inputs.proofpoint_isolation.services.url_isolation.start_time_in_utc: `yesterday` is not a date",
        "inputs.proofpoint_isolation.services.url_isolation.page_size: must be a whole number from 1 to 10000",
        "inputs.proofpoint_isolation.services.url_isolation.override_query_window_offset_in_minutes",
        "inputs.proofpoint_isolation.services.url_isolation.override_base_url: `ftp://x`",
        "inputs.proofpoint_isolation.services.url_isolation.pagesize: unknown key",
        "inputs.proofpoint_isolation.services.mail_isolation: unknown service",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

/// Every duration key set to 20: the `..._in_minutes` keys must read 20 minutes, the others
/// 20 seconds (the walker takes the unit from the key's name).
#[test]
fn every_duration_key_is_read_in_the_unit_its_name_says() {
    let c = parse(
        r#"
globals:
  persistence: {type: memory}
  shutdown_grace_period_in_seconds: 20
  sender_stats_period_in_sec: 20
  memory_log_period_in_sec: 20
outputs:
  s: {type: syslog, config: {address: 127.0.0.1, port: 514, confirm_timeout_in_seconds: 20, connect_timeout_in_seconds: 20}}
inputs:
  proofpoint_isolation:
    id: "10001"
    credentials: {api_key: "${KEY}"}
    services:
      url_isolation:
        request_period_in_seconds: 20
        override_query_window_offset_in_minutes: 20
        late_arrival_lookback_in_minutes: 20
        late_arrival_sweep_interval_in_minutes: 20
        request_timeout_in_seconds: 20
        job_poll_initial_interval_in_seconds: 20
        job_poll_max_interval_in_seconds: 20
        job_timeout_in_minutes: 20
        retry_initial_interval_in_seconds: 20
        retry_max_interval_in_seconds: 20
"#,
    )
    .unwrap();
    let (secs, mins) = (Duration::from_secs(20), Duration::from_secs(20 * 60));
    let g = &c.globals;
    let globals = [
        g.shutdown_grace_period,
        g.sender_stats_period,
        g.memory_log_period,
    ];
    assert_eq!(globals, [secs; 3]);
    let OutputKind::Network(n) = &c.outputs[0].kind else {
        panic!("not a network output: {:?}", c.outputs[0].kind);
    };
    assert_eq!([n.confirm_timeout, n.connect_timeout], [secs; 2]);
    let s = &c.inputs[0].services[0];
    let in_seconds = [
        s.request_period,
        s.request_timeout,
        s.job_poll_initial,
        s.job_poll_max,
        s.retry_initial,
        s.retry_max,
    ];
    assert_eq!(in_seconds, [secs; 6]);
    let in_minutes = [s.window_offset, s.lookback, s.sweep_interval, s.job_timeout];
    assert_eq!(in_minutes, [mins; 4]);
}

#[test]
fn missing_sections_and_bad_yaml() {
    let errors = parse("globals: {}\n").unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("outputs: missing")));
    assert!(errors.iter().any(|e| e.starts_with("inputs: missing")));
    let errors = parse("globals: [\n").unwrap_err();
    assert!(errors[0].contains("not valid YAML"));
}

#[test]
fn the_key_never_appears_in_errors() {
    // Each case makes the config wrong about the key itself, with the key in the text (or in
    // the variable or file it names). `key_error` must be reported, and no run of 6 characters
    // of the key may appear in any error: not the key, nor a part of it (the masked form shows
    // 4 + 2 characters and passes).
    const KEY: &str = "7f3e9a1c-b2d4-4e6f-8a0b-c1d2e3f4a5b6";
    const SPACED: &str = "7f3e9a1c-b2d4 4e6f-8a0b-c1d2e3f4a5b6";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("two-keys.txt"), format!("{KEY}\n{KEY}\n")).unwrap();
    let env = |name: &str| match name {
        "TAB_KEY" => Some(format!("{}\t{}", &KEY[..18], &KEY[18..])),
        _ => None,
    };
    let key_path = "inputs.proofpoint_isolation.credentials.api_key";
    let credentials = r#"credentials: {api_key: "${KEY}"}"#;
    let cases = [
        // A key pasted with a space in it.
        (format!(r#"credentials: {{api_key: "{SPACED}"}}"#), key_path),
        // A key from the environment with a control character in it.
        (
            r#"credentials: {api_key: "${TAB_KEY}"}"#.to_owned(),
            key_path,
        ),
        // A file holding two keys (one per line).
        (
            "credentials: {api_key_file: two-keys.txt}".to_owned(),
            key_path,
        ),
        // The key inline and a key file.
        (
            format!(r#"credentials: {{api_key: "{KEY}", api_key_file: two-keys.txt}}"#),
            key_path,
        ),
        // The key as a list, and under a misspelt name.
        (format!(r#"credentials: {{api_key: ["{KEY}"]}}"#), key_path),
        (
            format!(r#"credentials: {{apikey: "{KEY}"}}"#),
            "inputs.proofpoint_isolation.credentials.apikey: unknown key",
        ),
        // YAML broken inside the key's own line.
        (
            format!(r#"credentials: {{api_key: "{KEY}}}"#),
            "not valid YAML",
        ),
    ];
    for (credentials_line, key_error) in cases {
        assert!(GOOD.contains(credentials));
        let text = GOOD.replace(credentials, &credentials_line);
        let errors = Config::parse(&text, dir.path(), &env, now()).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains(key_error), "{credentials_line}: {errors:#?}");
        for secret in [KEY, SPACED] {
            let chars: Vec<char> = secret.chars().collect();
            for part in chars.windows(6).map(|w| w.iter().collect::<String>()) {
                assert!(!all.contains(&part), "{part:?} of the key in {errors:#?}");
            }
        }
    }
}

#[test]
fn env_defaults_and_services_default() {
    let text = r#"
globals: {persistence: {type: memory}}
outputs: {c: {type: console}}
inputs:
  proofpoint_isolation:
    id: "10001"
    credentials: {api_key: "${NOPE:-abcdefabcdefabcdef}"}
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.inputs[0].api_key.expose(), "abcdefabcdefabcdef");
    assert_eq!(c.inputs[0].services.len(), 2);
    assert_eq!(c.globals.persistence, Persistence::Memory);
}

#[test]
fn the_shipped_examples_are_valid() {
    for file in [
        "examples/config.yaml",
        "examples/quickstart.yaml",
        "examples/http-outputs.yaml",
        "examples/multi-tenant.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |name: &str| match name {
            n if n.ends_with("API_KEY") => Some("00000000-0000-0000-0000-000000000000".to_owned()),
            "WEBHOOK_AUTH" | "SPLUNK_HEC_TOKEN" => Some("secret".to_owned()),
            _ => None,
        };
        match Config::parse(&text, path.parent().unwrap(), &env, now()) {
            // Every block of every example is valid.
            Ok(c) => assert!(
                c.invalid_inputs.is_empty(),
                "{file}: {:#?}",
                c.invalid_inputs
            ),
            Err(e) => {
                // Certificates of the Devo example do not exist here; everything else must be
                // valid.
                let other: Vec<_> = e.iter().filter(|p| !p.contains("does not exist")).collect();
                assert!(other.is_empty(), "{file}: {other:#?}");
            }
        }
    }
    // The multi-tenant example: two listed tenants and the two files of tenants.d/.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multi-tenant.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |_: &str| Some("00000000-0000-0000-0000-000000000000".to_owned());
    let c = Config::parse(&text, path.parent().unwrap(), &env, now()).unwrap();
    let ids: Vec<&str> = c.inputs.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["10001", "10002", "20001", "20002"]);
}

#[test]
fn metrics_listen_and_memory_log_period() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.globals.metrics_listen, None);
    assert_eq!(c.globals.memory_log_period, Duration::from_secs(300));
    let text = GOOD.replace(
        "  id: \"pp01\"\n",
        "  id: \"pp01\"\n  metrics_listen: \"127.0.0.1:9464\"\n  memory_log_period_in_sec: 30\n",
    );
    let c = parse(&text).unwrap();
    assert_eq!(
        c.globals.metrics_listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(c.globals.memory_log_period, Duration::from_secs(30));
    let text = GOOD.replace(
        "  id: \"pp01\"\n",
        "  id: \"pp01\"\n  metrics_listen: \"localhost\"\n  memory_log_period_in_sec: 5\n",
    );
    let errors = parse(&text).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("globals.metrics_listen: `localhost` is not a socket address")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("globals.memory_log_period_in_sec:")),
        "{errors:?}"
    );
}

#[test]
fn window_memory_budget_in_mb() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.globals.window_memory_budget, 16 * 1024 * 1024);
    let with = |value: &str| {
        GOOD.replace(
            "  id: \"pp01\"\n",
            &format!("  id: \"pp01\"\n  window_memory_budget_in_mb: {value}\n"),
        )
    };
    let c = parse(&with("64")).unwrap();
    assert_eq!(c.globals.window_memory_budget, 64 * 1024 * 1024);
    for bad in ["0", "1.5", "\"lots\"", "70000"] {
        let errors = parse(&with(bad)).unwrap_err();
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].starts_with(
                "globals.window_memory_budget_in_mb: must be a whole number from 1 to 65536"
            ),
            "{bad}: {errors:?}"
        );
    }
}

/// A config whose url_isolation service has the given `obfuscation_data` (YAML, indented by 8).
fn with_obfuscation(entries: &str) -> String {
    format!(
        "globals: {{persistence: {{type: memory}}}}\noutputs: {{c: {{type: console}}}}\ninputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials: {{api_key: \"${{KEY}}\"}}\n    services:\n      url_isolation:\n        obfuscation_data:\n{entries}"
    )
}

#[test]
fn obfuscation_data_is_parsed_into_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hmac.key"),
        "file-secret-0123456789abcdef\n",
    )
    .unwrap();
    let text = with_obfuscation(
        r#"        - name: [userName]
          method: hmac_sha256
          secret_env: HMAC_KEY
        - name: [headers, "*"]
        - name: [user, age]
          value: 0
        - name: url
          string_patterns: ["https?://[^/]+", "token=[^&]+"]
          value: "<host>"
        - name: [mail]
          method: hmac_sha256
          secret_file: hmac.key
"#,
    );
    let c = Config::parse(&text, dir.path(), &env, now()).unwrap();
    let rules = &c.inputs[0].services[0].obfuscation;
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[0].path, vec![PathSegment::Key("userName".into())]);
    let Action::Hmac { key } = &rules[0].action else {
        panic!("{:?}", rules[0])
    };
    assert_eq!(
        key.token(b"x"),
        HmacKey::new(b"hmac-secret-0123456789abcdef").token(b"x")
    );
    assert_eq!(
        rules[1].path,
        vec![PathSegment::Key("headers".into()), PathSegment::Any]
    );
    assert!(matches!(&rules[1].action, Action::Mask { value: None }));
    assert!(
        matches!(&rules[2].action, Action::Mask { value: Some(v) } if *v == serde_json::json!(0))
    );
    let Action::Patterns {
        regexes,
        replacement,
    } = &rules[3].action
    else {
        panic!("{:?}", rules[3])
    };
    assert_eq!(regexes.len(), 2);
    assert_eq!(replacement, "<host>");
    // The file's trailing newline is not part of the key.
    let Action::Hmac { key } = &rules[4].action else {
        panic!("{:?}", rules[4])
    };
    assert_eq!(
        key.token(b"x"),
        HmacKey::new(b"file-secret-0123456789abcdef").token(b"x")
    );
    // No secret in the config's Debug form.
    let debug = format!("{c:?}");
    assert!(!debug.contains("hmac-secret") && !debug.contains("file-secret"));
}

#[test]
fn obfuscation_problems_are_listed_with_their_paths() {
    let text = with_obfuscation(
        r#"        - name: [url]
          string_patterns: ["(unclosed", "ok", "a*"]
        - name: [userName]
          method: hmac_sha256
          value: "x"
        - name: [userName]
          method: hmac_sha256
        - name: [userName]
          method: hmac_sha256
          secret_env: UNSET_VAR
        - name: [userName]
          method: hmac_sha256
          secret_env: SHORT_KEY
        - name: [userName]
          method: hmac_sha256
          secret_file: /nonexistent/hmac.key
        - name: [userId]
          secret_env: HMAC_KEY
        - name: [userId]
          method: sha1
        - value: 1
        - name: []
        - name: [url]
          string_patterns: ["x"]
          value: 3
        - name: [a]
          value: {b: 1}
        - name: [a]
          secret: "inline"
        - name: [a]
          colour: red
        - just a string
"#,
    );
    let errors = parse(&text).unwrap_err();
    let p = "inputs.proofpoint_isolation.services.url_isolation.obfuscation_data";
    let expect = [
        format!("{p}[0].string_patterns[0]: invalid regex `(unclosed`: unclosed group"),
        format!("{p}[0].string_patterns[2]: `a*` matches the empty string"),
        format!("{p}[1].value: cannot be combined with `method: hmac_sha256`"),
        format!("{p}[1].secret_env: missing"),
        format!("{p}[2].secret_env: missing"),
        format!("{p}[3].secret_env: the environment variable `UNSET_VAR` is not set"),
        format!("{p}[4].secret_env: the HMAC key has 5 byte(s)"),
        format!("{p}[5].secret_file: cannot read /nonexistent/hmac.key"),
        format!("{p}[6].secret_env: only used with `method: hmac_sha256`"),
        format!("{p}[7].method: `sha1` is not supported"),
        format!("{p}[8].name: missing"),
        format!("{p}[9].name: must be a non-empty list"),
        format!("{p}[10].value: with `string_patterns`, `value` is the text"),
        format!("{p}[11].value: must be a string, number or boolean"),
        format!("{p}[12].secret: secrets are not accepted inline"),
        format!("{p}[13].colour: unknown key"),
        format!("{p}[14]: must be a mapping"),
    ];
    for e in &expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e.as_str())),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    // The value of a secret variable never appears in an error.
    assert!(!errors.join("\n").contains("short"), "{errors:#?}");
}

#[test]
fn a_dotted_name_is_one_key_with_a_warning() {
    let c = parse(&with_obfuscation("        - name: user.email\n")).unwrap();
    assert_eq!(
        c.inputs[0].services[0].obfuscation[0].path,
        vec![PathSegment::Key("user.email".into())]
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("[user, email]")),
        "{:?}",
        c.warnings
    );
}

#[cfg(unix)]
#[test]
fn an_inline_key_in_a_world_readable_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let inline = GOOD.replace("\"${KEY}\"", "\"1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z\"");
    for (text, mode, warned) in [
        (inline.as_str(), 0o644, true),
        (inline.as_str(), 0o600, false),
        (GOOD, 0o644, false),
    ] {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // GOOD refers to ${KEY}: the loader's environment has it.
        let loader = Loader::new(path.clone(), Env::from_fn(env));
        let c = loader.load(now()).unwrap().config;
        let w = c
            .warnings
            .iter()
            .find(|w| w.contains("the key is written in"));
        assert_eq!(w.is_some(), warned, "{mode:o}: {w:?}");
        if let Some(w) = w {
            assert!(w.contains("chmod 600") && !w.contains("5c9z"), "{w}");
        }
    }
}

#[cfg(unix)]
#[test]
fn an_inline_redis_password_in_a_world_readable_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let redis = |password: &str| {
        with_persistence(&format!(
            "    type: redis\n    config: {{host: localhost, password: \"{password}\"}}"
        ))
    };
    let inline = redis("inline-Redis-pw-9876");
    let from_env = redis("${HMAC_KEY}");
    for (text, mode, warned) in [
        (inline.as_str(), 0o644, true),
        (inline.as_str(), 0o600, false),
        (from_env.as_str(), 0o644, false),
    ] {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let loader = Loader::new(path.clone(), Env::from_fn(env));
        let c = loader.load(now()).unwrap().config;
        let w = c
            .warnings
            .iter()
            .find(|w| w.contains("the Redis password is written in"));
        assert_eq!(w.is_some(), warned, "{mode:o}: {w:?}");
        if let Some(w) = w {
            assert!(w.contains("chmod 600") && !w.contains("9876"), "{w}");
        }
    }
}

#[test]
fn two_services_cannot_share_a_table_file() {
    let text = GOOD.replace(
        "        page_size: 500\n",
        "        page_size: 500\n        override_tag: tap.proofpoint.isolation.browser_and_email\n",
    );
    let errors = parse(&text).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "inputs.proofpoint_isolation.services.url_isolation.override_tag: `tap.proofpoint.isolation.browser_and_email` is also the table of browser_and_email_isolation"
        )),
        "{errors:#?}"
    );
    // Without a file output, two services may feed one Devo table.
    let text = text.replace("  local: {type: file, config: {directory: out}}\n", "");
    assert!(parse(&text).is_ok());
}

/// A minimal config with `input` lines under the input and `service` lines under url_isolation.
fn devo_keys(globals: &str, input: &str, service: &str) -> String {
    let indent = |text: &str, n: usize| {
        text.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect::<String>()
    };
    format!(
        "globals:\n  persistence: {{type: memory}}\n{}outputs: {{c: {{type: console}}}}\ninputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials: {{api_key: \"${{KEY}}\"}}\n{}    services:\n      browser_and_email_isolation: {{}}\n      url_isolation:\n{}",
        indent(globals, 2),
        indent(input, 4),
        indent(service, 8)
    )
}

#[test]
fn a_name_with_dots_hashes_or_spaces_is_rewritten_with_a_warning() {
    let c = parse(&devo_keys("name: \"my.collector #1\"", "", "{}")).unwrap();
    assert_eq!(c.globals.name, "my_collector__1");
    assert!(
        c.warnings.iter().any(|w| w.starts_with("globals.name:")
            && w.contains("`my.collector #1`")
            && w.contains("`my_collector__1`")),
        "{:?}",
        c.warnings
    );
    let errors = parse(&devo_keys("name: \"bad/name\"", "", "{}")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("globals.name: `bad/name` may only hold"));
}

#[test]
fn requests_limits_at_both_levels_and_the_narrowest_requests_per_second() {
    let c = parse(&devo_keys(
        "",
        "requests_per_second: 2\nrequests_limits:\n  - {period: 1s, number_of_requests: 5}\n  - {period: \"1M\", number_of_requests: -1}",
        "requests_per_second: 0.5\nrequests_limits: [{period: 2h, number_of_requests: 9999999}]",
    ))
    .unwrap();
    let input = &c.inputs[0];
    let limits: Vec<(u64, Option<u32>)> = input
        .pacing
        .requests_limits
        .iter()
        .map(|l| (l.period.as_secs(), l.max_requests))
        .collect();
    assert_eq!(limits, [(1, Some(5)), (30 * 86_400, None)]);
    let (web, url) = (&input.services[0], &input.services[1]);
    assert_eq!(
        url.pacing.requests_limits[0].period,
        Duration::from_secs(7_200)
    );
    assert_eq!(url.pacing.requests_limits[0].max_requests, Some(9_999_999));
    assert_eq!(
        input.request_interval(web),
        Some(Duration::from_millis(500))
    );
    assert_eq!(input.request_interval(url), Some(Duration::from_secs(2)));
}

#[test]
fn periods_take_devo_units() {
    for (text, secs) in [
        ("1s", 1),
        ("5m", 300),
        ("2h", 7_200),
        ("1d", 86_400),
        ("1w", 604_800),
        ("1M", 2_592_000),
        ("1y", 31_536_000),
    ] {
        assert_eq!(
            parse_period(text),
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
    for bad in ["5x", "0s", "s", "", "1.5m", "-1m", "m5"] {
        assert_eq!(parse_period(bad), None, "{bad}");
    }
}

#[test]
fn bad_limits_are_all_listed() {
    let errors = parse(&devo_keys(
        "",
        "requests_limits:\n  - {period: 5x, number_of_requests: 10}\n  - {period: 1m, number_of_requests: 0}\n  - {number_of_requests: 10000000, extra: 1}",
        "requests_limits: {period: 1s}\nrequests_per_second: 0\nuse_time_slots_for_retrievals: sometimes",
    ))
    .unwrap_err();
    let i = "inputs.proofpoint_isolation";
    let s = "inputs.proofpoint_isolation.services.url_isolation";
    let expect = [
        format!("{i}.requests_limits[0].period: `5x` is not a period"),
        format!("{i}.requests_limits[1].number_of_requests: must be a whole number from 1 to 9999999, or -1"),
        format!("{i}.requests_limits[2].period: missing"),
        format!("{i}.requests_limits[2].number_of_requests: must be a whole number"),
        format!("{i}.requests_limits[2].extra: unknown key"),
        format!("{s}.requests_limits: must be a list"),
        format!("{s}.requests_per_second: must be a number from 0.001 to 1000"),
        format!("{s}.use_time_slots_for_retrievals: must be true or false"),
    ];
    for e in &expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e.as_str())),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn override_base_tag_keeps_the_suffix_and_override_tag_wins() {
    let text = devo_keys(
        "",
        "",
        "override_base_tag: my.isolation\nuse_time_slots_for_retrievals: true",
    )
    .replace(
        "browser_and_email_isolation: {}",
        "browser_and_email_isolation: {override_base_tag: my.isolation, override_tag: my.web}",
    );
    let c = parse(&text).unwrap();
    let (web, url) = (&c.inputs[0].services[0], &c.inputs[0].services[1]);
    assert_eq!(url.table, "my.isolation.url_isolation");
    assert_eq!(web.table, "my.web");
    assert_eq!(
        url.overrides,
        ["Overriding rule #1 - base_tag: \"tap.proofpoint.isolation\" -> \"my.isolation\""]
    );
    assert_eq!(web.overrides.len(), 2);
    assert!(url.use_time_slots);
    assert!(!web.use_time_slots);
    let w = |p: &str| c.warnings.iter().any(|w| w.starts_with(p));
    assert!(w("inputs.proofpoint_isolation.services.browser_and_email_isolation.override_base_tag: has no effect"), "{:?}", c.warnings);
    assert!(w("inputs.proofpoint_isolation.services.url_isolation.use_time_slots_for_retrievals: pull cycles after the first start at wall-clock multiples"), "{:?}", c.warnings);
}

#[test]
fn environment_is_kept_and_ignored_keys_say_what_happens() {
    let c = parse(&devo_keys(
        "balanced_output: true",
        "environment: prod-eu",
        "retries: 3",
    ))
    .unwrap();
    assert_eq!(c.inputs[0].environment.as_deref(), Some("prod-eu"));
    assert!(c.warnings.iter().any(|w| w.starts_with("globals.balanced_output: Devo collector setting with no effect here; ignored: every event goes to every output")), "{:?}", c.warnings);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("url_isolation.retries") && w.contains("max_retries")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn devo_output_aliases_and_renamed_keys() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["chain.crt", "c.crt", "c.key"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = format!(
        "globals: {{persistence: {{type: memory}}}}\noutputs:\n  a: {{type: relay, config: {{url: collector-eu.devo.io, port: 443, chain_loc: {d}/chain.crt, cert_loc: {d}/c.crt, key_loc: {d}/c.key, sending_timeout: 5, concurrent_connections: 2, type: SSL}}}}\n  b: {{type: sidecar, config: {{address: 127.0.0.1, port: 13000}}}}\n  c: {{type: stdout}}\ninputs:\n  proofpoint_isolation: {{id: \"10001\", credentials: {{api_key: \"${{KEY}}\"}}}}\n",
        d = dir.path().display()
    );
    let c = Config::parse(&text, dir.path(), &env, now()).unwrap();
    let OutputKind::Network(a) = &c.outputs[0].kind else {
        panic!("{:?}", c.outputs[0])
    };
    assert!(a.devo);
    assert_eq!(a.address, "collector-eu.devo.io");
    assert_eq!(a.tls.as_ref().unwrap().key, dir.path().join("c.key"));
    let OutputKind::Network(b) = &c.outputs[1].kind else {
        panic!()
    };
    assert!(!b.devo && b.tls.is_none());
    assert!(matches!(c.outputs[2].kind, OutputKind::Console(_)));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("outputs.a.config.sending_timeout")
                && w.contains("confirm_timeout_in_seconds")),
        "{:?}",
        c.warnings
    );
    let both = text.replace(
        "url: collector-eu.devo.io",
        "url: collector-eu.devo.io, address: collector-us.devo.io",
    );
    let errors = Config::parse(&both, dir.path(), &env, now()).unwrap_err();
    assert_eq!(errors, ["outputs.a.config.url: give either `address` or `url` (Devo's other name for it), not both"]);
}

#[test]
fn the_file_output_mode_is_a_quoted_octal_string() {
    let mode_of = |mode: &str| {
        let text = GOOD.replace(
            "local: {type: file, config: {directory: out}}",
            &format!("local: {{type: file, config: {{directory: out{mode}}}}}"),
        );
        parse(&text).map(|c| match &c.outputs[0].kind {
            OutputKind::File(f) => f.mode,
            other => panic!("{other:?}"),
        })
    };
    assert_eq!(mode_of("").unwrap(), 0o640);
    assert_eq!(mode_of(", mode: \"0600\"").unwrap(), 0o600);
    assert_eq!(mode_of(", mode: \"644\"").unwrap(), 0o644);
    // A leading zero makes it a string in YAML 1.2, so the unquoted form works too.
    assert_eq!(mode_of(", mode: 0640").unwrap(), 0o640);
    for bad in ["640", "\"0400\"", "\"0999\"", "\"4755\"", "\"rw-r-----\""] {
        let errors = mode_of(&format!(", mode: {bad}")).unwrap_err();
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].starts_with("outputs.local.config.mode: ")
                && errors[0].contains("quoted octal string"),
            "{bad}: {errors:?}"
        );
    }
}

/// A start time more than 5 minutes after the injected `now` is refused; one within is kept.
#[test]
fn a_start_time_after_now_is_refused() {
    let at = |start: &str, now: &str| {
        let text = GOOD.replace("2024-06-01T00:00:00Z", start);
        let now = crate::timestamp::parse_user_time(now).unwrap();
        Config::parse(&text, Path::new("."), &env, now)
    };
    assert!(at("2024-06-01T00:04:59Z", "2024-06-01T00:00:00Z").is_ok());
    let errors = at("2024-06-01T00:05:01Z", "2024-06-01T00:00:00Z").unwrap_err();
    assert_eq!(
        errors,
        ["inputs.proofpoint_isolation.services.browser_and_email_isolation.start_time_in_utc: \
          `2024-06-01 00:05:01 UTC` is in the future; use a past UTC time such as 2024-06-01T00:00:00Z"]
    );
}

fn with_persistence(persistence: &str) -> String {
    format!("globals:\n  persistence:\n{persistence}\noutputs: {{c: {{type: console}}}}\ninputs:\n  proofpoint_isolation: {{id: \"10001\", credentials: {{api_key: \"${{KEY}}\"}}}}\n")
}

#[test]
fn redis_persistence_keys_and_defaults() {
    let c = parse(&with_persistence(
        "    type: redis\n    config: {host: redis.internal}",
    ))
    .unwrap();
    let Persistence::Redis(r) = &c.globals.persistence else {
        panic!("{:?}", c.globals.persistence)
    };
    assert_eq!(
        *r,
        RedisConfig {
            host: "redis.internal".into(),
            port: 6379,
            password: None,
            username: None,
            db: 0,
            tls: false,
            ca: None,
            key_prefix: "isolation-collector:".into(),
            lease_ttl: Duration::from_secs(30),
            unpulled_after: None,
            sentinel: None,
        }
    );
    // The default bound: 5 min, or three of the longest request period.
    assert_eq!(
        r.unpulled_after(Duration::from_secs(60)),
        Duration::from_secs(300)
    );
    assert_eq!(
        r.unpulled_after(Duration::from_secs(3600)),
        Duration::from_secs(3 * 3600)
    );
    assert_eq!(r.address(), "redis.internal:6379");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "pem").unwrap();
    std::fs::write(dir.path().join("pw"), "from-a-file\n").unwrap();
    let text = with_persistence(
        "    type: redis\n    config: {host: 10.0.0.5, port: 6380, password_file: pw, username: collector, db: 3, tls: true, ca: ca.pem, key_prefix: \"pp:\", lease_ttl_in_seconds: 2.5}",
    );
    let c = Config::parse(&text, dir.path(), &env, now()).unwrap();
    let Persistence::Redis(r) = &c.globals.persistence else {
        panic!()
    };
    assert_eq!(r.password.as_ref().unwrap().expose(), "from-a-file");
    assert_eq!(
        (
            r.port,
            r.username.as_deref(),
            r.db,
            r.tls,
            r.key_prefix.as_str()
        ),
        (6380, Some("collector"), 3, true, "pp:")
    );
    assert_eq!(r.ca.as_deref(), Some(dir.path().join("ca.pem").as_path()));
    assert_eq!(r.lease_ttl, Duration::from_millis(2500));
    assert_eq!(r.unpulled_after, None);
    let set = text.replace(
        "lease_ttl_in_seconds: 2.5",
        "lease_ttl_in_seconds: 2.5, unpulled_after_in_seconds: 90",
    );
    let c = Config::parse(&set, dir.path(), &env, now()).unwrap();
    let Persistence::Redis(r) = &c.globals.persistence else {
        panic!()
    };
    assert_eq!(
        r.unpulled_after(Duration::from_secs(3600)),
        Duration::from_secs(90)
    );
    // Devo's own block: host, port, password and db; the password never in Debug output.
    let c = parse(&with_persistence(
        "    type: redis\n    config: {host: localhost, port: 6379, password: \"${HMAC_KEY}\", db: 0}",
    ))
    .unwrap();
    let shown = format!("{:?}", c.globals);
    assert!(!shown.contains("hmac-secret"), "{shown}");
    assert!(shown.contains("Secret(****)"), "{shown}");
}

#[test]
fn every_bad_redis_value_is_its_own_error_without_the_password() {
    let text = with_persistence(
        "    type: redis\n    config: {host: \"bad host\", port: 70000, password: \"${HMAC_KEY}\", password_file: /nonexistent, db: -1, tls: maybe, ca: ca.pem, key_prefix: \"a{b}\", lease_ttl_in_seconds: 0, sentinel: x}",
    );
    let errors = parse(&text).unwrap_err();
    for (path, needle) in [
        ("globals.persistence.config.host", "is not a host name"),
        ("globals.persistence.config.port", "from 1 to 65535"),
        ("globals.persistence.config.password", "not both"),
        ("globals.persistence.config.db", "from 0 to"),
        ("globals.persistence.config.tls", "true or false"),
        (
            "globals.persistence.config.ca",
            "only used with `tls: true`",
        ),
        ("globals.persistence.config.key_prefix", "hash tag"),
        (
            "globals.persistence.config.lease_ttl_in_seconds",
            "from 1 to 3600",
        ),
        ("globals.persistence.config.sentinel", "unknown key"),
    ] {
        let matching: Vec<_> = errors
            .iter()
            .filter(|e| e.starts_with(&format!("{path}: ")))
            .collect();
        assert_eq!(matching.len(), 1, "{path}: {errors:#?}");
        assert!(matching[0].contains(needle), "{path}: {errors:#?}");
    }
    assert_eq!(errors.len(), 9, "{errors:#?}");
    assert!(!errors.join("\n").contains("hmac-secret"), "{errors:#?}");
    let errors = parse(&with_persistence("    type: redis")).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("globals.persistence.config: missing"),
        "{errors:#?}"
    );
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {password: \"\", lease_ttl_in_seconds: 3601}",
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    // A bound within the lease's TTL would report every hand-over.
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {lease_ttl_in_seconds: 10, unpulled_after_in_seconds: 10}",
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("globals.persistence.config.unpulled_after_in_seconds: 10 s is not more than lease_ttl_in_seconds (10 s)"),
        "{errors:#?}"
    );
}

/// `sentinels`: the master is found through Redis Sentinel; the sentinels' password is a
/// secret like the master's, and the logs name the master and the sentinels.
#[test]
fn redis_sentinel_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spw"), "sentinel-secret\n").unwrap();
    let text = with_persistence(
        "    type: redis\n    config: {sentinels: [\"10.0.0.1:26379\", \"[fd00::2]:26380\", \"s3.internal:26381\"], master_name: mymaster, sentinel_password_file: spw, sentinel_username: watcher, password: \"${HMAC_KEY}\"}",
    );
    let c = Config::parse(&text, dir.path(), &env, now()).unwrap();
    let Persistence::Redis(r) = &c.globals.persistence else {
        panic!("{:?}", c.globals.persistence)
    };
    let s = r.sentinel.as_ref().expect("sentinels");
    assert_eq!(
        s.sentinels,
        [
            ("10.0.0.1".to_owned(), 26379),
            ("fd00::2".to_owned(), 26380),
            ("s3.internal".to_owned(), 26381)
        ]
    );
    assert_eq!(
        (s.master_name.as_str(), s.username.as_deref()),
        ("mymaster", Some("watcher"))
    );
    assert_eq!(s.password.as_ref().unwrap().expose(), "sentinel-secret");
    assert_eq!(
        r.address(),
        "mymaster via sentinels 10.0.0.1:26379,[fd00::2]:26380,s3.internal:26381"
    );
    let shown = format!("{:?}", c.globals);
    assert!(!shown.contains("sentinel-secret"), "{shown}");
    assert!(!shown.contains("hmac-secret"), "{shown}");
}

/// Every bad sentinel value is its own error, listed with the others, naming the fix.
#[test]
fn every_bad_sentinel_value_is_its_own_error() {
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {sentinels: [], sentinel_password: \"${HMAC_KEY}\"}",
    ))
    .unwrap_err();
    let expect = |errors: &[String], path: &str, needle: &str| {
        let matching: Vec<_> = errors
            .iter()
            .filter(|e| e.starts_with(&format!("globals.persistence.config.{path}: ")))
            .collect();
        assert_eq!(matching.len(), 1, "{path}: {errors:#?}");
        assert!(matching[0].contains(needle), "{path}: {errors:#?}");
    };
    expect(&errors, "sentinels", "is empty; list the sentinels");
    expect(&errors, "master_name", "missing; `sentinels` need the name");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(!errors.join("\n").contains("hmac-secret"), "{errors:#?}");
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {host: redis, port: 6380, sentinels: [\"a:1\", \"b\", \"c:0\", 7], master_name: m}",
    ))
    .unwrap_err();
    expect(&errors, "host", "remove `host` and `port`");
    expect(&errors, "port", "remove `host` and `port`");
    expect(&errors, "sentinels[1]", "`b` is not `host:port`");
    expect(&errors, "sentinels[2]", "`c:0` is not `host:port`");
    expect(&errors, "sentinels[3]", "`7` is not `host:port`");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {sentinels: \"a:1\", master_name: m}",
    ))
    .unwrap_err();
    expect(
        &errors,
        "sentinels",
        "must be a list of `host:port` strings",
    );
    let errors = parse(&with_persistence(
        "    type: redis\n    config: {host: redis, master_name: m, sentinel_username: u}",
    ))
    .unwrap_err();
    expect(&errors, "master_name", "only used with `sentinels`");
    expect(&errors, "sentinel_username", "only used with `sentinels`");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

/// A table name is a file name under the file output's directory: one with a `/` or a NUL
/// (`../x`, an absolute `override_tag`) would write outside it. Each is an error naming its
/// key, listed with every other problem.
#[test]
fn table_names_that_would_leave_the_output_directory_are_refused() {
    let text = GOOD
        .replace(
            "        request_period_in_seconds: 300\n",
            "        request_period_in_seconds: 300\n        override_tag: \"../x\"\n",
        )
        .replace(
            "        page_size: 500\n",
            "        page_size: 500\n        override_base_tag: /etc/isolation\n        override_tag: \"a\\0b\"\n",
        );
    let errors = parse(&text).unwrap_err();
    for (key, shown) in [
        ("browser_and_email_isolation.override_tag", "`../x`"),
        ("url_isolation.override_base_tag", "`/etc/isolation`"),
        ("url_isolation.override_tag", "`a\0b`"),
    ] {
        let prefix =
            format!("inputs.proofpoint_isolation.services.{key}: {shown} is not a Devo table name");
        assert!(
            errors.iter().any(
                |e| e.starts_with(&prefix) && e.contains("outside the file output's directory")
            ),
            "{prefix:?} in {errors:#?}"
        );
    }
    // Dots alone stay within the directory (`a..b.jsonl`): Devo tags are dotted.
    let text = GOOD.replace(
        "        page_size: 500\n",
        "        page_size: 500\n        override_tag: my..tag\n",
    );
    assert!(parse(&text).is_ok());
}

/// Two file outputs of one input on one directory would write the same files and cut each
/// other's lines on resume: an error at the second one's directory, however it is spelled.
#[test]
fn two_file_outputs_on_one_directory_are_refused() {
    let text = GOOD.replace(
        "  screen: {type: console}\n",
        "  screen: {type: console}\n  copy: {type: file, config: {directory: ./out/}}\n",
    );
    let errors = parse(&text).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with(
            "outputs.copy.config.directory: `./out/` is also the directory of file output `local`"
        ) && e.contains("give each file output its own directory")),
        "{errors:#?}"
    );
    // Another directory is fine.
    let text = text.replace("./out/", "out/copy");
    assert!(parse(&text).is_ok(), "{:?}", parse(&text).err());
}

mod connection;
mod tenants;
