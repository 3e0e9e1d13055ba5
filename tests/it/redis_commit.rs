//! What a commit costs in Redis (issue 21 §5): the state with its dedup memory at 100 events/s and
//! the default lookback, the bytes and time of one commit's fenced write, and a lease renewal
//! issued while a large write is in flight. On the store itself ([`RedisStore`]) against a real
//! redis-server (append-only, fsync always); figures are printed (`--nocapture`), the assertions
//! are on bytes and on the order of replies, never on wall-clock time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use isolation_collector::event::Event;
use isolation_collector::state::redis::RedisStore;
use isolation_collector::state::{encode, ServiceState};

use crate::redis_server::RedisServer;
use crate::support::Wait;

const KEY: &str = "proofpoint_isolation_1_url_isolation";
const RATE: i64 = 100;
/// The default `late_arrival_lookback_in_minutes` (35) in milliseconds.
const LOOKBACK_MS: i64 = 35 * 60_000;
/// The default `request_period_in_seconds`: one window, so one commit, a minute.
const WINDOW_MS: i64 = 60_000;
const T0: i64 = 1_717_200_000_000;

/// `RATE` events a second over `[from, to)`, each distinct.
fn events(from: i64, to: i64) -> Vec<Event> {
    let step = 1_000 / RATE;
    (from..to)
        .step_by(step as usize)
        .map(|date| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&date.to_le_bytes());
            key[8..16].copy_from_slice(&0x5eed_u64.wrapping_mul(date as u64).to_le_bytes());
            Event {
                date_ms: date,
                key,
                json: Bytes::new(),
            }
        })
        .collect()
}

/// A state whose dedup memory holds `span_ms` of events at `RATE` per second, ending at `end`.
fn state_with_memory(end: i64, span_ms: i64) -> ServiceState {
    let mut s = ServiceState::new(None, T0);
    deliver(&mut s, end - span_ms, end);
    s
}

/// A window `[from, to)` committed: its events remembered, the memory's horizon moved so that it
/// keeps the same span as before, the cursors moved.
fn deliver(s: &mut ServiceState, from: i64, to: i64) {
    let batch = events(from, to);
    let plan = s.dedup.plan(&batch, to);
    s.dedup.apply(plan);
    s.cursors.checkpoint = to;
}

fn commit_next_window(s: &mut ServiceState, span_ms: i64) {
    let from = s.cursors.checkpoint;
    deliver(s, from, from + WINDOW_MS);
    s.dedup.prune(from + WINDOW_MS - span_ms);
}

/// Bytes Redis has received from every client so far (`INFO stats`).
fn net_input(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_net_input_bytes")
}

/// One steady-state commit (a window of new events, as many pruned) on a state whose memory
/// spans `span_ms`: the bytes Redis received for it and its time.
async fn steady_commit(redis: &RedisServer, store: &RedisStore, span_ms: i64) -> (u64, Duration) {
    let token = "host-a:1:01";
    let key = format!("{KEY}_{span_ms}");
    store.take(&key, token).await.unwrap();
    let mut s = state_with_memory(T0 + span_ms, span_ms);
    let (before, started) = (net_input(redis), Instant::now());
    store.save(&key, &s, Some(token)).await.unwrap();
    println!(
        "the first commit of a {:.1} min memory (the whole of it): {} bytes in {:?}",
        span_ms as f64 / 60_000.0,
        net_input(redis) - before,
        started.elapsed()
    );
    commit_next_window(&mut s, span_ms);
    let before = net_input(redis);
    let started = Instant::now();
    store.save(&key, &s, Some(token)).await.unwrap();
    let took = started.elapsed();
    let bytes = net_input(redis) - before;
    assert_eq!(store.load(&key).await.unwrap().unwrap().0, s);
    (bytes, took)
}

/// The state at 100 events/s with the default lookback, and what one commit sends and takes
/// with that lookback and with a third of it. The bytes a commit sends must not grow with the
/// lookback: a window's events are the same however long the memory is.
#[tokio::test]
async fn a_commits_bytes_do_not_grow_with_the_lookback() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let store = RedisStore::new(&redis.config("t:", Duration::from_secs(30))).unwrap();
    // The scripts loaded first, as in a running holder (a script's first call is sent twice).
    store.take("warm", "host-a:1:01").await.unwrap();
    let small = ServiceState::new(None, T0);
    store
        .save("warm", &small, Some("host-a:1:01"))
        .await
        .unwrap();
    let s = state_with_memory(T0 + LOOKBACK_MS, LOOKBACK_MS);
    println!(
        "state at {RATE} events/s, 35 min lookback: {} dedup entries, the whole document {} bytes (version-3 JSON)",
        s.dedup.len(),
        encode(&s).len()
    );
    let (long_bytes, long_time) = steady_commit(&redis, &store, LOOKBACK_MS).await;
    let (short_bytes, short_time) = steady_commit(&redis, &store, LOOKBACK_MS / 3).await;
    println!(
        "one commit (a 60 s window of {} events): lookback 35 min: {long_bytes} bytes in {long_time:?}; lookback 11.7 min: {short_bytes} bytes in {short_time:?}",
        RATE * 60
    );
    assert!(
        long_bytes < short_bytes * 3 / 2,
        "a commit with a 35 min memory sent {long_bytes} bytes, with a 11.7 min one {short_bytes}: its cost grows with the lookback"
    );
}

/// A renewal issued while a large state write is in flight is answered before the write: leases
/// have a connection of their own, so a renewal never queues behind a state's bytes.
#[tokio::test]
async fn a_renewal_is_answered_before_a_large_write_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let store = RedisStore::new(&redis.config("t:", Duration::from_secs(30))).unwrap();
    let token = "host-a:1:01";
    store.take(KEY, token).await.unwrap();
    // A small write first, as a running holder has made: its script is loaded in Redis (a
    // script's first call is sent twice, EVALSHA refused, then EVAL).
    let small = ServiceState::new(None, T0);
    store.save(KEY, &small, Some(token)).await.unwrap();
    // Three lookbacks of memory: a first write of it sends every entry.
    let s = state_with_memory(T0 + 3 * LOOKBACK_MS, 3 * LOOKBACK_MS);
    let watcher = redis::Client::open(format!("redis://{}/", redis.address())).unwrap();
    let mut watcher = watcher.get_multiplexed_async_connection().await.unwrap();
    let (write_done, (renewal_done, renewal_took)) = tokio::join!(
        async {
            store.save(KEY, &s, Some(token)).await.unwrap();
            Instant::now()
        },
        async {
            wait_for_large_request(&mut watcher).await;
            let sent = Instant::now();
            let renewed = store.renew(KEY, token).await.unwrap();
            assert!(renewed.done, "{renewed:?}");
            (Instant::now(), sent.elapsed())
        }
    );
    println!(
        "renewal sent while the write was in flight: answered in {renewal_took:?}, {:?} before the write",
        write_done.checked_duration_since(renewal_done)
    );
    assert!(
        renewal_done < write_done,
        "the renewal was answered {:?} after the write it was issued during: it queued behind it",
        renewal_done - write_done
    );
}

/// Waits until a client of `redis` is sending a request over 1 MiB (its query buffer and parsed
/// arguments), i.e. a large write is in flight.
async fn wait_for_large_request(watcher: &mut redis::aio::MultiplexedConnection) {
    Wait::new("a large write in flight", Duration::from_secs(30))
        .every(Duration::from_millis(1))
        .until_async(async || {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(watcher)
                .await
                .unwrap();
            let large = list.lines().any(|client| {
                let field = |name: &str| {
                    client
                        .split(' ')
                        .find_map(|f| f.strip_prefix(name))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                field("qbuf=") + field("argv-mem=") > 1 << 20
            });
            large
        })
        .await;
}

/// The dedup hash's fields and values as stored, sorted (`HGETALL`).
fn dedup_hash(redis: &RedisServer, key: &str) -> Vec<String> {
    let flat = redis.cli(&["--raw", "HGETALL", &format!("t:{{{key}}}:dedup")]);
    let mut pairs: Vec<String> = flat
        .lines()
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|p| p.join("="))
        .collect();
    pairs.sort();
    pairs
}

/// The dedup memory's buckets are written only under the lease: a former holder's commit writes
/// no bucket, and a holder whose last write another process overwrote since writes the whole
/// memory (the difference from its own last write would not apply). Each load gives back
/// exactly the state last committed.
#[tokio::test]
async fn buckets_are_fenced_and_a_stale_difference_is_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let config = redis.config("t:", Duration::from_secs(30));
    let (a_store, b_store) = (
        RedisStore::new(&config).unwrap(),
        RedisStore::new(&config).unwrap(),
    );
    let (a, b) = ("host-a:1:01", "host-b:2:02");
    let span = 5 * 60_000;
    let mut s = state_with_memory(T0 + span, span);
    a_store.take(KEY, a).await.unwrap();
    a_store.save(KEY, &s, Some(a)).await.unwrap();
    assert_eq!(a_store.load(KEY).await.unwrap().unwrap().0, s);
    let stored = dedup_hash(&redis, KEY);
    assert!(stored.len() > 250, "{} buckets", stored.len());
    // B takes over (A released its lease) and commits a window and a late arrival, in a bucket
    // that A's next commit does not touch.
    a_store.release(KEY, a).await.unwrap();
    b_store.take(KEY, b).await.unwrap();
    let mut theirs = b_store.load(KEY).await.unwrap().unwrap().0;
    commit_next_window(&mut theirs, span);
    let late = Event {
        date_ms: T0 + 120_000 + 7,
        key: [7; 32],
        json: Bytes::new(),
    };
    let plan = theirs.dedup.plan(&[late], 0);
    theirs.dedup.apply(plan);
    b_store.save(KEY, &theirs, Some(b)).await.unwrap();
    // A holds the lease again and commits a window from its own last write, not from B's
    // (without reloading): the store holds exactly A's state, no bucket of B's mixed in.
    b_store.release(KEY, b).await.unwrap();
    a_store.take(KEY, a).await.unwrap();
    commit_next_window(&mut s, span);
    a_store.save(KEY, &s, Some(a)).await.unwrap();
    let loaded = b_store.load(KEY).await.unwrap().unwrap().0;
    assert!(
        loaded == s,
        "the store holds {} dedup entries, A committed {}: a difference was applied to B's write",
        loaded.dedup.len(),
        s.dedup.len()
    );
    // B takes over again; A's next commit is refused and leaves every bucket as it was.
    a_store.release(KEY, a).await.unwrap();
    b_store.take(KEY, b).await.unwrap();
    let before = dedup_hash(&redis, KEY);
    let mut ours = s.clone();
    commit_next_window(&mut ours, span);
    let refused = a_store.save(KEY, &ours, Some(a)).await.unwrap_err();
    assert!(refused.is_lease_lost(), "{refused:?}");
    assert_eq!(
        dedup_hash(&redis, KEY),
        before,
        "a former holder wrote buckets"
    );
    assert_eq!(a_store.load(KEY).await.unwrap().unwrap().0, s);
    b_store.release(KEY, b).await.unwrap();
    // `state reset` deletes the memory with the document.
    assert!(a_store.reset(KEY).await.unwrap());
    assert!(dedup_hash(&redis, KEY).is_empty());
    assert!(a_store.load(KEY).await.unwrap().is_none());
}

/// A version-3 document (the dedup memory inline, as builds before this one wrote it) is read
/// as it is, and written in the new layout at the next commit: a version-4 document without
/// the memory, and the memory in the hash beside it.
#[tokio::test]
async fn a_version_3_document_is_read_and_rewritten_in_the_new_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let store = RedisStore::new(&redis.config("t:", Duration::from_secs(30))).unwrap();
    let token = "host-a:1:01";
    let mut s = state_with_memory(T0 + 120_000, 120_000);
    let state_key = format!("t:{{{KEY}}}:state");
    let v3 = tmp.path().join("v3.json");
    std::fs::write(&v3, encode(&s)).unwrap();
    // redis-cli -x: the last argument from stdin, byte for byte.
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "-x", "SET", &state_key])
        .stdin(std::fs::File::open(&v3).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (loaded, _) = store.load(KEY).await.unwrap().unwrap();
    assert_eq!(loaded, s);
    store.take(KEY, token).await.unwrap();
    commit_next_window(&mut s, 120_000);
    store.save(KEY, &s, Some(token)).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&redis.get(&state_key).unwrap()).unwrap();
    assert_eq!(doc["@persistence_version"], 4, "{doc}");
    assert!(doc.get("dedup").is_none(), "{doc}");
    assert!(dedup_hash(&redis, KEY).len() > 100);
    assert_eq!(store.load(KEY).await.unwrap().unwrap().0, s);
}
