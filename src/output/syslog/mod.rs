//! Syslog outputs: `devo_platform` (Devo's syslog balancer over mutual TLS) and `syslog`
//! (in-house relays: TCP, TLS optional).
//!
//! The plumbing it shares with the `relp` output is in [`super::net`]: [`format`](mod@format)
//! builds the records (pure functions, golden-tested), [`connect`](super::net::connect) connects
//! and proves delivery, [`stats`](super::net::stats) counts what was confirmed.
//! [`SyslogOutput::deliver`] confirms a batch only when the receiver provably read all of it
//! (see [`connect`](super::net::connect)).
//!
//! ## Connections
//! Every chunk of a batch gets its own connection: connect, handshake, write, close, wait for
//! the receiver's close. Holding a connection open between batches would buy nothing (batches
//! arrive every `request_period_in_seconds`) and would need the care Devo's SDK takes: its
//! balancer drops idle connections, so the SDK reconnects when a connection is idle for > 30 s
//! or older than 1 h. A connection per chunk never gets idle or old, so that holds by
//! construction.
//!
//! What this costs was measured against the receiver's own limit (issue 23,
//! `scripts/bench/raw_sender.sh`: the same records on one connection): at 1,000,000 events to a
//! local rsyslog the backfill opened 125 connections (one per window of about 8,000 events, each
//! one chunk), and each proof took about 55 ms, the time rsyslog needs to read what the socket
//! buffers still hold, so that the proofs add up to nearly the whole run. The collector then
//! reached 90% of its own file output's rate and 68% of the raw sender's; the file output itself
//! reached only 76% of it, so the rest of the gap is in the pulling, not here.
//!
//! The chunks of a batch are pipelined ([`Tuning::pipeline`]): once a chunk is written and our
//! side closed, the next chunk is written on a new connection while the earlier proof is still
//! pending. The batch is confirmed only when every chunk is. When a chunk fails, no later chunk
//! is started, the chunks already in flight are let finish, and the events of every chunk whose
//! proof arrived (before or after the failure) are reported confirmed
//! ([`OutputError::Partly`]): the fan-out remembers events, not prefixes, so it gives this output
//! only the unconfirmed chunks' events again.

mod config;

use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::net::connect::{Connector, TransportError};
use super::net::format::{self, RecordFormatter};
use super::net::stats::{SenderStats, StatsHandle};
use super::net::tls::load_tls;
use super::net::NetworkOutputConfig;
use super::OutputError;
use crate::backoff::{Backoff, Jitter};
use crate::clock::SharedClock;
use crate::event::Event;

/// Default for [`Tuning::chunk_records`].
///
/// 10,000 records (about 4 MB) per connection: a few milliseconds of handshake and confirmation
/// per chunk is negligible, and a failed chunk costs at most 10,000 records of resend.
pub const DEFAULT_CHUNK_RECORDS: usize = 10_000;

/// Default for [`Tuning::pipeline`]: while one chunk's proof is pending, the next is written.
pub const DEFAULT_PIPELINE: usize = 2;

pub(crate) use self::config::parse_config;

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
    /// chunk (see [`connect`](super::net::connect)).
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

impl OutputBuilder for NetworkOutputConfig {
    type Output = SyslogOutput;

    fn build(&self, name: &str, cx: &OutputContext) -> Result<SyslogOutput, OutputError> {
        let output = SyslogOutput::from_config(name.to_owned(), self, cx.clock.clone())?;
        Ok(output)
    }

    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError> {
        let mut output = self.build(name, cx)?;
        Ok(Box::pin(async move { output.check().await }))
    }
}
