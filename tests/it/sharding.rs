//! Sharding the tenants' leases across replicas on a real redis-server (issue 12, section 4).
//!
//! In-process first: three coordinators ([`Shard`]) with 24 leases each, as three replicas of a
//! config with twelve tenants would have, their heartbeats in a real Redis; a "replica" is a set
//! of tasks that take leases, hold them until asked to hand them over, and can be aborted
//! (`kill -9`: no release, its leases and heartbeat expire). Then the collector itself: three
//! `run` processes with twelve tenants against the simulator, one killed and replaced, and every
//! tenant's file output exact.

// Real time throughout: leases and heartbeats expire on Redis's clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolation_collector::config::RedisConfig;
use isolation_collector::isolation::lease::Lease;
use isolation_collector::isolation::shard::{self, Shard};
use isolation_collector::metrics::Metrics;
use isolation_collector::service::Service;
use isolation_collector::state::redis::RedisStore;
use isolation_collector::state::StateStore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::redis_server::RedisServer;

const TENANTS: usize = 12;
const SERVICES: usize = TENANTS * 2;

fn redis_config(redis: &RedisServer, ttl: Duration) -> RedisConfig {
    RedisConfig {
        host: "127.0.0.1".into(),
        port: redis.port,
        password: None,
        username: None,
        db: 0,
        tls: false,
        ca: None,
        key_prefix: "sharding-test:".into(),
        lease_ttl: ttl,
    }
}

/// The 24 state keys of twelve tenants.
fn keys() -> Vec<(String, Service)> {
    (0..TENANTS)
        .flat_map(|t| {
            Service::ALL.map(|s| (StateStore::key(&format!("{}", 20001 + t), s.name()), s))
        })
        .collect()
}

/// One replica in this process: its coordinator, its heartbeat and one task per lease.
struct InProcess {
    shard: Arc<Shard>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl InProcess {
    async fn start(name: &str, config: &RedisConfig) -> InProcess {
        let store = Arc::new(StateStore::Redis(Box::new(
            RedisStore::new(config).unwrap(),
        )));
        let shard = Shard::new(name.to_owned(), SERVICES, config.lease_ttl);
        let redis = store.redis().unwrap();
        assert!(shard.beat(redis).await, "the first heartbeat");
        let metrics = Arc::new(Metrics::new().with_leases());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(shard::beat_every(
            shard.clone(),
            store.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        for (key, service) in keys() {
            let lease = Lease::new(store.clone(), key, service, metrics.service(service))
                .with_shard(shard.clone());
            tasks.spawn(hold_until_asked(lease, stop.clone()));
        }
        InProcess { shard, tasks, stop }
    }

    /// `kill -9`: every task gone at once, nothing released, no heartbeat removed.
    async fn kill(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A clean stop: the leases are released and the heartbeat removed.
    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A service's lease loop without the pulling: take (within the share), hold, hand over when
/// asked, stand by again.
async fn hold_until_asked(lease: Lease, stop: CancellationToken) {
    loop {
        let Ok(tenure) = lease.take_until_held(&stop, None).await else {
            return;
        };
        let gate = tenure.gate();
        let lost = tenure.token();
        tokio::select! {
            _ = gate.hand_over_wanted() => lease.hand_over(tenure).await,
            _ = lost.cancelled() => {
                if stop.is_cancelled() {
                    lease.release(tenure).await;
                    return;
                }
                lease.lost(tenure, "test");
            }
        }
    }
}

/// What each replica holds, once every lease is held and each holds `low..=high` (at most 30 s).
async fn wait_for_spread(
    replicas: &[&InProcess],
    redis: &RedisServer,
    low: usize,
    high: usize,
) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: Vec<usize> = replicas.iter().map(|r| r.shard.held()).collect();
        let total: usize = held.iter().sum();
        let in_redis = leases_in_redis(redis);
        if total == SERVICES
            && in_redis == SERVICES
            && held.iter().all(|h| (low..=high).contains(h))
        {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "no spread within {low}..={high} after 30 s: held {held:?}, {in_redis} leases in Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many of the 24 leases exist in Redis.
fn leases_in_redis(redis: &RedisServer) -> usize {
    let listed = redis.cli(&["KEYS", "sharding-test:*:lease"]);
    listed
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("(empty"))
        .count()
}

/// The live replicas in the heartbeat hash.
fn heartbeats(redis: &RedisServer) -> BTreeSet<String> {
    let listed = redis.cli(&["HKEYS", "sharding-test:proofpoint_isolation:replicas"]);
    listed
        .lines()
        .filter_map(|l| {
            l.split_once('"')
                .map(|(_, rest)| rest.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// Three replicas spread 24 leases evenly (8 ± 1); one killed: the two others take its leases
/// once they expire (12 ± 1); a replacement joins: the spread is even again, by hand-overs. No
/// lease is ever held twice: the replicas' counts add up to 24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_share_24_leases_and_reshare_them() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let config = redis_config(&redis, Duration::from_millis(1500));
    let a = InProcess::start("a", &config).await;
    // Alone at first: it takes everything (its fair share is 25).
    let held = wait_for_spread(&[&a], &redis, SERVICES, SERVICES).await;
    assert_eq!(held, vec![24]);
    let b = InProcess::start("b", &config).await;
    let c = InProcess::start("c", &config).await;
    let held = wait_for_spread(&[&a, &b, &c], &redis, 7, 9).await;
    eprintln!("three replicas: {held:?}");
    assert_eq!(heartbeats(&redis), ["a", "b", "c"].map(String::from).into());
    assert_eq!(a.shard.live(), 3);
    assert_eq!(a.shard.fair_share(), 9);
    a.kill().await;
    let held = wait_for_spread(&[&b, &c], &redis, 11, 13).await;
    eprintln!("after the kill: {held:?}");
    assert_eq!(heartbeats(&redis), ["b", "c"].map(String::from).into());
    assert_eq!(b.shard.fair_share(), 13);
    let d = InProcess::start("d", &config).await;
    let held = wait_for_spread(&[&b, &c, &d], &redis, 7, 9).await;
    eprintln!("with the replacement: {held:?}");
    for r in [b, c, d] {
        r.stop().await;
    }
    assert_eq!(
        leases_in_redis(&redis),
        0,
        "a clean stop releases every lease"
    );
    assert!(heartbeats(&redis).is_empty(), "and removes its heartbeat");
}
