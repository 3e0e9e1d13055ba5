//! An input's `requests_limits` counted in Redis, for every replica at once (one API key is one
//! quota, whichever replica spends it): the Redis side of `crate::api::limiter`.
//!
//! Before each API request a replica runs [`QUOTA`], one Lua script that checks every limit of
//! the input and, only if each has room, counts the request in all of them; otherwise it answers
//! how long to wait. Redis runs a script as one operation, so two replicas can never both take
//! the last slot.
//!
//! Each limit is a sliding log, as the in-process limiter keeps it (same buckets, same
//! arithmetic): a sorted set of buckets, member `<first ms>:<requests>`, score the bucket's
//! latest request; a bucket takes the requests of a thousandth of the period from its first one
//! and leaves the window a period after its latest, so the count is over-estimated by at most a
//! bucket's span and never under. Beside it, a counter of the requests in the set. Keys:
//! `<key_prefix>{proofpoint_isolation_<id>}:requests_<period ms>` and `...:count`, one hash tag
//! per input (a Redis Cluster keeps an input's keys in one slot), both expiring a period after
//! the last request.
//!
//! Time is Redis's clock (`TIME`), one clock for every replica. Why a sliding log and not fixed
//! windows (an `INCR` per window): the API's own accounting is not documented. A sliding log
//! holds every span of one period to the quota, so it also holds every fixed window, however
//! the API aligns it; fixed windows of our own would let twice the quota through around a
//! boundary, which the API, counting with other boundaries, may see in one of its windows.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisStore;
use crate::state::StateError;

/// Checks every limit and, only if each has room, counts one request in all of them.
///
/// KEYS: per limit, its log (sorted set) and its count. ARGV[1]: now in ms, empty for Redis's
/// clock; then per limit: period ms, most requests, bucket span ms. Returns `{0, 0}` when the
/// request is counted, else `{wait ms, index of the limit that waits longest (1-based)}`.
const QUOTA: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function requests(member)
  return tonumber(string.match(member, ':(%d+)$'))
end
local longest, which = 0, 0
for i = 1, #KEYS / 2 do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  local period, max = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local count = tonumber(redis.call('GET', total) or '0')
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now - period)
  if #gone > 0 then
    for _, m in ipairs(gone) do count = count - requests(m) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
    if redis.call('ZCARD', log) == 0 then count = 0 end
    redis.call('SET', total, count, 'KEEPTTL')
  end
  if count >= max then
    local wait, freed = period, 0
    local buckets = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    for j = 1, #buckets, 2 do
      freed = freed + requests(buckets[j])
      if count - freed < max then
        wait = tonumber(buckets[j + 1]) + period - now
        break
      end
    end
    wait = math.max(wait, 1)
    if wait > longest then longest, which = wait, i end
  end
end
if longest > 0 then return {longest, which} end
for i = 1, #KEYS / 2 do
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  local period, span = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i + 1])
  local last = redis.call('ZRANGE', log, -1, -1)
  local first, n = now, 0
  if #last > 0 then
    local f, c = string.match(last[1], '^(%d+):(%d+)$')
    if now - tonumber(f) < span then
      first, n = tonumber(f), tonumber(c)
      redis.call('ZREM', log, last[1])
    end
  end
  redis.call('ZADD', log, now, string.format('%d:%d', first, n + 1))
  redis.call('INCR', total)
  redis.call('PEXPIRE', log, period)
  redis.call('PEXPIRE', total, period)
end
return {0, 0}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(QUOTA));

/// One limit of an input's quota: at most `max` requests in any span of `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimit {
    pub period: Duration,
    pub max: u32,
}

/// The script's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaReply {
    /// The request is counted in every limit: send it.
    Counted,
    /// No room: wait this long, for the limit at this index of the caller's list.
    Wait(Duration, usize),
    /// Redis answered with an error (a user without the sorted-set commands, a key of another
    /// type under the name): it will not count this input's requests until an operator acts.
    Refused(String),
}

impl RedisStore {
    /// The keys of one limit of input `input_id`: its log and its count.
    pub fn quota_keys(&self, input_id: &str, period: Duration) -> (String, String) {
        let log = format!(
            "{}{{proofpoint_isolation_{input_id}}}:requests_{}",
            self.prefix,
            period.as_millis()
        );
        let count = format!("{log}:count");
        (log, count)
    }

    /// Counts one request of input `input_id` in each of `limits` if every one has room.
    /// `Err` only when Redis did not answer (an outage: try again).
    pub async fn take_quota(
        &self,
        input_id: &str,
        limits: &[QuotaLimit],
    ) -> Result<QuotaReply, StateError> {
        self.quota(input_id, limits, None).await
    }

    /// [`Self::take_quota`] at `now_ms` by a pinned clock instead of Redis's (the script's
    /// arithmetic, tested against a real Redis).
    #[cfg(feature = "test-hooks")]
    pub async fn take_quota_at(
        &self,
        input_id: &str,
        limits: &[QuotaLimit],
        now_ms: i64,
    ) -> Result<QuotaReply, StateError> {
        self.quota(input_id, limits, Some(now_ms)).await
    }

    async fn quota(
        &self,
        input_id: &str,
        limits: &[QuotaLimit],
        now_ms: Option<i64>,
    ) -> Result<QuotaReply, StateError> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.arg(now_ms.map_or(String::new(), |n| n.to_string()));
        for l in limits {
            let (log, count) = self.quota_keys(input_id, l.period);
            let period = l.period.as_millis().max(1);
            invocation
                .key(log)
                .key(count)
                .arg(period.to_string())
                .arg(l.max)
                .arg((period / 1000).max(1).to_string());
        }
        let invocation = &invocation;
        self.call(|mut c| async move {
            match invocation.invoke_async::<(u64, usize)>(&mut c).await {
                Ok((0, _)) => Ok(QuotaReply::Counted),
                Ok((wait, which)) => Ok(QuotaReply::Wait(
                    Duration::from_millis(wait),
                    which.saturating_sub(1),
                )),
                Err(e) if answered_with_error(&e) => Ok(QuotaReply::Refused(e.to_string())),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// Whether Redis itself answered with an error that waiting will not cure (a refused command, a
/// key of another type, a failed script), rather than being unreachable, busy or read-only for
/// a moment (those are an outage to wait out).
fn answered_with_error(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOPERM" | "WRONGTYPE" | "ERR"))
}
