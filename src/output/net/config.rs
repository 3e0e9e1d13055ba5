//! The keys the network outputs share (`devo_platform`, `syslog`, `relp`): address, port, TLS
//! files, hostname, record size, timeouts. Plain data, read from the configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::yaml_walker::{resolve_cert, Cx, Obj};

/// Default for [`NetworkOutputConfig::max_record_bytes`]: 256 KiB.
///
/// Nothing documents a limit for Devo's balancer; Devo's relay caps UDP packets at 32 KiB and
/// rsyslog's default `maxMessageSize` is 8 KiB. Isolation events are about 0.3 to 2 KiB, so a
/// record above 256 KiB is almost certainly a runaway field worth a warning, while anything
/// legitimately large still goes through (devo-platform.md §2.3 recommends this value).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024;

/// Configuration of one syslog output: the `devo_platform` and `syslog` outputs' keys
/// (`outputs.<name>.config`), which the `relp` output shares. The config layer parses the YAML
/// into it and holds the defaults of every key; each output builds itself from it (its
/// `from_config`).
#[derive(Clone, Debug)]
pub struct NetworkOutputConfig {
    /// True for `devo_platform`/`relay`, false for `syslog`/`in_house_relay`/`sidecar`. Devo's
    /// outputs refuse to run without TLS ("Devo Sender is not allowed to run without SSL
    /// feature").
    pub devo: bool,
    /// Host name or IP address of the receiver (e.g. `collector-eu.devo.io`).
    pub address: String,
    /// TCP port (443 for Devo).
    pub port: u16,
    /// TLS with a client certificate; `None` means plain TCP.
    pub tls: Option<TlsFiles>,
    /// Overrides the system hostname in the record header.
    pub hostname: Option<String>,
    /// Records larger than this are reported (warning with table and size) and still sent
    /// whole: never truncated, never split.
    pub max_record_bytes: usize,
    /// How long to wait for the receiver's close after ours (the proof of delivery).
    pub confirm_timeout: Duration,
    /// Limit for the TCP connect and, separately, the TLS handshake.
    pub connect_timeout: Duration,
    /// Also deliver the collector's own warnings and errors (`devo.collectors.out.local.*`).
    pub internal_messages: bool,
}

/// TLS files for a network output (`devo_platform`, `syslog`, `relp`), all PEM. The server is
/// verified against the roots of `chain`, `ca_file` and (if set) the system trust store together; at least
/// one must be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates that the server's certificate must chain to (Devo's `chain.crt`).
    pub chain: Option<PathBuf>,
    /// More CA certificates, added to `chain` (the same key as the input's `ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Also trust the operating system's trust store.
    pub system_trust_store: bool,
    /// Our client certificate (optionally followed by intermediates).
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Check that the server certificate names `address`. Devo's SDK does not; default on.
    pub check_hostname: bool,
}

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

/// The keys a network output shares: address, port, TLS files, hostname, record size, timeouts.
/// `tls_default`: whether TLS is on unless `tls: false` (always for Devo's outputs and `relp`).
pub(crate) fn network_keys(
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
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
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
