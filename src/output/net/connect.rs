//! Connections to a syslog receiver (TCP, optionally TLS with a client certificate) and the proof
//! of delivery.
//!
//! Syslog over TCP/TLS has no application-level acknowledgement. What we can prove is that the
//! receiver *read* everything: after the last record we send TLS `close_notify` and shut down
//! our write side (a plain TCP FIN without TLS), then wait for the receiver to close its side. A
//! receiver closes only after it has read up to our close, so its EOF means every byte before
//! it was consumed. rsyslog answers our `close_notify` by closing TCP without a `close_notify` of
//! its own, so a bare EOF ("unexpected EOF") *after our close_notify* counts as the confirmation
//! (design.md, "Notes on proof of delivery over TLS syslog"). A reset, a TLS alert or silence
//! until the timeout is a failure.
//!
//! TLS 1.3 lets the client finish its side of the handshake before the server has checked the
//! client certificate; a server that rejects it sends an alert afterwards. The alert is read
//! while we wait for the EOF (or while writing), so a rejected certificate is always a failure
//! and is named as such ([`TransportError::ClientCertRejected`]). Devo's Python SDK reports such
//! batches as sent.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Writes go to the socket in pieces of this size, each under the stall timeout, so that a
/// receiver that stops reading is noticed without bounding the time of a whole (large) chunk.
const WRITE_PIECE: usize = 64 * 1024;

/// Why a connection failed. Every variant means "not confirmed".
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TCP connect failed (refused, unreachable, name not resolved).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A step took longer than its timeout.
    #[error("{addr}: timed out after {after:?} while {stage}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What we were doing.
        stage: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The server's certificate does not chain to the configured roots.
    #[error("{addr}: the server certificate is not trusted by {trusted} ({detail})")]
    ServerNotTrusted {
        /// `host:port`.
        addr: String,
        /// The roots we verify against: "the chain file /p/chain.crt" (+ ca_file, system store).
        trusted: String,
        /// rustls' reason.
        detail: String,
    },
    /// The server's certificate is trusted but not issued for the address we connected to.
    #[error(
        "{addr}: the server certificate is not valid for the name {expected} (it names: \
         {presented}); fix `address`, or set check_hostname: false to skip the name check as \
         Devo's SDK does"
    )]
    HostnameMismatch {
        /// `host:port`.
        addr: String,
        /// The name we expected.
        expected: String,
        /// The names in the certificate.
        presented: String,
    },
    /// The receiver refused our client certificate with a TLS alert.
    #[error(
        "{addr}: the receiver rejected our client certificate (TLS alert: {alert}); check \
         cert/key/chain"
    )]
    ClientCertRejected {
        /// `host:port`.
        addr: String,
        /// The alert's name, e.g. `unknown_ca`.
        alert: String,
    },
    /// The receiver closed the connection right after the handshake, before we closed ours.
    /// rsyslog (gtls driver) rejects an untrusted client certificate this way: it completes the
    /// TLS handshake, checks the certificate, and closes without an alert. A receiver that
    /// crashed at that moment looks the same, so this one is retried.
    #[error(
        "{addr}: the receiver closed the connection right after the TLS handshake ({how}): it \
         probably rejected our client certificate (rsyslog does so without a TLS alert); check \
         cert/key/chain"
    )]
    ClosedAfterHandshake {
        /// `host:port`.
        addr: String,
        /// What we saw: "no TLS alert", "connection reset".
        how: String,
    },
    /// The receiver sent another TLS alert.
    #[error("{addr}: the receiver sent TLS alert {alert} while {stage}")]
    Alert {
        /// `host:port`.
        addr: String,
        /// The alert's name.
        alert: String,
        /// What we were doing.
        stage: &'static str,
    },
    /// Any other I/O or TLS failure.
    #[error("{addr}: {stage} failed: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// What we were doing.
        stage: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// Whether trying again within seconds can help. Certificate problems need an operator.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            TransportError::ServerNotTrusted { .. }
                | TransportError::HostnameMismatch { .. }
                | TransportError::ClientCertRejected { .. }
        )
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Connector {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsSetup>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub confirm_timeout: Duration,
    pub tls_settle: Duration,
    /// Set once a connection that waited out the post-handshake settle was confirmed, cleared by
    /// any failure. While set, new connections skip the settle: the receiver has accepted this
    /// very certificate, and the wait (at least 50 ms per connection) would otherwise be most of
    /// the cost of a batch. A receiver whose trust changes mid-run then shows the rejection as
    /// a reset of the first connection after the change, which clears this and brings the wait
    /// back for the retry.
    pub accepted: Arc<std::sync::atomic::AtomicBool>,
}

/// A connected byte stream, plain TCP or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Loaded TLS material.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The roots, as [`TransportError::ServerNotTrusted`] names them.
    pub trusted: String,
}

impl Connector {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connects, writes `data`, closes our side and waits for the receiver's confirmation.
    /// `Ok` means the receiver read every byte of `data`.
    pub async fn send_confirmed(&self, data: &[u8]) -> Result<(), TransportError> {
        self.send_confirmed_signalling(data, &mut None).await
    }

    /// [`Connector::send_confirmed`] that also fires `written` once every byte of `data` is
    /// written and our side is closed, when only the receiver's proof is still pending: the
    /// caller may then start the next chunk on another connection (see `SyslogOutput`).
    pub async fn send_confirmed_signalling(
        &self,
        data: &[u8],
        written: &mut Option<oneshot::Sender<()>>,
    ) -> Result<(), TransportError> {
        let addr = self.addr();
        let tcp = self.connect_tcp(&addr).await?;
        match &self.tls {
            None => self.write_and_confirm(tcp, data, &addr, written).await,
            Some(tls) => {
                use std::sync::atomic::Ordering;
                let started = Instant::now();
                let result = async {
                    let mut stream = self.handshake(tcp, tls, &addr).await?;
                    if !self.accepted.load(Ordering::Relaxed) {
                        self.settle(&mut stream, started.elapsed(), tls, &addr)
                            .await?;
                    }
                    self.write_and_confirm(stream, data, &addr, written).await
                }
                .await;
                self.accepted.store(result.is_ok(), Ordering::Relaxed);
                result
            }
        }
    }

    /// Connects (and with TLS, handshakes) and hands the stream over: for outputs that talk on
    /// a long-lived connection (RELP) rather than proving delivery by the close.
    pub(crate) async fn open_stream(&self) -> Result<Box<dyn Stream>, TransportError> {
        let addr = self.addr();
        let tcp = self.connect_tcp(&addr).await?;
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(self.handshake(tcp, tls, &addr).await?),
        })
    }

    async fn connect_tcp(&self, addr: &str) -> Result<TcpStream, TransportError> {
        let tcp = timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| TransportError::Timeout {
            addr: addr.to_string(),
            stage: "connecting",
            after: self.connect_timeout,
        })?
        .map_err(|source| TransportError::Connect {
            addr: addr.to_string(),
            source,
        })?;
        // Records are written in large pieces; the last small piece and the close should not
        // wait for Nagle.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        tls: &TlsSetup,
        addr: &str,
    ) -> Result<TlsStream<TcpStream>, TransportError> {
        let connector = TlsConnector::from(tls.config.clone());
        timeout(
            self.connect_timeout,
            connector.connect(tls.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| TransportError::Timeout {
            addr: addr.to_string(),
            stage: "in the TLS handshake",
            after: self.connect_timeout,
        })?
        .map_err(|e| classify(e, addr, "TLS handshake", Some(tls)))
    }

    /// Waits briefly after the handshake for the receiver to reject us.
    ///
    /// The client's side of the handshake completes before the receiver has judged our
    /// certificate (always with TLS 1.3; with rsyslog also with TLS 1.2, because it checks the
    /// certificate after GnuTLS' handshake). rsyslog then closes *without an alert*. If we had
    /// already sent our records and close_notify, that bare EOF would look exactly like the
    /// confirmation. So before writing we wait for as long as the handshake took (at least
    /// `tls_settle`, at most `connect_timeout`): a receiver that judges as fast as it
    /// handshakes has answered by then. Silence means accepted; an alert, EOF or reset means
    /// rejected. After this, a late rejection still almost always shows as a reset (the receiver
    /// closes with our unread records in its buffer), never as a clean confirmation, unless the
    /// receiver took longer than the wait to judge *and* our bytes reached it only after it had
    /// closed.
    async fn settle(
        &self,
        stream: &mut TlsStream<TcpStream>,
        handshake_took: Duration,
        tls: &TlsSetup,
        addr: &str,
    ) -> Result<(), TransportError> {
        let wait = handshake_took
            .max(self.tls_settle)
            .min(self.connect_timeout.max(self.tls_settle));
        let mut buf = [0u8; 1024];
        let closed = |how: &str| TransportError::ClosedAfterHandshake {
            addr: addr.to_string(),
            how: how.to_string(),
        };
        match timeout(wait, stream.read(&mut buf)).await {
            // Silence: accepted.
            Err(_) => Ok(()),
            // The receiver sent data; syslog receivers do not, but it is not a rejection.
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(Ok(_)) => Err(closed("close_notify, no TLS alert")),
            Ok(Err(e)) => {
                let kind = e.kind();
                match classify(e, addr, "after the TLS handshake", Some(tls)) {
                    e @ (TransportError::ClientCertRejected { .. }
                    | TransportError::Alert { .. }) => Err(e),
                    _ if kind == io::ErrorKind::UnexpectedEof => Err(closed("no TLS alert")),
                    TransportError::Io { source, .. } => Err(closed(&source.to_string())),
                    other => Err(other),
                }
            }
        }
    }

    async fn write_and_confirm<S>(
        &self,
        mut stream: S,
        data: &[u8],
        addr: &str,
        on_written: &mut Option<oneshot::Sender<()>>,
    ) -> Result<(), TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.tls.as_ref();
        let written = async {
            for piece in data.chunks(WRITE_PIECE) {
                self.io_step(
                    stream.write_all(piece),
                    "writing records",
                    self.write_timeout,
                )
                .await?;
            }
            self.io_step(stream.flush(), "writing records", self.write_timeout)
                .await?;
            // TLS: close_notify, then shutdown(Write) of the TCP socket. TCP: shutdown(Write).
            self.io_step(stream.shutdown(), "closing our side", self.write_timeout)
                .await
        }
        .await;
        if let Err(e) = written {
            // A receiver that rejected us after the handshake (TLS 1.3) may have sent an alert
            // that explains the failed write better than "broken pipe": try to read it.
            if let Some(better) = self.pending_alert(&mut stream, addr).await {
                return Err(better);
            }
            return Err(e.into_transport(addr, tls));
        }
        if let Some(on_written) = on_written.take() {
            // The caller may have stopped listening (it gave the batch up); nothing to do then.
            let _ = on_written.send(());
        }

        let waiting = Instant::now();
        let confirm = async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    // TLS: the receiver's close_notify; TCP: its FIN.
                    Ok(0) => return Ok(()),
                    // Receivers do not talk back on syslog; ignore whatever they send.
                    Ok(_) => continue,
                    // A bare EOF after our close_notify: rsyslog's way of confirming.
                    Err(e) if tls.is_some() && e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok(())
                    }
                    Err(e) => return Err(classify(e, addr, "waiting for the confirmation", tls)),
                }
            }
        };
        let confirmed =
            timeout(self.confirm_timeout, confirm)
                .await
                .map_err(|_| TransportError::Timeout {
                    addr: addr.to_string(),
                    stage: "waiting for the receiver to confirm (close its side)",
                    after: self.confirm_timeout,
                })?;
        // The cost of the proof: from our close to the receiver's answer (the benchmark reads it).
        tracing::debug!(
            bytes = data.len(),
            proof_ms = waiting.elapsed().as_secs_f64() * 1000.0,
            "Delivery confirmed by {addr}."
        );
        confirmed
    }

    async fn io_step<F, T>(
        &self,
        f: F,
        stage: &'static str,
        limit: Duration,
    ) -> Result<T, StepError>
    where
        F: std::future::Future<Output = io::Result<T>>,
    {
        match timeout(limit, f).await {
            Err(_) => Err(StepError::Timeout {
                stage,
                after: limit,
            }),
            Ok(Err(source)) => Err(StepError::Io { stage, source }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// After a failed write: reads briefly to find an alert the receiver sent before closing.
    async fn pending_alert<S>(&self, stream: &mut S, addr: &str) -> Option<TransportError>
    where
        S: AsyncRead + Unpin,
    {
        let tls = self.tls.as_ref()?;
        let mut buf = [0u8; 4096];
        let limit = self.confirm_timeout.min(Duration::from_millis(500));
        match timeout(limit, stream.read(&mut buf)).await {
            Ok(Err(e)) => match classify(e, addr, "writing records", Some(tls)) {
                e @ (TransportError::ClientCertRejected { .. } | TransportError::Alert { .. }) => {
                    Some(e)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

enum StepError {
    Timeout {
        stage: &'static str,
        after: Duration,
    },
    Io {
        stage: &'static str,
        source: io::Error,
    },
}

impl StepError {
    fn into_transport(self, addr: &str, tls: Option<&TlsSetup>) -> TransportError {
        match self {
            StepError::Timeout { stage, after } => TransportError::Timeout {
                addr: addr.to_string(),
                stage,
                after,
            },
            StepError::Io { stage, source } => classify(source, addr, stage, tls),
        }
    }
}

/// Turns an I/O error from tokio-rustls (which carries a `rustls::Error` inside) into the cause
/// an operator can act on.
pub(crate) fn classify(
    err: io::Error,
    addr: &str,
    stage: &'static str,
    tls: Option<&TlsSetup>,
) -> TransportError {
    let addr = addr.to_string();
    let rustls_err = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match (rustls_err, tls) {
        (Some(rustls::Error::AlertReceived(alert)), _) => {
            if is_cert_alert(*alert) {
                TransportError::ClientCertRejected {
                    addr,
                    alert: alert_name(*alert),
                }
            } else {
                TransportError::Alert {
                    addr,
                    alert: alert_name(*alert),
                    stage,
                }
            }
        }
        (Some(rustls::Error::InvalidCertificate(ce)), Some(tls)) => match ce {
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TransportError::HostnameMismatch {
                addr,
                expected: server_name_str(expected),
                presented: presented.join(", "),
            },
            CertificateError::NotValidForName => TransportError::HostnameMismatch {
                addr,
                expected: server_name_str(&tls.server_name),
                presented: "?".to_string(),
            },
            other => TransportError::ServerNotTrusted {
                addr,
                trusted: tls.trusted.clone(),
                detail: format!("{other:?}"),
            },
        },
        _ => TransportError::Io {
            addr,
            stage,
            source: err,
        },
    }
}

/// Alerts by which a TLS server says it does not accept the client's certificate.
fn is_cert_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

/// The RFC 8446 name of an alert (`unknown_ca`), as OpenSSL and GnuTLS print them.
fn alert_name(a: AlertDescription) -> String {
    let name = match a {
        AlertDescription::CloseNotify => "close_notify",
        AlertDescription::UnexpectedMessage => "unexpected_message",
        AlertDescription::BadRecordMac => "bad_record_mac",
        AlertDescription::RecordOverflow => "record_overflow",
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::BadCertificate => "bad_certificate",
        AlertDescription::UnsupportedCertificate => "unsupported_certificate",
        AlertDescription::CertificateRevoked => "certificate_revoked",
        AlertDescription::CertificateExpired => "certificate_expired",
        AlertDescription::CertificateUnknown => "certificate_unknown",
        AlertDescription::IllegalParameter => "illegal_parameter",
        AlertDescription::UnknownCA => "unknown_ca",
        AlertDescription::AccessDenied => "access_denied",
        AlertDescription::DecodeError => "decode_error",
        AlertDescription::DecryptError => "decrypt_error",
        AlertDescription::ProtocolVersion => "protocol_version",
        AlertDescription::InsufficientSecurity => "insufficient_security",
        AlertDescription::InternalError => "internal_error",
        AlertDescription::UserCanceled => "user_canceled",
        AlertDescription::MissingExtension => "missing_extension",
        AlertDescription::UnsupportedExtension => "unsupported_extension",
        AlertDescription::UnrecognisedName => "unrecognized_name",
        AlertDescription::CertificateRequired => "certificate_required",
        AlertDescription::NoApplicationProtocol => "no_application_protocol",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

fn server_name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// Builds the rustls client configuration: TLS 1.2 and 1.3 with the `ring` provider, the server
/// verified against `roots` only, our client certificate, and the host name check on or off.
/// Public for `examples/raw_tls_sender.rs`, the benchmark's raw sender, which must speak TLS
/// exactly as the outputs do.
pub fn client_config(
    roots: rustls::RootCertStore,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    check_hostname: bool,
) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let roots = Arc::new(roots);
    let builder = if check_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| rustls::Error::General(format!("chain file: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier(inner)))
    };
    // Checks that the key belongs to the certificate (rustls' CertifiedKey::from_der).
    builder.with_client_auth_cert(cert_chain, key)
}

/// Verifies the server's chain against the CA file but accepts any name in it: Devo's SDK
/// connects with `check_hostname=False` and its certificates may not name the balancer.
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain (and expiry, usage) before the name, so a name error means the
        // chain was fine.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
