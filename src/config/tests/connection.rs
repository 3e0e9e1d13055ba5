//! The connection keys: `proxy_url`, `ca_file`, `ca_file_only`, `system_trust_store` in the
//! input block and in the network outputs.

use super::super::*;
use crate::config::connection::ProxySource;

/// A CA certificate as a PEM file in `dir`.
fn ca_file(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let path = dir.join("corp-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

fn config(input_extra: &str, outputs: &str) -> String {
    format!(
        r#"
globals:
  persistence: {{type: memory}}
outputs:
  local: {{type: file, config: {{directory: out}}}}
{outputs}
inputs:
  proofpoint_isolation:
    id: 10001
    credentials: {{api_key: "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z"}}
{input_extra}
    services:
      browser_and_email_isolation: {{}}
      url_isolation:
        override_base_url: http://127.0.0.1:8081
"#
    )
}

fn parse_with(text: &str, dir: &Path, vars: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let now = crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap();
    Config::parse(text, dir, &env, now)
}

#[test]
fn proxy_url_and_ca_file_apply_to_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let text = config(
        "    proxy_url: http://${PROXY_USER}:${PROXY_PASSWORD}@proxy.corp:3128\n    ca_file: corp-ca.pem\n    system_trust_store: true",
        "",
    );
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::rename(&ca, dir.path().join("certs/corp-ca.pem")).unwrap();
    let vars = [
        ("PROXY_USER", "svc-collector"),
        ("PROXY_PASSWORD", "pw-Secret-42"),
        ("HTTPS_PROXY", "http://ignored:1"),
    ];
    let c = parse_with(&text, dir.path(), &vars).unwrap();
    for s in &c.inputs[0].services {
        let route = s.connection.proxy.as_ref().unwrap();
        assert_eq!(route.masked(), "http://proxy.corp:3128");
        assert_eq!(route.source, ProxySource::ProxyUrl);
        assert_eq!(
            s.connection.trust,
            format!(
                "the built-in roots + the system trust store + ca_file {}",
                dir.path().join("certs/corp-ca.pem").display()
            )
        );
    }
    assert!(!format!("{c:?}").contains("pw-Secret-42"));
    // Debug shows the route and the trust, not the TLS configuration's root certificates.
    let debug = format!("{:?}", c.inputs[0].services[0].connection);
    assert!(
        debug.starts_with(
            "ApiConnection { proxy: Some(ProxyRoute(http://proxy.corp:3128, ProxyUrl)), trust: \"the built-in roots + "
        ) && debug.len() < 300,
        "{debug}"
    );
}

#[test]
fn without_proxy_url_the_environment_decides_per_service() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("HTTPS_PROXY", "http://proxy.corp:3128"),
        ("NO_PROXY", "127.0.0.1,localhost"),
    ];
    let c = parse_with(&config("", ""), dir.path(), &vars).unwrap();
    let web = &c.inputs[0].services[0];
    let route = web.connection.proxy.as_ref().unwrap();
    assert_eq!(route.source, ProxySource::Env("HTTPS_PROXY"));
    assert_eq!(route.masked(), "http://proxy.corp:3128");
    assert_eq!(web.connection.trust, "the built-in roots");
    // url_isolation is http://127.0.0.1:8081: no HTTP_PROXY, and NO_PROXY names it anyway.
    assert_eq!(c.inputs[0].services[1].connection.proxy, None);
}

#[test]
fn ca_file_only_trusts_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let text = config(
        &format!("    ca_file: {}\n    ca_file_only: true", ca.display()),
        "",
    );
    let c = parse_with(&text, dir.path(), &[]).unwrap();
    let s = &c.inputs[0].services[0];
    assert_eq!(s.connection.trust, format!("ca_file {}", ca.display()));
    assert_eq!(s.connection.proxy, None);
}

#[test]
fn connection_problems_are_all_listed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let outputs = "  devo:\n    type: devo_platform\n    config: {address: collector-eu.devo.io, port: 443, cert: c.crt, key: c.key, ca_file_only: true}\n";
    let text = config(
        &format!(
            "    proxy_url: socks5://u:pw-Secret-42@proxy:1080\n    ca_file: {}\n    ca_file_only: true\n    system_trust_store: true",
            not_pem.display()
        ),
        outputs,
    );
    let errors = parse_with(&text, dir.path(), &[]).unwrap_err();
    let all = errors.join("\n");
    assert!(!all.contains("pw-Secret-42"), "{all}");
    let expect = [
        "inputs.proofpoint_isolation.proxy_url: has the scheme `socks5`",
        "inputs.proofpoint_isolation.ca_file_only: trusts `ca_file` alone, which contradicts system_trust_store: true",
        "outputs.devo.config.ca_file_only: is an input setting",
        "outputs.devo.config.chain: TLS needs `cert` and `key`, and `chain` (or `ca_file`, or system_trust_store: true)",
    ];
    for e in expect {
        assert!(all.contains(e), "missing {e:?} in:\n{all}");
    }

    // A ca_file without certificates.
    let text = config(&format!("    ca_file: {}", not_pem.display()), "");
    let errors = parse_with(&text, dir.path(), &[]).unwrap_err().join("\n");
    assert!(
        errors.contains(&format!(
            "inputs.proofpoint_isolation.ca_file: the ca_file file {} holds no PEM certificate",
            not_pem.display()
        )),
        "{errors}"
    );

    // An environment proxy that is not a usable URL.
    let vars = [("HTTPS_PROXY", "ftp://u:pw-Secret-42@h")];
    let errors = parse_with(&config("", ""), dir.path(), &vars)
        .unwrap_err()
        .join("\n");
    assert!(errors.contains("inputs.proofpoint_isolation.proxy_url: not set, and the environment variable HTTPS_PROXY has the scheme `ftp`"), "{errors}");
    assert!(!errors.contains("pw-Secret-42"), "{errors}");
}

#[test]
fn an_output_may_verify_with_ca_file_instead_of_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    for f in ["c.crt", "c.key"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let outputs = format!(
        "  relay:\n    type: syslog\n    config: {{address: 127.0.0.1, port: 6514, cert: ./c.crt, key: ./c.key, ca_file: {}, system_trust_store: true}}\n",
        ca.display()
    );
    let c = parse_with(&config("", &outputs), dir.path(), &[]).unwrap();
    let OutputKind::Network(n) = &c.outputs[1].kind else {
        panic!("{:?}", c.outputs[1]);
    };
    let tls = n.tls.as_ref().unwrap();
    assert_eq!(tls.chain, None);
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    assert!(tls.system_trust_store);
}
