//! After a fenced state write, a moment's wait for a Redis replica to acknowledge it
//! (`WAIT 1 <ms>`), when the master has replicas.
//!
//! Redis replicates asynchronously: a master that dies a moment after a write takes the write
//! with it, and the replica promoted in its place holds the state before it. The next holder
//! then resumes from that older checkpoint and sends the windows since then again: re-sends,
//! never losses (the state only goes back). Waiting for one replica's acknowledgement after
//! each write shrinks that to the write in flight at the crash.
//!
//! The wait is bounded by half the connection's response timeout (at most 1 s, well inside the
//! lease's TTL, which the holder keeps renewing meanwhile). A write no replica acknowledged in
//! time still counts (the master has it, and the lease is still the writer's): the first of a
//! run of them is logged, each is counted in `persistence_unreplicated_writes_total`. With no
//! replica the store does not wait at all: it counts the master's replicas (`INFO
//! replication`) on each new connection and then every [`RECOUNT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::RedisStore;

/// How long a count of the replicas is trusted.
pub(super) const RECOUNT: Duration = Duration::from_secs(10);

/// The master's replicas as last counted.
#[derive(Default)]
pub(super) struct Replicas {
    /// The count and when it was made; `None`: count before the next wait.
    counted: Mutex<Option<(usize, Instant)>>,
    /// Whether the last write waited in vain (its warning is logged once per run).
    unacknowledged: AtomicBool,
}

impl Replicas {
    /// The connection was lost (maybe to a failover): count again.
    pub(super) fn forget(&self) {
        *self.lock() = None;
    }

    /// The count, while it is fresh.
    fn fresh(&self) -> Option<usize> {
        self.lock()
            .filter(|(_, at)| at.elapsed() < RECOUNT)
            .map(|(n, _)| n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(usize, Instant)>> {
        super::lock(&self.counted)
    }
}

/// `connected_slaves:<n>` of an `INFO replication` answer (0 if absent).
pub(super) fn connected_replicas(info: &str) -> usize {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl RedisStore {
    /// After a fenced write of `key`'s state: waits for a replica's acknowledgement, if the
    /// master has replicas. The write landed either way; a failure here is the next
    /// operation's outage (the connection is made again), not this write's.
    pub(super) async fn wait_for_a_replica(&self, key: &str) {
        let replicas = match self.replicas.fresh() {
            Some(n) => n,
            None => match self.count_replicas().await {
                Some(n) => n,
                None => return,
            },
        };
        if replicas == 0 {
            return;
        }
        let wait = (self.timeout / 2).as_millis().max(1) as u64;
        let acknowledged: Result<i64, _> = self
            .call(|mut c| async move {
                redis::cmd("WAIT")
                    .arg(1)
                    .arg(wait)
                    .query_async(&mut c)
                    .await
            })
            .await;
        let Ok(acknowledged) = acknowledged else {
            return;
        };
        let before = self
            .replicas
            .unacknowledged
            .swap(acknowledged == 0, Ordering::Relaxed);
        if acknowledged > 0 {
            if before {
                info!("A Redis replica acknowledges the state writes again.");
            }
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.unreplicated_write();
        }
        if !before {
            warn!(
                "No Redis replica acknowledged the state of {key} within {wait} ms (the master has {replicas} replicas); the master stored it, but a failover now would go back to an older state and re-send the windows since. Check the replicas' link to the master (INFO replication)."
            );
        }
    }

    /// Counts the master's replicas (`INFO replication`); `None` if Redis did not answer.
    async fn count_replicas(&self) -> Option<usize> {
        let info: String = self
            .call(|mut c| async move {
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
            })
            .await
            .ok()?;
        let n = connected_replicas(&info);
        *self.replicas.lock() = Some((n, Instant::now()));
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::connected_replicas;

    #[test]
    fn the_replica_count_is_read_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=6380,state=online,offset=1,lag=0\r\n";
        assert_eq!(connected_replicas(info), 2);
        assert_eq!(connected_replicas("# Replication\r\nrole:master\r\n"), 0);
    }
}
