//! Which certificate authorities a TLS connection trusts.
//!
//! Three sources, combined: the built-in Mozilla roots (`webpki-roots`, compiled in), the
//! operating system's trust store (`rustls-native-certs`: `/etc/ssl/certs` on Debian, honouring
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), and PEM files named in the configuration (`ca_file`, and an
//! output's `chain`). The API client and the network outputs both build their root stores here,
//! so `ca_file` and `system_trust_store` mean the same in the input block and in an output:
//!
//! | connection | built-in roots            | system store               | PEM files          |
//! |------------|---------------------------|----------------------------|--------------------|
//! | API        | yes, unless `ca_file_only` | if `system_trust_store`    | `ca_file`          |
//! | outputs    | never (Devo's `chain` is the anchor) | if `system_trust_store` | `chain` + `ca_file` |
//!
//! The configuration holds only the choice ([`ApiTrust`] for the API; the outputs' TLS files);
//! the root stores are built when a connection is built ([`api_tls`] for the API client).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Where the trusted roots of one connection come from.
#[derive(Clone, Debug, Default)]
pub struct Roots<'a> {
    /// The built-in Mozilla roots.
    pub builtin: bool,
    /// The operating system's trust store.
    pub system: bool,
    /// PEM bundles, each with the config key that named it (for errors).
    pub files: Vec<(&'static str, &'a Path)>,
}

/// What the API connection trusts, as the input block says it: `ca_file`, `ca_file_only` and
/// `system_trust_store` (plain data; [`api_tls`] reads the files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiTrust {
    /// A PEM bundle of CA certificates, resolved against the config file's directory.
    pub ca_file: Option<PathBuf>,
    /// Trust `ca_file` alone, not the built-in roots.
    pub ca_file_only: bool,
    /// Also trust the operating system's store.
    pub system_trust_store: bool,
}

impl ApiTrust {
    /// The roots this choice names.
    fn roots(&self) -> Roots<'_> {
        Roots {
            builtin: !self.ca_file_only,
            system: self.system_trust_store,
            files: self
                .ca_file
                .iter()
                .map(|p| ("ca_file", p.as_path()))
                .collect(),
        }
    }

    /// Whether the roots can be built: the files are readable and hold usable certificates, and
    /// the system store (if asked for) has some. The config's validation; nothing is kept.
    pub fn check(&self) -> Result<(), TrustError> {
        root_store(&self.roots()).map(drop)
    }
}

/// The TLS client configuration of the API connection, with the roots `trust` names (the files
/// are read now).
pub fn api_tls(trust: &ApiTrust) -> Result<Arc<ClientConfig>, TrustError> {
    Ok(client_config(root_store(&trust.roots())?))
}

/// Why a root store could not be built. Each names the file (or store) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the {key} file {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the {key} file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give a PEM bundle of CA certificates")]
    NoCertificate { key: &'static str, path: String },
    #[error("the {key} file {path} is not valid PEM: {detail}")]
    BadPem {
        key: &'static str,
        path: String,
        detail: String,
    },
    #[error("the {key} file {path} holds an unusable CA certificate: {detail}")]
    Unusable {
        key: &'static str,
        path: String,
        detail: String,
    },
    #[error("system_trust_store is true, but the system trust store has no usable certificate{detail}; install the ca-certificates package, or point SSL_CERT_FILE at a PEM bundle")]
    SystemStoreEmpty { detail: String },
}

/// Reads every certificate of a PEM bundle (other PEM items, such as keys, are skipped).
pub fn read_pem_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        key,
        path: shown.clone(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::BadPem {
            key,
            path: shown.clone(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate { key, path: shown });
    }
    Ok(certs)
}

/// Builds the root store of one connection.
pub fn root_store(roots: &Roots<'_>) -> Result<RootCertStore, TrustError> {
    let mut store = RootCertStore::empty();
    if roots.builtin {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if roots.system {
        add_system_roots(&mut store)?;
    }
    for (key, path) in &roots.files {
        for cert in read_pem_certs(key, path)? {
            store.add(cert).map_err(|e| TrustError::Unusable {
                key,
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// Adds the operating system's roots. A store with some unreadable entries is still used (as
/// OpenSSL does); a store with no usable certificate at all is an error, because the operator
/// asked for it and would otherwise get "UnknownIssuer" for every server.
fn add_system_roots(store: &mut RootCertStore) -> Result<(), TrustError> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(TrustError::SystemStoreEmpty { detail });
    }
    Ok(())
}

/// The TLS client configuration of the API client: TLS 1.3 and 1.2, ring, the given roots, no
/// client certificate. (reqwest takes it as is through `use_preconfigured_tls`.)
pub fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(dir: &Path, name: &str) -> std::path::PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(name);
        // A key in the bundle is skipped, as in the `cat cert key > bundle` files people make.
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        path
    }

    #[test]
    fn files_add_to_the_builtin_roots_or_stand_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = ca_pem(dir.path(), "a.pem");
        let b = ca_pem(dir.path(), "b.pem");
        let builtin = webpki_roots::TLS_SERVER_ROOTS.len();
        let only_builtin = root_store(&Roots {
            builtin: true,
            ..Roots::default()
        })
        .unwrap();
        assert_eq!(only_builtin.len(), builtin);
        let added = root_store(&Roots {
            builtin: true,
            files: vec![("ca_file", &a)],
            ..Roots::default()
        })
        .unwrap();
        assert_eq!(added.len(), builtin + 1);
        // An output: chain + ca_file, nothing built in.
        let output = root_store(&Roots {
            files: vec![("chain", &a), ("ca_file", &b)],
            ..Roots::default()
        })
        .unwrap();
        assert_eq!(output.len(), 2);
    }

    #[test]
    fn the_system_store_adds_the_debian_bundle() {
        let store = root_store(&Roots {
            system: true,
            ..Roots::default()
        })
        .expect("the system trust store (apt-get install ca-certificates)");
        assert!(store.len() > 50, "only {} system roots", store.len());
    }

    #[test]
    fn bad_files_name_the_key_the_path_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = root_store(&Roots {
            files: vec![("ca_file", &missing)],
            ..Roots::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cannot read the ca_file file "), "{err}");
        assert!(err.contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_pem_certs("chain", &empty).unwrap_err().to_string();
        assert!(
            err.contains("the chain file") && err.contains("holds no PEM certificate"),
            "{err}"
        );
    }
}
