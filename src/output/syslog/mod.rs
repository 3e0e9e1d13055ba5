//! Syslog outputs: `devo_platform` (Devo's syslog balancer over mutual TLS) and `syslog`
//! (in-house relays: TCP, TLS optional).
//!
//! [`format`] builds the records (pure functions, golden-tested), [`transport`] connects and
//! proves delivery, [`stats`] counts what was confirmed. [`SyslogOutput::deliver`] confirms a
//! batch only when the receiver provably read all of it (see [`transport`]).
//!
//! ## Connections
//! Every chunk of a batch gets its own connection: connect, handshake, write, close, wait for
//! the receiver's close. Holding a connection open between batches would buy nothing (batches
//! arrive every `request_period_in_seconds`) and would need the care Devo's SDK takes: its
//! balancer drops idle connections, so the SDK reconnects when a connection is idle for > 30 s
//! or older than 1 h. A connection per chunk never gets idle or old, so that holds by
//! construction.
//!
//! The chunks of a batch are pipelined ([`Tuning::pipeline`]): once a chunk is written and our
//! side closed, the next chunk is written on a new connection while the earlier proof is still
//! pending. The batch is confirmed only when every chunk is. When a chunk fails, no later chunk
//! is started, the chunks already in flight are let finish, and the events of every chunk whose
//! proof arrived (before or after the failure) are reported confirmed
//! ([`OutputError::Partly`]): the fan-out remembers events, not prefixes, so it gives this output
//! only the unconfirmed chunks' events again.

pub mod format;
pub mod stats;
pub mod transport;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesOrdered, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::format::RecordFormatter;
use self::stats::{SenderStats, StatsHandle};
use self::transport::{Connector, TlsSetup, TransportError};
use super::OutputError;
use crate::backoff::{Backoff, Jitter};
use crate::clock::SharedClock;
use crate::event::Event;

/// Default for [`NetworkOutputConfig::max_record_bytes`]: 256 KiB.
///
/// Nothing documents a limit for Devo's balancer; Devo's relay caps UDP packets at 32 KiB and
/// rsyslog's default `maxMessageSize` is 8 KiB. Isolation events are about 0.3 to 2 KiB, so a
/// record above 256 KiB is almost certainly a runaway field worth a warning, while anything
/// legitimately large still goes through (devo-platform.md §2.3 recommends this value).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024;

/// Default for [`Tuning::chunk_records`].
///
/// 10,000 records (about 4 MB) per connection: a few milliseconds of handshake and confirmation
/// per chunk is negligible, and a failed chunk costs at most 10,000 records of resend.
pub const DEFAULT_CHUNK_RECORDS: usize = 10_000;

/// Default for [`Tuning::pipeline`]: while one chunk's proof is pending, the next is written.
pub const DEFAULT_PIPELINE: usize = 2;

/// One chunk's send, as [`SyslogOutput::deliver`]'s pipeline yields it.
struct SentChunk {
    result: Result<(), TransportError>,
    /// The index of the chunk's first event in the batch.
    start: usize,
    buf: Vec<u8>,
    records: usize,
}

/// What the chunks of one batch proved so far.
#[derive(Default)]
struct Proofs {
    /// Indices of the events of the confirmed chunks, ascending (chunks settle in order).
    confirmed: Vec<usize>,
    /// The first failed chunk's error.
    failure: Option<TransportError>,
}

/// TLS files for a syslog output, all PEM. The server is verified against the roots of `chain`,
/// `ca_file` and (if set) the system trust store together; at least one must be given.
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

/// Configuration of one syslog output: the `devo_platform` and `syslog` outputs' keys
/// (`outputs.<name>.config`). The config layer parses the YAML into it and holds the defaults of
/// every key; the output builds itself from it ([`SyslogOutput::from_config`]).
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

/// The sender's settings that no configuration key reaches. [`Tuning::default`] is what the
/// collector uses; tests and embedders may choose others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Records per connection; each chunk is confirmed on its own.
    pub chunk_records: usize,
    /// Limit for any single write making no progress (a receiver that stopped reading).
    pub write_timeout: Duration,
    /// Minimum wait after the TLS handshake for the receiver to reject our certificate before
    /// we write (see `transport`); the actual wait is as long as the handshake took.
    pub tls_settle: Duration,
    /// Connections of one batch that may await their proof of delivery at once (at least 1;
    /// 1 sends chunk after chunk). See [`SyslogOutput::deliver`].
    pub pipeline: usize,
    /// Tries per chunk within one `deliver` (at least 1). The outputs fan-out retries the whole
    /// batch later with its own backoff.
    pub attempts: u32,
    /// Wait before the second try; doubled for each further try, jittered, capped.
    pub backoff_initial: Duration,
    /// Cap of the wait between tries.
    pub backoff_max: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            chunk_records: DEFAULT_CHUNK_RECORDS,
            write_timeout: Duration::from_secs(30),
            tls_settle: Duration::from_millis(50),
            pipeline: DEFAULT_PIPELINE,
            attempts: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// A syslog output (Devo or relay). See the module documentation.
pub struct SyslogOutput {
    name: String,
    /// The HOSTNAME the records carry.
    hostname: String,
    max_record_bytes: usize,
    chunk_records: usize,
    /// Boxed to keep `Output` small (clippy::large_enum_variant); used once per chunk.
    sender: Box<Sender>,
    stats: StatsHandle,
    /// Connections that may await their proof of delivery at once (at least 1).
    pipeline: usize,
    /// Reused record buffers (one per chunk in flight).
    bufs: Vec<Vec<u8>>,
    /// Cached per table: the prefix only changes with the table.
    formatter: Option<(String, RecordFormatter)>,
    /// Stamps the records' syslog dates and the statistics periods.
    clock: SharedClock,
}

/// Where to send and how to retry.
struct Sender {
    connector: Connector,
    attempts: u32,
    /// The waits between tries of one chunk (a fresh copy per chunk).
    backoff: Backoff,
    /// Ends a wait between tries (a shutdown request); never cancelled unless set with
    /// [`SyslogOutput::stop_retries_on`].
    stop_retries: CancellationToken,
}

impl std::fmt::Debug for SyslogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No TLS material here, ever.
        f.debug_struct("SyslogOutput")
            .field("name", &self.name)
            .field("addr", &self.sender.connector.addr())
            .field("tls", &self.sender.connector.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl SyslogOutput {
    /// Builds the output from its configuration: validates the settings and loads the TLS files.
    ///
    /// # Errors
    /// A missing or unreadable TLS file, or one without the expected PEM item, is an
    /// [`OutputError::Io`] naming the file's path (never its content). Invalid settings
    /// (no TLS where required, bad address or hostname) are [`OutputError::Peer`].
    pub fn from_config(
        name: String,
        config: &NetworkOutputConfig,
        clock: SharedClock,
    ) -> Result<SyslogOutput, OutputError> {
        SyslogOutput::with_tuning(name, config, Tuning::default(), clock)
    }

    /// [`SyslogOutput::from_config`] with other [`Tuning`] than the collector's.
    ///
    /// # Errors
    /// As [`SyslogOutput::from_config`].
    pub fn with_tuning(
        name: String,
        config: &NetworkOutputConfig,
        tuning: Tuning,
        clock: SharedClock,
    ) -> Result<SyslogOutput, OutputError> {
        let bad = |reason: String| OutputError::Peer {
            output: name.clone(),
            reason,
        };
        if config.devo && config.tls.is_none() {
            return Err(bad(
                "TLS is mandatory for this output: set chain, cert and key".to_string(),
            ));
        }
        if config.address.is_empty() {
            return Err(bad("address is empty".to_string()));
        }
        if config.port == 0 {
            return Err(bad("port must be 1-65535".to_string()));
        }
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(format::system_hostname);
        format::check_header_field(&hostname, 255)
            .map_err(|why| bad(format!("hostname {hostname:?} {why}")))?;
        let host = config
            .address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();

        let tls = match &config.tls {
            None => None,
            Some(files) => Some(load_tls(&name, &host, files)?),
        };
        Ok(SyslogOutput {
            hostname,
            max_record_bytes: config.max_record_bytes,
            chunk_records: tuning.chunk_records.max(1),
            sender: Box::new(Sender {
                attempts: tuning.attempts.max(1),
                // "Equal jitter": retries of several outputs do not synchronise but never come
                // back immediately.
                backoff: Backoff::new(tuning.backoff_initial, tuning.backoff_max)
                    .jitter(Jitter::UpperHalf),
                stop_retries: CancellationToken::new(),
                connector: Connector {
                    host,
                    port: config.port,
                    tls,
                    connect_timeout: config.connect_timeout,
                    write_timeout: tuning.write_timeout,
                    confirm_timeout: config.confirm_timeout,
                    tls_settle: tuning.tls_settle,
                    accepted: Default::default(),
                },
            }),
            stats: StatsHandle::new(SystemTime::from(clock.now())),
            pipeline: tuning.pipeline.max(1),
            bufs: Vec::new(),
            formatter: None,
            name,
            clock,
        })
    }

    /// The output's name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A wait between tries of a chunk ends when `cancel` fires: the chunk is given up with
    /// its last failure (unconfirmed, so its window is delivered again after a restart). A try
    /// under way is not interrupted: a receiver may already have stored what it was sent, and
    /// finishing the try lets the window be checkpointed rather than delivered twice.
    pub fn stop_retries_on(&mut self, cancel: CancellationToken) {
        self.sender.stop_retries = cancel;
    }

    /// A snapshot of the sender counters.
    pub fn stats(&self) -> SenderStats {
        self.stats.snapshot()
    }

    /// A handle to the counters for a periodic logger in another task.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Delivers `events` as records of `table`. `Ok` only when the receiver confirmed every
    /// chunk (see [`transport`]).
    ///
    /// # Errors
    /// [`OutputError::Peer`] with the cause of the first failed chunk's last try, as
    /// [`OutputError::Partly`] with the events of the chunks that were confirmed all the same:
    /// the caller sends only the others again.
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        let started = Instant::now();
        let result = self.deliver_chunks(table, events).await;
        self.stats.add_batch(result.is_ok(), started.elapsed());
        result.map(|()| None)
    }

    async fn deliver_chunks(&mut self, table: &str, events: &[Event]) -> Result<(), OutputError> {
        if let Err(why) = format::check_header_field(table, format::MAX_TABLE_LEN) {
            return Err(self.peer_error(format!("table name {table:?} {why}")));
        }
        let mut formatter = match self.formatter.take() {
            Some((t, f)) if t == table => f,
            _ => RecordFormatter::new(&self.hostname, table),
        };
        let mut spare = std::mem::take(&mut self.bufs);
        let result = self
            .send_pipelined(table, events, &mut formatter, &mut spare)
            .await
            .map_err(|(e, confirmed)| self.peer_error(e.to_string()).after_confirming(confirmed));
        // Keep the allocations for the next batch, but not outsized ones.
        spare.retain(|buf| buf.capacity() <= 64 * 1024 * 1024);
        self.bufs = spare;
        self.formatter = Some((table.to_string(), formatter));
        result
    }

    /// Sends the chunks of `events` in order, each on its own connection: `Ok` only when every
    /// chunk was proven read, else the first failure in chunk order with the indices of the
    /// events of every chunk that was proven read all the same.
    ///
    /// Pipelined because the proof is a round trip plus the receiver's reading of what is still
    /// in the socket buffers (tens of milliseconds per chunk with rsyslog): once a chunk is
    /// written and closed, the next one is formatted and written on another connection while
    /// the earlier proof is pending, with at most `pipeline` connections awaiting proof. Only
    /// one connection writes at a time, and a chunk that fails before it is written stops the
    /// batch before any later chunk is started, so failures count connections as without
    /// pipelining. After a failure no chunk is started, but those in flight are let finish
    /// (each bounded by the confirm timeout): one whose proof arrives counts, as the receiver
    /// has it. The receiver may store the records of two chunks interleaved: it reads two
    /// connections.
    async fn send_pipelined(
        &self,
        table: &str,
        events: &[Event],
        formatter: &mut RecordFormatter,
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<(), (TransportError, Vec<usize>)> {
        let mut proofs = Proofs::default();
        let mut in_flight = FuturesOrdered::new();
        for (n, chunk) in events.chunks(self.chunk_records).enumerate() {
            let mut buf = spare.pop().unwrap_or_default();
            self.format_chunk(&mut buf, table, chunk, formatter);
            let (tx, mut written) = oneshot::channel();
            let start = n * self.chunk_records;
            in_flight.push_back(self.send_chunk(buf, start, chunk.len(), tx));
            let was_written = loop {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.next() => spare.push(self.settle(done, &mut proofs)),
                    w = &mut written => break w.is_ok(),
                }
            };
            if !was_written || proofs.failure.is_some() {
                break; // no later chunk is started; those in flight finish below
            }
            while in_flight.len() >= self.pipeline {
                if let Some(done) = in_flight.next().await {
                    spare.push(self.settle(done, &mut proofs));
                }
            }
            if proofs.failure.is_some() {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            spare.push(self.settle(done, &mut proofs));
        }
        match proofs.failure {
            None => Ok(()),
            Some(e) => Err((e, proofs.confirmed)),
        }
    }

    /// Formats `chunk` into `buf` as records of `table`.
    fn format_chunk(
        &self,
        buf: &mut Vec<u8>,
        table: &str,
        chunk: &[Event],
        formatter: &mut RecordFormatter,
    ) {
        buf.clear();
        for event in chunk {
            let len = formatter.record_len(&event.json);
            if len > self.max_record_bytes {
                warn!(
                    output = %self.name,
                    table,
                    bytes = len,
                    max_record_bytes = self.max_record_bytes,
                    "Record larger than max_record_bytes; sending it whole."
                );
            }
            formatter.write_at(buf, self.clock.now_ms(), &event.json);
        }
    }

    /// Sends one formatted chunk (with retries); yields the outcome, the buffer for reuse and
    /// the number of records. `written` fires when its bytes are written and only the proof
    /// is pending.
    async fn send_chunk(
        &self,
        buf: Vec<u8>,
        start: usize,
        records: usize,
        written: oneshot::Sender<()>,
    ) -> SentChunk {
        let result = self.send_with_retries(&buf, Some(written)).await;
        SentChunk {
            result,
            start,
            buf,
            records,
        }
    }

    /// Counts a confirmed chunk into `proofs` and the stats, or keeps the first failure;
    /// returns its buffer.
    fn settle(&self, done: SentChunk, proofs: &mut Proofs) -> Vec<u8> {
        match done.result {
            Ok(()) => {
                self.stats
                    .add_confirmed(done.records as u64, done.buf.len() as u64);
                proofs
                    .confirmed
                    .extend(done.start..done.start + done.records);
            }
            Err(e) => {
                proofs.failure.get_or_insert(e);
            }
        }
        done.buf
    }

    async fn send_with_retries(
        &self,
        data: &[u8],
        mut written: Option<oneshot::Sender<()>>,
    ) -> Result<(), TransportError> {
        let mut backoff = self.sender.backoff.clone();
        loop {
            self.stats.add_connection();
            let sent = self
                .sender
                .connector
                .send_confirmed_signalling(data, &mut written)
                .await;
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if backoff.attempts() + 1 < self.sender.attempts && e.is_retryable() => {
                    let wait = backoff.next_wait();
                    warn!(
                        output = %self.name,
                        error = %e,
                        attempt = backoff.attempts(),
                        wait_ms = wait.as_millis() as u64,
                        "Delivery not confirmed; retrying."
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.sender.stop_retries.cancelled() => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks that the receiver is usable (`validate`): TCP connect, TLS handshake, then an empty
    /// delivery: our close and the receiver's. A TLS 1.3 receiver that rejects our certificate
    /// after the handshake sends its alert before it would answer our close, so this catches the
    /// rejection without guessing how long to wait for it.
    ///
    /// # Errors
    /// [`OutputError::Peer`] naming what failed: the refused address, an untrusted server
    /// certificate, a host name mismatch, a rejected client certificate.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        self.stats.add_connection();
        match self.sender.connector.send_confirmed(&[]).await {
            Ok(()) => {
                debug!(output = %self.name, "Syslog receiver reachable.");
                Ok(())
            }
            Err(e) => Err(self.peer_error(e.to_string())),
        }
    }

    fn peer_error(&self, reason: String) -> OutputError {
        OutputError::Peer {
            output: self.name.clone(),
            reason,
        }
    }
}

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
        transport::client_config(roots, cert_chain, key, files.check_hostname).map_err(|e| {
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
