use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z".into()),
        "HMAC_KEY" => Some("hmac-secret-0123456789abcdef".into()),
        "SHORT_KEY" => Some("short".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(text, Path::new("."), &env)
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
    assert_eq!(c.input.id, "10001");
    assert_eq!(
        c.input.api_key.expose(),
        "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z"
    );
    assert_eq!(
        c.globals.persistence,
        Persistence::Filesystem {
            directory: "state".into()
        }
    );
    assert_eq!(c.outputs.len(), 2);
    assert_eq!(c.input.services.len(), 2);
    let web = &c.input.services[0];
    assert_eq!(web.service, Service::BrowserAndEmailIsolation);
    assert_eq!(web.request_period, Duration::from_secs(300));
    assert_eq!(
        web.endpoint(),
        "https://proofpointisolation.com/api/v2/reporting/usage-data"
    );
    let url = &c.input.services[1];
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
    let text = GOOD.replace("page_size: 500", "page_size: many");
    let errors = parse(&text).unwrap_err();
    assert!(!errors.join("\n").contains("5c9z"), "{errors:?}");
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
    assert_eq!(c.input.api_key.expose(), "abcdefabcdefabcdef");
    assert_eq!(c.input.services.len(), 2);
    assert_eq!(c.globals.persistence, Persistence::Memory);
}

#[test]
fn the_shipped_examples_are_valid() {
    for file in ["examples/config.yaml", "examples/quickstart.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |name: &str| match name {
            "ISOLATION_API_KEY" => Some("00000000-0000-0000-0000-000000000000".to_owned()),
            _ => None,
        };
        if let Err(e) = Config::parse(&text, path.parent().unwrap(), &env) {
            // Certificates of the Devo example do not exist here; everything else must be valid.
            let other: Vec<_> = e.iter().filter(|p| !p.contains("does not exist")).collect();
            assert!(other.is_empty(), "{file}: {other:#?}");
        }
    }
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
    let c = Config::parse(&text, dir.path(), &env).unwrap();
    let rules = &c.input.services[0].obfuscation;
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
        c.input.services[0].obfuscation[0].path,
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
        // GOOD refers to ${KEY}; give it a value for this process.
        let c = Config::parse(text, dir.path(), &env).unwrap();
        let w = super::inline_key_exposure(text, &path);
        assert_eq!(w.is_some(), warned, "{mode:o}: {w:?}");
        if let Some(w) = w {
            assert!(w.contains("chmod 600") && !w.contains("5c9z"), "{w}");
        }
        drop(c);
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

#[test]
fn the_file_output_mode_is_a_quoted_octal_string() {
    let mode_of = |mode: &str| {
        let text = GOOD.replace(
            "local: {type: file, config: {directory: out}}",
            &format!("local: {{type: file, config: {{directory: out{mode}}}}}"),
        );
        parse(&text).map(|c| match &c.outputs[0].kind {
            OutputKind::File { mode, .. } => *mode,
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
