//! One RELP session on a long-lived connection: `open` with its offers, a window of `syslog`
//! commands awaiting their `rsp`, `close`, and the receiver's `serverclose`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use super::frame::{self, Frame, MAX_TXNR};
use super::RelpError;
use crate::output::net::connect::{self, Connector, Stream, TransportError};

/// What we offer in `open`. rsyslog's imrelp requires `commands=syslog`.
const OPEN_OFFERS: &str = concat!(
    "relp_version=0\nrelp_software=isolation-collector,",
    env!("CARGO_PKG_VERSION"),
    ",https://github.com/\ncommands=syslog"
);

/// Bytes read from the receiver per read call: room for hundreds of answers (`N rsp 6 200 OK`).
const READ_CHUNK: usize = 16 * 1024;

/// An open session: the stream, the next transaction number, what was read but not parsed.
pub(super) struct Session {
    stream: Box<dyn Stream>,
    addr: String,
    next_txnr: u32,
    /// What was read; `read_buf[read_pos..]` is not parsed yet. Answers are taken by moving
    /// `read_pos`, and the buffer is compacted only before the next read: removing each answer
    /// from the front would move the rest of the buffer once per acknowledged record.
    read_buf: Vec<u8>,
    read_pos: usize,
    write_buf: Vec<u8>,
    /// Last time a frame was written or read, for the idle limit.
    pub last_used: Instant,
}

/// The receiver's answer to one command.
pub(super) enum Answer {
    /// `rsp` for `txnr` with its status code and text.
    Rsp { txnr: u32, code: u16, text: String },
    /// `serverclose`: the receiver is going away; nothing more will be answered.
    ServerClose,
}

impl Session {
    /// Connects (TCP, TLS) and opens the session: `open` answered by `rsp 200`.
    pub async fn open(
        connector: &Connector,
        reply_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Session, RelpError> {
        let stream = connector.open_stream().await?;
        let mut session = Session {
            stream,
            addr: connector.addr(),
            next_txnr: 1,
            read_buf: Vec::with_capacity(READ_CHUNK),
            read_pos: 0,
            write_buf: Vec::with_capacity(64 * 1024),
            last_used: Instant::now(),
        };
        let txnr = session.queue("open", OPEN_OFFERS.as_bytes());
        session
            .flush(write_timeout, connector, "sending open")
            .await?;
        match session.answer(reply_timeout, connector, "open").await? {
            Answer::Rsp {
                txnr: t, code: 200, ..
            } if t == txnr => Ok(session),
            Answer::Rsp {
                txnr: t,
                code,
                text,
            } if t == txnr => Err(RelpError::Refused {
                addr: session.addr.clone(),
                command: "open",
                code,
                text,
            }),
            Answer::Rsp { txnr: t, .. } => Err(session.protocol(format!(
                "the answer to open (txnr {txnr}) came for txnr {t}"
            ))),
            Answer::ServerClose => Err(RelpError::ServerClose {
                addr: session.addr.clone(),
            }),
        }
    }

    /// Appends a command to the write buffer; returns its transaction number.
    pub fn queue(&mut self, command: &str, data: &[u8]) -> u32 {
        let txnr = self.next_txnr;
        self.next_txnr = if txnr >= MAX_TXNR { 1 } else { txnr + 1 };
        frame::encode(&mut self.write_buf, txnr, command, data);
        txnr
    }

    /// Whether queued commands wait to be written.
    pub fn has_queued(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes the queued commands.
    pub async fn flush(
        &mut self,
        write_timeout: Duration,
        connector: &Connector,
        stage: &'static str,
    ) -> Result<(), RelpError> {
        let tls = connector.tls.as_ref();
        let written = async {
            for piece in self.write_buf.chunks(64 * 1024) {
                timeout(write_timeout, self.stream.write_all(piece))
                    .await
                    .map_err(|_| self.timeout(stage, write_timeout))?
                    .map_err(|e| connect::classify(e, &self.addr, stage, tls))?;
            }
            timeout(write_timeout, self.stream.flush())
                .await
                .map_err(|_| self.timeout(stage, write_timeout))?
                .map_err(|e| connect::classify(e, &self.addr, stage, tls))
        }
        .await;
        self.write_buf.clear();
        self.last_used = Instant::now();
        written.map_err(RelpError::from)
    }

    /// The next answer already read (none is waited for).
    pub fn buffered_answer(&mut self) -> Result<Option<Answer>, RelpError> {
        let Some((answer, used)) = self.parsed()? else {
            return Ok(None);
        };
        self.read_pos += used;
        Ok(Some(answer))
    }

    /// Reads the next frame from the receiver and turns it into an [`Answer`]. `waiting_for`
    /// names the command whose answer is awaited (for the errors).
    pub async fn answer(
        &mut self,
        reply_timeout: Duration,
        connector: &Connector,
        waiting_for: &'static str,
    ) -> Result<Answer, RelpError> {
        loop {
            if let Some((answer, used)) = self.parsed()? {
                self.read_pos += used;
                self.last_used = Instant::now();
                return Ok(answer);
            }
            self.read_buf.drain(..self.read_pos);
            self.read_pos = 0;
            self.read_buf.reserve(READ_CHUNK);
            let read = timeout(reply_timeout, self.stream.read_buf(&mut self.read_buf))
                .await
                .map_err(|_| RelpError::NoAnswer {
                    addr: self.addr.clone(),
                    command: waiting_for,
                    after: reply_timeout,
                })?;
            match read {
                Ok(0) => {
                    return Err(RelpError::Closed {
                        addr: self.addr.clone(),
                        waiting_for,
                        tls: connector.tls.is_some(),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(RelpError::Closed {
                        addr: self.addr.clone(),
                        waiting_for,
                        tls: connector.tls.is_some(),
                    })
                }
                Err(e) => {
                    let stage = "waiting for the receiver's answer";
                    let tls = connector.tls.as_ref();
                    return Err(connect::classify(e, &self.addr, stage, tls).into());
                }
            }
        }
    }

    /// The first complete frame in the read buffer as an answer, with its length.
    fn parsed(&self) -> Result<Option<(Answer, usize)>, RelpError> {
        let unparsed = &self.read_buf[self.read_pos..];
        let parsed = frame::parse(unparsed).map_err(|e| self.protocol(e.to_string()))?;
        let Some((
            Frame {
                txnr,
                command,
                data,
            },
            used,
        )) = parsed
        else {
            return Ok(None);
        };
        let answer = match command {
            // `close` is answered by an rsp without data (librelp); any other rsp has a status.
            "rsp" if data.is_empty() => Answer::Rsp {
                txnr,
                code: 0,
                text: "(no status)".to_string(),
            },
            "rsp" => {
                let (code, text) = frame::rsp_status(data).ok_or_else(|| {
                    self.protocol(format!(
                        "rsp {txnr} without a status code: {:?}",
                        String::from_utf8_lossy(&data[..data.len().min(80)])
                    ))
                })?;
                // The text is kept for the errors only: none is made per acknowledged record.
                let text = if code == 200 {
                    String::new()
                } else {
                    text.into_owned()
                };
                Answer::Rsp { txnr, code, text }
            }
            "serverclose" => Answer::ServerClose,
            other => {
                return Err(self.protocol(format!("unexpected command {other:?} from the receiver")))
            }
        };
        Ok(Some((answer, used)))
    }

    /// Ends the session politely: `close`, answered by `rsp`, then the receiver closes.
    pub async fn close(
        mut self,
        reply_timeout: Duration,
        connector: &Connector,
    ) -> Result<(), RelpError> {
        self.queue("close", b"");
        self.flush(reply_timeout, connector, "sending close")
            .await?;
        match self.answer(reply_timeout, connector, "close").await? {
            Answer::Rsp { .. } | Answer::ServerClose => {
                let _ = timeout(reply_timeout, self.stream.shutdown()).await;
                Ok(())
            }
        }
    }

    fn protocol(&self, detail: String) -> RelpError {
        RelpError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }

    fn timeout(&self, stage: &'static str, after: Duration) -> TransportError {
        TransportError::Timeout {
            addr: self.addr.clone(),
            stage,
            after,
        }
    }
}
