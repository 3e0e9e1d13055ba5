//! `SyslogOutput` against a real rsyslog: mutual TLS, plain TCP, rejected certificates, receiver
//! crashes and outages. Records must arrive byte-exact; only the header date (formatting time)
//! is checked by shape and range.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use isolation_collector::clock::SharedClock;
use isolation_collector::event::Event;
use isolation_collector::output::net::format::write_date;
use isolation_collector::output::net::{NetworkOutputConfig, TlsFiles};
use isolation_collector::output::syslog::{SyslogOutput, Tuning};
use isolation_collector::output::{Output, OutputError, Position};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::rsyslog::{CertFiles, Listen, Pki, Rsyslog};
use crate::support::free_port;

const TABLE: &str = "tap.proofpoint.isolation.url_isolation";
const HOST: &str = "collector-host";
const WAIT: Duration = Duration::from_secs(10);

fn events(from: usize, n: usize) -> Vec<Event> {
    (from..from + n)
        .map(|i| Event {
            date_ms: 1_714_557_600_000 + i as i64,
            key: [0; 32],
            json: Bytes::from(format!(
                r#"{{"id":{i},"date":"2024-05-01T10:00:00.000Z","user":"Zoë Ångström 東京 🚀","url":"https://example.com/?q=a%20b&x=\"y\""}}"#
            )),
        })
        .collect()
}

fn tls_files(ca: &Path, client: &CertFiles) -> TlsFiles {
    TlsFiles {
        chain: Some(ca.to_path_buf()),
        ca_file: None,
        system_trust_store: false,
        cert: client.cert.clone(),
        key: client.key.clone(),
        check_hostname: true,
    }
}

/// A `syslog` output's configuration (TLS optional) with short timeouts.
fn config(port: u16, tls: Option<TlsFiles>) -> NetworkOutputConfig {
    NetworkOutputConfig {
        devo: false,
        address: "127.0.0.1".to_string(),
        port,
        tls,
        hostname: Some(HOST.to_string()),
        max_record_bytes: 256 * 1024,
        confirm_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        internal_messages: false,
    }
}

/// The real time, in milliseconds: the range the records' header dates must fall in.
fn now_ms() -> i64 {
    SharedClock::system().now_ms()
}

fn output(c: NetworkOutputConfig) -> SyslogOutput {
    SyslogOutput::from_config("devo".to_string(), &c, SharedClock::system()).unwrap()
}

/// Asserts that `received` is exactly the records of `events`, each once, each with a header date
/// between `from_ms` and `to_ms`. Records of one chunk arrive in order, but two chunks of a batch
/// travel on overlapping connections (the pipeline), so the receiver may interleave them: each
/// record is matched to its event by its JSON, which is unique per test event.
fn assert_records(received: &[u8], events: &[Event], from_ms: i64, to_ms: i64) {
    let mut lo = Vec::new();
    write_date(&mut lo, from_ms);
    let mut hi = Vec::new();
    write_date(&mut hi, to_ms);
    let lines: Vec<&[u8]> = received
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), events.len(), "number of received records");
    let by_json: std::collections::HashMap<&[u8], usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (&e.json[..], i))
        .collect();
    let separator = format!(" {TABLE}: ");
    let mut seen = vec![0u32; events.len()];
    for (i, line) in lines.iter().enumerate() {
        let json = line
            .windows(separator.len())
            .position(|w| w == separator.as_bytes())
            .map(|at| &line[at + separator.len()..line.len() - 1]);
        let Some(&index) = json.and_then(|json| by_json.get(json)) else {
            panic!(
                "record {i} is no event's: {}",
                String::from_utf8_lossy(line)
            );
        };
        seen[index] += 1;
        assert_record(line, &events[index], &lo, &hi, i);
    }
    assert!(seen.iter().all(|&n| n == 1), "an event arrived twice");
}

fn assert_record(line: &[u8], event: &Event, lo: &[u8], hi: &[u8], i: usize) {
    let show = || String::from_utf8_lossy(line).into_owned();
    assert!(line.len() > 27, "record {i} too short: {}", show());
    assert_eq!(&line[..4], b"<14>", "record {i}: {}", show());
    let date = &line[4..27];
    // YYYY-MM-DD HH:MM:SS.mmm
    for (j, &c) in date.iter().enumerate() {
        let ok = match j {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            19 => c == b'.',
            _ => c.is_ascii_digit(),
        };
        assert!(
            ok,
            "record {i}: bad date {:?}",
            String::from_utf8_lossy(date)
        );
    }
    assert!(
        date >= lo && date <= hi,
        "record {i}: date {:?} outside the delivery time",
        String::from_utf8_lossy(date)
    );
    let mut rest = format!(" {HOST} {TABLE}: ").into_bytes();
    rest.extend_from_slice(&event.json);
    rest.push(b'\n');
    assert_eq!(&line[27..], &rest[..], "record {i}: {}", show());
}

fn reason(e: &OutputError) -> String {
    e.to_string()
}

#[tokio::test]
async fn tls_delivers_byte_exact_records_through_output_enum() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let rs = Rsyslog::start(&tmp, "rs", pki.listen_tls()).await;
    let mut out = Output::Syslog(output(config(
        rs.port,
        Some(tls_files(&pki.ca.pem, &pki.client)),
    )));
    out.check().await.unwrap();
    assert_eq!(
        out.resume(TABLE, Some(Position::of_length(7)))
            .await
            .unwrap(),
        None
    );

    let batch = events(0, 1000);
    let from = now_ms();
    assert_eq!(out.deliver(TABLE, &batch).await.unwrap(), None);
    let to = now_ms();
    // Direct queues: confirmed records are already in the file.
    assert_records(&rs.received(), &batch, from, to);

    // Several chunks, each its own connection and proof.
    let Output::Syslog(o) = &mut out else {
        unreachable!()
    };
    let more = events(1000, 25_000);
    let from2 = now_ms();
    o.deliver(TABLE, &more).await.unwrap();
    let to2 = now_ms();
    let all = rs.wait_for_lines(26_000, WAIT).await;
    let first_len = all
        .split_inclusive(|&b| b == b'\n')
        .take(1000)
        .map(|l| l.len())
        .sum::<usize>();
    assert_records(&all[first_len..], &more, from2, to2);
    let stats = o.stats();
    assert_eq!(stats.messages_total, 26_000);
    assert_eq!(stats.bytes_total, all.len() as u64);
    assert_eq!(stats.batches_total, 2);
    assert_eq!(stats.failures_total, 0);
}

#[tokio::test]
async fn foreign_client_cert_is_rejected_then_right_cert_delivers_once() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let rs = Rsyslog::start(&tmp, "rs", pki.listen_tls()).await;
    let batch = events(0, 500);

    let mut bad = output(config(
        rs.port,
        Some(tls_files(&pki.ca.pem, &pki.foreign_client)),
    ));
    let e = bad.deliver(TABLE, &batch).await.unwrap_err();
    assert!(
        reason(&e).contains("rejected our client certificate"),
        "deliver: {e}"
    );
    assert!(
        !reason(&e).contains("delivered") && reason(&e).contains("cert/key/chain"),
        "deliver: {e}"
    );
    let e = bad.check().await.unwrap_err();
    assert!(
        reason(&e).contains("rejected our client certificate"),
        "check: {e}"
    );
    assert_eq!(bad.stats().failures_total, 1);
    assert_eq!(bad.stats().messages_total, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rs.received().is_empty(),
        "records arrived with a rejected certificate"
    );
    assert!(
        rs.stderr().contains("not permitted to talk to peer"),
        "rsyslog did not log the rejection: {}",
        rs.stderr()
    );

    let mut good = output(config(rs.port, Some(tls_files(&pki.ca.pem, &pki.client))));
    let from = now_ms();
    good.deliver(TABLE, &batch).await.unwrap();
    let to = now_ms();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_records(&rs.received(), &batch, from, to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream_fails_then_redelivery_arrives() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let mut rs = Rsyslog::start(&tmp, "rs", pki.listen_tls()).await;
    let c = config(rs.port, Some(tls_files(&pki.ca.pem, &pki.client)));
    let tuning = Tuning {
        chunk_records: 2_000,
        attempts: 2,
        backoff_initial: Duration::from_millis(100),
        ..Tuning::default()
    };
    let mut out =
        SyslogOutput::with_tuning("devo".to_string(), &c, tuning, SharedClock::system()).unwrap();
    let batch = events(0, 100_000);

    let task = {
        let batch = batch.clone();
        tokio::spawn(async move {
            let r = out.deliver(TABLE, &batch).await;
            (out, r)
        })
    };
    // Kill as soon as the first records are stored, long before 100,000 are.
    rs.wait_for_lines(1, WAIT).await;
    rs.kill();
    let (mut out, r) = task.await.unwrap();
    let e = r.unwrap_err();
    // Byte offsets, not lines: the kill can cut a record in half, and the redelivery's first
    // record then follows that partial line directly.
    let before = rs.received();
    let lines_before = before.iter().filter(|&&b| b == b'\n').count();
    assert!(
        lines_before < batch.len(),
        "receiver was not killed mid-stream"
    );
    assert_eq!(out.stats().failures_total, 1);
    let text = reason(&e);
    assert!(
        text.contains("reset") || text.contains("cannot connect") || text.contains("refused"),
        "unexpected error: {text}"
    );

    // The caller retries the whole batch once the receiver is back.
    rs.restart().await;
    let from = now_ms();
    out.deliver(TABLE, &batch).await.unwrap();
    let to = now_ms();
    let all = rs.received();
    assert!(
        all.starts_with(&before),
        "the receiver's earlier bytes changed"
    );
    // The redelivery is complete, byte-exact; earlier partial lines are duplicates.
    let tail: Vec<u8> = all[before.len()..].to_vec();
    assert_records(&tail, &batch, from, to);
}

#[tokio::test]
async fn receiver_down_is_connection_refused_quickly() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let port = free_port();
    let mut out = output(config(port, Some(tls_files(&pki.ca.pem, &pki.client))));
    let started = Instant::now();
    let e = out.deliver(TABLE, &events(0, 10)).await.unwrap_err();
    let took = started.elapsed();
    let text = reason(&e);
    assert!(
        text.contains(&format!("cannot connect to 127.0.0.1:{port}")) && text.contains("refused"),
        "{text}"
    );
    // 3 tries with 0.5 s → 1 s jittered waits in between.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(out.stats().connections_total, 3);
    let e = out.check().await.unwrap_err();
    assert!(reason(&e).contains("refused"), "{e}");
}

/// A shutdown request ends the wait between two tries at once: the chunk is given up with the
/// last failure, after exactly the one try that was under way.
#[tokio::test]
async fn a_shutdown_request_ends_the_wait_between_tries() {
    let port = free_port();
    let tuning = Tuning {
        attempts: 5,
        backoff_initial: Duration::from_secs(60),
        backoff_max: Duration::from_secs(60),
        ..Tuning::default()
    };
    let mut out = SyslogOutput::with_tuning(
        "relay".to_string(),
        &config(port, None),
        tuning,
        SharedClock::system(),
    )
    .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    out.stop_retries_on(cancel.clone());
    let stop = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let e = out.deliver(TABLE, &events(0, 10)).await.unwrap_err();
    let took = started.elapsed();
    stop.await.unwrap();
    assert!(reason(&e).contains("refused"), "{e}");
    // Without the cancellation this waits at least 30 s (60 s, jittered into its upper half).
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(out.stats().connections_total, 1);
}

#[tokio::test]
async fn plain_tcp_delivers_byte_exact_records() {
    let tmp = TempDir::new().unwrap();
    let rs = Rsyslog::start(&tmp, "plain", Listen::Tcp).await;
    let mut out = output(config(rs.port, None));
    out.check().await.unwrap();
    let batch = events(0, 5_000);
    let from = now_ms();
    out.deliver(TABLE, &batch).await.unwrap();
    let to = now_ms();
    assert_records(&rs.received(), &batch, from, to);
    assert!(rs.config().contains("module(load=\"imtcp\")"));
}

#[tokio::test]
async fn oversized_record_is_sent_whole() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let rs = Rsyslog::start(&tmp, "rs", pki.listen_tls()).await;
    let mut c = config(rs.port, Some(tls_files(&pki.ca.pem, &pki.client)));
    c.max_record_bytes = 1024;
    let mut out = output(c);
    let big = format!(
        r#"{{"id":1,"blob":"{}","end":"é"}}"#,
        "ab".repeat(150 * 1024)
    );
    let mut batch = events(0, 2);
    batch.insert(
        1,
        Event {
            date_ms: 0,
            key: [1; 32],
            json: Bytes::from(big),
        },
    );
    let from = now_ms();
    out.deliver(TABLE, &batch).await.unwrap();
    let to = now_ms();
    assert_records(&rs.received(), &batch, from, to);
}

#[tokio::test]
async fn server_verification_and_hostname_check() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    // A receiver whose certificate names neither 127.0.0.1 nor localhost.
    let other = pki
        .ca
        .server(tmp.path(), "other-server", &["receiver.example"]);
    let rs = Rsyslog::start(
        &tmp,
        "rs",
        Listen::Tls {
            ca: pki.ca.pem.clone(),
            server: other,
        },
    )
    .await;

    let mut strict = output(config(rs.port, Some(tls_files(&pki.ca.pem, &pki.client))));
    let e = strict.check().await.unwrap_err();
    assert!(
        reason(&e).contains("not valid for the name 127.0.0.1")
            && reason(&e).contains("receiver.example")
            && reason(&e).contains("check_hostname: false"),
        "{e}"
    );
    // Not retried: a certificate problem needs an operator.
    assert!(strict.deliver(TABLE, &events(0, 1)).await.is_err());
    assert_eq!(strict.stats().connections_total, 2);

    // Devo's SDK mode: chain verified, name not.
    let mut files = tls_files(&pki.ca.pem, &pki.client);
    files.check_hostname = false;
    let mut lax = output(config(rs.port, Some(files.clone())));
    lax.check().await.unwrap();

    // A chain file that does not include the server's CA.
    files.chain = Some(pki.foreign_ca.pem.clone());
    let mut untrusted = output(config(rs.port, Some(files)));
    let e = untrusted.check().await.unwrap_err();
    assert!(
        reason(&e).contains("not trusted by the chain file")
            && reason(&e).contains(&pki.foreign_ca.pem.display().to_string()),
        "{e}"
    );
    assert!(rs.received().is_empty());
}

#[tokio::test]
async fn bad_tls_files_are_named() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let missing = tmp.path().join("no-such-key.pem");
    let mut files = tls_files(&pki.ca.pem, &pki.client);
    files.key = missing.clone();
    let e = SyslogOutput::from_config(
        "devo".into(),
        &config(1, Some(files.clone())),
        SharedClock::system(),
    )
    .unwrap_err();
    let text = reason(&e);
    assert!(text.contains(&missing.display().to_string()), "{text}");

    // A certificate file given as the key: named, and its content never shown.
    files.key = pki.client.cert.clone();
    let e = SyslogOutput::from_config(
        "devo".into(),
        &config(1, Some(files.clone())),
        SharedClock::system(),
    )
    .unwrap_err();
    let text = reason(&e);
    assert!(text.contains("no PEM PRIVATE KEY"), "{text}");
    assert!(!text.contains("BEGIN"), "{text}");

    // Key of another certificate.
    files.key = pki.foreign_client.key.clone();
    let e = SyslogOutput::from_config(
        "devo".into(),
        &config(1, Some(files)),
        SharedClock::system(),
    )
    .unwrap_err();
    assert!(!reason(&e).contains("BEGIN"), "{e}");

    // devo_platform without TLS.
    let mut c = config(1, None);
    c.devo = true;
    assert!(SyslogOutput::from_config("devo".into(), &c, SharedClock::system()).is_err());
}

/// `ca_file` adds roots to `chain` or stands in for it; the error names every root source.
#[tokio::test]
async fn ca_file_adds_to_the_chain_or_replaces_it() {
    let tmp = TempDir::new().unwrap();
    let pki = Pki::new(tmp.path());
    let rs = Rsyslog::start(&tmp, "rs", pki.listen_tls()).await;
    let base = tls_files(&pki.ca.pem, &pki.client);

    // Devo's chain does not hold the receiver's CA; ca_file does.
    let added = TlsFiles {
        chain: Some(pki.foreign_ca.pem.clone()),
        ca_file: Some(pki.ca.pem.clone()),
        ..base.clone()
    };
    let mut out = output(config(rs.port, Some(added)));
    let batch = events(0, 3);
    let from = now_ms();
    out.deliver(TABLE, &batch).await.unwrap();
    let to = now_ms();
    assert_records(&rs.received(), &batch, from, to);

    // No chain at all: ca_file alone.
    let alone = TlsFiles {
        chain: None,
        ca_file: Some(pki.ca.pem.clone()),
        ..base.clone()
    };
    output(config(rs.port, Some(alone))).check().await.unwrap();

    // The system store does not hold our test CA: not trusted, and the error names all sources.
    let system = TlsFiles {
        chain: Some(pki.foreign_ca.pem.clone()),
        ca_file: None,
        system_trust_store: true,
        ..base
    };
    let e = output(config(rs.port, Some(system)))
        .check()
        .await
        .unwrap_err();
    let want = format!(
        "not trusted by the chain file {} + the system trust store",
        pki.foreign_ca.pem.display()
    );
    assert!(reason(&e).contains(&want), "{e}");
    // Only the first batch ever arrived.
    assert_records(&rs.received(), &batch, from, to);
}

/// A plain-TCP stand-in receiver whose answers we control (rsyslog answers each connection as
/// soon as it has read it, so it cannot show the pipeline's order). It reads each connection to
/// its end but answers it (closes) only once the *next* connection has been read to its end, and
/// the last one at once; with `stall_first` it never answers the first. Yields what each
/// connection carried, in the order of the connections.
async fn answering_late(
    connections: usize,
    stall_first: bool,
) -> (u16, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut received, mut held) = (Vec::new(), Vec::new());
        for i in 0..connections {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut data = Vec::new();
            socket.read_to_end(&mut data).await.unwrap();
            received.push(data);
            held.push(Some(socket));
            if i > 0 && !(stall_first && i == 1) {
                held[i - 1] = None; // the earlier connection's answer: our close
            }
        }
        held.last_mut().unwrap().take();
        if stall_first {
            tokio::time::sleep(Duration::from_secs(60)).await; // held[0] is never answered
        }
        received
    });
    (port, task)
}

fn pipelined_output(port: u16, pipeline: usize) -> SyslogOutput {
    let c = NetworkOutputConfig {
        confirm_timeout: Duration::from_secs(1),
        ..config(port, None)
    };
    let tuning = Tuning {
        chunk_records: 2,
        pipeline,
        attempts: 1,
        ..Tuning::default()
    };
    SyslogOutput::with_tuning("relay".to_string(), &c, tuning, SharedClock::system()).unwrap()
}

/// The next chunk is written on a second connection while the earlier one's proof is pending,
/// and the batch is confirmed only when every chunk is. Without the pipeline the same receiver
/// can never confirm: it answers a connection only after the next one arrived.
#[tokio::test]
async fn the_next_chunk_is_written_while_the_earlier_proof_is_pending() {
    let batch = events(0, 6);
    let (port, receiver) = answering_late(3, false).await;
    let mut out = pipelined_output(port, 2);
    out.deliver(TABLE, &batch).await.unwrap();
    let received = receiver.await.unwrap();
    for (i, (data, chunk)) in received.iter().zip(batch.chunks(2)).enumerate() {
        let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 2, "connection {i}");
        for (line, event) in lines.iter().zip(chunk) {
            assert!(
                line.ends_with(&[&event.json[..], b"\n"].concat()),
                "connection {i}"
            );
        }
    }
    let stats = out.stats();
    assert_eq!(
        (
            stats.connections_total,
            stats.messages_total,
            stats.batches_total
        ),
        (3, 6, 1)
    );

    let (port, receiver) = answering_late(3, false).await;
    let mut sequential = pipelined_output(port, 1);
    let e = sequential.deliver(TABLE, &batch).await.unwrap_err();
    assert!(
        reason(&e).contains("waiting for the receiver to confirm"),
        "{e}"
    );
    assert_eq!(sequential.stats().connections_total, 1);
    receiver.abort();
}

/// A chunk whose proof fails fails the batch, but a later chunk that was already in flight is
/// let finish, and its proof counts even though it arrived after the earlier failure: the
/// fan-out remembers confirmed events, not a confirmed prefix, so only the failed chunk's
/// events are given to this output again (`Partly` names the later chunk's events).
#[tokio::test]
async fn a_later_chunk_confirmed_after_an_earlier_failure_counts() {
    let (port, receiver) = answering_late(2, true).await;
    let mut out = pipelined_output(port, 2);
    let e = out.deliver(TABLE, &events(0, 4)).await.unwrap_err();
    assert!(
        reason(&e).contains("waiting for the receiver to confirm"),
        "{e}"
    );
    assert_eq!(e.confirmed(), [2, 3], "the later chunk's events");
    let stats = out.stats();
    assert_eq!(
        (
            stats.connections_total,
            stats.messages_total,
            stats.failures_total
        ),
        (2, 2, 1)
    );
    receiver.abort();
}

/// A plain-TCP stand-in receiver that reads each connection to its end, stores it and answers
/// it (closes) at once, except the connection numbered `lost` (from 0): it stores nothing of it
/// and never answers it, as a relay that fails while it holds a chunk. What each stored
/// connection carried is in the shared list, in the order of the connections.
async fn losing_one(
    lost: usize,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let list = received.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        for i in 0.. {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut data = Vec::new();
            socket.read_to_end(&mut data).await.unwrap();
            if i == lost {
                held.push(socket); // never answered: its proof never comes
            } else {
                list.lock().unwrap().push(data);
            }
        }
    });
    (port, received, task)
}

/// Three chunks; the receiver stores and confirms the first and the third, and loses the second
/// (never answers it). The fan-out retries the batch: only the second chunk travels again, so
/// every record is stored exactly once (before, the confirmed chunks were sent again: 4 of the
/// 6 records were stored twice).
#[tokio::test]
async fn chunks_confirmed_before_a_failed_one_are_not_sent_again() {
    use isolation_collector::metrics::Metrics;
    use isolation_collector::output::Outputs;
    use isolation_collector::service::Service;
    use tokio_util::sync::CancellationToken;

    let batch = events(0, 6);
    let (port, received, receiver) = losing_one(1).await;
    let metrics = std::sync::Arc::new(Metrics::new()).service("10001", Service::UrlIsolation);
    let outputs = vec![Output::Syslog(pipelined_output(port, 2))];
    let mut outputs = Outputs::new(outputs, metrics, CancellationToken::new());
    outputs.deliver(TABLE, &batch).await.unwrap();

    let received = received.lock().unwrap().concat();
    let lines: Vec<&[u8]> = received.split_inclusive(|&b| b == b'\n').collect();
    let copies: Vec<usize> = batch
        .iter()
        .map(|event| {
            let record = [&event.json[..], b"\n"].concat();
            lines.iter().filter(|line| line.ends_with(&record)).count()
        })
        .collect();
    assert_eq!(copies, [1; 6], "copies of each record at the receiver");
    assert_eq!(lines.len(), batch.len(), "records received");
    receiver.abort();
}
