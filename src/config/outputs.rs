//! The `outputs` section: file, console and the network outputs (`devo_platform`, `syslog` and
//! Devo's other names for them), with their TLS files and the certificate lookup Devo uses. The
//! HTTP outputs' keys are read in `http_outputs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use super::walker::{join, resolve_cert, show, Cx, Obj};

#[derive(Clone, Debug)]
pub struct OutputConfig {
    pub name: String,
    pub kind: OutputKind,
}

#[derive(Clone, Debug)]
pub enum OutputKind {
    File {
        directory: PathBuf,
        /// The mode of the files it creates (`mode`, default 0640).
        mode: u32,
    },
    Console,
    /// `devo_platform` (TLS mandatory) or `syslog` (TLS optional).
    Network(NetworkOutputConfig),
    /// `http`: a webhook (iso2web's body by default). Boxed: the variants stay small.
    Http(Box<crate::output::http::HttpOutputConfig>),
    /// `splunk_hec`: Splunk's HTTP Event Collector with indexer acknowledgement.
    SplunkHec(Box<crate::output::http::hec::HecOutputConfig>),
    /// `relp`: rsyslog's imrelp, every record acknowledged.
    Relp(Box<crate::output::relp::RelpOutputConfig>),
}

pub use crate::output::syslog::{NetworkOutputConfig, TlsFiles};

/// A file output's `mode`: an octal string such as "0640" (unquoted `0640` is a string too, in
/// YAML 1.2). A YAML number (`640`) is refused rather than guessed at: decimal or octal? The
/// collector must be able to read and write its own files. `None` (the error recorded) if
/// invalid.
fn file_mode(c: &mut Obj<'_>, cx: &mut Cx) -> Option<u32> {
    let path = c.path("mode");
    let Some(value) = c.get("mode") else {
        return Some(crate::output::file::DEFAULT_MODE);
    };
    let fix = "write it as a quoted octal string of permission bits that include owner read and write, e.g. \"0640\" or \"0600\"";
    let mode = match value {
        Value::String(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777 && m & 0o600 == 0o600),
        _ => None,
    };
    if mode.is_none() {
        cx.error(
            &path,
            format!("{} is not a valid file mode; {fix}", show(value)),
        );
    }
    mode
}

pub(super) fn parse_outputs(mut o: Obj<'_>, cx: &mut Cx) -> Vec<OutputConfig> {
    let names = o.names();
    if names.is_empty() {
        cx.error(
            &o.path,
            "no output configured; add at least one (devo_platform, syslog, relp, http, splunk_hec, file or console)"
                .into(),
        );
    }
    let mut outputs = Vec::new();
    for name in names {
        let Some(mut out) = o.map(&name, cx) else {
            cx.error(
                &o.path(&name),
                "must be a mapping with `type` and `config`".into(),
            );
            continue;
        };
        let kind = output_kind(&mut out, cx);
        let path = out.path.clone();
        out.finish(cx);
        if let Some(kind) = kind {
            check_own_directory(&outputs, &name, &kind, &path, cx);
            outputs.push(OutputConfig { name, kind });
        }
    }
    o.finish(cx);
    outputs
}

/// Two file outputs on one directory would write the same files, and each would cut the other's
/// lines back to its own committed length on resume: the second one's `directory` is an error.
/// Compared as written, `.` segments and trailing slashes aside (the directories may not exist
/// yet; a symbolic link to the same place is not seen).
fn check_own_directory(
    earlier: &[OutputConfig],
    name: &str,
    kind: &OutputKind,
    path: &str,
    cx: &mut Cx,
) {
    let OutputKind::File { directory, .. } = kind else {
        return;
    };
    let parts = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .map(|c| c.as_os_str().to_owned())
            .collect()
    };
    let same = |d: &Path| parts(d) == parts(directory);
    let clash = earlier.iter().find(
        |o| matches!(&o.kind, OutputKind::File { directory: d, .. } if o.name != name && same(d)),
    );
    if let Some(other) = clash {
        cx.error(
            &join(path, "config.directory"),
            format!(
                "`{}` is also the directory of file output `{}`; both would write the same `<table>.jsonl` files and cut each other's lines; give each file output its own directory",
                directory.display(),
                other.name
            ),
        );
    }
}

/// An output's `type` and its `config`.
fn output_kind(out: &mut Obj<'_>, cx: &mut Cx) -> Option<OutputKind> {
    let kind = out.string("type", cx);
    let config_obj = out.map("config", cx);
    let path = out.path.clone();
    match kind.as_deref() {
        Some("file") => file_output(config_obj, &path, cx),
        Some("console" | "stdout") => {
            if let Some(c) = config_obj {
                c.finish(cx);
            }
            Some(OutputKind::Console)
        }
        Some(t @ ("devo_platform" | "relay" | "syslog" | "in_house_relay" | "sidecar")) => {
            let devo = matches!(t, "devo_platform" | "relay");
            match config_obj {
                Some(c) => parse_network_output(c, devo, cx).map(OutputKind::Network),
                None => {
                    cx.error(
                        &join(&path, "config"),
                        "missing; needs at least `address` and `port`".into(),
                    );
                    None
                }
            }
        }
        Some("relp") => match config_obj {
            Some(c) => parse_relp_output(c, cx).map(|r| OutputKind::Relp(Box::new(r))),
            None => {
                cx.error(
                    &join(&path, "config"),
                    "missing; needs at least `address`, `port`, and `chain`, `cert`, `key` (or tls: false)".into(),
                );
                None
            }
        },
        Some(t @ ("http" | "splunk_hec")) => {
            let Some(c) = config_obj else {
                cx.error(
                    &join(&path, "config"),
                    "missing; needs at least `url`".into(),
                );
                return None;
            };
            if t == "http" {
                super::http_outputs::http_output(c, cx).map(|h| OutputKind::Http(Box::new(h)))
            } else {
                super::http_outputs::hec_output(c, cx).map(|h| OutputKind::SplunkHec(Box::new(h)))
            }
        }
        Some(other) => {
            cx.error(
                &join(&path, "type"),
                format!(
                    "`{other}` is not an output type; use devo_platform, syslog, relp, http, splunk_hec, file or console"
                ),
            );
            None
        }
        None => {
            cx.error(
                &join(&path, "type"),
                "missing; use devo_platform, syslog, relp, http, splunk_hec, file or console"
                    .into(),
            );
            None
        }
    }
}

/// A `file` output: `config.directory` and the files' `mode`.
fn file_output(config_obj: Option<Obj<'_>>, path: &str, cx: &mut Cx) -> Option<OutputKind> {
    let (dir, mode) = match config_obj {
        Some(mut c) => {
            let dir = c.string("directory", cx);
            let mode = file_mode(&mut c, cx);
            c.finish(cx);
            (dir, mode)
        }
        None => (None, None),
    };
    if dir.is_none() {
        cx.error(
            &join(path, "config.directory"),
            "missing; the file output needs a directory, e.g. `out`".into(),
        );
    }
    dir.zip(mode).map(|(d, mode)| OutputKind::File {
        directory: PathBuf::from(d),
        mode,
    })
}

const DEVO_SENDER_IGNORED: &[&str] = &[
    "type",
    "connecting_retries",
    "connecting_initial_wait_in_seconds",
    "connecting_max_wait_in_seconds",
    "sending_timeout",
    "sending_retries",
    "sending_initial_wait_in_seconds",
    "sending_max_wait_in_seconds",
    "concurrent_connections",
    "period_sender_stats_in_seconds",
    "activate_final_queue",
    "threshold_for_using_gzip_in_transport_layer",
    "compression_level",
    "compression_buffer_in_bytes",
    "generate_metrics",
];

/// An output's `ca_file` and `system_trust_store`: roots added to Devo's `chain`.
struct OutputTrustKeys {
    ca_file: Option<PathBuf>,
    system_trust_store: bool,
}

impl OutputTrustKeys {
    fn given(&self) -> bool {
        self.ca_file.is_some() || self.system_trust_store
    }
}

fn output_trust_keys(c: &mut Obj<'_>, cx: &mut Cx) -> OutputTrustKeys {
    if c.get("ca_file_only").is_some() {
        cx.error(&c.path("ca_file_only"), "is an input setting; an output never trusts built-in roots, only `chain`, `ca_file` and (with system_trust_store: true) the system store; remove it".into());
    }
    OutputTrustKeys {
        ca_file: c
            .string("ca_file", cx)
            .map(|f| resolve_cert(&cx.base_dir, &f)),
        system_trust_store: c.boolean("system_trust_store", false, cx),
    }
}

fn parse_network_output(mut c: Obj<'_>, devo: bool, cx: &mut Cx) -> Option<NetworkOutputConfig> {
    c.ignored = DEVO_SENDER_IGNORED;
    let network = network_keys(&mut c, devo, devo, cx);
    c.finish(cx);
    network
}

/// A `relp` output: the network keys with TLS on by default (`tls: false` for plain TCP), and
/// `window_size`.
fn parse_relp_output(mut c: Obj<'_>, cx: &mut Cx) -> Option<crate::output::relp::RelpOutputConfig> {
    let network = network_keys(&mut c, false, true, cx);
    if network.as_ref().is_some_and(|n| n.internal_messages) {
        cx.error(
            &c.path("internal_messages"),
            "is not supported by relp outputs (only devo_platform and syslog outputs carry the collector's own messages); remove it".into(),
        );
    }
    let window_size = c
        .number("window_size", 1.0, 100_000.0, true, cx)
        .map_or(crate::output::relp::DEFAULT_WINDOW_SIZE, |n| n as usize);
    c.finish(cx);
    Some(crate::output::relp::RelpOutputConfig {
        network: network?,
        window_size,
    })
}

/// The keys a network output shares: address, port, TLS files, hostname, record size, timeouts.
/// `tls_default`: whether TLS is on unless `tls: false` (always for Devo's outputs and `relp`).
fn network_keys(
    c: &mut Obj<'_>,
    devo: bool,
    tls_default: bool,
    cx: &mut Cx,
) -> Option<NetworkOutputConfig> {
    let address = c.string_or_alias("address", "url", cx);
    if address.is_none() {
        cx.error(
            &c.path("address"),
            "missing; e.g. collector-eu.devo.io".into(),
        );
    }
    let port = c.number("port", 1.0, 65535.0, true, cx).map(|p| p as u16);
    if port.is_none() && !c.map.contains_key("port") {
        cx.error(&c.path("port"), "missing; Devo listens on 443".into());
    }
    let tls = tls_files(c, tls_default, cx);
    let hostname = c.string("hostname", cx);
    let internal_messages = c.boolean("internal_messages", false, cx);
    let max_record_bytes = c
        .number("max_record_bytes", 1024.0, 64.0 * 1024.0 * 1024.0, true, cx)
        .map(|n| n as usize)
        .unwrap_or(crate::output::syslog::DEFAULT_MAX_RECORD_BYTES);
    let mut confirm_timeout = Duration::from_secs(30);
    let mut connect_timeout = Duration::from_secs(10);
    for (key, field) in [
        ("confirm_timeout_in_seconds", &mut confirm_timeout),
        ("connect_timeout_in_seconds", &mut connect_timeout),
    ] {
        *field = c.duration(key, 0.1..=600.0, *field, cx);
    }
    if devo {
        if let Some(a) = &address {
            warn_unless_devo_address(c, a, cx);
        }
    }
    Some(NetworkOutputConfig {
        devo,
        address: address?,
        port: port?,
        tls,
        hostname,
        max_record_bytes,
        confirm_timeout,
        connect_timeout,
        internal_messages,
    })
}

/// The TLS keys of a network output: `chain`, `cert` and `key` (or Devo's `*_loc` names),
/// `check_hostname`, `tls`, and the extra roots. `None` for plain TCP (a `syslog` output
/// without any of them); every given file must exist.
fn tls_files(c: &mut Obj<'_>, tls_default: bool, cx: &mut Cx) -> Option<TlsFiles> {
    let chain = c.string_or_alias("chain", "chain_loc", cx);
    let cert = c.string_or_alias("cert", "cert_loc", cx);
    let key = c.string_or_alias("key", "key_loc", cx);
    let check_hostname = c.boolean("check_hostname", true, cx);
    let tls_wanted = c.boolean("tls", tls_default, cx);
    let roots = output_trust_keys(c, cx);
    match (cert, key) {
        (Some(cert), Some(key)) if chain.is_some() || roots.given() => {
            let files = TlsFiles {
                chain: chain.map(|f| resolve_cert(&cx.base_dir, &f)),
                ca_file: roots.ca_file,
                system_trust_store: roots.system_trust_store,
                cert: resolve_cert(&cx.base_dir, &cert),
                key: resolve_cert(&cx.base_dir, &key),
                check_hostname,
            };
            for (k, p) in [
                ("chain", files.chain.as_ref()),
                ("ca_file", files.ca_file.as_ref()),
                ("cert", Some(&files.cert)),
                ("key", Some(&files.key)),
            ] {
                if let Some(p) = p.filter(|p| !p.is_file()) {
                    cx.error(&c.path(k), format!("file {} does not exist; put the Devo domain certificates there (bare names are looked up in certs/)", p.display()));
                }
            }
            Some(files)
        }
        (None, None) if chain.is_none() && !roots.given() && !tls_wanted => None,
        _ => {
            cx.error(&c.path("chain"), "TLS needs `cert` and `key`, and `chain` (or `ca_file`, or system_trust_store: true) to verify the server (Devo: Administration > Credentials > X.509 Certificates)".into());
            None
        }
    }
}

/// A `devo_platform` address that is none of Devo's collector hosts gets a warning (a typo
/// would otherwise show only as connection failures).
fn warn_unless_devo_address(c: &Obj<'_>, a: &str, cx: &mut Cx) {
    if !a.starts_with("collector-")
        && !a.ends_with(".devo.io")
        && a != "127.0.0.1"
        && a != "localhost"
    {
        cx.warn(
            &c.path("address"),
            format!("`{a}` is not one of Devo's collector-{{us,eu,ca,ap}}.devo.io addresses"),
        );
    }
}

#[cfg(test)]
mod relp_tests {
    use super::*;
    use crate::config::Config;

    fn parse(outputs: &str, dir: &Path) -> Result<Config, Vec<String>> {
        let text = format!(
            "globals: {{id: t, name: t, persistence: {{type: memory}}}}\noutputs:\n{outputs}inputs:\n  proofpoint_isolation:\n    id: 1\n    credentials: {{api_key: \"1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z\"}}\n"
        );
        let now = crate::time::parse_user_time("2026-01-01T00:00:00Z").unwrap();
        Config::parse(&text, dir, &|_: &str| None, now)
    }

    #[test]
    fn relp_outputs_take_the_devo_tls_keys_and_a_window() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        for f in ["chain.crt", "c.crt", "c.key"] {
            std::fs::write(dir.path().join("certs").join(f), "x").unwrap();
        }
        let c = parse(
            "  r:\n    type: relp\n    config: {address: relay.example, port: 2514, chain: chain.crt, cert: c.crt, key: c.key}\n  p:\n    type: relp\n    config: {address: 10.0.0.1, port: 20514, tls: false, window_size: 16}\n",
            dir.path(),
        )
        .unwrap();
        let OutputKind::Relp(r) = &c.outputs[0].kind else {
            panic!("{:?}", c.outputs[0].kind)
        };
        assert_eq!(r.window_size, crate::output::relp::DEFAULT_WINDOW_SIZE);
        let tls = r.network.tls.as_ref().unwrap();
        assert_eq!(tls.cert, dir.path().join("certs/c.crt"));
        assert!(tls.check_hostname);
        let OutputKind::Relp(p) = &c.outputs[1].kind else {
            panic!("{:?}", c.outputs[1].kind)
        };
        assert_eq!((p.window_size, p.network.port), (16, 20514));
        assert!(p.network.tls.is_none());
    }

    #[test]
    fn relp_without_tls_files_says_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let errors = parse(
            "  r: {type: relp, config: {address: a, port: 2514, window_size: 0}}\n  s: {type: relp}\n  t: {type: relp, config: {address: a, port: 1, tls: false, internal_messages: true}}\n",
            dir.path(),
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "outputs.r.config.chain: TLS needs `cert` and `key`",
            "outputs.r.config.window_size:",
            "outputs.s.config: missing; needs at least `address`",
            "outputs.t.config.internal_messages: is not supported by relp",
        ] {
            assert!(all.contains(needle), "{needle:?} in\n{all}");
        }
    }
}
