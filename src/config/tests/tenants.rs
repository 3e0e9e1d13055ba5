//! Several tenants in one config: the list form, `inputs_dir`, per-block outputs, duplicate ids,
//! per-input problems and fingerprints.

use std::path::{Path, PathBuf};

use super::super::*;
use crate::service::Service;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY_A" => Some("aaaaaaaaaaaaaaaaaaaa".into()),
        "KEY_B" => Some("bbbbbbbbbbbbbbbbbbbb".into()),
        _ => None,
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap()
}

fn parse_in(text: &str, dir: &Path) -> Result<Config, Vec<String>> {
    Config::parse(text, dir, &env, now())
}

fn parse(text: &str) -> Result<Config, Vec<String>> {
    parse_in(text, Path::new("."))
}

const HEAD: &str = r#"
globals:
  persistence: {type: filesystem, config: {directory_name: state}}
outputs:
  local: {type: file, config: {directory: out}}
"#;

/// HEAD with `inputs.proofpoint_isolation` set to `blocks` (YAML lines indented by 4).
fn with_inputs(blocks: &str) -> String {
    format!("{HEAD}inputs:\n  proofpoint_isolation:\n{blocks}")
}

const TWO_TENANTS: &str = r#"
    - id: 10001
      credentials: {api_key: "${KEY_A}"}
    - id: 10002
      credentials: {api_key: "${KEY_B}"}
      services: {url_isolation: {}}
"#;

/// The directories of an input's file outputs.
fn file_dirs(input: &InputConfig) -> Vec<PathBuf> {
    input
        .outputs
        .iter()
        .filter_map(|o| match &o.kind {
            OutputKind::File(f) => Some(f.directory.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_list_of_input_blocks_loads_one_tenant_per_block() {
    let c = parse(&with_inputs(TWO_TENANTS)).unwrap();
    assert!(c.multi_tenant);
    assert!(c.invalid_inputs.is_empty());
    let services: Vec<(&str, Service)> = c
        .services()
        .map(|(i, s)| (i.id.as_str(), s.service))
        .collect();
    assert_eq!(
        services,
        [
            ("10001", Service::BrowserAndEmailIsolation),
            ("10001", Service::UrlIsolation),
            ("10002", Service::UrlIsolation)
        ]
    );
    assert_eq!(c.inputs[1].api_key.expose(), "bbbbbbbbbbbbbbbbbbbb");
    // Each tenant's file output writes under its own directory.
    assert_eq!(file_dirs(&c.inputs[0]), [PathBuf::from("out/10001")]);
    assert_eq!(file_dirs(&c.inputs[1]), [PathBuf::from("out/10002")]);
}

#[test]
fn devo_s_single_block_is_unchanged() {
    let c = parse(&with_inputs(
        "    id: 10001\n    credentials: {api_key: \"${KEY_A}\"}\n",
    ))
    .unwrap();
    assert!(!c.multi_tenant);
    assert_eq!(c.inputs.len(), 1);
    assert_eq!(file_dirs(&c.inputs[0]), [PathBuf::from("out")]);
    let bad = parse(&with_inputs("    id: 10001\n    credentials: {}\n")).unwrap_err();
    assert!(
        bad.iter()
            .any(|p| p.starts_with("inputs.proofpoint_isolation.credentials.api_key: missing")),
        "{bad:?}"
    );
}

#[test]
fn a_block_may_override_the_outputs() {
    let c = parse(&with_inputs(
        r#"
    - id: 10001
      credentials: {api_key: "${KEY_A}"}
    - id: 10002
      credentials: {api_key: "${KEY_B}"}
      outputs:
        own: {type: file, config: {directory: elsewhere}}
        screen: {type: console}
"#,
    ))
    .unwrap();
    let names = |i: &InputConfig| i.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&c.inputs[0]), ["local"]);
    assert_eq!(names(&c.inputs[1]), ["own", "screen"]);
    assert_eq!(file_dirs(&c.inputs[1]), [PathBuf::from("elsewhere/10002")]);
    // The global outputs stay as written.
    assert_eq!(c.outputs.len(), 1);
}

#[test]
fn two_inputs_with_one_id_are_a_config_error_naming_both() {
    let text = with_inputs(
        r#"
    - id: 10001
      credentials: {api_key: "${KEY_A}"}
    - id: 10002
      credentials: {api_key: "${KEY_A}"}
    - id: 10001
      credentials: {api_key: "${KEY_B}"}
"#,
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(
        problems,
        ["inputs.proofpoint_isolation[2] (id 10001): inputs.proofpoint_isolation[0] has the same id; give each input its own id (it names the input's state, metrics and file output directory)"]
    );
}

#[test]
fn a_block_with_problems_is_an_invalid_input_and_the_others_load() {
    let text = with_inputs(
        r#"
    - id: 10001
      credentials: {api_key: "${KEY_A}"}
    - id: 10002
      credentials: {api_key: "${NOT_SET}"}
      services: {url_isolation: {page_size: 0}}
    - credentials: {api_key: "${KEY_B}"}
"#,
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.inputs.len(), 1);
    assert_eq!(c.inputs[0].id, "10001");
    let bad = &c.invalid_inputs;
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0].id.as_deref(), Some("10002"));
    assert_eq!(bad[0].source, "inputs.proofpoint_isolation[1]");
    let all = bad[0].problems.join("\n");
    assert!(all.contains("inputs.proofpoint_isolation[1] (id 10002).credentials.api_key: refers to the environment variable `NOT_SET`"), "{all}");
    assert!(
        all.contains(
            "inputs.proofpoint_isolation[1] (id 10002).services.url_isolation.page_size: "
        ),
        "{all}"
    );
    assert_eq!(bad[1].id, None);
    assert!(
        bad[1].problems[0].starts_with("inputs.proofpoint_isolation[2].id: missing"),
        "{:?}",
        bad[1].problems
    );
}

#[test]
fn no_valid_input_fails_the_whole_config_with_every_block_s_problems() {
    let text = with_inputs(
        r#"
    - id: 10001
      credentials: {}
    - id: 10002
      credentials: {api_key: "${NOT_SET}"}
"#,
    );
    let problems = parse(&text).unwrap_err().join("\n");
    assert!(
        problems.contains("(id 10001).credentials.api_key: missing"),
        "{problems}"
    );
    assert!(
        problems.contains("(id 10002).credentials.api_key: refers to"),
        "{problems}"
    );
    let empty = parse(&with_inputs("    []\n")).unwrap_err();
    assert!(empty[0].contains("the list is empty"), "{empty:?}");
}

/// A config file in `dir` with `inputs_dir: tenants.d` and the given tenant files.
fn write_tenants(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join("tenants.d").join(name), text).unwrap();
    }
    format!("{HEAD}inputs_dir: tenants.d\n")
}

#[test]
fn inputs_dir_adds_one_block_per_yaml_file_in_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-b"), "bbbbbbbbbbbbbbbbbbbb\n").unwrap();
    let text = write_tenants(
        dir.path(),
        &[
            ("b.yml", "id: 20002\ncredentials: {api_key_file: key-b}\n"),
            (
                "a.yaml",
                "id: 20001\ncredentials: {api_key: \"${KEY_A}\"}\n",
            ),
            ("notes.txt", "not a tenant"),
            (
                "c.yaml",
                "id: 20003\ncredentials: {api_key: \"${KEY_A}\"}\nservices: {nope: {}}\n",
            ),
            ("d.yaml", "id: [\n"),
        ],
    );
    let c = parse_in(&text, dir.path()).unwrap();
    assert!(c.multi_tenant);
    let ids: Vec<&str> = c.inputs.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["20001", "20002"]);
    assert_eq!(c.inputs[1].api_key.expose(), "bbbbbbbbbbbbbbbbbbbb");
    assert_eq!(file_dirs(&c.inputs[0]), [PathBuf::from("out/20001")]);
    let bad = &c.invalid_inputs;
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(
        bad[0].problems,
        ["tenants.d/c.yaml (id 20003): services.nope: unknown service; use browser_and_email_isolation or url_isolation"]
    );
    assert!(
        bad[1].problems[0].starts_with("tenants.d/d.yaml: is not valid YAML"),
        "{:?}",
        bad[1].problems
    );
}

#[test]
fn inputs_dir_problems_of_the_directory_fail_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{HEAD}inputs_dir: missing.d\n");
    let problems = parse_in(&text, dir.path()).unwrap_err();
    assert!(
        problems[0].starts_with("inputs_dir: cannot list "),
        "{problems:?}"
    );
    let empty = write_tenants(dir.path(), &[]);
    let problems = parse_in(&empty, dir.path()).unwrap_err();
    assert!(problems[0].contains("holds no input file"), "{problems:?}");
}

#[test]
fn fingerprints_are_equal_for_an_unchanged_block_and_differ_for_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-b"), "bbbbbbbbbbbbbbbbbbbb").unwrap();
    let blocks = r#"
    - id: 10001
      credentials: {api_key: "${KEY_A}"}
    - id: 10002
      credentials: {api_key_file: key-b}
    - id: 10003
      credentials: {api_key: "${KEY_A}"}
      outputs: {own: {type: console}}
"#;
    let prints = |text: &str| -> Vec<[u8; 32]> {
        let c = parse_in(text, dir.path()).unwrap();
        c.inputs.iter().map(|i| c.fingerprints[&i.id]).collect()
    };
    let first = prints(&with_inputs(blocks));
    assert_eq!(first, prints(&with_inputs(blocks)));
    assert!(first[0] != first[1] && first[1] != first[2]);
    // A rotated key file changes its input alone.
    std::fs::write(dir.path().join("key-b"), "cccccccccccccccccccc").unwrap();
    let rotated = prints(&with_inputs(blocks));
    assert_eq!((rotated[0], rotated[2]), (first[0], first[2]));
    assert_ne!(rotated[1], first[1]);
    // Changed global outputs change the inputs that use them, not the one with its own.
    let moved = with_inputs(blocks).replace("directory: out", "directory: out2");
    let moved = prints(&moved);
    assert_ne!((moved[0], moved[1]), (rotated[0], rotated[1]));
    assert_eq!(moved[2], rotated[2]);
    // A changed setting of one block changes that block alone.
    let paged = with_inputs(&blocks.replacen(
        "credentials: {api_key: \"${KEY_A}\"}\n    - id: 10002",
        "credentials: {api_key: \"${KEY_A}\"}\n      services: {url_isolation: {page_size: 50}}\n    - id: 10002",
        1,
    ));
    let paged = prints(&paged);
    assert_ne!(paged[0], rotated[0]);
    assert_eq!(paged[1..], rotated[1..]);
}

#[test]
fn globals_max_concurrent_jobs_is_the_process_wide_job_cap() {
    let c = parse(&with_inputs(TWO_TENANTS)).unwrap();
    assert_eq!(c.globals.max_concurrent_jobs, 64);
    let set =
        with_inputs(TWO_TENANTS).replace("globals:\n", "globals:\n  max_concurrent_jobs: 500\n");
    assert_eq!(parse(&set).unwrap().globals.max_concurrent_jobs, 500);
    let bad =
        with_inputs(TWO_TENANTS).replace("globals:\n", "globals:\n  max_concurrent_jobs: 0\n");
    assert_eq!(
        parse(&bad).unwrap_err(),
        ["globals.max_concurrent_jobs: must be a whole number from 1 to 4096, got 0"]
    );
}

#[test]
fn globals_audit_interval_is_a_day_by_default_and_0_turns_it_off() {
    let hours = |text: &str| {
        let c = parse(&with_inputs(TWO_TENANTS).replace("globals:\n", text)).unwrap();
        c.globals.audit_interval.map(|d| d.as_secs() / 3600)
    };
    assert_eq!(hours("globals:\n"), Some(24));
    assert_eq!(hours("globals:\n  audit_interval_in_hours: 6\n"), Some(6));
    assert_eq!(hours("globals:\n  audit_interval_in_hours: 0\n"), None);
    let bad = with_inputs(TWO_TENANTS)
        .replace("globals:\n", "globals:\n  audit_interval_in_hours: 1000\n");
    assert_eq!(
        parse(&bad).unwrap_err(),
        ["globals.audit_interval_in_hours: must be a whole number from 0 to 720, got 1000"]
    );
}

#[test]
fn globals_spool_keys_default_to_the_state_directory_and_4_gib() {
    let c = parse(&with_inputs(TWO_TENANTS)).unwrap();
    assert_eq!(c.globals.spool.max_bytes, 4096 << 20);
    assert!(c.globals.spool.directory.ends_with("state/spool"));
    let off =
        with_inputs(TWO_TENANTS).replace("globals:\n", "globals:\n  spool_max_size_in_mb: 0\n");
    assert!(!parse(&off).unwrap().globals.spool.enabled());
    let dir = tempfile::tempdir().unwrap();
    let set = with_inputs(TWO_TENANTS).replace(
        "globals:\n",
        &format!(
            "globals:\n  spool_directory: {}\n",
            dir.path().join("s").display()
        ),
    );
    let c = parse(&set).unwrap();
    assert_eq!(c.globals.spool.directory, dir.path().join("s"));
    assert!(dir.path().join("s").is_dir(), "created");
    let bad = with_inputs(TWO_TENANTS).replace(
        "globals:\n",
        "globals:\n  spool_max_size_in_mb: -1\n  spool_directory: /proc/version/spool\n",
    );
    let errors = parse(&bad).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("globals.spool_max_size_in_mb: must be a whole number from 0"));
    assert!(errors[1]
        .starts_with("globals.spool_directory: /proc/version/spool is not a writable directory"));
}

#[cfg(unix)]
#[test]
fn a_key_written_in_a_listed_block_of_a_readable_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let text = with_inputs(
        "    - id: 10001\n      credentials: {api_key: \"${NO_SUCH_VAR_10001:-aaaaaaaaaaaaaaaaaaaa}\"}\n    - id: 10002\n      credentials: {api_key: bbbbbbbbbbbbbbbbbbbb}\n",
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Loader::new(path, Env::process())
        .load(now())
        .unwrap()
        .config;
    assert!(
        c.warnings.iter().any(|w| w.starts_with(
            "inputs.proofpoint_isolation[1].credentials.api_key: the key is written in"
        )),
        "{:?}",
        c.warnings
    );
}
