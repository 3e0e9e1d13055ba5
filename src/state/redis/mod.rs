//! The Redis store (Devo's `persistence: {type: redis}`), with the leases that make one process
//! at a time the writer of a service's state.
//!
//! Keys, with a hash tag so that a Redis Cluster keeps the keys of a service in one slot:
//! `<key_prefix>{proofpoint_isolation_<id>_<service>}:state` holds the JSON document of a state
//! file without its dedup memory (version 4), `...:dedup` that memory in buckets, written by
//! difference ([`dedup`]), `...:lease` the token of the process that holds the lease
//! (`<hostname>:<pid>:<random hex>`), with a TTL, and `...:written` the token and number of the
//! state's last write, which orders a holder's own writes ([`ordered`]), and
//! `...:digests:<YYYY-MM-DD>` the day's sealed per-hour digests of the delivered events
//! ([`digests`], for `audit --repair`).
//!
//! Keys shared by every service: `<key_prefix>proofpoint_isolation:replicas`, a hash
//! of the replicas' heartbeats (replica id -> expiry by Redis's clock and the number of leases it
//! holds and how many services it is able to pull), from which the replicas share the leases
//! out (`crate::ha::shard`); and `<key_prefix>proofpoint_isolation:pulled`, when each
//! service was last pulled healthily ([`pulled`]).
//!
//! An input with `requests_limits` has its quota here too, counted for every replica (`quota.rs`):
//! `<key_prefix>{proofpoint_isolation_<id>}:requests_<period ms>` and `...:count` per limit.
//!
//! The store's generation marker, `<key_prefix>proofpoint_isolation:generation`, is shared too: a
//! random id created at first use, which lives and dies with the data ([`generation`]): a process that finds
//! it gone or changed knows the store forgot its keys (a restart without persistence, `FLUSHDB`,
//! eviction, a failover to a replica that never got them). [`durability`] says, at start, whether
//! this Redis can forget them.
//!
//! Every operation that depends on the lease is one Lua script, so that Redis runs the check and
//! the change as one operation: taking, renewing and releasing the lease, and the **fenced
//! write**, which stores a state only if the lease's token is still the caller's. A holder
//! paused past its TTL (SIGSTOP, a stalled VM) and woken after another took over has its writes
//! refused ([`StateError::LeaseLost`]) instead of moving the state back.
//!
//! Outages: an operation that cannot reach Redis fails at once with
//! [`StateError::Unavailable`] (short connect and response timeouts, no retry inside); the
//! callers retry with their own backoff. The first failure of an outage is logged, and the first
//! success after it; `/ready` and `isolation_collector_persistence_up` follow it.
//!
//! The connections: two multiplexed connections, each made again after an error (by
//! [`connect::Connector`], through the sentinels when they are configured, so that the next
//! operation after a failover finds the new master). Lease operations (take, renew, release,
//! heartbeats) have their own, so that a renewal is never queued behind a state write's bytes
//! (one connection answers in order); states, dead letters and the other reads use the other.
//! The crate's
//! `ConnectionManager` reconnects by itself, but retries inside a command with its own backoff,
//! which would hide an outage from the lease's clock and from the log for a while; an operation
//! that fails fast is what the lease gate needs.
//!
//! Replication (`replication`): after each fenced state write, when the master has replicas,
//! the store waits a moment for one of them to acknowledge it (`WAIT`), so that a failover
//! rarely goes back to an older state.

mod durability;
mod generation;

pub use generation::Wipe;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;
use tokio::time::Instant;
use tracing::{error, info};

use super::{LoadReport, ServiceState, StateError};

mod quota;
use crate::config::RedisConfig;
use crate::metrics::Metrics;
pub use quota::{QuotaLimit, QuotaReply};

mod pulled;

mod connect;
mod replication;

mod ordered;

/// `take`: the lease if it is free (or already ours: then its TTL is renewed).
const TAKE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1]}
elseif current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current}
end
return {0, current}
";

/// `renew`: a new TTL, only for the holder.
const RENEW: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, current}
end
return {0, current or ''}
";

/// `release`: deletes the lease, only for the holder.
const RELEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {1, current}
end
return {0, current or ''}
";

mod dedup;
mod digests;
pub use digests::KEEP_DIGESTS;

/// The fenced delete (`state reset`): deletes the state (KEYS[2]) and its dedup memory (KEYS[3])
/// only while the lease (KEYS[1]) is the caller's; `{2, holder}` when there was a state.
const DELETE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  local existed = redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[3])
  return {1 + existed, current}
end
return {0, current or ''}
";

/// The fenced dead-letter write (`super::dead_letter`): KEYS[2] is the service's dead-letter
/// hash; ARGV[2..] are id, letter pairs, each stored only if its id is new (HSETNX), and only
/// while the lease (KEYS[1]) is the caller's (ARGV[1]). Returns {count stored, holder}.
const SET_ASIDE: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {-1, current or ''}
end
local new = 0
for i = 2, #ARGV, 2 do
  new = new + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
return {new, current}
";

/// The fenced dead-letter discard: removes the fields ARGV[2..] of KEYS[2] (all of them with
/// none given) while the lease (KEYS[1]) is the caller's (ARGV[1]).
const DISCARD: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {-1, current or ''}
end
if #ARGV == 1 then
  return {redis.call('HLEN', KEYS[2]) * redis.call('DEL', KEYS[2]), current}
end
local gone = 0
for i = 2, #ARGV do
  gone = gone + redis.call('HDEL', KEYS[2], ARGV[i])
end
return {gone, current}
";

/// The replica heartbeat (sharding, `crate::ha::shard`): KEYS[1] is a hash of replica id
/// -> `<expiry ms> <leases held> <services able to pull>`. Writes the caller's (ARGV[1]) with an
/// expiry of TTL ms (ARGV[2]) from now by the server's clock (one clock for every replica, not
/// theirs), with its held and able counts (ARGV[3], ARGV[4]); prunes the expired; returns the
/// live ones as `{id, held, able, ...}` (able `''` from an older replica that writes no able
/// count). The hash itself expires a TTL after the last heartbeat, so a deployment that is gone
/// leaves nothing.
const HEARTBEAT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local beat = string.format('%d %d %d', now + ttl, tonumber(ARGV[3]), tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], ARGV[1], beat)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local expiry, held, able = string.match(all[i + 1], '^(%d+) (%d+) ?(%d*)$')
  if expiry == nil or tonumber(expiry) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live[#live + 1] = all[i]
    live[#live + 1] = held
    live[#live + 1] = able
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return live
";

/// A live replica's heartbeat, as [`RedisStore::heartbeat`] reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub replica: String,
    /// The leases it holds.
    pub held: usize,
    /// How many services it is able to pull (`None`: an older replica that does not say).
    pub able: Option<usize>,
}

/// Whether a lease operation was done, and who holds the lease (empty: nobody).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReply {
    pub done: bool,
    pub holder: String,
}

/// The answer of a lease script: `{1 | 0, holder}`.
fn reply((done, holder): (i64, String)) -> LeaseReply {
    LeaseReply {
        done: done != 0,
        holder,
    }
}

/// A Redis holding the states and leases.
pub struct RedisStore {
    /// Makes the connections, to the one server or to the master the sentinels name.
    connector: connect::Connector,
    /// The master's replicas as last counted, for the wait after a state write.
    replicas: replication::Replicas,
    /// The connection in use; `None` after an error (the next operation connects again).
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The lease operations' own connection, the same way.
    lease_connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// What this process last wrote of each service's dedup memory ([`dedup`]).
    written: Mutex<std::collections::HashMap<String, dedup::Written>>,
    /// Connect and response timeouts: short, so that an outage is seen within the lease's TTL.
    timeout: Duration,
    address: String,
    prefix: String,
    ttl: Duration,
    /// Since when Redis has not answered (`None`: it answered the last operation).
    down_since: Mutex<Option<Instant>>,
    /// Operations that found Redis unreachable, counted up: a lease confirmed before the last of
    /// them must be renewed before it covers a delivery (the lease gate).
    failures: AtomicU64,
    /// The generation of the store this process saw last.
    generation: generation::Seen,
    /// Shows the outages (`persistence_up`, `/ready`) once `run` has a registry.
    metrics: OnceLock<Arc<Metrics>>,
    scripts: Scripts,
}

struct Scripts {
    take: Script,
    renew: Script,
    release: Script,
    commit: Script,
    load: Script,
    delete: Script,
    heartbeat: Script,
    pulled: Script,
    set_aside: Script,
    discard: Script,
    seal: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection info: it holds the password.
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// A store for `config`; connects at the first operation. Fails only on a bad CA file.
    pub fn new(config: &RedisConfig) -> Result<RedisStore, StateError> {
        let address = config.address();
        let timeout =
            (config.lease_ttl / 3).clamp(Duration::from_millis(250), Duration::from_secs(2));
        Ok(RedisStore {
            connector: connect::Connector::new(config, timeout)?,
            replicas: replication::Replicas::default(),
            connection: tokio::sync::Mutex::new(None),
            timeout,
            lease_connection: tokio::sync::Mutex::new(None),
            written: Mutex::default(),
            address,
            prefix: config.key_prefix.clone(),
            ttl: config.lease_ttl,
            down_since: Mutex::new(None),
            failures: AtomicU64::new(0),
            generation: generation::Seen::default(),
            metrics: OnceLock::new(),
            scripts: Scripts {
                take: Script::new(TAKE),
                renew: Script::new(RENEW),
                release: Script::new(RELEASE),
                commit: Script::new(dedup::COMMIT),
                load: Script::new(dedup::LOAD),
                delete: Script::new(DELETE),
                heartbeat: Script::new(HEARTBEAT),
                pulled: Script::new(pulled::STAMP),
                set_aside: Script::new(SET_ASIDE),
                discard: Script::new(DISCARD),
                seal: Script::new(digests::SEAL),
            },
        })
    }

    /// `host:port` (with sentinels: `<master_name> via sentinels <host:port>,...`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// With sentinels, the master they named last (`host:port`; `None` before the first
    /// connection, and without sentinels).
    pub fn master(&self) -> Option<String> {
        self.connector.master()
    }

    /// The lease's TTL (`lease_ttl_in_seconds`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Reports outages into `metrics` from now on.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let up = lock(&self.down_since).is_none();
        metrics.persistence(up.then_some(()).ok_or_else(|| self.unreachable_line()));
        let _ = self.metrics.set(metrics);
    }

    /// Whether the last operation found Redis unreachable (tracked in `run`, see
    /// [`Self::report_to`]).
    pub fn is_down(&self) -> bool {
        lock(&self.down_since).is_some()
    }

    /// How many operations found Redis unreachable so far. Unlike [`Self::is_down`], which the
    /// next answer to any operation clears, it only grows: the lease gate compares it with its
    /// value when the lease was last confirmed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    fn unreachable_line(&self) -> String {
        format!("Redis at {} is unreachable", self.address)
    }

    /// The key of `key`'s state.
    pub fn state_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:state", self.prefix)
    }

    /// The key of `key`'s lease.
    pub fn lease_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:lease", self.prefix)
    }

    /// The key of `key`'s dead letters (a hash: letter id -> letter JSON).
    pub fn dead_letters_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:dead_letters", self.prefix)
    }

    /// Stores each of `letters` whose id is new, while `lease` holds `key`'s lease.
    pub async fn set_aside(
        &self,
        key: &str,
        letters: &[super::dead_letter::DeadLetter],
        lease: Option<&str>,
    ) -> Result<usize, StateError> {
        let mut args: Vec<Vec<u8>> = vec![lease.unwrap_or_default().as_bytes().to_vec()];
        for l in letters {
            args.push(l.id.as_bytes().to_vec());
            args.push(serde_json::to_vec(l).expect("a letter serialises"));
        }
        self.letters_script(&self.scripts.set_aside, key, &args)
            .await
    }

    /// Every dead letter of `key`, oldest first.
    pub async fn dead_letters(
        &self,
        key: &str,
    ) -> Result<Vec<super::dead_letter::DeadLetter>, StateError> {
        let hash = self.dead_letters_key(key);
        let values: Vec<Vec<u8>> = self
            .call(|mut c| async move { redis::cmd("HVALS").arg(hash).query_async(&mut c).await })
            .await?;
        let mut letters: Vec<super::dead_letter::DeadLetter> = values
            .iter()
            .filter_map(|v| serde_json::from_slice(v).ok())
            .collect();
        letters.sort_by(|a, b| (a.set_aside_at, &a.id).cmp(&(b.set_aside_at, &b.id)));
        Ok(letters)
    }

    /// Removes the letters `ids` of `key` (all with `None`), while `lease` holds its lease.
    pub async fn discard_dead_letters(
        &self,
        key: &str,
        ids: Option<&[String]>,
        lease: Option<&str>,
    ) -> Result<usize, StateError> {
        let mut args: Vec<Vec<u8>> = vec![lease.unwrap_or_default().as_bytes().to_vec()];
        args.extend(
            ids.unwrap_or_default()
                .iter()
                .map(|id| id.as_bytes().to_vec()),
        );
        if ids.is_some_and(<[String]>::is_empty) {
            return Ok(0);
        }
        self.letters_script(&self.scripts.discard, key, &args).await
    }

    /// Runs a fenced dead-letter script: KEYS are the lease and the letters' hash.
    async fn letters_script(
        &self,
        script: &Script,
        key: &str,
        args: &[Vec<u8>],
    ) -> Result<usize, StateError> {
        let lease_key = self.lease_key(key);
        let hash = self.dead_letters_key(key);
        let (n, holder): (i64, String) = self
            .call(|mut c| async move {
                let mut invocation = script.key(lease_key);
                invocation.key(hash);
                for arg in args {
                    invocation.arg(arg.as_slice());
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        usize::try_from(n).map_err(|_| StateError::LeaseLost { holder })
    }

    /// The key of the replicas' heartbeats (sharding).
    pub fn replicas_key(&self) -> String {
        format!("{}proofpoint_isolation:replicas", self.prefix)
    }

    /// Where the state of `key` is kept, for messages.
    pub fn location(&self, key: &str) -> String {
        format!("Redis {} key {}", self.address, self.state_key(key))
    }

    /// Connects, authenticates, selects the database and pings (`validate`, and `run` at start).
    pub async fn check(&self) -> Result<(), StateError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }

    /// Loads the state of `key`.
    pub async fn load(&self, key: &str) -> Result<Option<(ServiceState, LoadReport)>, StateError> {
        self.load_state(key).await
    }

    /// The fenced write: stores `state` only while `lease` holds the lease of `key`.
    pub async fn save(
        &self,
        key: &str,
        state: &ServiceState,
        lease: Option<&str>,
    ) -> Result<(), StateError> {
        let Some(token) = lease else {
            // Every write to Redis is fenced; a caller without a lease holds none.
            return Err(StateError::LeaseLost {
                holder: String::new(),
            });
        };
        self.commit(key, state, token).await?;
        self.wait_for_a_replica(key).await;
        Ok(())
    }

    /// Deletes the state of `key` under a lease of its own (refused while a collector holds it).
    pub async fn reset(&self, key: &str) -> Result<bool, StateError> {
        self.forget_written(key);
        let token = self.take_for_a_command(key).await?;
        let deleted = self
            .script_raw(&self.scripts.delete, key, Some(key), &[token.as_bytes()])
            .await;
        let released = self.release(key, &token).await;
        let (outcome, holder) = deleted?;
        released?;
        match outcome {
            0 => Err(StateError::LeaseLost { holder }),
            n => Ok(n == 2),
        }
    }

    /// Takes the lease of `key` under a new token, for a command that must not race a collector
    /// (`state reset`, `state discard`, `state copy`, `audit --repair`): the token, or
    /// [`StateError::LeaseLost`] naming the holder.
    pub async fn take_for_a_command(&self, key: &str) -> Result<String, StateError> {
        let token = super::lease_token();
        let taken = self.take(key, &token).await?;
        if !taken.done {
            return Err(StateError::LeaseLost {
                holder: taken.holder,
            });
        }
        Ok(token)
    }

    /// Takes the lease of `key` for `token`, for the TTL.
    pub async fn take(&self, key: &str, token: &str) -> Result<LeaseReply, StateError> {
        let ttl = self.ttl_ms();
        self.script(
            &self.scripts.take,
            key,
            None,
            &[token.as_bytes(), ttl.as_bytes()],
        )
        .await
    }

    /// Renews the lease of `key` for another TTL, if `token` holds it.
    pub async fn renew(&self, key: &str, token: &str) -> Result<LeaseReply, StateError> {
        let ttl = self.ttl_ms();
        self.script(
            &self.scripts.renew,
            key,
            None,
            &[token.as_bytes(), ttl.as_bytes()],
        )
        .await
    }

    /// Releases the lease of `key`, if `token` holds it.
    pub async fn release(&self, key: &str, token: &str) -> Result<LeaseReply, StateError> {
        self.script(&self.scripts.release, key, None, &[token.as_bytes()])
            .await
    }

    /// Writes `replica`'s heartbeat (live for the TTL by Redis's clock, holding `held` leases,
    /// able to pull `able` services) and returns every live replica's, this one's included.
    pub async fn heartbeat(
        &self,
        replica: &str,
        held: usize,
        able: usize,
    ) -> Result<Vec<Heartbeat>, StateError> {
        let (key, ttl) = (self.replicas_key(), self.ttl_ms());
        let script = &self.scripts.heartbeat;
        let flat: Vec<String> = self
            .lease_call(|mut c| async move {
                script
                    .key(key)
                    .arg(replica)
                    .arg(ttl)
                    .arg(held)
                    .arg(able)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(flat
            .chunks_exact(3)
            .map(|beat| Heartbeat {
                replica: beat[0].clone(),
                held: beat[1].parse().unwrap_or(0),
                able: beat[2].parse().ok(),
            })
            .collect())
    }

    /// Removes `replica`'s heartbeat (a clean stop): the others count it gone at once.
    pub async fn depart(&self, replica: &str) -> Result<(), StateError> {
        let key = self.replicas_key();
        self.lease_call(|mut c| async move {
            redis::cmd("HDEL")
                .arg(key)
                .arg(replica)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().max(1).to_string()
    }

    /// Runs a lease script on `key`'s lease (KEYS[1]) and, with `state`, its state and dedup
    /// memory (KEYS[2] and [3]). Without a state it is a lease operation, on the lease connection.
    async fn script(
        &self,
        script: &Script,
        key: &str,
        state: Option<&str>,
        args: &[&[u8]],
    ) -> Result<LeaseReply, StateError> {
        self.script_raw(script, key, state, args).await.map(reply)
    }

    /// [`Self::script`]'s reply as Redis gave it: `{outcome, holder}`.
    async fn script_raw(
        &self,
        script: &Script,
        key: &str,
        state: Option<&str>,
        args: &[&[u8]],
    ) -> Result<(i64, String), StateError> {
        let lease_key = self.lease_key(key);
        let state_keys = state.map(|k| [self.state_key(k), self.dedup_key(k)]);
        let slot = match state {
            Some(_) => &self.connection,
            None => &self.lease_connection,
        };
        self.call_on(slot, |mut c| async move {
            let mut invocation = script.key(lease_key);
            for k in state_keys.into_iter().flatten() {
                invocation.key(k);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    /// The connection in `slot`, or a new one.
    async fn connection(
        &self,
        slot: &tokio::sync::Mutex<Option<MultiplexedConnection>>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = slot.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.connector.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one operation on the state connection ([`Self::call_on`]).
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, StateError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_on(&self.connection, op).await
    }

    /// Runs one lease operation on the lease connection ([`Self::call_on`]).
    async fn lease_call<T, F, Fut>(&self, op: F) -> Result<T, StateError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.call_on(&self.lease_connection, op).await
    }

    /// Runs one operation on the connection in `slot`, classifying a failure and following the
    /// outage.
    async fn call_on<T, F, Fut>(
        &self,
        slot: &tokio::sync::Mutex<Option<MultiplexedConnection>>,
        op: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = match self.connection(slot).await {
            Ok(c) => op(c).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => {
                self.answered();
                Ok(v)
            }
            Err(e) => {
                // Whatever went wrong, the next operation starts on a fresh connection (and
                // counts the replicas again: it may be a new master's); the other connection
                // too: it goes to the same server, and a restarted Redis broke it as well, which
                // it would otherwise report as a second outage at its next use.
                *self.connection.lock().await = None;
                *self.lease_connection.lock().await = None;
                self.replicas.forget();
                let e = self.classify(e);
                if e.is_unavailable() {
                    self.failures.fetch_add(1, Ordering::SeqCst);
                    self.unreachable(&e);
                }
                Err(e)
            }
        }
    }

    /// A refusal an operator must fix, or an outage to wait out.
    fn classify(&self, e: redis::RedisError) -> StateError {
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        let fix = if auth {
            Some("check globals.persistence.config.password (or password_file) and username, and that the user may run GET, SET, DEL, PEXPIRE, HGET, HSET, HGETALL, HDEL, TIME, EVAL, EVALSHA, INFO and WAIT, and for an input's requests_limits INCR, ZADD, ZREM, ZCARD, ZRANGE, ZRANGEBYSCORE and ZREMRANGEBYSCORE (with sentinels: sentinel_password and sentinel_username too)")
        } else if e.to_string().contains("DB index") {
            Some("check globals.persistence.config.db (the server's `databases` setting bounds it)")
        } else if e.to_string().contains("certificate") {
            // A certificate the CA does not vouch for does not fix itself: not an outage.
            Some("check globals.persistence.config.tls and ca (the CA that signed the server's certificate, and the host name it names)")
        } else {
            None
        };
        match fix {
            Some(fix) => StateError::Refused {
                address: self.address.clone(),
                reason: e.into(),
                fix,
            },
            None => StateError::Unavailable {
                address: self.address.clone(),
                reason: e.into(),
            },
        }
    }

    /// An operation failed for want of Redis: the outage's first failure is logged (in `run`,
    /// once it reports to a registry; the other commands print their errors themselves).
    fn unreachable(&self, e: &StateError) {
        let Some(metrics) = self.metrics.get() else {
            return;
        };
        let mut down = lock(&self.down_since);
        if down.is_none() {
            *down = Some(Instant::now());
            let reason = match e {
                StateError::Unavailable { reason, .. } => reason.to_string(),
                _ => String::new(),
            };
            error!(
                "Redis at {} is unreachable: {reason}; pulling is paused until it answers.",
                self.address
            );
            metrics.persistence(Err(self.unreachable_line()));
        }
    }

    /// An operation succeeded: the end of an outage is logged.
    fn answered(&self) {
        let mut down = lock(&self.down_since);
        if let Some(since) = down.take() {
            info!(
                "Redis at {} answers again after {:.1} s; pulling resumes.",
                self.address,
                since.elapsed().as_secs_f64()
            );
        }
        if let Some(m) = self.metrics.get() {
            m.persistence(Ok(()));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
