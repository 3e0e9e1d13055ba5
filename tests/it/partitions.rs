//! Network partitions (issue 21 §4), end to end: two collector daemons (`run`), each behind its
//! own partition proxies (tests/it/netproxy.rs) to Redis and to both API hosts, so that one
//! replica can be cut while the other is not. Both deliver into the shared file output and a
//! real rsyslog (plain TCP). Replica a starts alone and holds both leases; b stands by; then a is
//! cut from Redis, from the API, or from both (and healed while b holds the leases).
//!
//! At the end every output's history is checked: the shared file holds exactly the simulators'
//! events, and rsyslog every event with at most one window (`max_events_per_window`) re-sent per
//! takeover of its service, the README's bound for a network output.
//!
//! Who committed what is read from Redis's append-only file, which records in execution order
//! the effects of every script (a take's lease `SET`, a fenced write's state `SET`, a release's
//! `DEL`) and the `DEL` of each lease that expired. Replaying it attributes every stored state
//! to the token that held the lease when it was stored, and shows whether a lease ever passed
//! from one token to another without being released or expiring first (two holders). Asserted:
//! the lease never did; the checkpoint never went back; each token's commits form one run (a
//! tenure never commits again once another has).

// Real time throughout: leases expire on Redis's clock, the simulator runs on the real one.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ha::{bodies_per_table, differences, edit_config, ms, Ha, Replica, SERVICES, URL, WEB};
use crate::netproxy::{Mode, NetProxy};
use crate::rsyslog::{Listen, Rsyslog};
use crate::support::*;

/// Events per service: a backfill of a few seconds with the pages below.
const EVENTS: usize = 8_000;
/// `max_events_per_window`: the most a takeover may re-send into rsyslog per service.
const WINDOW: usize = 500;
/// The lease's TTL in seconds.
const TTL: u32 = 2;
/// Only a state write to Redis holds this (takes, renewals and heartbeats do not).
const STATE_WRITE_MARK: &[u8] = b"checkpoint_in_utc";

fn table(service: &str) -> &'static str {
    if service == WEB {
        WEB_TABLE
    } else {
        URL_TABLE
    }
}

fn redis_key(service: &str, what: &str) -> String {
    format!("isolation-collector:{{proofpoint_isolation_10001_{service}}}:{what}")
}

/// One replica's links: its proxies to Redis and to each API host.
struct Links {
    redis: NetProxy,
    web: NetProxy,
    url: NetProxy,
}

impl Links {
    fn cut_api(&self) {
        self.web.blackhole();
        self.url.blackhole();
    }

    fn heal(&self) {
        for p in [&self.redis, &self.web, &self.url] {
            p.heal();
        }
    }
}

/// The pair behind its proxies, with rsyslog as the second output.
struct Partitioned {
    ha: Ha,
    links: [Links; 2],
    rsyslog: Rsyslog,
}

fn address(base_url: &str) -> SocketAddr {
    base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("{base_url}: {e}"))
}

impl Partitioned {
    /// The pair (not started): pages of 250 events taking 50 ms, so that a cut lands
    /// mid-backfill; requests time out after 1 s and are tried twice, so that a cut API fails a
    /// cycle within seconds. Each replica's config points at its own proxies.
    async fn new() -> Partitioned {
        let mut ha = Ha::new(
            EVENTS,
            |c| {
                c.shuffle = true;
                c.page_latency = ms(50);
            },
            &format!(
                "page_size: 250\nmax_events_per_window: {WINDOW}\nrequest_timeout_in_seconds: 1\nmax_retries: 1"
            ),
            TTL,
        )
        .await;
        // The history check replays the append-only file: it must not be rewritten meanwhile.
        ha.redis
            .cli(&["CONFIG", "SET", "auto-aof-rewrite-percentage", "0"]);
        let rsyslog = Rsyslog::start(&ha.env.dir, "rsyslog", Listen::Tcp).await;
        edit_config(
            &ha.env,
            "outputs:\n",
            &format!(
                "outputs:\n  relay:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: {}\n      confirm_timeout_in_seconds: 10\n",
                rsyslog.port
            ),
        );
        let shared = std::fs::read_to_string(ha.env.config_path()).unwrap();
        let redis_target: SocketAddr = ha.redis.address().parse().unwrap();
        let mut links = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let l = Links {
                redis: NetProxy::start(redis_target).await,
                web: NetProxy::start(address(&ha.env.web.base_url())).await,
                url: NetProxy::start(address(&ha.env.url.base_url())).await,
            };
            let config = ha.env.path(&format!("config-{name}.yaml"));
            std::fs::write(&config, own_config(&shared, &ha, &l)).unwrap();
            ha.replicas[i] = Replica::of(name, &config, ha.env.dir.path());
            links.push(l);
        }
        let links: [Links; 2] = links.try_into().ok().unwrap();
        Partitioned { ha, links, rsyslog }
    }

    /// a holds both leases and has delivered, b stands by.
    async fn a_holds_both_and_b_stands_by(&mut self) {
        self.ha.replicas[0].start();
        for s in SERVICES {
            assert_eq!(self.ha.holder(s).await, 0);
        }
        self.ha
            .wait_for("nothing delivered", Duration::from_secs(30), |ha| {
                !(ha.delivered(WEB) < WINDOW || ha.delivered(URL) < WINDOW)
            })
            .await;
        self.ha.replicas[1].start();
        self.ha
            .wait_for("b never stood by", Duration::from_secs(20), |ha| {
                count(&ha.replicas[1].log(), "; standing by.") >= 2
            })
            .await;
        for s in SERVICES {
            assert!(
                self.ha.delivered(s) < self.ha.expected[s].len(),
                "{s}: the backfill ended before the cut: make it longer"
            );
        }
    }

    /// Cuts a from Redis just as it sends a state write (its next window's commit),
    /// so that the write is held by the partition and reaches Redis only at the heal, after b
    /// took over: the fence must refuse it. Returns the moment of the cut.
    async fn cut_a_from_redis_mid_commit(&self) -> Instant {
        let proxy = &self.links[0].redis;
        proxy.blackhole_at_request_with(STATE_WRITE_MARK);
        tokio::time::timeout(Duration::from_secs(20), proxy.reached(Mode::Blackhole))
            .await
            .unwrap_or_else(|_| panic!("a sent no state write in 20 s:\n{}", self.ha.logs()));
        Instant::now()
    }

    /// Waits until another token than `cut_tokens`' holds each lease and has committed past the
    /// checkpoint at the cut; returns the time from `cut` to that commit, per service (`None`:
    /// not within `limit`).
    async fn takeovers(
        &self,
        cut: Instant,
        cut_tokens: &[String; 2],
        limit: Duration,
    ) -> [Option<Duration>; 2] {
        let at_cut = SERVICES.map(|s| self.ha.checkpoint(s));
        let mut times = [None, None];
        Wait::new(
            "both services taken over",
            limit.saturating_sub(cut.elapsed()),
        )
        .every(ms(20))
        .try_until(|| {
            for (i, s) in SERVICES.into_iter().enumerate() {
                if times[i].is_none()
                    && self.ha.lease(s).is_some_and(|t| t != cut_tokens[i])
                    && self.ha.checkpoint(s) > at_cut[i]
                {
                    times[i] = Some(cut.elapsed());
                }
            }
            times.iter().all(Option::is_some)
        })
        .await;
        times
    }

    /// [`Self::takeovers`] within 20 s, asserting that b committed both services by then.
    async fn taken_over(&self, cut: Instant, cut_tokens: &[String; 2]) -> [Option<Duration>; 2] {
        let times = self
            .takeovers(cut, cut_tokens, Duration::from_secs(20))
            .await;
        for (s, t) in SERVICES.iter().zip(&times) {
            assert!(
                t.is_some(),
                "{s}: b did not commit within 20 s of the cut:\n{}",
                self.ha.logs()
            );
        }
        times
    }

    /// Waits until both outputs hold every event and b has stayed idle for a while, then stops
    /// both replicas.
    async fn finish(&mut self) {
        Wait::new("both outputs complete", Duration::from_secs(60))
            .showing(|| self.ha.logs())
            .until(|| match self.ha.complete() && self.rsyslog_has_all() {
                true => Ok(()),
                false => Err(format!(
                    "file: {} of {} and {} of {}",
                    self.ha.delivered(WEB),
                    self.ha.expected[WEB].len(),
                    self.ha.delivered(URL),
                    self.ha.expected[URL].len()
                )),
            })
            .await;
        // A stale holder would write after this point: give it a lease's time to do so.
        tokio::time::sleep(Duration::from_secs(TTL.into())).await;
        self.ha.stop_all().await;
    }

    fn rsyslog_has_all(&self) -> bool {
        let got = bodies_per_table(&self.rsyslog.received());
        SERVICES.iter().all(|s| {
            got.get(table(s))
                .is_some_and(|g| differences(g, &self.ha.expected[s]).0 == 0)
        })
    }

    /// Every output's history: the file exact, rsyslog complete with at most `WINDOW` re-sent
    /// per takeover; the commit history in Redis as the module doc says. Returns the records
    /// re-sent into rsyslog per service.
    fn check_histories(&self) -> [usize; 2] {
        self.check_histories_with(0)
    }

    /// [`Self::check_histories`], with `failed_commits` more windows that may be re-sent per
    /// service (a commit that failed is a window delivered again, as after a takeover).
    fn check_histories_with(&self, failed_commits: usize) -> [usize; 2] {
        self.ha.env.assert_exactly_once();
        let history = History::replay(&self.ha.redis.dir);
        let got = bodies_per_table(&self.rsyslog.received());
        SERVICES.map(|s| {
            let commits = history.commits(s);
            commits.check(s);
            let takeovers = commits.runs().len().saturating_sub(1);
            let (missing, extra) = differences(&got[table(s)], &self.ha.expected[s]);
            assert_eq!(missing, 0, "{s}: {missing} events never reached rsyslog");
            assert!(
                extra <= WINDOW * (takeovers + failed_commits),
                "{s}: {extra} records re-sent into rsyslog, above one window ({WINDOW}) per takeover ({takeovers}) or failed commit ({failed_commits})"
            );
            extra
        })
    }
}

/// `shared` (the config both would read) with this replica's proxies instead of Redis and the
/// API hosts.
fn own_config(shared: &str, ha: &Ha, links: &Links) -> String {
    let port = |p: &NetProxy| p.address().rsplit_once(':').unwrap().1.to_owned();
    let redis_line = format!("      port: {}\n      db: 0\n", ha.redis.port);
    assert!(shared.contains(&redis_line), "{shared}");
    shared
        .replace(
            &redis_line,
            &format!("      port: {}\n      db: 0\n", port(&links.redis)),
        )
        .replace(
            &ha.env.web.base_url(),
            &format!("http://{}", links.web.address()),
        )
        .replace(
            &ha.env.url.base_url(),
            &format!("http://{}", links.url.address()),
        )
}

/// The lease tokens in Redis now (each must be there).
fn tokens(ha: &Ha) -> [String; 2] {
    SERVICES.map(|s| ha.lease(s).expect("a held lease is in Redis"))
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// Scenario 1: a is cut from Redis but not from the API, just as it sends a state write. It
/// cannot renew nor commit; b takes both leases when they expire and resumes from a's last
/// commit. a's write, held by the partition, reaches Redis at the heal and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_cut_from_redis_is_replaced_and_no_window_is_committed_twice() {
    let mut p = Partitioned::new().await;
    p.a_holds_both_and_b_stands_by().await;
    let a_tokens = tokens(&p.ha);
    let cut = p.cut_a_from_redis_mid_commit().await;
    let times = p.taken_over(cut, &a_tokens).await;
    p.links[0].heal();
    p.finish().await;
    let resent = p.check_histories();
    eprintln!(
        "partition (holder cut from Redis): cut to b's first commit {} / {}; re-sent into rsyslog {resent:?}; file exact",
        seconds(times[0]),
        seconds(times[1])
    );
}

/// Scenario 2: a is cut from the API but not from Redis. Its cycles fail; it must hand its
/// leases over to b, which is healthy (issue 21 §1's health-aware sharding), rather than keep
/// them and stall both services until the API heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_cut_from_the_api_hands_over_and_nothing_is_lost() {
    let mut p = Partitioned::new().await;
    p.a_holds_both_and_b_stands_by().await;
    let a_tokens = tokens(&p.ha);
    let cut = Instant::now();
    p.links[0].cut_api();
    let limit = Duration::from_secs(30);
    let times = p.takeovers(cut, &a_tokens, limit).await;
    let stalled: Vec<_> = SERVICES
        .iter()
        .zip(&times)
        .filter(|(_, t)| t.is_none())
        .map(|(s, _)| *s)
        .collect();
    p.links[0].heal();
    eprintln!(
        "partition (holder cut from the API): cut to b's first commit {} / {}",
        seconds(times[0]),
        seconds(times[1])
    );
    assert!(
        stalled.is_empty(),
        "nobody pulled {stalled:?} for {limit:?} after the holder was cut from the API (a kept the lease):\n{}",
        p.ha.logs()
    );
    p.finish().await;
    let resent = p.check_histories();
    eprintln!("partition (holder cut from the API): re-sent into rsyslog {resent:?}; file exact");
}

/// Scenario 3: a is cut from Redis (as it sends a state write) and from the API; b takes both
/// leases over; a is healed while b holds them. a's held write reaches Redis and is refused; a
/// learns it lost the leases and stands by; b completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_cut_from_both_and_healed_stands_by_and_no_window_is_committed_twice() {
    let mut p = Partitioned::new().await;
    p.a_holds_both_and_b_stands_by().await;
    let a_tokens = tokens(&p.ha);
    let cut = p.cut_a_from_redis_mid_commit().await;
    p.links[0].cut_api();
    let times = p.taken_over(cut, &a_tokens).await;
    // b holds both leases now (and keeps them, backfill done or not): the heal lands in b's
    // tenure, which is what this scenario is about.
    let at_heal = SERVICES.map(|s| p.ha.delivered(s));
    p.links[0].heal();
    p.ha.wait_for("a did not notice", Duration::from_secs(20), |ha| {
        count(&ha.replicas[0].log(), "Lost the lease of ") >= 2
    })
    .await;
    p.finish().await;
    let resent = p.check_histories();
    eprintln!(
        "partition (holder cut from both, healed): cut to b's first commit {} / {}; file lines at the heal {at_heal:?} of {EVENTS}; re-sent into rsyslog {resent:?}; file exact",
        seconds(times[0]),
        seconds(times[1])
    );
}

/// Scenario 4, one way: a's requests reach Redis but Redis's replies never reach a (a
/// stateful firewall dropping the return path). a cannot see a renewal succeed, so it must stop
/// delivering; its renewals still land, so they must also stop extending the lease, or b can
/// never take over and both services stall for as long as the partition lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_deaf_to_redis_is_replaced_and_no_window_is_committed_twice() {
    let mut p = Partitioned::new().await;
    p.a_holds_both_and_b_stands_by().await;
    let a_tokens = tokens(&p.ha);
    let cut = Instant::now();
    p.links[0].redis.hold_replies();
    let limit = Duration::from_secs(20);
    let times = p.takeovers(cut, &a_tokens, limit).await;
    let renewed = a_tokens
        .iter()
        .zip(SERVICES)
        .filter(|(t, s)| p.ha.lease(s).as_ref() == Some(*t))
        .count();
    p.links[0].heal();
    eprintln!(
        "partition (holder deaf to Redis): cut to b's first commit {} / {}",
        seconds(times[0]),
        seconds(times[1])
    );
    for (s, t) in SERVICES.iter().zip(&times) {
        assert!(
            t.is_some(),
            "{s}: b did not commit within {limit:?} of the cut; {renewed} of 2 leases still a's (its unseen renewals kept them):\n{}",
            p.ha.logs()
        );
    }
    p.finish().await;
    let resent = p.check_histories();
    eprintln!("partition (holder deaf to Redis): re-sent into rsyslog {resent:?}; file exact");
}

/// Scenario 5, a short cut from Redis (less than the TTL) as a sends a commit: a keeps its
/// leases. It gives that commit up (timed out), and after the heal commits the window again and
/// the next ones on a new connection. The old connection's bytes arrive only then, as TCP's
/// retransmissions of a connection given up on do (they back off exponentially): the held
/// commit is a's own token's, so the fence lets it through, and it must not move the
/// checkpoint back under a's later commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_delayed_past_later_ones_never_moves_the_checkpoint_back() {
    let mut p = Partitioned::new().await;
    p.a_holds_both_and_b_stands_by().await;
    let a_tokens = tokens(&p.ha);
    p.cut_a_from_redis_mid_commit().await;
    let at_cut = SERVICES.map(|s| p.ha.checkpoint(s));
    // Past the write's timeout (a third of the TTL), well within the lease.
    tokio::time::sleep(ms(900)).await;
    p.links[0].redis.heal_new_connections();
    // a commits at least two more windows of each service (the held one again, and the next).
    let mut seen: [Vec<_>; 2] = [vec![at_cut[0]], vec![at_cut[1]]];
    p.ha.wait_for(
        "a to commit two windows of each service after the heal",
        Duration::from_secs(20),
        |ha| {
            for (i, s) in SERVICES.into_iter().enumerate() {
                let now = ha.checkpoint(s);
                if now > *seen[i].last().unwrap() {
                    seen[i].push(now);
                }
            }
            seen.iter().all(|s| s.len() >= 3)
        },
    )
    .await;
    assert_eq!(
        tokens(&p.ha),
        a_tokens,
        "the cut outlived a's leases: make it shorter"
    );
    p.links[0].redis.release_old_connections();
    p.finish().await;
    let resent = p.check_histories_with(1);
    eprintln!(
        "partition (a commit delayed past later ones): re-sent into rsyslog {resent:?}; file exact"
    );
}

/// What Redis's append-only file says happened to the leases and states, in order.
struct History {
    /// Per service: (the lease's token when the state was stored, its checkpoint).
    commits: BTreeMap<String, Vec<(String, String)>>,
}

/// One service's commits.
struct Commits(Vec<(String, String)>);

impl History {
    /// Replays the incremental append-only files of the Redis in `dir` (Redis 7's
    /// `appendonlydir/`, in the manifest's order).
    fn replay(dir: &Path) -> History {
        let aof = dir.join("appendonlydir");
        let manifest = std::fs::read_to_string(aof.join("appendonly.aof.manifest")).unwrap();
        let mut leases: BTreeMap<String, String> = BTreeMap::new();
        let mut commits: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for line in manifest.lines().filter(|l| l.contains("type i")) {
            let file = line.split(' ').nth(1).unwrap();
            let bytes = std::fs::read(aof.join(file)).unwrap();
            for cmd in resp_commands(&bytes) {
                apply(&cmd, &mut leases, &mut commits);
            }
        }
        History { commits }
    }

    fn commits(&self, service: &str) -> Commits {
        Commits(
            self.commits
                .get(&redis_key(service, "state"))
                .cloned()
                .unwrap_or_default(),
        )
    }
}

/// One command's effect on the lease holders, and the commits it stores. A lease `SET` over
/// another live token is two holders.
fn apply(
    cmd: &[String],
    leases: &mut BTreeMap<String, String>,
    commits: &mut BTreeMap<String, Vec<(String, String)>>,
) {
    match cmd[0].to_ascii_uppercase().as_str() {
        "SET" if cmd[1].ends_with(":lease") => {
            if let Some(held) = leases.get(&cmd[1]).filter(|t| **t != cmd[2]) {
                panic!(
                    "two holders: {} taken by {} while {held} held it",
                    cmd[1], cmd[2]
                );
            }
            leases.insert(cmd[1].clone(), cmd[2].clone());
        }
        "SET" if cmd[1].ends_with(":state") => {
            let lease = cmd[1].replace(":state", ":lease");
            let holder = leases
                .get(&lease)
                .cloned()
                .unwrap_or_else(|| panic!("{} stored while nobody held {lease}", cmd[1]));
            let doc: serde_json::Value = serde_json::from_str(&cmd[2]).unwrap();
            let checkpoint = doc["checkpoint_in_utc"].as_str().unwrap().to_owned();
            commits
                .entry(cmd[1].clone())
                .or_default()
                .push((holder, checkpoint));
        }
        "DEL" | "UNLINK" => {
            for key in &cmd[1..] {
                leases.remove(key);
            }
        }
        _ => {}
    }
}

impl Commits {
    /// The tokens in the order they committed, one entry per run of commits.
    fn runs(&self) -> Vec<&str> {
        let mut runs: Vec<&str> = Vec::new();
        for (token, _) in &self.0 {
            if runs.last() != Some(&token.as_str()) {
                runs.push(token);
            }
        }
        runs
    }

    /// The checkpoint never went back, and no tenure committed again once another had.
    fn check(&self, service: &str) {
        assert!(!self.0.is_empty(), "{service}: no commit in the AOF");
        for pair in self.0.windows(2) {
            // ISO-8601 in UTC with a fixed layout: the text order is the time order.
            assert!(
                pair[1].1 >= pair[0].1,
                "{service}: the checkpoint went back (each pair: the lease's holder when stored, the checkpoint): {:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        let runs = self.runs();
        for (i, token) in runs.iter().enumerate() {
            assert!(
                !runs[i + 1..].contains(token),
                "{service}: {token} committed again after another holder: {runs:?}"
            );
        }
    }
}

/// The commands of a RESP stream (an append-only file), as text arguments.
fn resp_commands(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut at = 0;
    let line = |at: &mut usize| -> String {
        let end = bytes[*at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a RESP line")
            + *at;
        let text = String::from_utf8_lossy(&bytes[*at..end]).into_owned();
        *at = end + 2;
        text
    };
    while at < bytes.len() {
        let head = line(&mut at);
        // Redis 7 may annotate the file (`#TS:...`); only arrays are commands.
        let Some(n) = head.strip_prefix('*') else {
            continue;
        };
        let mut args = Vec::new();
        for _ in 0..n.parse::<usize>().unwrap() {
            let len: usize = line(&mut at)[1..].parse().unwrap();
            args.push(String::from_utf8_lossy(&bytes[at..at + len]).into_owned());
            at += len + 2;
        }
        commands.push(args);
    }
    commands
}
