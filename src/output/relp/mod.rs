//! The `relp` output: rsyslog's Reliable Event Logging Protocol (imrelp), over TLS with a client
//! certificate or, for in-house relays, plain TCP.
//!
//! RELP acknowledges every record: each `syslog` command gets the receiver's `rsp 200` once
//! rsyslog has taken it. So delivery is proven per record on a long-lived connection, without
//! the close-and-wait-for-EOF that the TLS syslog output needs per chunk. Records are the syslog
//! output's (Devo's format, [`crate::output::net::format`]) without the framing newline:
//! RELP frames carry their length.
//!
//! ## Confirmation
//! Up to `window_size` records are in flight (sent, not yet answered; 4,096 by default, not
//! librelp's 128: see [`DEFAULT_WINDOW_SIZE`] for the cost of small windows).
//! A batch is confirmed when every record in it has its `rsp 200`. When the connection is lost
//! (a reset, EOF, `serverclose`, a timeout), the output reconnects and sends again the records
//! without an answer: at most one window of records per lost connection may then arrive twice.
//! A batch that still fails is reported unconfirmed; the fan-out hands the same batch back, and
//! the records already acknowledged are not sent again (the output remembers them for the batch
//! it failed, keyed by the batch's table and event keys). A crash sends the whole unconfirmed
//! batch again, as with every output.
//!
//! ## Why a hand-written client
//! No maintained Rust RELP crate exists (crates.io has only unmaintained or server-side ones), and
//! the client side is small: frames ([`frame`], fuzzed), an `open` handshake, a window of
//! commands. TCP and TLS come from the [`Connector`] the syslog output uses too, so the TLS keys mean what
//! they mean for `devo_platform`.

pub mod config;
pub mod frame;
mod session;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use self::config::{RelpOutputConfig, DEFAULT_WINDOW_SIZE};
use self::session::{Answer, Session};
use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::net::connect::{Connector, TransportError};
use super::net::format::{self, RecordFormatter};
use super::net::stats::{SenderStats, StatsHandle};
use super::net::tls::load_tls;
use super::OutputError;
use crate::backoff::{Backoff, Jitter};
use crate::clock::SharedClock;
use crate::event::Event;

/// A connection unused for longer than this is replaced before use, as Devo's SDK does for its
/// connections: receivers and balancers drop idle connections silently, and finding out by a
/// failed batch costs a retry.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Tries per `deliver` that make no progress (a try that got any record acknowledged does not
/// count), and the waits between them.
const ATTEMPTS: u32 = 3;
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a RELP exchange failed. Every variant means "not confirmed".
#[derive(Debug, thiserror::Error)]
pub enum RelpError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The receiver closed the connection. Before the answer to `open` over TLS this is how
    /// rsyslog rejects a client certificate (no TLS alert).
    #[error("{addr}: the receiver closed the connection while we waited for the answer to {waiting_for}{hint}", hint = closed_hint(waiting_for, *tls))]
    Closed {
        addr: String,
        waiting_for: &'static str,
        tls: bool,
    },
    #[error("{addr}: no answer to {command} within {after:?}")]
    NoAnswer {
        addr: String,
        command: &'static str,
        after: Duration,
    },
    /// The receiver answered a command with an error status.
    #[error("{addr}: the receiver refused {command}: {code} {text}")]
    Refused {
        addr: String,
        command: &'static str,
        code: u16,
        text: String,
    },
    #[error("{addr}: the receiver is shutting down (serverclose)")]
    ServerClose { addr: String },
    #[error("{addr}: not a RELP receiver or a broken session: {detail}")]
    Protocol { addr: String, detail: String },
}

fn closed_hint(waiting_for: &str, tls: bool) -> &'static str {
    if waiting_for == "open" && tls {
        " (right after the TLS handshake): it probably rejected our client certificate \
         (rsyslog's imrelp closes without a TLS alert); check cert/key/chain and the \
         receiver's tls.authMode and tls.caCert"
    } else {
        ""
    }
}

impl RelpError {
    /// Whether trying again within seconds can help. Certificates and refusals of `open` need an
    /// operator.
    fn is_retryable(&self) -> bool {
        match self {
            RelpError::Transport(e) => e.is_retryable(),
            RelpError::Refused { command, .. } => *command != "open",
            _ => true,
        }
    }
}

/// What the output remembers of a batch it could not confirm: which records were acknowledged.
struct Unconfirmed {
    batch: [u8; 32],
    acked: Vec<bool>,
}

/// A `relp` output. See the module documentation.
pub struct RelpOutput {
    name: String,
    hostname: String,
    max_record_bytes: usize,
    window_size: usize,
    /// Boxed to keep `Output` small.
    connector: Box<Connector>,
    session: Option<Session>,
    stats: StatsHandle,
    formatter: Option<(String, RecordFormatter)>,
    unconfirmed: Option<Unconfirmed>,
    stop_retries: CancellationToken,
    clock: SharedClock,
}

impl std::fmt::Debug for RelpOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelpOutput")
            .field("name", &self.name)
            .field("addr", &self.connector.addr())
            .field("tls", &self.connector.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The records of one batch, formatted once (their bytes are identical when sent again).
struct Records {
    bytes: Vec<u8>,
    /// `bytes[ends[i-1]..ends[i]]` is record `i`, without its newline.
    ends: Vec<usize>,
}

impl Records {
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

impl RelpOutput {
    /// Builds the output: checks the settings and loads the TLS files.
    ///
    /// # Errors
    /// As the syslog output's `from_config`: a TLS file by path, a bad
    /// address or hostname.
    pub fn from_config(
        name: String,
        config: &RelpOutputConfig,
        clock: SharedClock,
    ) -> Result<RelpOutput, OutputError> {
        let n = &config.network;
        let bad = |reason: String| OutputError::Peer {
            output: name.clone(),
            reason,
        };
        if n.address.is_empty() || n.port == 0 {
            return Err(bad("address and port (1-65535) are required".to_string()));
        }
        let hostname = n.hostname.clone().unwrap_or_else(format::system_hostname);
        format::check_header_field(&hostname, 255)
            .map_err(|why| bad(format!("hostname {hostname:?} {why}")))?;
        let host = n.address.trim_start_matches('[').trim_end_matches(']');
        let tls = match &n.tls {
            None => None,
            Some(files) => Some(load_tls(&name, host, files)?),
        };
        Ok(RelpOutput {
            hostname,
            max_record_bytes: n.max_record_bytes,
            window_size: config.window_size.max(1),
            connector: Box::new(Connector {
                host: host.to_string(),
                port: n.port,
                tls,
                connect_timeout: n.connect_timeout,
                write_timeout: WRITE_TIMEOUT,
                confirm_timeout: n.confirm_timeout,
                tls_settle: Duration::ZERO,
                accepted: Default::default(),
            }),
            session: None,
            stats: StatsHandle::new(SystemTime::from(clock.now())),
            formatter: None,
            unconfirmed: None,
            stop_retries: CancellationToken::new(),
            name,
            clock,
        })
    }

    /// The output's name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A wait between tries ends when `cancel` fires (the batch stays unconfirmed).
    pub fn stop_retries_on(&mut self, cancel: CancellationToken) {
        self.stop_retries = cancel;
    }

    /// A snapshot of the sender counters.
    pub fn stats(&self) -> SenderStats {
        self.stats.snapshot()
    }

    /// A handle to the counters for the sender statistics lines.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Delivers `events` as records of `table`: `Ok` when every record has its `rsp 200`.
    ///
    /// # Errors
    /// [`OutputError::Peer`] with the last failure.
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        let started = Instant::now();
        let result = self.deliver_all(table, events).await;
        self.stats.add_batch(result.is_ok(), started.elapsed());
        result
            .map(|()| None)
            .map_err(|e| self.peer_error(e.to_string()))
    }

    async fn deliver_all(&mut self, table: &str, events: &[Event]) -> Result<(), RelpError> {
        if let Err(why) = format::check_header_field(table, format::MAX_TABLE_LEN) {
            return Err(RelpError::Protocol {
                addr: self.connector.addr(),
                detail: format!("table name {table:?} {why}"),
            });
        }
        let batch = batch_id(table, events);
        let mut acked = match self.unconfirmed.take() {
            Some(u) if u.batch == batch => u.acked,
            _ => vec![false; events.len()],
        };
        let records = self.format(table, events);
        let result = self.send_with_retries(&records, &mut acked).await;
        if result.is_err() {
            self.unconfirmed = Some(Unconfirmed { batch, acked });
        }
        result
    }

    fn format(&mut self, table: &str, events: &[Event]) -> Records {
        let mut formatter = match self.formatter.take() {
            Some((t, f)) if t == table => f,
            _ => RecordFormatter::new(&self.hostname, table),
        };
        let mut records = Records {
            bytes: Vec::with_capacity(events.iter().map(|e| e.json.len() + 100).sum()),
            ends: Vec::with_capacity(events.len()),
        };
        for event in events {
            let len = formatter.record_len(&event.json);
            if len > self.max_record_bytes {
                warn!(
                    output = %self.name, table, bytes = len,
                    max_record_bytes = self.max_record_bytes,
                    "Record larger than max_record_bytes; sending it whole."
                );
            }
            formatter.write_at(&mut records.bytes, self.clock.now_ms(), &event.json);
            records.bytes.pop(); // the newline: RELP frames carry their length
            records.ends.push(records.bytes.len());
        }
        self.formatter = Some((table.to_string(), formatter));
        records
    }

    /// Sends the records not yet acknowledged until all are, reconnecting after a lost
    /// connection. Tries that got records acknowledged do not count against [`ATTEMPTS`].
    async fn send_with_retries(
        &mut self,
        records: &Records,
        acked: &mut [bool],
    ) -> Result<(), RelpError> {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX).jitter(Jitter::UpperHalf);
        loop {
            let before = acked.iter().filter(|a| **a).count();
            let e = match self.send_window(records, acked).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            self.session = None;
            let progress = acked.iter().filter(|a| **a).count() > before;
            if progress {
                backoff = Backoff::new(BACKOFF_INITIAL, BACKOFF_MAX).jitter(Jitter::UpperHalf);
            }
            if !e.is_retryable() || (!progress && backoff.attempts() + 1 >= ATTEMPTS) {
                return Err(e);
            }
            let wait = if progress {
                Duration::ZERO
            } else {
                backoff.next_wait()
            };
            warn!(
                output = %self.name, error = %e,
                unacknowledged = acked.iter().filter(|a| !**a).count(),
                wait_ms = wait.as_millis() as u64,
                "RELP session lost; sending the unacknowledged records again."
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop_retries.cancelled() => return Err(e),
            }
        }
    }

    /// A usable session: the current one unless idle too long, else a new one.
    async fn session(&mut self) -> Result<&mut Session, RelpError> {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.last_used.elapsed() > MAX_IDLE)
        {
            self.session = None;
        }
        if self.session.is_none() {
            self.stats.add_connection();
            let c = &self.connector;
            let s = Session::open(c, c.confirm_timeout, c.write_timeout).await?;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("set above"))
    }

    /// One session's worth of sending: every unacknowledged record in order, at most
    /// `window_size` unanswered at a time.
    ///
    /// Every answer already read is taken before the window is refilled, so that the records
    /// freed by one read go out in one write. The window is refilled after every read, never
    /// held back until more is answered: librelp with GnuTLS leaves frames that arrived together
    /// in GnuTLS' buffer until more bytes arrive, so a sender that stops writing while it waits
    /// stalls until its timeout (a half-window refill took 35 s instead of 5 s for 100,000
    /// records, the 30 s answer timeout; librelp's buffering is our reading of that stall).
    async fn send_window(
        &mut self,
        records: &Records,
        acked: &mut [bool],
    ) -> Result<(), RelpError> {
        let window = self.window_size;
        let stats = self.stats.clone();
        let connector = (*self.connector).clone();
        let session = self.session().await?;
        let unacked: Vec<usize> = (0..acked.len()).filter(|&i| !acked[i]).collect();
        let mut todo = unacked.into_iter();
        let mut in_flight: VecDeque<(u32, usize)> = VecDeque::with_capacity(window);
        loop {
            while in_flight.len() < window {
                let Some(i) = todo.next() else { break };
                in_flight.push_back((session.queue("syslog", records.get(i)), i));
            }
            if session.has_queued() {
                session
                    .flush(connector.write_timeout, &connector, "sending records")
                    .await?;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let mut answer = Some(
                session
                    .answer(connector.confirm_timeout, &connector, "syslog")
                    .await?,
            );
            while let Some(a) = answer {
                let (txnr, i) = in_flight.pop_front().ok_or_else(|| RelpError::Protocol {
                    addr: connector.addr(),
                    detail: "an answer to no command".to_string(),
                })?;
                check_answer(a, txnr, &connector)?;
                acked[i] = true;
                stats.add_confirmed(1, records.get(i).len() as u64 + 1);
                answer = if in_flight.is_empty() {
                    None
                } else {
                    session.buffered_answer()?
                };
            }
        }
    }

    /// Checks the receiver (`validate`): TCP, TLS, the RELP `open` answered by `rsp 200`, then
    /// `close`.
    ///
    /// # Errors
    /// [`OutputError::Peer`] naming what failed (refused address, untrusted server certificate,
    /// rejected client certificate, not a RELP receiver).
    pub async fn check(&mut self) -> Result<(), OutputError> {
        self.stats.add_connection();
        let c = &*self.connector;
        let result = match Session::open(c, c.confirm_timeout, c.write_timeout).await {
            Ok(s) => s.close(c.confirm_timeout, c).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                debug!(output = %self.name, "RELP receiver reachable.");
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

/// `Ok` when `answer` is `rsp 200` for `txnr`, the oldest command in flight (imrelp answers in
/// order).
fn check_answer(answer: Answer, txnr: u32, connector: &Connector) -> Result<(), RelpError> {
    match answer {
        Answer::Rsp {
            txnr: t, code: 200, ..
        } if t == txnr => Ok(()),
        Answer::Rsp {
            txnr: t,
            code,
            text,
        } if t == txnr => Err(RelpError::Refused {
            addr: connector.addr(),
            command: "syslog",
            code,
            text,
        }),
        Answer::Rsp { txnr: t, .. } => Err(RelpError::Protocol {
            addr: connector.addr(),
            detail: format!("expected the answer to txnr {txnr}, got one for {t}"),
        }),
        Answer::ServerClose => Err(RelpError::ServerClose {
            addr: connector.addr(),
        }),
    }
}

/// Identifies a batch: its table and its events' keys, in order.
fn batch_id(table: &str, events: &[Event]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update((events.len() as u64).to_le_bytes());
    for e in events {
        h.update(e.key);
    }
    h.finalize().into()
}

/// The unit of confirmation, against a small in-process RELP responder: rsyslog cannot be made
/// to acknowledge exactly the first k records of a batch and then drop the connection (the
/// integration tests in tests/it/relp.rs run against the real rsyslog).
impl OutputBuilder for RelpOutputConfig {
    type Output = RelpOutput;

    fn build(&self, name: &str, cx: &OutputContext) -> Result<RelpOutput, OutputError> {
        let output = RelpOutput::from_config(name.to_owned(), self, cx.clock.clone())?;
        Ok(output)
    }

    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError> {
        let mut output = self.build(name, cx)?;
        Ok(Box::pin(async move { output.check().await }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::output::net::NetworkOutputConfig;

    /// Accepts one connection, answers `open`, acknowledges the first `ack` syslog commands
    /// (recording their data) and then, if `then_close`, drops the connection; else it keeps
    /// acknowledging.
    async fn responder(
        listener: TcpListener,
        ack: usize,
        then_close: bool,
        got: Arc<Mutex<Vec<String>>>,
    ) {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut acked = 0;
        loop {
            while let Ok(Some((f, n))) = frame::parse(&buf) {
                let (txnr, command, data) = (f.txnr, f.command.to_string(), f.data.to_vec());
                buf.drain(..n);
                let mut out = Vec::new();
                match command.as_str() {
                    "open" => frame::encode(&mut out, txnr, "rsp", b"200 OK\ncommands=syslog"),
                    "syslog" if acked < ack || !then_close => {
                        got.lock().unwrap().push(String::from_utf8(data).unwrap());
                        acked += 1;
                        frame::encode(&mut out, txnr, "rsp", b"200 OK");
                    }
                    _ => return, // drop the connection with the rest unanswered
                }
                s.write_all(&out).await.unwrap();
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn output(port: u16) -> RelpOutput {
        let config = RelpOutputConfig {
            network: NetworkOutputConfig {
                devo: false,
                address: "127.0.0.1".into(),
                port,
                tls: None,
                hostname: Some("h".into()),
                max_record_bytes: 1 << 20,
                confirm_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
                internal_messages: false,
            },
            window_size: 4,
        };
        RelpOutput::from_config("r".into(), &config, SharedClock::system()).unwrap()
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                date_ms: i as i64,
                key: [i as u8; 32],
                json: Bytes::from(format!(r#"{{"id":{i}}}"#)),
            })
            .collect()
    }

    fn bodies(got: &Mutex<Vec<String>>) -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|r| r.rsplit_once(": ").unwrap().1.to_string())
            .collect()
    }

    /// Accepts one connection, answers `open`, and answers no `syslog` command until `hold`
    /// of them have arrived (a receiver that answers in bursts); then answers every one.
    async fn holding_responder(listener: TcpListener, hold: usize) {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut buf, mut waiting) = (Vec::new(), Vec::new());
        let mut answered = 0;
        loop {
            let mut out = Vec::new();
            while let Ok(Some((f, n))) = frame::parse(&buf) {
                match f.command {
                    "open" => frame::encode(&mut out, f.txnr, "rsp", b"200 OK\ncommands=syslog"),
                    "syslog" => waiting.push(f.txnr),
                    _ => return,
                }
                buf.drain(..n);
            }
            if answered + waiting.len() >= hold || answered > 0 {
                for txnr in waiting.drain(..) {
                    frame::encode(&mut out, txnr, "rsp", b"200 OK");
                    answered += 1;
                }
            }
            s.write_all(&out).await.unwrap();
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The default window keeps over a thousand records in flight: a window of librelp's 128
    /// made every read of the receiver's answers free a few records and every write carry a
    /// few (a ping-pong that cost 6 µs of the sender's CPU per record and more of rsyslog's).
    #[tokio::test]
    async fn the_default_window_keeps_a_thousand_records_unanswered_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(holding_responder(listener, 1000));
        let mut out = output(port);
        out.window_size = DEFAULT_WINDOW_SIZE;
        out.connector.confirm_timeout = Duration::from_millis(500);
        out.deliver("t.a", &events(1000)).await.unwrap();
        assert_eq!(out.stats().messages_total, 1000);
        drop(out);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_retried_batch_sends_only_the_records_not_yet_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = Arc::new(Mutex::new(Vec::new()));
        // Acknowledges 5 of 10, then the receiver is gone (nothing listens any more).
        let server = tokio::spawn(responder(listener, 5, true, first.clone()));
        let mut out = output(port);
        let batch = events(10);
        let err = out.deliver("t.a", &batch).await.unwrap_err().to_string();
        server.await.unwrap();
        assert!(err.contains("cannot connect"), "{err}");
        assert_eq!(
            bodies(&first),
            (0..5)
                .map(|i| format!(r#"{{"id":{i}}}"#))
                .collect::<Vec<_>>()
        );

        // The receiver is back; the fan-out hands the same batch again.
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let second = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(responder(listener, 0, false, second.clone()));
        out.deliver("t.a", &batch).await.unwrap();
        assert_eq!(
            bodies(&second),
            (5..10)
                .map(|i| format!(r#"{{"id":{i}}}"#))
                .collect::<Vec<_>>()
        );
        assert_eq!(out.stats().messages_total, 10);
        // Another batch is sent whole.
        out.deliver("t.a", &events(3)).await.unwrap();
        assert_eq!(bodies(&second).len(), 8);
        drop(out);
        server.await.unwrap();
    }
}
