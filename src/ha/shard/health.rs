//! Health-aware sharding (issue 21 §1): which of this replica's services it is able to pull, and
//! which services of the config nobody pulls.
//!
//! A replica that is alive but cannot work (broken egress, stale proxy credentials, a bad key
//! file on that node) still heartbeats. Counted as a replica like the others, it would keep the
//! healthy ones to their share, and nobody would pull what it cannot. So:
//!
//! - **Able.** Each service registers its health with the coordinator ([`Shard::register`]): not
//!   able until its setup passed, then able until [`UNABLE_AFTER`] pull cycles in a row failed.
//!   The heartbeat carries how many services the replica is able to pull; the others count a
//!   replica able to pull none as not live, and one holding all it is able to pull as having no
//!   room ([`super::Spread`]).
//! - **Giving up.** A holder whose cycles keep failing ([`Health::cycle_failed`]) hands its lease
//!   over after the failed cycle (a window boundary: nothing of the failed window is committed)
//!   when a healthy peer exists, and takes it again only after its setup check passes again (the
//!   service task runs it). Without a healthy peer it keeps the lease and keeps trying.
//! - **Unpulled.** Each heartbeat stamps, by Redis's clock, every lease this replica holds and
//!   pulls healthily (able, and its last cycle did not fail) into one shared hash, and reads back
//!   every stamp's age. A registered service whose stamp is older than `unpulled_after` (one
//!   never stamped: counted from its registration here) is unpulled, whatever the reason (no
//!   replica holds its lease, or its holder's cycles keep failing): `/ready` fails on every
//!   replica naming it, `isolation_collector_service_unpulled` is 1, and any replica able to pull
//!   it may take its lease regardless of the fair share (a rescue, which the share rules then
//!   never ask back, so that it does not bounce). This covers a replica able to pull some tenants
//!   and not others, which the able count alone cannot tell apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{lock, Shard};
use crate::metrics::ServiceMetrics;
use crate::state::redis::RedisStore;

/// Failed pull cycles in a row after which a service counts as unable (and its lease is handed
/// over, when a healthy peer exists). Three, not one: a cycle fails for one bad answer after its
/// retries, and a hand-over costs the next holder a `pre_pull`; with the default retries a cycle
/// fails in well under a minute, so three take minutes at most.
pub const UNABLE_AFTER: u32 = 3;

/// The health of one service of this replica.
pub(super) struct KeyHealth {
    /// Its setup passed (since the last time it gave its lease up).
    setup_passed: bool,
    /// Pull cycles that failed in a row.
    failed_cycles: u32,
    /// When it registered: a service never stamped counts as unpulled from then.
    since: Instant,
    /// Whether it was reported unpulled (so that the change is logged once).
    unpulled: bool,
    metrics: ServiceMetrics,
}

impl KeyHealth {
    fn able(&self) -> bool {
        self.setup_passed && self.failed_cycles < UNABLE_AFTER
    }

    /// Able, and its last cycle (if any) did not fail.
    fn pulls_healthily(&self) -> bool {
        self.setup_passed && self.failed_cycles == 0
    }
}

/// A service's registration with the coordinator: its health counts until dropped.
pub struct Registration(Health);

/// The handle through which a service reports its setup and its cycles.
#[derive(Clone)]
pub struct Health {
    shard: Arc<Shard>,
    key: String,
}

impl Registration {
    pub fn health(&self) -> Health {
        self.0.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut view = lock(&self.0.shard.view);
        view.health.remove(&self.0.key);
        view.unpulled.remove(&self.0.key);
    }
}

impl Health {
    fn update<T>(&self, f: impl FnOnce(&mut KeyHealth) -> T) -> Option<T> {
        lock(&self.shard.view).health.get_mut(&self.key).map(f)
    }

    /// The setup check passed (`true`), or the service gave its lease up and must pass it again
    /// before taking it (`false`).
    pub fn setup_passed(&self, passed: bool) {
        self.update(|h| {
            h.setup_passed = passed;
            h.failed_cycles = 0;
        });
    }

    pub fn cycle_succeeded(&self) {
        self.update(|h| h.failed_cycles = 0);
    }

    /// A pull cycle failed: whether the service is to give its lease up now ([`UNABLE_AFTER`]
    /// failures in a row, and another live replica able to pull).
    pub fn cycle_failed(&self) -> bool {
        let failed = self.update(|h| {
            h.failed_cycles += 1;
            h.failed_cycles
        });
        failed.is_some_and(|n| n >= UNABLE_AFTER) && self.shard.healthy_peer()
    }
}

impl Shard {
    /// Registers `key` (a service of this replica): not able until its setup passes.
    pub fn register(self: &Arc<Self>, key: &str, metrics: ServiceMetrics) -> Registration {
        let health = KeyHealth {
            setup_passed: false,
            failed_cycles: 0,
            since: Instant::now(),
            unpulled: false,
            metrics,
        };
        lock(&self.view).health.insert(key.to_owned(), health);
        Registration(Health {
            shard: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Reports a registered service that nobody pulled for longer than `after`.
    pub fn watch_unpulled(&self, after: Duration) {
        lock(&self.view).unpulled_after = Some(after);
    }

    /// How many services this replica is able to pull: all but the registered ones that are not
    /// able (a coordinator nobody registers with counts every service able).
    pub fn able_count(&self) -> usize {
        let view = lock(&self.view);
        let unable = view.health.values().filter(|h| !h.able()).count();
        view.spread.services.saturating_sub(unable)
    }

    /// Whether another live replica is able to pull (the last heartbeat counted it).
    fn healthy_peer(&self) -> bool {
        !lock(&self.view).spread.others.is_empty()
    }

    /// The leases this replica holds and pulls healthily.
    fn pulling(&self) -> Vec<String> {
        let view = lock(&self.view);
        let healthy = |key: &String| view.health.get(key).is_none_or(KeyHealth::pulls_healthily);
        let taken = view.claims.values().filter(|c| c.taken);
        taken.map(|c| c.key.clone()).filter(healthy).collect()
    }

    /// Stamps the leases pulled healthily here, and judges every registered service by the
    /// stamps' ages (an unreachable Redis keeps the last judgement).
    pub(super) async fn stamp_and_judge(&self, redis: &RedisStore) {
        let Some(after) = lock(&self.view).unpulled_after else {
            return;
        };
        if let Ok(ages) = redis.stamp_pulled(&self.pulling(), after).await {
            self.judge(&ages, after);
        }
    }

    /// Marks the registered services unpulled whose stamp is older than `after` (`ages`: by key),
    /// and the others pulled.
    fn judge(&self, ages: &HashMap<String, Duration>, after: Duration) {
        let mut view = lock(&self.view);
        let view = &mut *view;
        for (key, h) in &mut view.health {
            let age = ages.get(key).copied().unwrap_or(h.since.elapsed());
            let unpulled = age > after;
            if unpulled {
                view.unpulled.insert(key.clone());
            } else {
                view.unpulled.remove(key);
            }
            if unpulled == h.unpulled {
                continue;
            }
            h.unpulled = unpulled;
            if unpulled {
                let why = format!(
                    "unpulled: no replica has pulled it for {:.0} s (the bound, unpulled_after_in_seconds, is {:.0} s): no replica holds its lease, or its holder's cycles keep failing",
                    age.as_secs_f64(),
                    after.as_secs_f64()
                );
                warn!(
                    "No replica has pulled {key} for {:.0} s: its events are not collected, and the API keeps them only for a limited time. Any replica able to pull it may now take its lease; check each replica's log for its setup or pull errors.",
                    age.as_secs_f64()
                );
                h.metrics.unpulled(Some(why));
            } else {
                info!("{key} is pulled again.");
                h.metrics.unpulled(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::shard::{Peer, Spread};
    use crate::service::Service;
    use crate::state::redis::Heartbeat;

    fn beat(replica: &str, held: usize, able: Option<usize>) -> Heartbeat {
        Heartbeat {
            replica: replica.to_owned(),
            held,
            able,
        }
    }

    fn metrics() -> ServiceMetrics {
        ServiceMetrics::detached(Service::UrlIsolation)
    }

    #[test]
    fn a_replica_able_to_pull_nothing_is_not_counted_live() {
        let shard = Shard::new("a".into(), 2, Duration::from_secs(3));
        // b heartbeats but its setup never passed: a is alone, and takes both.
        shard.observe(&[beat("a", 0, Some(2)), beat("b", 0, Some(0))]);
        assert_eq!(shard.live(), 1);
        let x = shard.claim("x").unwrap();
        x.taken();
        assert!(shard.claim("y").is_some(), "the second service too");
    }

    #[test]
    fn a_replica_without_room_does_not_keep_the_others_to_their_share() {
        // 4 services, 2 replicas: even share 2. b holds 1 and is able to pull only 1: it needs
        // no more, so a may take its third lease (within the slack).
        let full = Spread {
            services: 4,
            live: 2,
            others: vec![Peer {
                held: 1,
                able: Some(1),
            }],
        };
        assert!(full.may_take(2, false));
        assert_eq!(full.to_hand_over(3, 0), 0);
        // Able to pull 3, it has room: a stops at the even share and hands the third over.
        let room = Spread {
            others: vec![Peer {
                held: 0,
                able: Some(3),
            }],
            ..full.clone()
        };
        assert!(!room.may_take(2, false));
        assert_eq!(room.to_hand_over(3, 0), 1);
        // An older replica that does not say is able to pull everything.
        let old = Spread {
            others: vec![Peer {
                held: 1,
                able: None,
            }],
            ..full
        };
        assert!(!old.may_take(2, false));
    }

    #[test]
    fn the_able_count_follows_setup_and_failing_cycles() {
        let shard = Shard::new("a".into(), 3, Duration::from_secs(3));
        assert_eq!(shard.able_count(), 3, "nobody registered: all able");
        let x = shard.register("x", metrics());
        let _y = shard.register("y", metrics());
        assert_eq!(shard.able_count(), 1, "x and y have not passed setup");
        let health = x.health();
        health.setup_passed(true);
        assert_eq!(shard.able_count(), 2);
        // No peer: failing cycles never give the lease up, but x counts unable.
        for _ in 0..UNABLE_AFTER {
            assert!(!health.cycle_failed());
        }
        assert_eq!(shard.able_count(), 1);
        health.cycle_succeeded();
        assert_eq!(shard.able_count(), 2);
        // With a healthy peer, the third failure in a row gives it up.
        shard.observe(&[beat("a", 1, Some(2)), beat("b", 0, Some(2))]);
        assert!(!health.cycle_failed());
        assert!(!health.cycle_failed());
        assert!(health.cycle_failed());
        drop(x);
        assert_eq!(
            shard.able_count(),
            2,
            "a registration gone no longer counts"
        );
    }

    #[test]
    fn a_service_nobody_pulls_is_rescued_outside_the_share() {
        let shard = Shard::new("a".into(), 4, Duration::from_secs(3));
        let regs: Vec<Registration> = ["w", "x", "y", "z"]
            .iter()
            .map(|k| shard.register(k, metrics()))
            .collect();
        for r in &regs {
            r.health().setup_passed(true);
        }
        // b holds 1 and is able to pull 2: it has room, so a stops at the even share (2).
        shard.observe(&[beat("a", 0, Some(4)), beat("b", 1, Some(2))]);
        let claims: Vec<Claim> = ["w", "x"].iter().map(|k| taken(&shard, k)).collect();
        assert!(shard.claim("y").is_none(), "b is below the even share");
        // z was stamped long ago by b, which cannot pull it: unpulled; y is pulled by b.
        let after = Duration::from_secs(5);
        let ages = HashMap::from([
            ("y".to_owned(), Duration::from_secs(1)),
            ("z".to_owned(), Duration::from_secs(60)),
            ("w".to_owned(), Duration::ZERO),
            ("x".to_owned(), Duration::ZERO),
        ]);
        shard.judge(&ages, after);
        assert!(
            shard.claim("y").is_none(),
            "y is pulled: the share rules hold"
        );
        let z = taken(&shard, "z");
        assert_eq!(shard.held(), 3);
        // b is two below the even share now, but the rescued lease is not asked back.
        let asked = shard.observe(&[beat("a", 3, Some(4)), beat("b", 0, Some(2))]);
        assert!(asked.is_empty(), "{asked:?}");
        drop((claims, z));
    }

    fn taken(shard: &Arc<Shard>, key: &str) -> Claim {
        let c = shard.claim(key).unwrap_or_else(|| panic!("{key} claimed"));
        c.taken();
        c
    }

    use crate::ha::shard::Claim;
}
