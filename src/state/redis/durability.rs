//! Whether this Redis can forget the states: `validate` and `run` say so at start.
//!
//! A Redis forgets its keys on a restart when it runs without persistence (no append-only file
//! and no RDB save points), and may drop them under memory pressure with an evicting
//! `maxmemory-policy`. Which policies can drop a state: the states (and the generation marker)
//! have no TTL, so `allkeys-lru`, `allkeys-lfu` and `allkeys-random` can evict them once
//! `maxmemory` is reached; the `volatile-*` policies evict only keys with a TTL (the leases and
//! the replicas' heartbeats, which is an early expiry that the fence covers), and `noeviction`
//! refuses writes instead. Without a `maxmemory` no policy ever evicts.
//!
//! Managed Redis services often refuse `CONFIG`: then `INFO persistence` (whether the append-only
//! file is on) and `INFO memory` (`maxmemory`, `maxmemory_policy`) say what they can, and the
//! warning says what could not be told.

use redis::Value;

use super::RedisStore;
use crate::state::StateError;

/// What Redis said about one setting: its value, or why it would not say (a refused command).
type Answer = Result<String, String>;

impl RedisStore {
    /// The warnings about how this Redis can lose the states (none: it cannot, as far as it
    /// says). Fails only when Redis does not answer at all.
    pub async fn durability_warnings(&self) -> Result<Vec<String>, StateError> {
        let aof = self.config_get("appendonly").await?;
        let save = self.config_get("save").await?;
        let persistence = self.info("persistence").await?;
        let memory = self.info("memory").await?;
        let mut warnings = Vec::new();
        warnings.extend(self.persistence_warning(&aof, &save, &persistence));
        warnings.extend(self.eviction_warning(&memory));
        Ok(warnings)
    }

    fn persistence_warning(&self, aof: &Answer, save: &Answer, info: &Answer) -> Option<String> {
        let address = &self.address;
        let fix = "Set appendonly yes (or RDB save points) on that Redis, or expect to lose the states with it";
        let aof_on = match aof {
            Ok(v) => Some(v == "yes"),
            Err(_) => info
                .as_ref()
                .ok()
                .and_then(|i| field(i, "aof_enabled"))
                .map(|v| v == "1"),
        };
        match (aof_on, save) {
            (Some(true), _) => None,
            (Some(false), Ok(points)) if !points.trim().is_empty() => None,
            (Some(false), Ok(_)) => Some(format!(
                "Redis at {address} runs without persistence (appendonly no, no RDB save points): a restart of it loses every state, lease and dead letter, and a service whose state no replica holds in memory is collected again from start_time_in_utc. {fix}."
            )),
            (Some(false), Err(why)) => Some(format!(
                "Cannot tell whether Redis at {address} saves RDB snapshots (CONFIG GET save was refused: {why}), and it runs without an append-only file (INFO persistence): unless it saves snapshots, a restart of it loses every state. {fix}."
            )),
            (None, _) => Some(format!(
                "Cannot tell whether Redis at {address} persists its keys: CONFIG GET and INFO persistence were refused ({}). Make sure it runs with appendonly yes.",
                aof.as_ref().err().map_or("", String::as_str)
            )),
        }
    }

    fn eviction_warning(&self, info: &Answer) -> Option<String> {
        let address = &self.address;
        let info = match info {
            Ok(info) => info,
            Err(why) => {
                return Some(format!(
                    "Cannot tell whether Redis at {address} may evict the states: INFO memory was refused ({why}). Make sure its maxmemory-policy is noeviction."
                ))
            }
        };
        let policy = field(info, "maxmemory_policy")?;
        let limit = field(info, "maxmemory").and_then(|m| m.parse::<u64>().ok());
        if !policy.starts_with("allkeys-") || limit == Some(0) {
            return None;
        }
        Some(format!(
            "Redis at {address} has maxmemory-policy {policy} with a maxmemory of {} bytes: when it is full it may evict a service's state, and that service is then collected again unless a replica holds it in memory. Set maxmemory-policy noeviction (or a volatile-* policy: the states have no TTL and are never evicted by those).",
            limit.map_or("unknown".to_owned(), |l| l.to_string())
        ))
    }

    /// `CONFIG GET name`: its value, or the refusal.
    async fn config_get(&self, name: &'static str) -> Result<Answer, StateError> {
        let reply = self
            .call(|mut c| async move {
                let r = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Value>(&mut c)
                    .await;
                refusal_as_answer(r)
            })
            .await?;
        Ok(reply.map(|v| match v {
            Value::Array(items) | Value::Set(items) => items.get(1).map(text).unwrap_or_default(),
            Value::Map(pairs) => pairs.first().map(|(_, v)| text(v)).unwrap_or_default(),
            other => text(&other),
        }))
    }

    /// `INFO section`: its text, or the refusal.
    async fn info(&self, section: &'static str) -> Result<Answer, StateError> {
        let reply = self
            .call(|mut c| async move {
                let r = redis::cmd("INFO")
                    .arg(section)
                    .query_async::<Value>(&mut c)
                    .await;
                refusal_as_answer(r)
            })
            .await?;
        Ok(reply.map(|v| text(&v)))
    }
}

/// A command Redis refused (an error reply: `ERR unknown command`, `NOPERM`) is an answer, not an
/// outage; anything else (the connection) stays an error.
fn refusal_as_answer(r: redis::RedisResult<Value>) -> redis::RedisResult<Result<Value, String>> {
    match r {
        Ok(Value::ServerError(e)) => Ok(Err(e.to_string())),
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.code().is_some() => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// The value of `name` in an `INFO` text (`name:value` lines).
fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn info_fields_are_read_by_their_whole_name() {
        let info =
            "# Memory\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(field(info, "maxmemory").as_deref(), Some("0"));
        assert_eq!(
            field(info, "maxmemory_policy").as_deref(),
            Some("allkeys-lru")
        );
        assert_eq!(field(info, "aof_enabled"), None);
    }
}
