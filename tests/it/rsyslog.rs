//! A real rsyslog receiver for integration tests, and the PKI it needs.
//!
//! Everything lives in a temporary directory: certificates generated with rcgen at test time,
//! the rsyslog configuration, its work directory, pid file, log and the received-records file.
//! rsyslogd runs in the foreground (`-n`) as a child process with only our configuration (no
//! system config, no imuxsock/imklog), on a free loopback port. It can be killed with SIGKILL
//! and started again on the same port.
//!
//! The received file is written with the template `%rawmsg%\n`: rsyslog's raw message is the
//! record as we sent it without the framing newline, so the file is byte-comparable with what
//! we sent. The main queue and the ruleset queue are `Direct`, so a record is in the file
//! before rsyslog reads the next bytes from the connection.
//!
//! rsyslog and its GnuTLS driver are required: without them the tests fail (never skip) and
//! say `apt-get install rsyslog rsyslog-gnutls`; the `relp` tests need imrelp (`rsyslog-relp`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::support::{free_port, kill_server, read_log, wait_until_listening, Wait};

const INSTALL_HINT: &str = "apt-get install rsyslog rsyslog-gnutls";
const RELP_INSTALL_HINT: &str = "apt-get install rsyslog rsyslog-relp";

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate (PEM file).
    pub pem: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA, written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        fs::write(&pem, cert.pem()).unwrap();
        Ca { cert, key, pem }
    }

    fn issue(
        &self,
        dir: &Path,
        file_name: &str,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2045, 1, 1);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{file_name}.pem")),
            key: dir.join(format!("{file_name}-key.pem")),
        };
        fs::write(&files.cert, cert.pem()).unwrap();
        fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, dir: &Path, file_name: &str, names: &[&str]) -> CertFiles {
        self.issue(
            dir,
            file_name,
            names.first().copied().unwrap_or("server"),
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, dir: &Path, file_name: &str) -> CertFiles {
        self.issue(
            dir,
            file_name,
            "isolation-collector",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The test PKI: our CA with a server (127.0.0.1, localhost) and a client certificate, and a
/// foreign CA with a client certificate the receiver does not trust.
pub struct Pki {
    pub ca: Ca,
    pub server: CertFiles,
    pub client: CertFiles,
    pub foreign_ca: Ca,
    pub foreign_client: CertFiles,
}

impl Pki {
    /// A TLS listener that presents our server certificate and verifies clients against our CA.
    /// An imrelp listener over TLS that presents our server certificate and verifies clients
    /// against our CA.
    pub fn listen_relp_tls(&self) -> Listen {
        Listen::RelpTls {
            ca: self.ca.pem.clone(),
            server: self.server.clone(),
        }
    }

    pub fn listen_tls(&self) -> Listen {
        Listen::Tls {
            ca: self.ca.pem.clone(),
            server: self.server.clone(),
        }
    }

    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new(dir, "ours");
        let server = ca.server(dir, "server", &["127.0.0.1", "localhost"]);
        let client = ca.client(dir, "client");
        let foreign_ca = Ca::new(dir, "foreign");
        let foreign_client = foreign_ca.client(dir, "foreign-client");
        Pki {
            ca,
            server,
            client,
            foreign_ca,
            foreign_client,
        }
    }
}

/// How the receiver listens.
#[derive(Clone, Debug)]
pub enum Listen {
    /// Plain TCP.
    Tcp,
    /// TLS with client certificates verified against `ca` (`x509/certvalid`).
    Tls { ca: PathBuf, server: CertFiles },
    /// imrelp over TLS, client certificates verified against `ca` and named `isolation-collector`
    /// (`tls.authMode="name"`). Not `certvalid`: librelp 1.11 with GnuTLS then accepts a client
    /// certificate of any CA (checked by hand with a self-signed one).
    RelpTls { ca: PathBuf, server: CertFiles },
}

/// A running (or killed) rsyslogd.
pub struct Rsyslog {
    dir: PathBuf,
    pub port: u16,
    conf: PathBuf,
    pidfile: PathBuf,
    stderr: PathBuf,
    /// The received records.
    pub out: PathBuf,
    child: Option<Child>,
}

fn require_rsyslog() {
    match Command::new("rsyslogd").arg("-v").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "rsyslogd -v failed ({}): {}; install it with `{INSTALL_HINT}`",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("rsyslogd not found ({e}); install it with `{INSTALL_HINT}`"),
    }
}

fn require_gtls() {
    require_module("lmnsd_gtls.so", INSTALL_HINT);
}

/// rsyslog's module `file` (e.g. `imrelp.so`) must be installed.
fn require_module(file: &str, hint: &str) {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
        "/usr/lib/rsyslog",
        "/usr/lib64/rsyslog",
        "/usr/local/lib/rsyslog",
    ];
    if !dirs.iter().any(|d| Path::new(d).join(file).exists()) {
        panic!("rsyslog's module {file} not found in {dirs:?}; install it with `{hint}`");
    }
}

impl Rsyslog {
    /// Writes the configuration into `dir` (a fresh subdirectory of the test's tempdir) and
    /// starts rsyslogd on a free port.
    pub async fn start(tmp: &TempDir, name: &str, listen: Listen) -> Rsyslog {
        require_rsyslog();
        if matches!(listen, Listen::Tls { .. }) {
            require_gtls();
        }
        if matches!(listen, Listen::RelpTls { .. }) {
            require_module("imrelp.so", RELP_INSTALL_HINT);
        }
        let dir = tmp.path().join(name);
        fs::create_dir_all(dir.join("work")).unwrap();
        let port = free_port();
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        fs::write(&conf, config_text(&dir, port, &out, &listen)).unwrap();
        let mut r = Rsyslog {
            pidfile: dir.join("rsyslogd.pid"),
            stderr: dir.join("rsyslogd.stderr"),
            dir,
            port,
            conf,
            out,
            child: None,
        };
        r.spawn().await;
        r
    }

    /// The configuration file's text.
    pub fn config(&self) -> String {
        fs::read_to_string(&self.conf).unwrap()
    }

    async fn spawn(&mut self) {
        let _ = fs::remove_file(&self.pidfile);
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pidfile)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rsyslogd ({e}); `{INSTALL_HINT}`"));
        self.child = Some(child);
        // Generous: a loaded 2-core CI machine can take seconds to start rsyslogd with GnuTLS.
        wait_until_listening(
            "rsyslogd",
            self.child.as_mut().unwrap(),
            self.port,
            Duration::from_secs(20),
            || {
                format!(
                    "stderr:\n{}\n(if a module is missing: `{INSTALL_HINT}`)",
                    read_log(&self.stderr)
                )
            },
        )
        .await;
    }

    /// SIGKILL (`kill -9`) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_server(&mut child);
        }
    }

    /// Starts rsyslogd again with the same configuration and port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<u8> {
        fs::read(&self.out).unwrap_or_default()
    }

    /// Waits until at least `lines` records were received (or `limit` passed) and returns
    /// everything received.
    pub async fn wait_for_lines(&self, lines: usize, limit: Duration) -> Vec<u8> {
        Wait::new(format!("{lines} records"), limit)
            .every(Duration::from_millis(20))
            .try_until(|| self.received().iter().filter(|&&b| b == b'\n').count() >= lines)
            .await;
        self.received()
    }

    /// rsyslogd's own messages (for failure diagnostics).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rsyslog configuration for one receiver.
pub fn config_text(dir: &Path, port: u16, out: &Path, listen: &Listen) -> String {
    let mut input =
        format!(r#"input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="collect")"#);
    let (global_tls, module) = match listen {
        Listen::RelpTls { ca, server } => {
            input = format!(
                r#"input(type="imrelp" address="127.0.0.1" port="{port}" ruleset="collect" tls="on" tls.caCert="{}" tls.myCert="{}" tls.myPrivKey="{}" tls.authMode="name" tls.permittedPeer=["isolation-collector"])"#,
                ca.display(),
                server.cert.display(),
                server.key.display()
            );
            (String::new(), r#"module(load="imrelp")"#.to_string())
        }
        Listen::Tcp => (String::new(), r#"module(load="imtcp")"#.to_string()),
        Listen::Tls { ca, server } => (
            format!(
                "  defaultNetstreamDriverCAFile=\"{}\"\n  defaultNetstreamDriverCertFile=\"{}\"\n  \
                 defaultNetstreamDriverKeyFile=\"{}\"\n",
                ca.display(),
                server.cert.display(),
                server.key.display()
            ),
            r#"module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.Authmode="x509/certvalid")"#
                .to_string(),
        ),
    };
    format!(
        r#"global(
  workDirectory="{work}"
  maxMessageSize="1m"
{global_tls})
main_queue(queue.type="Direct")
{module}
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="collect" queue.type="Direct") {{
  action(type="omfile" file="{out}" template="raw" asyncWriting="off" flushOnTXEnd="on")
}}
{input}
"#,
        work = dir.join("work").display(),
        out = out.display(),
    )
}
