//! The TLS material of a network output: its roots, client certificate and key, read from the
//! PEM files its configuration names ([`TlsFiles`]). Errors name the file,
//! never its content.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::config::TlsFiles;
use super::connect::{self, TlsSetup};
use crate::output::OutputError;

/// Reads the TLS files of `output` into its client setup for `host`.
pub(crate) fn load_tls(
    output: &str,
    host: &str,
    files: &TlsFiles,
) -> Result<TlsSetup, OutputError> {
    let (roots, trusted) = output_roots(files).map_err(|e| OutputError::Peer {
        output: output.to_string(),
        reason: e.to_string(),
    })?;
    let cert_chain = read_certs(output, &files.cert, "cert")?;
    let key = read_key(output, &files.key)?;
    let config =
        connect::client_config(roots, cert_chain, key, files.check_hostname).map_err(|e| {
            OutputError::Peer {
                output: output.to_string(),
                reason: format!(
                    "TLS setup with cert {} and key {}: {e}",
                    files.cert.display(),
                    files.key.display()
                ),
            }
        })?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|_| OutputError::Peer {
        output: output.to_string(),
        reason: format!("address {host:?} is neither a host name nor an IP address"),
    })?;
    Ok(TlsSetup {
        config: std::sync::Arc::new(config),
        server_name,
        trusted,
    })
}

/// The roots an output verifies its receiver against: `chain` + `ca_file` + (if set) the system
/// store, never the built-in roots (Devo's own `chain.crt` is the anchor). Also what they are,
/// for the "not trusted by ..." error.
pub(crate) fn output_roots(
    files: &TlsFiles,
) -> Result<(rustls::RootCertStore, String), crate::trust::TrustError> {
    let mut roots = crate::trust::Roots::default();
    let mut names = Vec::new();
    if let Some(chain) = &files.chain {
        roots.files.push(("chain", chain.as_path()));
        names.push(format!("the chain file {}", chain.display()));
    }
    if let Some(ca_file) = &files.ca_file {
        roots.files.push(("ca_file", ca_file.as_path()));
        names.push(format!("the ca_file {}", ca_file.display()));
    }
    if files.system_trust_store {
        roots.system = true;
        names.push("the system trust store".to_string());
    }
    Ok((crate::trust::root_store(&roots)?, names.join(" + ")))
}

fn read_pem_file(output: &str, path: &Path, what: &str) -> Result<Vec<u8>, OutputError> {
    std::fs::read(path).map_err(|source| OutputError::Io {
        output: output.to_string(),
        action: format!("reading the TLS {what} file {}", path.display()),
        source,
    })
}

fn invalid(output: &str, path: &Path, what: &str, why: String) -> OutputError {
    OutputError::Io {
        output: output.to_string(),
        action: format!("reading the TLS {what} file {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    }
}

pub(crate) fn read_certs(
    output: &str,
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, OutputError> {
    let pem = read_pem_file(output, path, what)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(output, path, what, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            output,
            path,
            what,
            "no PEM CERTIFICATE found".to_string(),
        ));
    }
    Ok(certs)
}

pub(crate) fn read_key(output: &str, path: &Path) -> Result<PrivateKeyDer<'static>, OutputError> {
    let pem = read_pem_file(output, path, "key")?;
    // The error text of rustls-pemfile never contains key bytes.
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(invalid(
            output,
            path,
            "key",
            "no PEM PRIVATE KEY found".to_string(),
        )),
        Err(e) => Err(invalid(output, path, "key", format!("bad PEM: {e}"))),
    }
}
