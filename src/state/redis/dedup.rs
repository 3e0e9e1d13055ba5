//! The dedup memory in a hash of its own, so that a commit writes what changed.
//!
//! The memory holds every event of the lookback (about 210,000 at 100 events/s with the default
//! 35 minutes, 29 MB as JSON in the document). Written whole at each commit, it cost a commit
//! about 1.3 s, growing with the lookback, on a response timeout of at most 2 s. Instead:
//! - `<key_prefix>{<state name>}:dedup` (the state's hash tag: one slot in a Redis Cluster) is a
//!   hash with one field per second of expiry (the event's date; for an undated event the end of
//!   its window), whose value is that second's records as a JSON array (the document's records,
//!   `[date_ms | null, sha256 hex, copies, expires_ms]`), and a field `@revision`;
//! - the state key holds the version-4 document: version 3 without `dedup`.
//!
//! A commit ([`COMMIT`]) is one Lua script, fenced like every write: while the caller holds the
//! lease, it deletes the buckets that were pruned, sets those that changed, stores the document
//! and a new revision, all or nothing, so a `kill -9` at any point leaves a document and a memory
//! of the same commit. What changed is known from a fingerprint per bucket of what this process
//! last wrote or read ([`Written`]), kept with that write's revision; the script refuses the
//! difference when the stored revision is another (another process wrote since, a wiped Redis),
//! and the whole memory is written instead. After a failed or uncertain write, or a load of an
//! older document, the next commit writes the whole memory too (replacing the hash).
//!
//! Loading reads the document and the hash in one script ([`LOAD`]), and reassembles the
//! state; a version-3 document (the memory inline) is read as it is.

use std::collections::{HashMap, HashSet};

use redis::Script;
use tracing::warn;

use super::RedisStore;
use crate::pipeline::dedup::{DedupMemory, DedupRecord};
use crate::state::{
    decode_beside, encode_without_dedup, InvalidState, LoadReport, ServiceState, StateError,
};
use crate::timestamp::Millis;

/// The fenced, ordered commit. KEYS: the lease, the state, the dedup hash, the last write's
/// `<token> <number>` ([`super::ordered`]). ARGV: the token, the document, the revision the
/// difference is from (empty: replace the whole hash), the new revision, the write's number, the
/// number of buckets to delete, their fields, then field, value pairs to set. Returns
/// `{1, holder}` done (or superseded by a later write of this holder: nothing written),
/// `{0, holder}` not the holder (nothing written), `{2, holder}` the stored revision is not the
/// base (nothing written: send the whole memory).
pub(super) const COMMIT: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current or ''}
end
local last = redis.call('GET', KEYS[4])
if last then
  local token, number = string.match(last, '^(.*) (%d+)$')
  if token == ARGV[1] and tonumber(number) >= tonumber(ARGV[5]) then
    return {1, current}
  end
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[3])
elseif redis.call('HGET', KEYS[3], '@revision') ~= ARGV[3] then
  return {2, current}
end
local deletions = tonumber(ARGV[6])
for i = 7, 6 + deletions do
  redis.call('HDEL', KEYS[3], ARGV[i])
end
for i = 7 + deletions, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], '@revision', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[4], ARGV[1] .. ' ' .. ARGV[5])
return {1, current}
";

/// The load: the document (KEYS[1]) and the dedup hash (KEYS[2]) as one read, `{document or
/// nil, {field, value, ...}}`.
pub(super) const LOAD: &str = r"
return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2])}
";

/// The hash field of the revision of the last commit.
const REVISION: &str = "@revision";

/// The width of a bucket: a second of expiry.
const BUCKET_MS: Millis = 1_000;

/// What this process last wrote to (or read from) a service's dedup hash.
#[derive(Debug)]
pub(super) struct Written {
    revision: String,
    buckets: HashMap<Millis, Fingerprint>,
}

/// A bucket's content, summarised: how many entries, and the sum of their hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    entries: u32,
    sum: u64,
}

fn bucket_of(expires: Millis) -> Millis {
    expires.div_euclid(BUCKET_MS)
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Each bucket's fingerprint. A bucket whose entries changed changes its fingerprint but for a
/// 64-bit collision (the keys are SHA-256 digests).
fn fingerprints(memory: &DedupMemory) -> HashMap<Millis, Fingerprint> {
    let mut buckets: HashMap<Millis, Fingerprint> = HashMap::new();
    for (date, key, copies, expires) in memory.entries() {
        let head = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let tail = u64::from_le_bytes(key[24..].try_into().expect("8 bytes"));
        let h = mix(mix(mix(head ^ date as u64) ^ tail ^ u64::from(copies)) ^ expires as u64);
        let b = buckets.entry(bucket_of(expires)).or_default();
        b.entries += 1;
        b.sum = b.sum.wrapping_add(h);
    }
    buckets
}

/// A commit's arguments after the token and the document.
struct Difference {
    /// The revision the difference is from; empty: the whole memory.
    base: String,
    deleted: Vec<String>,
    set: Vec<(String, Vec<u8>)>,
    fingerprints: HashMap<Millis, Fingerprint>,
}

/// What to send to turn `last` (the whole memory without it) into `memory`.
fn difference(memory: &DedupMemory, last: Option<&Written>) -> Difference {
    let now = fingerprints(memory);
    let unchanged =
        |bucket: &Millis, fp: &Fingerprint| last.is_some_and(|l| l.buckets.get(bucket) == Some(fp));
    let changed: HashSet<Millis> = now
        .iter()
        .filter(|(b, fp)| !unchanged(b, fp))
        .map(|(b, _)| *b)
        .collect();
    let deleted = last.map_or_else(Vec::new, |l| {
        let gone = l.buckets.keys().filter(|b| !now.contains_key(b));
        gone.map(ToString::to_string).collect()
    });
    let mut records: HashMap<Millis, Vec<DedupRecord>> = HashMap::new();
    for r in memory.records_where(|expires| changed.contains(&bucket_of(expires))) {
        records.entry(bucket_of(r.3)).or_default().push(r);
    }
    let set = records
        .into_iter()
        .map(|(b, rs)| {
            let value = serde_json::to_vec(&rs).expect("records serialise");
            (b.to_string(), value)
        })
        .collect();
    Difference {
        base: last.map(|l| l.revision.clone()).unwrap_or_default(),
        deleted,
        set,
        fingerprints: now,
    }
}

/// The memory a hash holds, and its revision (`None`: no commit wrote it).
fn read_hash(
    fields: &[Vec<u8>],
    location: &str,
) -> Result<(DedupMemory, Option<String>), StateError> {
    let mut revision = None;
    let mut records = Vec::new();
    for pair in fields.chunks_exact(2) {
        let (field, value) = (String::from_utf8_lossy(&pair[0]), &pair[1]);
        if field == REVISION {
            revision = Some(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        let bucket: Vec<DedupRecord> =
            serde_json::from_slice(value).map_err(|source| StateError::Invalid {
                location: location.to_owned(),
                reason: InvalidState::DedupBucket {
                    field: field.clone().into_owned(),
                    source,
                },
            })?;
        records.extend(bucket);
    }
    let (memory, bad) = DedupMemory::from_records(&records);
    if bad > 0 {
        return Err(StateError::Invalid {
            location: location.to_owned(),
            reason: InvalidState::MalformedDedup(bad),
        });
    }
    Ok((memory, revision))
}

impl RedisStore {
    /// The key of `key`'s dedup memory (a hash of buckets, see [`self`]).
    pub fn dedup_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:dedup", self.prefix)
    }

    /// Loads the state of `key`: its document and, for version 4, the dedup hash beside it.
    pub(super) async fn load_state(
        &self,
        key: &str,
    ) -> Result<Option<(ServiceState, LoadReport)>, StateError> {
        let (state_key, dedup_key) = (self.state_key(key), self.dedup_key(key));
        let script = &self.scripts.load;
        let (bytes, fields): (Option<Vec<u8>>, Vec<Vec<u8>>) = self
            .call(|mut c| async move {
                let mut invocation = script.key(state_key);
                invocation.key(dedup_key).invoke_async(&mut c).await
            })
            .await?;
        self.forget_written(key);
        let Some(bytes) = bytes else { return Ok(None) };
        let location = self.location(key);
        let (beside, revision) = read_hash(&fields, &location)?;
        let loaded = decode_beside(&bytes, &location, Some(beside))?;
        if let Some(revision) = revision {
            let buckets = fingerprints(&loaded.0.dedup);
            let written = Written { revision, buckets };
            super::lock(&self.written).insert(key.to_owned(), written);
        } else if loaded.0.dedup.is_empty() && document_version(&bytes) == Some(4) {
            warn!(
                "The dedup memory of {location} is missing from Redis (the key {} was deleted or evicted). Events of the lookback that were delivered already may be delivered again once; if Redis evicts keys, set its maxmemory-policy to noeviction.",
                self.dedup_key(key)
            );
        }
        Ok(Some(loaded))
    }

    /// The fenced commit of `state` under `token`: the document and the buckets that changed
    /// since this process's last write, or the whole memory when that is not known.
    pub(super) async fn commit(
        &self,
        key: &str,
        state: &ServiceState,
        token: &str,
    ) -> Result<(), StateError> {
        let document = encode_without_dedup(state);
        let last = super::lock(&self.written).remove(key);
        let mut diff = difference(&state.dedup, last.as_ref());
        let mut outcome = self.run_commit(key, token, &document, &diff).await;
        if matches!(outcome, Ok((2, _))) {
            // Another writer since ours (or a wiped Redis): the difference does not apply.
            diff = difference(&state.dedup, None);
            outcome = self.run_commit(key, token, &document, &diff).await;
        }
        let (done, holder) = outcome?;
        if done != 1 {
            return Err(StateError::LeaseLost { holder });
        }
        let written = Written {
            revision: diff_revision(&diff),
            buckets: diff.fingerprints,
        };
        super::lock(&self.written).insert(key.to_owned(), written);
        Ok(())
    }

    /// Runs [`COMMIT`] with `diff`; a new revision is in `diff`'s last argument.
    async fn run_commit(
        &self,
        key: &str,
        token: &str,
        document: &[u8],
        diff: &Difference,
    ) -> Result<(i64, String), StateError> {
        let keys = [
            self.lease_key(key),
            self.state_key(key),
            self.dedup_key(key),
            super::ordered::written_key(&self.prefix, key),
        ];
        let number = super::ordered::next_write();
        let script: &Script = &self.scripts.commit;
        self.call(|mut c| async move {
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            invocation
                .arg(token)
                .arg(document)
                .arg(&diff.base)
                .arg(diff_revision(diff))
                .arg(number)
                .arg(diff.deleted.len());
            for field in &diff.deleted {
                invocation.arg(field);
            }
            for (field, value) in &diff.set {
                invocation.arg(field).arg(value.as_slice());
            }
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    /// Forgets what this process last wrote for `key`: the next commit writes the whole memory.
    pub(super) fn forget_written(&self, key: &str) {
        super::lock(&self.written).remove(key);
    }
}

/// The revision a commit of `diff` writes: the fingerprints' own digest, so that it names the
/// content (two commits of one content may share it, which is harmless).
fn diff_revision(diff: &Difference) -> String {
    let mut sorted: Vec<_> = diff.fingerprints.iter().collect();
    sorted.sort_unstable_by_key(|(b, _)| **b);
    let digest = sorted.iter().fold(0u64, |acc, (b, fp)| {
        mix(acc ^ mix(**b as u64) ^ mix(fp.sum ^ u64::from(fp.entries)))
    });
    format!("{digest:016x}")
}

/// The `@persistence_version` of a document, if it names one.
fn document_version(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("@persistence_version")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn memory(dates: &[i64]) -> DedupMemory {
        let mut m = DedupMemory::new();
        let events: Vec<Event> = dates
            .iter()
            .map(|&d| Event {
                date_ms: d,
                key: [(d % 251) as u8; 32],
                json: bytes::Bytes::new(),
            })
            .collect();
        let plan = m.plan(&events, 0);
        m.apply(plan);
        m
    }

    fn written(m: &DedupMemory) -> Written {
        Written {
            revision: "r".into(),
            buckets: fingerprints(m),
        }
    }

    /// A commit sends the buckets whose entries changed and deletes those pruned; without a
    /// last write it sends every bucket.
    #[test]
    fn the_difference_is_the_changed_buckets() {
        let mut m = memory(&[1_000, 1_500, 2_000, 3_000]);
        let whole = difference(&m, None);
        assert_eq!((whole.base.as_str(), whole.set.len()), ("", 3));
        let last = written(&m);
        assert!(difference(&m, Some(&last)).set.is_empty());
        let plan = m.plan(
            &[Event {
                date_ms: 2_001,
                key: [9; 32],
                json: bytes::Bytes::new(),
            }],
            0,
        );
        m.apply(plan);
        m.prune(2_000);
        let diff = difference(&m, Some(&last));
        assert_eq!(diff.base, "r");
        assert_eq!(diff.deleted, vec!["1".to_owned()]);
        let fields: Vec<&str> = diff.set.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["2"]);
        // The bucket holds the second's records, as the document would.
        let (back, revision) = read_hash(
            &[
                b"2".to_vec(),
                diff.set[0].1.clone(),
                b"@revision".to_vec(),
                b"x".to_vec(),
            ],
            "x",
        )
        .unwrap();
        assert_eq!((back.len(), revision.as_deref()), (2, Some("x")));
    }
}
