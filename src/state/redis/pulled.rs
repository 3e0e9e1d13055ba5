//! When each service was last pulled healthily, by Redis's clock (issue 21 §1, "a service nobody
//! pulls"): one hash shared by every replica, `<key_prefix>proofpoint_isolation:pulled`, state
//! key -> Unix time in ms. Each replica's heartbeat stamps the leases it holds and pulls
//! healthily and reads back every stamp's age (`crate::ha::shard`'s health module judges
//! them). One clock for every replica: the server's, as for the heartbeats.
//!
//! Its own script on its own key (not inside the heartbeat's): each script touches one key, so a
//! Redis Cluster can run it wherever that key lives.

use std::collections::HashMap;
use std::time::Duration;

use super::{RedisStore, StateError};

/// KEYS[1] is the hash; ARGV[1] how long (ms) the hash outlives its last stamp; ARGV[2..] the
/// state keys to stamp now. Returns every field with its age in ms: `{field, age, ...}`.
pub(super) const STAMP: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], now)
end
local all = redis.call('HGETALL', KEYS[1])
local ages = {}
for i = 1, #all, 2 do
  local at = tonumber(all[i + 1])
  if at ~= nil then
    ages[#ages + 1] = all[i]
    ages[#ages + 1] = tostring(math.max(0, now - at))
  end
end
if #ARGV > 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return ages
";

/// How long the hash outlives its last stamp: long past any bound, so that a deployment that is
/// gone leaves nothing behind for ever, and one that stopped for a day still finds its stamps.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

impl RedisStore {
    /// The key of the services' last healthy pulls.
    pub fn pulled_key(&self) -> String {
        format!("{}proofpoint_isolation:pulled", self.prefix)
    }

    /// Stamps `keys` (services' keys, as their leases and states are named) as pulled now, and
    /// returns how long ago each stamped service was last pulled, by key. `after` (the bound)
    /// only makes sure the hash outlives it.
    pub async fn stamp_pulled(
        &self,
        keys: &[String],
        after: Duration,
    ) -> Result<HashMap<String, Duration>, StateError> {
        let hash = self.pulled_key();
        let keep = KEEP.max(after * 2).as_millis().to_string();
        let fields: Vec<String> = keys.iter().map(|k| self.state_key(k)).collect();
        let script = &self.scripts.pulled;
        let flat: Vec<String> = self
            .call(|mut c| async move {
                let mut invocation = script.key(hash);
                invocation.arg(keep);
                for field in &fields {
                    invocation.arg(field);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let key_of = |field: &str| {
            let tagged = field.strip_prefix(&self.prefix)?.strip_suffix(":state")?;
            Some(tagged.strip_prefix('{')?.strip_suffix('}')?.to_owned())
        };
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| {
                let age = Duration::from_millis(pair[1].parse().ok()?);
                Some((key_of(&pair[0])?, age))
            })
            .collect())
    }
}
