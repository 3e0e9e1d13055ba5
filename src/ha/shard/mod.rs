//! Sharding: with Redis persistence, the replicas of a deployment share the services' leases
//! out evenly, and share them out again when one joins or dies.
//!
//! Each process is one replica, named as its lease tokens name it (`<hostname>:<pid>`). Its
//! [`Shard`] is the process-wide coordinator that every service's [`crate::ha::lease::Lease`] asks:
//!
//! - **Heartbeats.** [`beat_every`] writes the replica's heartbeat into Redis every TTL/3
//!   ([`RedisStore::heartbeat`]: live for one TTL by Redis's clock, with the number of leases it
//!   holds) and reads back every live replica's. A replica that stops cleanly removes its
//!   heartbeat; one that dies is gone from the count a TTL later, when its leases expire too. A
//!   failed heartbeat (Redis down) is not fatal: the last view stays, and no lease can be taken
//!   meanwhile anyway.
//! - **Fair share.** With `services` in the config and `live` replicas, the even share is
//!   ceil(services / live) and the fair share that plus [`SLACK`]. A standby service asks
//!   [`Shard::claim`] before each try to take its lease: no claim while the replica holds its fair
//!   share, nor above the even share while another live replica is below it (it needs them more),
//!   nor, for a lease this replica just handed over, while another replica is below the even
//!   share ([`Shard::claim`] has the rules). A claim counts as held from the moment it is made, so
//!   two services of one replica never overshoot together; a failed take drops it.
//! - **Hand-over.** After each heartbeat the replica compares what it holds with the fair share
//!   ([`Shard::observe`]): above it, it asks the most recently taken leases to be handed over; at
//!   most one above the even share while another replica is two below it, one at a time. The
//!   service hands its lease over at its next window boundary (after a window is committed,
//!   before the next one starts, or between cycles): the window in flight is never abandoned for
//!   it. The released lease is then left to the others for a TTL.
//!
//! - **Health** ([`health`], issue 21 §1). Only replicas able to pull count: the heartbeat also
//!   says how many services the replica is able to pull (setup passed, cycles not failing); a
//!   replica able to pull none is not counted live at all, and "another replica below the even
//!   share" counts only replicas with room (holding fewer than they are able to pull). A holder
//!   whose cycles keep failing hands its lease over when a healthy peer exists, and a service that
//!   nobody pulls is reported and may be rescued by any replica able to pull it.
//!
//! So the spread converges to the even share within one lease either way, as leases are handed
//! over at window boundaries, and nothing is delivered twice or lost: a hand-over is a release,
//! after which the next holder resumes from the committed state, as after a SIGTERM.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::state::redis::{Heartbeat, RedisStore};

mod health;

pub use health::{Health, Registration, UNABLE_AFTER};

/// How many leases above the even share (ceil(services / live)) a replica may hold.
///
/// Why not zero: the replicas see each other through heartbeats that are up to TTL/3 old, and
/// each sees a replica join or die at its own moment. With room for one more each, the replicas
/// together can hold `live` leases more than there are services, so every lease finds a taker
/// while their views disagree (a dead replica still counted live shrinks the others' shares
/// until its heartbeat expires), and a replica one lease above the even share keeps it instead of
/// handing leases back and forth. Why not more: each extra lease is a lease the spread may stay
/// uneven by.
pub const SLACK: usize = 1;

/// ceil(services / live): the share that spreads the services evenly.
pub fn even_share(services: usize, live: usize) -> usize {
    services.div_ceil(live.max(1))
}

/// The most leases a replica may hold: the even share plus [`SLACK`].
pub fn fair_share(services: usize, live: usize) -> usize {
    even_share(services, live) + SLACK
}

/// What a replica knows of the deployment: the services, the live replicas and what the others
/// hold (as their last heartbeats said).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    pub services: usize,
    /// Live replicas, this one included (at least 1).
    pub live: usize,
    /// Each other live replica (one able to pull at least one service).
    pub others: Vec<Peer>,
}

/// Another live replica, as its last heartbeat said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The leases it holds.
    pub held: usize,
    /// How many services it is able to pull; `None` from a replica that does not say (an older
    /// version): able to pull them all.
    pub able: Option<usize>,
}

impl Peer {
    /// Whether it could pull one more service: it holds fewer than it is able to pull.
    fn has_room(&self) -> bool {
        self.able.is_none_or(|able| self.held < able)
    }
}

impl Spread {
    fn even(&self) -> usize {
        even_share(self.services, self.live)
    }

    /// Whether another live replica holds fewer than `than` leases and has room for more (one
    /// that holds all it is able to pull does not need leases).
    fn another_below(&self, than: usize) -> bool {
        self.others.iter().any(|p| p.held < than && p.has_room())
    }

    /// Whether a replica holding `held` may take one more lease (`cooling`: one it handed over
    /// within a TTL).
    pub fn may_take(&self, held: usize, cooling: bool) -> bool {
        let even = self.even();
        if held >= even + SLACK {
            return false;
        }
        // Another replica below the even share needs leases more than this one does.
        !(self.another_below(even) && (held >= even || cooling))
    }

    /// How many more leases a replica holding `held`, `pending` of which it already asked to hand
    /// over, should hand over now.
    pub fn to_hand_over(&self, held: usize, pending: usize) -> usize {
        let even = self.even();
        let over = held.saturating_sub(even + SLACK);
        if over > 0 {
            return over.saturating_sub(pending);
        }
        // Within the slack, but another replica is two below the even share: one lease, once
        // the last hand-over is done (the others' counts lag by up to TTL/3).
        let starving = self.another_below(even.saturating_sub(1));
        usize::from(pending == 0 && held > even && starving)
    }
}

/// The process-wide coordinator of the leases this replica holds.
pub struct Shard {
    replica: String,
    /// How long a handed-over lease is left to the others: one TTL, which gives them time to
    /// see this replica's lower count (a heartbeat, TTL/3) and to try the lease (every TTL/10).
    cooldown: Duration,
    /// The heartbeat period, TTL/3.
    period: Duration,
    view: Mutex<View>,
}

struct View {
    spread: Spread,
    next_claim: u64,
    /// The claims, in the order they were made (the most recent last).
    claims: BTreeMap<u64, ClaimEntry>,
    /// Leases handed over, and when.
    handed_over: HashMap<String, Instant>,
    /// The health of each service of this replica that registered ([`Shard::register`]).
    health: HashMap<String, health::KeyHealth>,
    /// The services seen unpulled at the last heartbeat (any able replica may rescue them).
    unpulled: HashSet<String>,
    /// How long a service may go unpulled before it is reported (`None`: not judged).
    unpulled_after: Option<Duration>,
}

struct ClaimEntry {
    key: String,
    /// The take succeeded (before that, only its try is counted).
    taken: bool,
    /// Claimed because nobody pulled the service: never asked to hand over by the share rules.
    rescued: bool,
    hand_over: CancellationToken,
}

impl View {
    fn held(&self) -> usize {
        self.claims.len()
    }

    /// The claims the share rules count: all but the rescued ones.
    fn shared(&self) -> usize {
        self.claims.values().filter(|c| !c.rescued).count()
    }

    fn pending(&self) -> usize {
        let asked = self.claims.values().filter(|c| c.hand_over.is_cancelled());
        asked.count()
    }
}

impl Shard {
    /// The coordinator of replica `replica` for `services` services, with the leases' `ttl`.
    /// Until its first heartbeat it counts itself alone.
    pub fn new(replica: String, services: usize, ttl: Duration) -> Arc<Shard> {
        Arc::new(Shard {
            replica,
            cooldown: ttl,
            period: ttl / 3,
            view: Mutex::new(View {
                spread: Spread {
                    services,
                    live: 1,
                    others: Vec::new(),
                },
                next_claim: 0,
                claims: BTreeMap::new(),
                handed_over: HashMap::new(),
                health: HashMap::new(),
                unpulled: HashSet::new(),
                unpulled_after: None,
            }),
        })
    }

    /// This replica's name in the heartbeats.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The number of services in the config (it changes with a reload).
    pub fn set_services(&self, services: usize) {
        lock(&self.view).spread.services = services;
    }

    /// Live replicas (this one included) as of the last heartbeat.
    pub fn live(&self) -> usize {
        lock(&self.view).spread.live
    }

    /// The most leases this replica may hold now.
    pub fn fair_share(&self) -> usize {
        let view = lock(&self.view);
        fair_share(view.spread.services, view.spread.live)
    }

    /// The leases this replica holds or is trying to take.
    pub fn held(&self) -> usize {
        lock(&self.view).held()
    }

    /// A claim on `key`'s lease if this replica may try to take it now (see [`Spread::may_take`];
    /// a lease it handed over is left to the others for a TTL while one of them is below the
    /// even share). A service nobody pulls may be claimed regardless of the share (a rescue).
    /// It counts as held until dropped.
    pub fn claim(self: &Arc<Self>, key: &str) -> Option<Claim> {
        let mut view = lock(&self.view);
        let cooldown = self.cooldown;
        view.handed_over.retain(|_, at| at.elapsed() < cooldown);
        let cooling = view.handed_over.contains_key(key);
        let rescued = view.unpulled.contains(key);
        if !rescued && !view.spread.may_take(view.shared(), cooling) {
            return None;
        }
        let id = view.next_claim;
        view.next_claim += 1;
        let hand_over = CancellationToken::new();
        let entry = ClaimEntry {
            key: key.to_owned(),
            taken: false,
            rescued,
            hand_over: hand_over.clone(),
        };
        view.claims.insert(id, entry);
        Some(Claim {
            shard: self.clone(),
            id,
            key: key.to_owned(),
            hand_over,
        })
    }

    /// Takes in what the last heartbeat said (every live replica, what it holds and is able to
    /// pull, this one included) and asks for the hand-overs it calls for. Returns the keys asked
    /// to hand over. A replica able to pull nothing is not counted.
    pub fn observe(&self, replicas: &[Heartbeat]) -> Vec<String> {
        let mut view = lock(&self.view);
        let others: Vec<Peer> = replicas
            .iter()
            .filter(|b| b.replica != self.replica && b.able != Some(0))
            .map(|b| Peer {
                held: b.held,
                able: b.able,
            })
            .collect();
        let live = others.len() + 1;
        if live != view.spread.live {
            info!(
                "Replicas: {live} live (was {}); the fair share of {} service(s) is now {} lease(s) per replica.",
                view.spread.live,
                view.spread.services,
                fair_share(view.spread.services, live)
            );
        }
        view.spread.live = live;
        view.spread.others = others;
        // A rescued lease is outside the share rules: asked to hand over, it would bounce.
        let n = view.spread.to_hand_over(view.shared(), view.pending());
        let mut asked = Vec::new();
        // The most recently taken first: the oldest tenures keep their warm state.
        for entry in view.claims.values().rev() {
            if asked.len() == n {
                break;
            }
            if entry.taken && !entry.rescued && !entry.hand_over.is_cancelled() {
                entry.hand_over.cancel();
                asked.push(entry.key.clone());
            }
        }
        for key in &asked {
            info!(
                "Handing over the lease of {key} at its next window boundary: this replica holds {} lease(s), the fair share is {} ({} live replica(s), {} service(s)).",
                view.held(),
                fair_share(view.spread.services, view.spread.live),
                view.spread.live,
                view.spread.services
            );
        }
        asked
    }

    /// Writes this replica's heartbeat (held and able counts) and takes in the answer, then
    /// stamps the leases it pulls healthily and judges which services nobody pulls; an
    /// unreachable Redis keeps the last view (the store logs the outage).
    pub async fn beat(&self, redis: &RedisStore) -> bool {
        let (held, able) = (self.held(), self.able_count());
        match redis.heartbeat(&self.replica, held, able).await {
            Ok(replicas) => {
                self.observe(&replicas);
                self.stamp_and_judge(redis).await;
                true
            }
            Err(_) => false,
        }
    }
}

/// Writes the replica's heartbeat every TTL/3, following it in `metrics`, until `stop`; then
/// removes the heartbeat, so that the others count this replica gone at once.
pub async fn beat_every(
    shard: Arc<Shard>,
    store: Arc<crate::state::StateStore>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let Some(redis) = store.redis() else { return };
    loop {
        shard.beat(redis).await;
        metrics.replicas(shard.live(), shard.fair_share());
        tokio::select! {
            _ = tokio::time::sleep(shard.period) => {}
            _ = stop.cancelled() => break,
        }
    }
    let _ = redis.depart(&shard.replica).await;
}

/// A replica's claim on one lease: counted as held until dropped.
pub struct Claim {
    shard: Arc<Shard>,
    id: u64,
    key: String,
    hand_over: CancellationToken,
}

impl Claim {
    /// The take succeeded: the lease may be asked to be handed over from now on.
    pub fn taken(&self) {
        if let Some(entry) = lock(&self.shard.view).claims.get_mut(&self.id) {
            entry.taken = true;
        }
    }

    /// Cancelled when the coordinator asks for the lease to be handed over.
    pub fn hand_over(&self) -> CancellationToken {
        self.hand_over.clone()
    }

    /// The lease was handed over (released): it is left to the others for a while.
    pub fn handed_over(self) {
        let at = Instant::now();
        lock(&self.shard.view)
            .handed_over
            .insert(self.key.clone(), at);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.shard.view).claims.remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(services: usize, others: &[usize]) -> Spread {
        let others = others.iter().map(|&held| Peer { held, able: None });
        Spread {
            services,
            live: others.len() + 1,
            others: others.collect(),
        }
    }

    /// Heartbeats of replicas that do not say what they are able to pull (all of it).
    fn beats(replicas: &[(&str, usize)]) -> Vec<Heartbeat> {
        let beat = |&(name, held): &(&str, usize)| Heartbeat {
            replica: name.to_owned(),
            held,
            able: None,
        };
        replicas.iter().map(beat).collect()
    }

    #[test]
    fn the_fair_share_is_the_even_share_plus_the_slack() {
        assert_eq!(fair_share(24, 3), 9);
        assert_eq!(fair_share(24, 2), 13);
        assert_eq!(fair_share(24, 5), 6);
        assert_eq!(fair_share(24, 1), 25);
        assert_eq!(fair_share(3, 4), 2);
        // No heartbeat answered yet: alone.
        assert_eq!(fair_share(24, 0), 25);
    }

    #[test]
    fn a_replica_takes_up_to_its_fair_share() {
        let s = spread(24, &[8, 8]);
        assert!(s.may_take(0, false));
        assert!(s.may_take(8, false));
        assert!(!s.may_take(9, false));
        assert!(!s.may_take(12, false));
    }

    #[test]
    fn a_replica_leaves_leases_to_one_below_the_even_share() {
        // The third replica holds 6: the others stop at the even share (8), and a lease they
        // handed over is left to it.
        let s = spread(24, &[9, 6]);
        assert!(!s.may_take(8, false));
        assert!(s.may_take(7, false));
        assert!(!s.may_take(7, true));
        // Nobody below the even share: the slack and a handed-over lease are free to take.
        let s = spread(24, &[8, 8]);
        assert!(s.may_take(7, true));
        assert!(s.may_take(8, true));
    }

    #[test]
    fn a_replica_above_its_fair_share_hands_the_excess_over() {
        // A third replica joined: 24 held here, fair share 9.
        let s = spread(24, &[0, 0]);
        assert_eq!(s.to_hand_over(24, 0), 15);
        assert_eq!(s.to_hand_over(24, 10), 5);
        assert_eq!(s.to_hand_over(24, 15), 0);
        assert_eq!(s.to_hand_over(9, 0), 1, "one for the starving replicas");
        assert_eq!(s.to_hand_over(8, 0), 0);
    }

    #[test]
    fn within_the_slack_a_replica_hands_one_over_to_a_starving_one() {
        assert_eq!(spread(24, &[9, 6]).to_hand_over(9, 0), 1);
        assert_eq!(spread(24, &[9, 6]).to_hand_over(9, 1), 0, "one at a time");
        assert_eq!(spread(24, &[9, 6]).to_hand_over(8, 0), 0, "not below even");
        // One below the even share is within the spread that slack allows.
        assert_eq!(spread(24, &[8, 7]).to_hand_over(9, 0), 0);
    }

    /// Three replicas in one process, with a map for Redis's leases: each round every replica
    /// heartbeats (what it holds), hands over what it was asked to, and tries every free lease it
    /// may claim, in a rotating order.
    struct Deployment {
        services: Vec<String>,
        /// lease -> (replica, claim)
        leases: HashMap<String, (usize, Claim)>,
        replicas: Vec<Option<Arc<Shard>>>,
    }

    impl Deployment {
        fn new(services: usize) -> Deployment {
            Deployment {
                services: (0..services).map(|i| format!("s{i}")).collect(),
                leases: HashMap::new(),
                replicas: Vec::new(),
            }
        }

        fn join(&mut self) -> usize {
            let name = format!("r{}", self.replicas.len());
            let shard = Shard::new(name, self.services.len(), Duration::from_secs(3));
            self.replicas.push(Some(shard));
            self.replicas.len() - 1
        }

        /// `kill -9`: its leases expire, its heartbeat goes.
        fn kill(&mut self, r: usize) {
            self.replicas[r] = None;
            self.leases.retain(|_, (holder, _)| *holder != r);
        }

        fn heartbeats(&self) -> Vec<Heartbeat> {
            let live = self.replicas.iter().flatten();
            let beat = |s: &Arc<Shard>| Heartbeat {
                replica: s.replica().to_owned(),
                held: s.held(),
                able: Some(s.able_count()),
            };
            live.map(beat).collect()
        }

        fn round(&mut self, n: usize) {
            let beats = self.heartbeats();
            for shard in self.replicas.iter().flatten() {
                shard.observe(&beats);
            }
            // Hand-overs at the window boundary.
            let asked: Vec<String> = self
                .leases
                .iter()
                .filter(|(_, (_, c))| c.hand_over().is_cancelled())
                .map(|(k, _)| k.clone())
                .collect();
            for key in asked {
                let (_, claim) = self.leases.remove(&key).unwrap();
                claim.handed_over();
            }
            let count = self.replicas.len();
            for i in 0..count {
                let r = (i + n) % count;
                let Some(shard) = self.replicas[r].clone() else {
                    continue;
                };
                for key in &self.services {
                    if self.leases.contains_key(key) {
                        continue;
                    }
                    if let Some(claim) = shard.claim(key) {
                        claim.taken();
                        self.leases.insert(key.clone(), (r, claim));
                    }
                }
            }
        }

        fn held(&self) -> Vec<usize> {
            let live = self.replicas.iter().flatten();
            live.map(|s| s.held()).collect()
        }

        fn settle(&mut self) -> Vec<usize> {
            for n in 0..20 {
                self.round(n);
            }
            assert_eq!(self.leases.len(), self.services.len(), "every lease held");
            self.held()
        }
    }

    fn within(held: &[usize], low: usize, high: usize) -> bool {
        held.iter().all(|&h| (low..=high).contains(&h))
    }

    #[test]
    fn replicas_that_join_and_die_end_evenly_spread() {
        let mut d = Deployment::new(24);
        d.join();
        assert_eq!(d.settle(), vec![24], "alone, it holds everything");
        d.join();
        d.join();
        let held = d.settle();
        assert!(within(&held, 7, 9), "{held:?}");
        d.kill(0);
        let held = d.settle();
        assert!(within(&held, 11, 13), "{held:?}");
        d.join();
        let held = d.settle();
        assert!(within(&held, 7, 9), "{held:?}");
    }

    #[test]
    fn a_dropped_claim_no_longer_counts() {
        let shard = Shard::new("r".into(), 2, Duration::from_secs(3));
        let a = shard.claim("a").unwrap();
        let b = shard.claim("b").unwrap();
        assert_eq!(shard.held(), 2);
        // The fair share of 2 services alone is 3: one more would be allowed, but a third
        // service does not exist; drop one (a failed take).
        drop(b);
        assert_eq!(shard.held(), 1);
        a.taken();
        // Another replica appears holding nothing: 1 each, fair share 2; nothing to hand over.
        let asked = shard.observe(&beats(&[("r", 1), ("q", 0)]));
        assert!(asked.is_empty(), "{asked:?}");
        assert_eq!(shard.live(), 2);
        assert_eq!(shard.fair_share(), 2);
    }

    #[test]
    fn the_most_recently_taken_lease_is_handed_over_first() {
        let shard = Shard::new("r".into(), 4, Duration::from_secs(3));
        let claims: Vec<Claim> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| {
                let c = shard.claim(k).unwrap();
                c.taken();
                c
            })
            .collect();
        // Three more replicas, holding nothing: even 1, fair 2: two to hand over, d then c.
        let beats = beats(&[("r", 4), ("p", 0), ("q", 0), ("s", 0)]);
        assert_eq!(shard.observe(&beats), vec!["d", "c"]);
        assert!(claims[3].hand_over().is_cancelled());
        assert!(!claims[1].hand_over().is_cancelled());
        // Asked already: not asked again.
        assert!(shard.observe(&beats).is_empty());
    }

    #[test]
    fn a_handed_over_lease_is_left_to_a_replica_below_the_even_share() {
        let shard = Shard::new("r".into(), 6, Duration::from_secs(3));
        let x = shard.claim("x").unwrap();
        x.taken();
        assert!(shard
            .observe(&beats(&[("r", 1), ("p", 0), ("q", 0)]))
            .is_empty());
        x.handed_over();
        assert_eq!(shard.held(), 0);
        assert!(shard.claim("x").is_none(), "left to the others");
        assert!(shard.claim("y").is_some());
        // Nobody below the even share (2): taken back.
        shard.observe(&beats(&[("r", 0), ("p", 3), ("q", 3)]));
        assert!(shard.claim("x").is_some());
    }
}
