use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z".into()),
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
