//! The receiver's own limit: writes N pre-formatted syslog records to a syslog receiver over
//! mutual TLS as fast as one connection allows, so that `scripts/bench/raw_sender.sh` can compare
//! the collector's TLS (and RELP) delivery with what the receiver can take at all.
//!
//! The records are the collector's own bytes for the simulator's events: the events come from
//! `isolation-sim`'s generator (the dataset `isolation-sim --events N --span-hours H` serves),
//! formatted by the collector's [`RecordFormatter`], all of it in memory before the clock starts.
//! The TLS client is the collector's ([`client_config`]: rustls with ring, TLS 1.3 and 1.2, the
//! same certificates). Then:
//!
//! - `tls`: one connection, the records in 64 KiB writes, TLS close_notify, and the receiver's
//!   close awaited: the collector's proof of delivery, once for the whole run;
//! - `relp`: a RELP session (`open`, `syslog` commands with at most `--window` unanswered, every
//!   one acknowledged by `rsp 200`, `close`), frames encoded by the collector's RELP framer.
//!
//! It prints `sent=N bytes=B wall=S cpu=S` for the sending alone (from the first connect until
//! the receiver's proof; CPU is this process's user + system time over that span, from
//! `/proc/self/stat`). An example of the collector rather than a binary of the simulator crate,
//! because it needs the collector's record format, TLS settings and RELP framer and must not ship
//! in either binary: `cargo build --release --example raw_tls_sender`.
//!
//! ```text
//! raw_tls_sender tls|relp EVENTS SPAN_HOURS PORT CA CERT KEY [WINDOW]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use isolation_collector::output::net::connect::client_config;
use isolation_collector::output::net::format::RecordFormatter;
use isolation_collector::output::relp::{frame, DEFAULT_WINDOW_SIZE};
use isolation_sim::{Dataset, SimConfig, SimHandle};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The table the collector gives Browser & Email Isolation's events.
const TABLE: &str = "tap.proofpoint.isolation.browser_and_email";
/// As the collector's syslog output writes.
const WRITE_PIECE: usize = 64 * 1024;

struct Args {
    mode: String,
    events: usize,
    span_hours: f64,
    port: u16,
    ca: String,
    cert: String,
    key: String,
    window: usize,
}

fn args() -> anyhow::Result<Args> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 7 || !matches!(a[0].as_str(), "tls" | "relp") {
        bail!("usage: raw_tls_sender tls|relp EVENTS SPAN_HOURS PORT CA CERT KEY [WINDOW]");
    }
    Ok(Args {
        mode: a[0].clone(),
        events: a[1].parse().context("EVENTS")?,
        span_hours: a[2].parse().context("SPAN_HOURS")?,
        port: a[3].parse().context("PORT")?,
        ca: a[4].clone(),
        cert: a[5].clone(),
        key: a[6].clone(),
        window: a
            .get(7)
            .map_or(Ok(DEFAULT_WINDOW_SIZE), |w| w.parse())
            .context("WINDOW")?,
    })
}

/// The records, one after the other (as the syslog output writes them), and where each ends.
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    /// Record `i` without its newline (RELP frames carry their length).
    fn bare(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i] - 1]
    }
}

/// The simulator's events (as `isolation-sim --events N --span-hours H` serves them), each
/// formatted as the collector's record (with its newline).
async fn records(events: usize, span_hours: f64) -> anyhow::Result<Records> {
    let mut config = SimConfig::new(Dataset::Web);
    config.events = events;
    config.span = Duration::from_secs_f64(span_hours * 3600.0);
    let sim = SimHandle::start(config).await?;
    // The collector's clock, as its outputs stamp records with it.
    let clock = isolation_collector::clock::SharedClock::system();
    let far_future = clock.now() + chrono::Duration::days(3650);
    let hostname = isolation_collector::output::net::format::system_hostname();
    let mut formatter = RecordFormatter::new(&hostname, TABLE);
    let now_ms = clock.now_ms();
    let mut records = Records {
        bytes: Vec::new(),
        ends: Vec::with_capacity(events),
    };
    for json in sim.events_visible_at(far_future) {
        formatter.write_at(&mut records.bytes, now_ms, json.as_bytes());
        records.ends.push(records.bytes.len());
    }
    Ok(records)
}

fn pem_items(path: &str) -> anyhow::Result<Vec<rustls_pemfile::Item>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    rustls_pemfile::read_all(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {path}"))
}

fn tls_connector(a: &Args) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for item in pem_items(&a.ca)? {
        if let rustls_pemfile::Item::X509Certificate(c) = item {
            roots.add(c)?;
        }
    }
    for item in pem_items(&a.cert)?.into_iter().chain(pem_items(&a.key)?) {
        match item {
            rustls_pemfile::Item::X509Certificate(c) => chain.push(c),
            rustls_pemfile::Item::Pkcs8Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Pkcs1Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) => key = Some(k.into()),
            _ => {}
        }
    }
    let key = key.context("no private key in the key file")?;
    Ok(TlsConnector::from(Arc::new(client_config(
        roots, chain, key, true,
    )?)))
}

async fn connect(a: &Args) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", a.port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    Ok(tls_connector(a)?.connect(name, tcp).await?)
}

/// Syslog over TLS: every record on one connection, then the collector's proof of delivery.
async fn send_tls(a: &Args, records: &Records) -> anyhow::Result<()> {
    let mut stream = connect(a).await?;
    for piece in records.bytes.chunks(WRITE_PIECE) {
        stream.write_all(piece).await?;
    }
    stream.shutdown().await?; // close_notify
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // rsyslog closes without a close_notify of its own: its EOF is the proof.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads frames until `want` answers are in; returns how many arrived.
async fn read_answers(
    stream: &mut TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
    want: usize,
) -> anyhow::Result<usize> {
    let mut got = 0;
    loop {
        let mut used = 0;
        while let Some((f, n)) = frame::parse(&buf[used..])? {
            if f.command != "rsp" || !(f.data.is_empty() || f.data.starts_with(b"200")) {
                bail!(
                    "receiver answered {} {:?}",
                    f.command,
                    String::from_utf8_lossy(f.data)
                );
            }
            used += n;
            got += 1;
        }
        buf.drain(..used);
        if got >= want {
            return Ok(got);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await? {
            0 => bail!("the receiver closed the session"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// RELP: open, every record as a `syslog` command with at most `window` unanswered, close.
async fn send_relp(a: &Args, records: &Records) -> anyhow::Result<()> {
    let mut stream = connect(a).await?;
    let (mut out, mut answers) = (Vec::with_capacity(1 << 20), Vec::new());
    frame::encode(
        &mut out,
        1,
        "open",
        b"relp_version=0\nrelp_software=raw\ncommands=syslog",
    );
    stream.write_all(&out).await?;
    read_answers(&mut stream, &mut answers, 1).await?;
    let (mut next, mut in_flight, mut txnr) = (0, 0, 2u32);
    while next < records.ends.len() || in_flight > 0 {
        out.clear();
        while in_flight < a.window && next < records.ends.len() {
            frame::encode(&mut out, txnr, "syslog", records.bare(next));
            (next, in_flight, txnr) = (next + 1, in_flight + 1, txnr + 1);
        }
        stream.write_all(&out).await?;
        in_flight -= read_answers(&mut stream, &mut answers, 1).await?;
    }
    out.clear();
    frame::encode(&mut out, txnr, "close", b"");
    stream.write_all(&out).await?;
    read_answers(&mut stream, &mut answers, 1).await?;
    stream.shutdown().await?;
    Ok(())
}

/// This process's user + system CPU time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), indices 11 and 12 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let records = records(a.events, a.span_hours).await?;
    let (sent, bytes) = (records.ends.len(), records.bytes.len());
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    match a.mode.as_str() {
        "tls" => send_tls(&a, &records).await?,
        _ => send_relp(&a, &records).await?,
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    println!("sent={sent} bytes={bytes} wall={wall:.3} cpu={cpu:.3}");
    Ok(())
}
