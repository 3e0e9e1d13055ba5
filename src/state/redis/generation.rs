//! The store's generation marker: how a process learns that Redis forgot its keys.
//!
//! `<key_prefix>proofpoint_isolation:generation` holds a random id, created by the first process
//! that looks for it (atomically: one Lua script reads it and creates it if missing). It has no
//! TTL, like the states, so it lives and dies with them: a Redis restarted without persistence,
//! a `FLUSHDB`, an evicting `maxmemory-policy` or a failover to a replica that never got the keys
//! takes it too. Each process remembers the id it saw last ([`RedisStore::check_generation`],
//! at every tenure's start); one that finds it missing (then creates the next one) or changed
//! knows the store was wiped since: it says so once, counts it
//! (`isolation_collector_persistence_wiped_total`), and remembers when, for the checkpoint's
//! rules on a missing state (`crate::puller::checkpoint`).
//!
//! What it cannot tell: a process that starts after the wipe never saw the old generation; and
//! with `allkeys-*` eviction the marker and a state can be evicted one without the other.

use std::sync::Mutex;
use std::time::Duration;

use redis::Script;
use tokio::time::Instant;
use tracing::error;

use super::{lock, RedisStore};
use crate::state::StateError;

/// The generation, created if missing: returns the one in Redis after the call.
const GENERATION: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// What this process saw of the store's generations.
#[derive(Default)]
pub(super) struct Seen(Mutex<SeenState>);

#[derive(Default)]
struct SeenState {
    /// The generation seen last (`None`: never looked).
    generation: Option<String>,
    /// When this process last found the store wiped.
    wiped_at: Option<Instant>,
}

/// A wipe of the store that this process saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wipe {
    /// How long ago this process found it.
    pub age: Duration,
}

impl RedisStore {
    /// The key of the store's generation marker.
    pub fn generation_key(&self) -> String {
        format!("{}proofpoint_isolation:generation", self.prefix)
    }

    /// Reads the generation marker (creating it if missing) and compares it with the one this
    /// process saw last: a different one means the store was wiped since, which is logged once
    /// and counted. Returns the last wipe this process saw, if any.
    pub async fn check_generation(&self) -> Result<Option<Wipe>, StateError> {
        let key = self.generation_key();
        let next = format!("{:016x}", rand::random::<u64>());
        let script = Script::new(GENERATION);
        let now: String = self
            .call(|mut c| async move { script.key(key).arg(next).invoke_async(&mut c).await })
            .await?;
        let mut seen = lock(&self.generation.0);
        if let Some(before) = seen.generation.replace(now.clone()) {
            if before != now {
                seen.wiped_at = Some(Instant::now());
                self.report_wipe(&before, &now);
            }
        }
        Ok(seen.wiped_at.map(|at| Wipe { age: at.elapsed() }))
    }

    fn report_wipe(&self, before: &str, now: &str) {
        error!(
            "Redis at {} was wiped: its generation marker {} is {now}, not {before} as this process saw it last, so every key of the collector was lost (states, leases, dead letters). Likely causes: Redis restarted without persistence (no append-only file, no RDB snapshot), FLUSHDB or FLUSHALL, eviction under an evicting maxmemory-policy, or a failover to a replica that never got the keys. The cost: a service's state is written back by the replica that held it last (nothing is collected again); a service that no replica remembers is collected again from start_time_in_utc after {} seconds, and its events are delivered again. Run Redis with appendonly yes and maxmemory-policy noeviction.",
            self.address,
            self.generation_key(),
            (self.ttl * super::super::WIPE_GRACE_TTLS).as_secs()
        );
        if let Some(m) = self.metrics.get() {
            m.persistence_wiped();
        }
    }
}
