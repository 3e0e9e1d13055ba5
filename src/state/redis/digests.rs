//! The sealed per-hour digests of a service in Redis (see `crate::state::digests`): a hash per
//! UTC day, `<key_prefix>{proofpoint_isolation_<id>_<service>}:digests:<YYYY-MM-DD>`, field
//! `<hour ISO>/<seal id hex>` -> the digest's bytes, expiring [`KEEP_DIGESTS`] after its last
//! write. Each write is fenced by the service's lease, like the state's.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{RedisStore, StateError};

/// How long a day's digests are kept: the API's 30 days and one more.
pub const KEEP_DIGESTS: Duration = Duration::from_secs(31 * 24 * 3600);

/// KEYS[1] the lease, KEYS[2] the day's hash; ARGV[1] the caller's lease token, ARGV[2] the
/// expiry in ms, ARGV[3..] field, value pairs. Returns {0 | -1 when the lease is another's, holder}.
pub(super) const SEAL: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {-1, current or ''}
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {0, current}
";

impl RedisStore {
    /// The key of `key`'s digests of the UTC day `day` (`YYYY-MM-DD`).
    pub fn digests_key(&self, key: &str, day: &str) -> String {
        format!("{}{{{key}}}:digests:{day}", self.prefix)
    }

    /// Writes `entries` (field, digest bytes) into the day's hash, while `lease` holds `key`'s
    /// lease.
    pub async fn seal_digests(
        &self,
        key: &str,
        day: &str,
        entries: &[(String, Vec<u8>)],
        lease: Option<&str>,
    ) -> Result<(), StateError> {
        let lease_key = self.lease_key(key);
        let hash = self.digests_key(key, day);
        let keep = KEEP_DIGESTS.as_millis().to_string();
        let script = &self.scripts.seal;
        let (n, holder): (i64, String) = self
            .call(|mut c| async move {
                let mut invocation = script.key(lease_key);
                invocation.key(hash);
                invocation.arg(lease.unwrap_or_default()).arg(keep);
                for (field, bytes) in entries {
                    invocation.arg(field).arg(bytes.as_slice());
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        match n {
            0 => Ok(()),
            _ => Err(StateError::LeaseLost { holder }),
        }
    }

    /// Every entry of the day's hash of `key`: field -> digest bytes.
    pub async fn sealed_digests(
        &self,
        key: &str,
        day: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, StateError> {
        let hash = self.digests_key(key, day);
        self.call(|mut c| async move { redis::cmd("HGETALL").arg(hash).query_async(&mut c).await })
            .await
    }
}
