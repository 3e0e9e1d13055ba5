//! Redis that fails over (issue 21 §3): one master, one replica and three `redis-sentinel`s
//! (Debian's package) on loopback, with a small `down-after-milliseconds` and `failover-timeout`
//! so that a failover takes a few seconds. The collector finds the master through the
//! sentinels (`persistence.config.sentinels`), follows it across a failover, and waits for the
//! replica's acknowledgement after each state write (`WAIT`).

// Real time throughout: the sentinels and the simulator run on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ha::{checkpoint_in, ms, write_ha_config, Ha, SERVICES, WEB};
use crate::redis_server::RedisServer;
use crate::support::*;

const INSTALL_HINT: &str = "apt-get install redis-sentinel";

/// The name the sentinels monitor the master by.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-sentinel` process; killed when dropped.
struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Sentinel {
    /// Starts a sentinel in `tmp/<name>` that monitors the master on `master_port` (quorum 2).
    fn start(tmp: &TempDir, name: &str, master_port: u16) -> Sentinel {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        // The sentinel rewrites its config file as it learns: it must be its own, writable.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-sentinel ({e}); `{INSTALL_HINT}`"));
        Sentinel { port, dir, child }
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The port of the master this sentinel names now.
    fn master_port(&self) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Whether it knows the replica and both other sentinels (it can then vote and fail over).
    fn knows_everyone(&self) -> bool {
        let count = |what: &str| {
            self.cli(&["SENTINEL", what, MASTER_NAME])
                .map_or(0, |out| out.lines().filter(|l| *l == "name").count())
        };
        count("replicas") == 1 && count("sentinels") == 2
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        kill_server(&mut self.child);
    }
}

/// A replica of a master and three sentinels watching it (the master itself is the caller's:
/// it can be handed to [`Ha`]).
pub struct Sentinels {
    pub replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

impl Sentinels {
    /// Starts a replica of `master` and three sentinels, and waits (at most 30 s) until each
    /// sentinel knows the replica and the other two.
    pub async fn start(tmp: &TempDir, master: &RedisServer) -> Sentinels {
        let replica = RedisServer::start_replica_of(tmp, "replica", master.port).await;
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|i| Sentinel::start(tmp, &format!("sentinel-{i}"), master.port))
            .collect();
        let s = Sentinels { replica, sentinels };
        for sentinel in &s.sentinels {
            wait_until_listening(sentinel.port).await;
        }
        Wait::new(
            "the sentinels to discover each other and the replica",
            Duration::from_secs(30),
        )
        .every(ms(100))
        .showing(|| s.logs())
        .until(|| s.sentinels.iter().all(Sentinel::knows_everyone))
        .await;
        s
    }

    /// The `globals.persistence` block (indented for `globals:`) that finds the master through
    /// the sentinels, with `lease_ttl_in_seconds: ttl`.
    pub fn persistence_yaml(&self, ttl: u32) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"127.0.0.1:{}\"", s.port))
            .collect();
        format!(
            "  persistence:\n    type: redis\n    config:\n      sentinels: [{}]\n      master_name: {MASTER_NAME}\n      db: 0\n      lease_ttl_in_seconds: {ttl}\n",
            list.join(", ")
        )
    }

    /// Waits (at most `limit`) until every sentinel names the replica as the master.
    pub async fn wait_for_failover(&self, limit: Duration) {
        Wait::new("a failover to the replica", limit)
            .showing(|| self.logs())
            .until(|| {
                self.sentinels
                    .iter()
                    .all(|s| s.master_port() == Some(self.replica.port))
            })
            .await;
    }

    fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("--- sentinel {} ---\n{}", s.port, s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn wait_until_listening(port: u16) {
    Wait::new(
        format!("redis-sentinel to listen on port {port}"),
        Duration::from_secs(5),
    )
    .every(ms(25))
    .until(|| listening(port))
    .await;
}

/// The master is killed (kill -9) during a backfill that two collector replicas share. The
/// sentinels promote the replica; the collectors, which find the master through the sentinels,
/// follow it: collection resumes and the shared file output holds every event exactly once.
/// `validate` then names the new master. Prints the time from the kill to the sentinels' switch
/// and to the next commit (a state's checkpoint in the new master moves past what the old one
/// held at the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_during_a_backfill_fails_over_and_collection_resumes_exactly_once() {
    let env = TestEnv::both(8_000, |c| {
        c.shuffle = true;
        c.page_latency = ms(100);
    })
    .await;
    let master = RedisServer::start(&env.dir, "master").await;
    let sentinels = Sentinels::start(&env.dir, &master).await;
    let mut ha = Ha::with_redis(
        env,
        master,
        "page_size: 250\nmax_events_per_window: 1000",
        2,
    );
    ha.env.persistence = Some(sentinels.persistence_yaml(2));
    write_ha_config(&ha.env);
    for r in &mut ha.replicas {
        r.start();
    }
    for s in SERVICES {
        ha.holder(s).await;
    }
    ha.wait_for("nothing delivered", Duration::from_secs(30), |ha| {
        ha.delivered(WEB) >= 1000
    })
    .await;
    let at_kill = SERVICES.map(|s| checkpoint_in(&ha.redis, s));
    let killed = Instant::now();
    ha.redis.kill();
    let delivered_at_kill = SERVICES.map(|s| ha.delivered(s));
    for (s, n) in SERVICES.iter().zip(delivered_at_kill) {
        assert!(
            n < ha.expected[s].len(),
            "{s}: the backfill ended before the kill"
        );
    }
    sentinels.wait_for_failover(Duration::from_secs(30)).await;
    let switched = killed.elapsed();
    // The next commit: a checkpoint in the new master moves past what the old one held.
    let committed = Wait::new(
        "a commit in the new master after the failover",
        Duration::from_secs(30),
    )
    .every(ms(20))
    .showing(|| format!("logs:\n{}", ha.logs()))
    .until(|| {
        let now = SERVICES.map(|s| checkpoint_in(&sentinels.replica, s));
        if now.iter().zip(&at_kill).any(|(n, before)| n > before) {
            Ok(killed.elapsed())
        } else {
            Err(format!(
                "delivered {:?} at the kill, {:?} now",
                delivered_at_kill,
                SERVICES.map(|s| ha.delivered(s))
            ))
        }
    })
    .await;
    ha.wait_until_complete(Duration::from_secs(60)).await;
    ha.stop_all().await;
    ha.env.assert_exactly_once();
    let followed = ha
        .replicas
        .iter()
        .filter(|r| {
            r.log()
                .contains("a failover happened; the collector follows it.")
        })
        .count();
    assert!(followed > 0, "nobody logged the new master:\n{}", ha.logs());
    // validate asks the sentinels too, and names the master they gave.
    let listen = format!("127.0.0.1:{}", free_port());
    let out = ha
        .env
        .collector_with_env(&["validate"], &[("METRICS_LISTEN", &listen)])
        .await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!(
            "the sentinels name 127.0.0.1:{} as the master.",
            sentinels.replica.port
        )),
        "{printed}"
    );
    eprintln!(
        "sentinel failover test: kill -9 of the master -> sentinels switched after {:.1} s, next commit in the new master after {:.1} s",
        switched.as_secs_f64(),
        committed.as_secs_f64()
    );
}

/// Waits (at most 20 s) until `master` streams its writes to a replica (`state=online`: after
/// a diskless sync, only from the replica's first acknowledgement on, up to a second later).
/// Then a write reaches the replica, and the replica has finished the append-only file rewrite
/// it starts after a sync (its fsyncs, which come before its acknowledgements, wait for it).
async fn wait_until_replicating(master: &RedisServer, replica: &RedisServer) {
    assert_eq!(master.cli(&["SET", "warm-up", "1"]), "OK");
    wait_for(
        "the replica to synchronise",
        Duration::from_secs(20),
        || {
            master
                .cli(&["INFO", "replication"])
                .contains("state=online")
                && replica.get("warm-up").is_some()
                && replica
                    .cli(&["INFO", "persistence"])
                    .contains("aof_rewrite_in_progress:0")
        },
    )
    .await;
}

/// After each fenced state write the store waits for the replica's acknowledgement (`WAIT 1`):
/// with the replica running, the state is in the replica the moment `save` returns; with the
/// replica stopped (SIGSTOP), the write still lands in the master and counts (the lease is
/// the writer's), and is counted in `persistence_unreplicated_writes_total`.
#[tokio::test]
async fn a_state_write_waits_for_the_replica_and_counts_those_it_did_not_acknowledge() {
    use isolation_collector::metrics::Metrics;
    use isolation_collector::state::redis::RedisStore;
    use isolation_collector::state::ServiceState;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let master = RedisServer::start(&tmp, "master").await;
    let replica = RedisServer::start_replica_of(&tmp, "replica", master.port).await;
    wait_until_replicating(&master, &replica).await;
    // A TTL of 6 s: a response timeout of 2 s, and a wait for the replica of 1 s.
    let store = RedisStore::new(&master.config("t:", Duration::from_secs(6))).unwrap();
    let metrics = Arc::new(Metrics::new().with_leases());
    store.report_to(metrics.clone());
    let unreplicated = || {
        metric(
            &metrics.encode(0),
            "isolation_collector_persistence_unreplicated_writes_total",
        )
    };
    let (k, token) = ("proofpoint_isolation_1_url_isolation", "host-a:1:01");
    let state_key = store.state_key(k);
    assert!(store.take(k, token).await.unwrap().done);
    let mut state = ServiceState::new(None, 1_000);
    for checkpoint in [5_000, 6_000, 7_000] {
        state.cursors.checkpoint = checkpoint;
        let started = Instant::now();
        store.save(k, &state, Some(token)).await.unwrap();
        let took = started.elapsed();
        assert_eq!(
            replica.get(&state_key),
            master.get(&state_key),
            "the replica does not hold the write of checkpoint {checkpoint} when save returns (after {took:?}; unreplicated writes: {:?}; {})",
            unreplicated(),
            master.cli(&["INFO", "replication"])
        );
    }
    assert_eq!(unreplicated(), Some(0.0));
    signal_pid(replica.pid(), "-STOP");
    state.cursors.checkpoint = 8_000;
    let started = Instant::now();
    let saved = store.save(k, &state, Some(token)).await;
    let waited = started.elapsed();
    signal_pid(replica.pid(), "-CONT");
    saved.unwrap();
    assert!(master
        .get(&state_key)
        .unwrap()
        .contains("\"checkpoint_in_utc\""));
    assert_eq!(store.load(k).await.unwrap().unwrap().0, state);
    assert_eq!(unreplicated(), Some(1.0));
    eprintln!(
        "WAIT test: a save with the replica stopped returned after {:.2} s",
        waited.as_secs_f64()
    );
}

fn signal_pid(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
