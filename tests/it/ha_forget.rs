//! A Redis that forgets (issue 21, §2), against real redis-server processes.
//!
//! - Redis restarted without persistence, and `FLUSHDB`, under two running daemons (`run`) that
//!   share a file output: every state key is gone at once. The file output must end exact: the
//!   replica that held a service's state writes it back instead of starting again from
//!   `start_time_in_utc`, and the replica that never held it leaves it to that one.
//! - `validate` and `run` warn when Redis runs without persistence or with an evicting policy.
//! - In-process, on the lease gate itself ([`LeaseGate::before_delivery`]): a successful Redis
//!   call after an outage does not reopen the gate (only a renewal does), and a renewal whose
//!   reply arrives after the lease's validity ran out does not open it either. The second one
//!   moves the lease's clock by hand (it is injected) while the partition proxy
//!   (tests/it/netproxy.rs) holds the renewal's reply: a pause between sending RENEW and reading
//!   its reply, made exactly as long as the test wants.

// Real time throughout: leases expire on Redis's clock, the simulator runs on the real one.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolation_collector::ha::lease::clock::{LeaseClock, LeaseTime, SharedLeaseClock};
use isolation_collector::ha::lease::Lease;
use isolation_collector::metrics::{Metrics, ServiceMetrics};
use isolation_collector::service::Service;
use isolation_collector::state::redis::RedisStore;
use isolation_collector::state::{StateError, StateStore};
use tokio_util::sync::CancellationToken;

use crate::ha::{Ha, SERVICES};
use crate::netproxy::NetProxy;
use crate::redis_server::{persistence_yaml, RedisServer};
use crate::support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How the store forgets.
#[derive(Clone, Copy, Debug)]
enum Forget {
    /// A Redis without persistence is restarted (it comes back empty).
    Restart,
    /// `FLUSHDB` while it runs.
    Flush,
}

/// Two daemons back two services up (8,000 events each) into one file output, with a Redis
/// without persistence: a holds both leases, b stands by (it never held a state: the harder
/// case, since b is the first to see the leases free when the store forgets, every TTL/10,
/// while a finds out at its next renewal, every TTL/3). When both services are a quarter
/// delivered the store forgets everything (`how`). The file output must end exact, and the
/// replicas must say what happened.
async fn forgotten_mid_backfill(how: Forget) {
    let started = Instant::now();
    let env = TestEnv::both(8_000, |c| {
        c.shuffle = true;
        c.page_latency = ms(50);
    })
    .await;
    let redis = RedisServer::start_without_persistence(&env.dir, "redis").await;
    let mut ha = Ha::with_redis(env, redis, "page_size: 250\nmax_events_per_window: 1000", 2);
    ha.replicas[0].start();
    for s in SERVICES {
        assert_eq!(ha.holder(s).await, 0);
    }
    ha.replicas[1].start();
    ha.wait_for("b never stood by", Duration::from_secs(20), |ha| {
        count(&ha.replicas[1].log(), "; standing by.") >= 2
    })
    .await;
    ha.wait_for("a quarter delivered", Duration::from_secs(30), |ha| {
        SERVICES.iter().all(|s| ha.delivered(s) >= 2_000)
    })
    .await;
    for s in SERVICES {
        assert!(
            ha.delivered(s) < ha.expected[s].len(),
            "{s}: the backfill ended before the store forgot"
        );
    }
    match how {
        Forget::Restart => ha.redis.restart().await,
        Forget::Flush => assert_eq!(ha.redis.cli(&["FLUSHDB"]), "OK"),
    }
    let forgot = Instant::now();
    ha.wait_until_complete(Duration::from_secs(60)).await;
    let caught_up = forgot.elapsed();
    // Whatever either replica would send again (a fresh state sends all 8,000 again) starts
    // within a cycle or two: wait for both states to be back and a few idle cycles.
    ha.wait_for(
        "the states back and idle cycles",
        Duration::from_secs(20),
        |ha| {
            SERVICES.iter().all(|s| ha.checkpoint(s).is_some())
                && ha
                    .replicas
                    .iter()
                    .map(|r| count(&r.log(), "The data is up to date!"))
                    .sum::<usize>()
                    >= 6
        },
    )
    .await;
    ha.stop_all().await;
    let logs: String = ha
        .replicas
        .iter()
        .map(|r| format!("--- replica {} ---\n{}", r.log_path().display(), r.log()))
        .collect();
    if SERVICES
        .iter()
        .any(|s| ha.delivered(s) != ha.expected[s].len())
    {
        let path = std::env::temp_dir().join(format!("ha_forget_{how:?}.log"));
        std::fs::write(&path, &logs).unwrap();
        eprintln!("both replicas' logs: {}", path.display());
    }
    for s in SERVICES {
        let (got, want) = (ha.delivered(s), ha.expected[s].len());
        assert_eq!(
            got, want,
            "{how:?}: the file output of {s} holds {got} lines for {want} events"
        );
    }
    ha.env.assert_exactly_once();
    assert!(
        logs.contains("was wiped: its generation marker"),
        "{how:?}: nobody reported the wipe:\n{}",
        ha.logs()
    );
    let written_back = count(&logs, "wrote back the state this process held");
    assert!(
        written_back >= 2,
        "{how:?}: {written_back} states written back:\n{}",
        ha.logs()
    );
    assert_eq!(
        count(&logs, "starts again from start_time_in_utc"),
        0,
        "{how:?}: a service started afresh:\n{}",
        ha.logs()
    );
    eprintln!(
        "forgetting store ({how:?}): caught up {:.1} s after it forgot; states written back: {written_back}; leases left to the other: {}; test {:.1} s",
        caught_up.as_secs_f64(),
        count(&logs, "Left the lease of "),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_two_daemons_leaves_the_file_exact() {
    forgotten_mid_backfill(Forget::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushdb_under_two_daemons_leaves_the_file_exact() {
    forgotten_mid_backfill(Forget::Flush).await;
}

/// The output of `validate` (or `run --once`) for `env` with Redis persistence on `redis`
/// (`extra` lines in its `config:`).
async fn warnings_of(env: &mut TestEnv, redis: &RedisServer, args: &[&str], extra: &str) -> String {
    env.persistence = Some(persistence_yaml(
        redis.port,
        redis.password.as_deref(),
        3,
        extra,
    ));
    env.write_config();
    let out = env.collector(args).await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `validate` and `run` warn about a Redis that can lose the states: without persistence, with
/// an evicting policy, and say when they cannot tell (`CONFIG` refused to the collector's user).
/// A Redis with an append-only file and `noeviction` gets no warning.
#[tokio::test]
async fn validate_and_run_warn_when_redis_can_forget_the_states() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let durable = RedisServer::start(&env.dir, "durable").await;
    let bare = RedisServer::start_without_persistence(&env.dir, "bare").await;
    let (without, evicts, cannot_tell) = (
        "runs without persistence",
        "maxmemory-policy allkeys-lru",
        "Cannot tell whether Redis at",
    );
    let text = warnings_of(&mut env, &durable, &["validate"], "").await;
    assert!(text.contains("answers."), "{text}");
    for line in [without, evicts, cannot_tell] {
        assert!(!text.contains(line), "durable: {line:?} in\n{text}");
    }
    for args in [&["validate"][..], &["run", "--once"]] {
        let text = warnings_of(&mut env, &bare, args, "").await;
        assert!(
            text.contains(&format!("Redis at {} {without}", bare.address())),
            "{args:?}: {text}"
        );
    }
    durable.cli(&["CONFIG", "SET", "maxmemory", "1gb"]);
    durable.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let text = warnings_of(&mut env, &durable, &["validate"], "").await;
    assert!(text.contains(evicts), "{text}");
    assert!(!text.contains(without), "{text}");
    // A managed Redis refuses CONFIG: INFO says what it can (no append-only file here).
    bare.cli(&[
        "ACL",
        "SETUSER",
        "collector",
        "on",
        ">pw-collector-1",
        "~*",
        "&*",
        "+@all",
        "-config",
    ]);
    let limited = "      username: collector\n      password: pw-collector-1\n";
    let text = warnings_of(&mut env, &bare, &["validate"], limited).await;
    assert!(text.contains(cannot_tell), "{text}");
    assert!(text.contains("runs without an append-only file"), "{text}");
    assert!(!text.contains("pw-collector-1"), "{text}");
}

/// A lease clock moved by hand: a suspend or a pause of any length, at the moment a test wants.
#[derive(Clone, Default)]
struct HandClock(Arc<AtomicU64>);

impl HandClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl LeaseClock for HandClock {
    fn now(&self) -> LeaseTime {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

fn lease_of(store: &Arc<StateStore>) -> Lease {
    Lease::new(
        store.clone(),
        "k".into(),
        Service::UrlIsolation,
        ServiceMetrics::detached(Service::UrlIsolation),
    )
}

fn redis_store(config: &isolation_collector::config::RedisConfig) -> Arc<StateStore> {
    let store = RedisStore::new(config).unwrap();
    store.report_to(Arc::new(Metrics::new().with_leases()));
    Arc::new(StateStore::Redis(Box::new(store)))
}

/// The overlap after a wiped lease: a holds the lease when Redis restarts empty; b takes the
/// free lease; a's next call fails (its connection was cut: an outage), and the one after
/// answers. a's gate must not let a delivery through on the validity its clock still shows:
/// only a renewal tells whether the lease is still a's, and b holds it. (Before, any answer
/// cleared the "down" flag and the gate opened on the clock alone, for up to a third of the
/// TTL with b delivering too.)
#[tokio::test]
async fn an_answer_after_an_outage_does_not_reopen_the_gate_only_a_renewal_does() {
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_without_persistence(&tmp, "redis").await;
    let config = redis.config("it:", Duration::from_secs(30));
    let a = redis_store(&config);
    let lease = lease_of(&a);
    let cancel = CancellationToken::new();
    let tenure = lease.take_until_held(&cancel, None).await.unwrap();
    let gate = tenure.gate();
    gate.before_delivery().await.unwrap();
    // Both of a's connections open (leases have their own): the restart cuts both.
    let a_redis = a.redis().unwrap();
    a_redis.load("k").await.unwrap();
    redis.restart().await;
    let b = RedisStore::new(&config).unwrap();
    let mut taken = b.take("k", "b:1:0").await;
    if taken.is_err() {
        taken = b.take("k", "b:1:0").await; // b's own first call may meet the cut connection
    }
    assert!(taken.unwrap().done, "b could not take the wiped lease");
    let mut failures = 0;
    while a_redis.load("k").await.is_err() {
        failures += 1;
        assert!(failures < 10, "a never got an answer again");
    }
    assert!(
        failures > 0,
        "a's connection survived the restart: no outage to test"
    );
    assert!(!a_redis.is_down(), "the outage is over for a");
    match gate.before_delivery().await {
        Err(StateError::LeaseLost { holder }) => assert_eq!(holder, "b:1:0"),
        other => panic!("a's gate let a delivery through while b holds the lease: {other:?}"),
    }
    cancel.cancel();
}

/// The pause between a renewal and its reply: the gate renews (less than a third of the TTL is
/// left on its clock), the proxy holds Redis's reply, and meanwhile the holder's clock moves
/// past the TTL (as a SIGSTOP or a suspend would move it) and another replica takes the lease
/// over (a `SET` of the lease key stands for its expiry and b's take). The reply then says
/// "renewed": it is true of the moment Redis ran it, not of now. The gate must not open on it.
#[tokio::test]
async fn a_renewal_answered_after_the_validity_ran_out_does_not_open_the_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let proxy = NetProxy::start(redis.address().parse().unwrap()).await;
    let mut config = redis.config("it:", Duration::from_secs(30));
    config.port = proxy.address().rsplit_once(':').unwrap().1.parse().unwrap();
    let a = redis_store(&config);
    let clock = HandClock::default();
    let lease = lease_of(&a).with_clock(SharedLeaseClock::new(clock.clone()));
    let cancel = CancellationToken::new();
    let tenure = lease.take_until_held(&cancel, None).await.unwrap();
    let gate = tenure.gate();
    gate.before_delivery().await.unwrap();
    // Redis knows the renewal's script from now on: the held reply is the renewal's, not a
    // NOSCRIPT that makes the client send the script again after the pause.
    let token = gate.token().unwrap();
    assert!(a.redis().unwrap().renew("k", &token).await.unwrap().done);
    // 5 s of 30 left: the next delivery renews first.
    clock.advance(Duration::from_secs(25));
    let lease_key = a.redis().unwrap().lease_key("k");
    assert_eq!(redis.cli(&["PEXPIRE", &lease_key, "10000"]), "(integer) 1");
    proxy.hold_replies();
    let pending = tokio::spawn({
        let gate = gate.clone();
        async move { gate.before_delivery().await }
    });
    proxy.requests_while_holding(1).await;
    // Redis has run the RENEW: the lease's TTL, cut to 10 s before, is 30 s again.
    Wait::new("the RENEW to reach Redis", Duration::from_secs(5))
        .every(ms(5))
        .until(|| pttl(&redis, &lease_key) >= 20_000)
        .await;
    clock.advance(Duration::from_secs(40));
    assert_eq!(
        redis.cli(&["SET", &lease_key, "b:1:0", "PX", "30000"]),
        "OK"
    );
    proxy.heal();
    match pending.await.unwrap() {
        Err(StateError::LeaseLost { holder }) => assert_eq!(holder, "b:1:0"),
        other => panic!(
            "the gate opened on a renewal answered 40 s after it was sent (the lease ran out meanwhile and b holds it): {other:?}"
        ),
    }
    cancel.cancel();
}

/// The lease key's TTL in milliseconds (negative: no key or no TTL).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let out = redis.cli(&["PTTL", key]);
    out.trim_start_matches("(integer) ").parse().unwrap_or(-2)
}
