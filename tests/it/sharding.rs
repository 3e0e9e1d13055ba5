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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolation_collector::config::RedisConfig;
use isolation_collector::ha::lease::Lease;
use isolation_collector::ha::shard::{self, Shard};
use isolation_collector::metrics::Metrics;
use isolation_collector::service::Service;
use isolation_collector::state::redis::RedisStore;
use isolation_collector::state::StateStore;
use isolation_sim::{Dataset, SimConfig, SimHandle};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ha::Replica;
use crate::redis_server::RedisServer;
use crate::support::*;

const TENANTS: usize = 12;
const SERVICES: usize = TENANTS * 2;
/// Events per dataset in the collector test: every tenant reads both.
const EVENTS: usize = 3000;

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
            // The state key stands for the input id in the metrics' labels (unique per lease).
            let counted = metrics.service(&key, service);
            let lease = Lease::new(store.clone(), key, service, counted).with_shard(shard.clone());
            // No setup check here: every service is able to pull from the start.
            lease.setup_passed(true);
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
    wait_for(
        format!("a spread within {low}..={high}"),
        Duration::from_secs(30),
        || {
            let held: Vec<usize> = replicas.iter().map(|r| r.shard.held()).collect();
            let total: usize = held.iter().sum();
            let in_redis = leases_in_redis(redis);
            if total == SERVICES
                && in_redis == SERVICES
                && held.iter().all(|h| (low..=high).contains(h))
            {
                Ok(held)
            } else {
                Err(format!("held {held:?}, {in_redis} leases in Redis"))
            }
        },
    )
    .await
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
    let config = redis.config("sharding-test:", Duration::from_millis(1500));
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

/// The collector's replicas of a twelve-tenant config: one simulator per dataset (every tenant
/// reads both with the same key), the file output under `out/<id>/`, Redis persistence.
struct Deployment {
    dir: tempfile::TempDir,
    redis: RedisServer,
    web: SimHandle,
    url: SimHandle,
}

impl Deployment {
    async fn start(events: usize, ttl: u32) -> Deployment {
        let tweak = |c: &mut SimConfig| {
            // Pages of 100 events 40 ms apart: each service's backfill lasts a few seconds, so the
            // first hand-overs land in the middle of it.
            c.page_latency = Duration::from_millis(40);
            c.shuffle = true;
            c.identical_fraction = 0.02;
        };
        let mut web = sim_config(Dataset::Web, events, 1);
        let mut url = sim_config(Dataset::Url, events, 2);
        tweak(&mut web);
        tweak(&mut url);
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start(&dir, "redis").await;
        let d = Deployment {
            web: SimHandle::start(web).await.unwrap(),
            url: SimHandle::start(url).await.unwrap(),
            dir,
            redis,
        };
        std::fs::write(d.config_path(), d.config(ttl)).unwrap();
        d
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    fn tenant(id: usize) -> String {
        format!("{}", 20001 + id)
    }

    fn config(&self, ttl: u32) -> String {
        let service = |base: String| {
            format!(
                "          override_base_url: {base}\n          request_period_in_seconds: 1\n          page_size: 100\n          max_events_per_window: 400\n          job_poll_initial_interval_in_seconds: 0.01\n          job_poll_max_interval_in_seconds: 0.05\n          retry_initial_interval_in_seconds: 0.01\n          retry_max_interval_in_seconds: 0.1\n"
            )
        };
        let mut text = format!(
            "globals:\n  id: \"t1\"\n  name: it\n  metrics_listen: \"${{METRICS_LISTEN}}\"\n{}outputs:\n  local:\n    type: file\n    config:\n      directory: {}\ninputs:\n  proofpoint_isolation:\n",
            self.redis.persistence_yaml(ttl, ""),
            self.dir.path().join("out").display()
        );
        for t in 0..TENANTS {
            text.push_str(&format!(
                "    - id: \"{}\"\n      credentials:\n        api_key: \"{KEY}\"\n      services:\n        browser_and_email_isolation:\n{}        url_isolation:\n{}",
                Deployment::tenant(t),
                service(self.web.base_url()),
                service(self.url.base_url()),
            ));
        }
        text
    }

    fn replica(&self, name: &'static str) -> Replica {
        Replica::of(name, &self.config_path(), self.dir.path())
    }

    /// A tenant's delivered lines of a table.
    fn delivered(&self, tenant: usize, table: &str) -> Vec<String> {
        let out = self.dir.path().join("out").join(Deployment::tenant(tenant));
        read_lines(&out.join(format!("{table}.jsonl")))
    }

    /// Lines delivered in every tenant's files together.
    fn delivered_in_all(&self) -> usize {
        (0..TENANTS)
            .map(|t| self.delivered(t, WEB_TABLE).len() + self.delivered(t, URL_TABLE).len())
            .sum()
    }

    fn complete(&self) -> bool {
        let (web, url) = (
            self.web.visible_events().len(),
            self.url.visible_events().len(),
        );
        (0..TENANTS).all(|t| {
            self.delivered(t, WEB_TABLE).len() >= web && self.delivered(t, URL_TABLE).len() >= url
        })
    }

    fn assert_exactly_once(&self) {
        let (web, url) = (self.web.visible_events(), self.url.visible_events());
        for t in 0..TENANTS {
            let id = Deployment::tenant(t);
            assert_same_multiset(
                &self.delivered(t, WEB_TABLE),
                &web,
                &format!("{id} {WEB_TABLE}"),
            );
            assert_same_multiset(
                &self.delivered(t, URL_TABLE),
                &url,
                &format!("{id} {URL_TABLE}"),
            );
        }
    }
}

/// How many of the twelve tenants' leases each process holds in Redis, by process id (a lease's
/// value is its holder's token, `<host>:<pid>:<random>`; the metrics cannot tell the tenants apart).
fn leases_by_pid(redis: &RedisServer) -> BTreeMap<u32, usize> {
    let keys: Vec<String> = (0..TENANTS)
        .flat_map(|t| {
            Service::ALL.map(|s| {
                let state = StateStore::key(&Deployment::tenant(t), s.name());
                format!("isolation-collector:{{{state}}}:lease")
            })
        })
        .collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let mut held = BTreeMap::new();
    for line in redis.cli(&args).lines() {
        let Some((_, token)) = line.split_once('"') else {
            continue; // (nil): free
        };
        let pid = token.trim_end_matches('"').rsplit(':').nth(1).unwrap();
        *held.entry(pid.parse().unwrap()).or_default() += 1;
    }
    held
}

/// Waits (at most `limit`) until the replicas hold every lease between them, each `low..=high`.
async fn wait_for_held(
    redis: &RedisServer,
    replicas: &[&Replica],
    low: usize,
    high: usize,
    limit: Duration,
) -> Vec<usize> {
    let logs = || {
        let logs: Vec<String> = replicas.iter().map(|r| tail(&r.log(), 30)).collect();
        format!("logs:\n{}", logs.join("\n---\n"))
    };
    Wait::new(format!("a spread within {low}..={high}"), limit)
        .every(Duration::from_millis(100))
        .showing(logs)
        .until(|| {
            let by_pid = leases_by_pid(redis);
            let held: Vec<usize> = replicas
                .iter()
                .map(|r| by_pid.get(&r.pid()).copied().unwrap_or(0))
                .collect();
            if held.iter().sum::<usize>() == SERVICES
                && held.iter().all(|h| (low..=high).contains(h))
            {
                Ok(held)
            } else {
                Err(format!("held {held:?}"))
            }
        })
        .await
}

/// Three collector replicas on one Redis share twelve tenants (24 services): one starts alone and
/// takes every lease, the two others join during its backfill and it hands leases over until
/// each holds 8 ± 1; one is killed (`kill -9`) and the two survivors take its leases once they
/// expire (at most 13 each); a replacement joins and the spread is even again. Every tenant's
/// file output holds exactly the simulator's events: nothing lost or repeated by any hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_twelve_tenants_and_reshare_them_after_a_kill() {
    let d = Deployment::start(EVENTS, 3).await;
    let mut a = d.replica("a");
    a.start();
    wait_for_held(&d.redis, &[&a], SERVICES, SERVICES, Duration::from_secs(30)).await;
    let (mut b, mut c) = (d.replica("b"), d.replica("c"));
    b.start();
    c.start();
    let joined = Instant::now();
    assert!(
        d.delivered_in_all() < 2 * TENANTS * EVENTS,
        "the backfill ended before the others joined: make it longer"
    );
    let held = wait_for_held(&d.redis, &[&a, &b, &c], 7, 9, Duration::from_secs(30)).await;
    // Usually the middle of the backfill (how far it got depends on the machine's load).
    let at_spread = d.delivered_in_all();
    eprintln!(
        "three replicas: {held:?} {:.1} s after the two joined; {at_spread} of {} events delivered then",
        joined.elapsed().as_secs_f64(),
        2 * TENANTS * EVENTS
    );
    // Handed over at window boundaries: never by cancelling the puller, never lost.
    let a_log = a.log();
    assert!(
        a_log.contains("Handed the lease of "),
        "{}",
        tail(&a_log, 30)
    );
    for line in ["Retrieving loop has been interrupted", "Lost the lease of "] {
        assert!(!a_log.contains(line), "{line}:\n{}", tail(&a_log, 30));
    }
    let (_, ready) = b.ready().await.expect("b answers");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        ready["replicas"],
        serde_json::json!({"live": 3, "fair_share": 9}),
        "{ready}"
    );
    let text = b.scrape().await.unwrap();
    assert_eq!(
        metric(&text, "isolation_collector_replicas_live"),
        Some(3.0)
    );
    a.kill_9().await;
    let killed = Instant::now();
    let held = wait_for_held(&d.redis, &[&b, &c], 11, 13, Duration::from_secs(30)).await;
    let took = killed.elapsed().as_secs_f64();
    eprintln!("after the kill: {held:?} {took:.1} s after it (lease_ttl 3 s)");
    let mut e = d.replica("e");
    e.start();
    let started = Instant::now();
    let held = wait_for_held(&d.redis, &[&b, &c, &e], 7, 9, Duration::from_secs(30)).await;
    let took = started.elapsed().as_secs_f64();
    eprintln!("with the replacement: {held:?} {took:.1} s after it started");
    wait_for("every tenant complete", Duration::from_secs(60), || {
        d.complete()
    })
    .await;
    for r in [&mut b, &mut c, &mut e] {
        r.stop().await;
    }
    d.assert_exactly_once();
    for r in [&b, &c, &e] {
        assert!(
            !r.log().contains("Lost the lease of "),
            "{}",
            tail(&r.log(), 30)
        );
    }
    let handed: usize = [&a, &b, &c, &e]
        .iter()
        .map(|r| r.log().matches("Handed the lease of ").count())
        .sum();
    eprintln!("hand-overs in all: {handed}");
}
