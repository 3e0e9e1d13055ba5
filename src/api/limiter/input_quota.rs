//! The input's `requests_limits` with Redis persistence: one API key's quota, counted in Redis
//! for every replica (`crate::state::redis::quota` has the script and why it is a sliding log).
//!
//! When Redis cannot count:
//! - **It does not answer** (down, unreachable, failing over): requests wait, asking again every
//!   [`OUTAGE_RETRY`]. A replica that cannot reach Redis commits nothing and loses its leases
//!   within one TTL anyway, so the wait costs no collection that the outage does not already
//!   cost, and it never spends quota that the others may be spending meanwhile. It ends when
//!   Redis answers (or the lease's tenure ends, which drops the wait).
//! - **It answers with an error** (a user whose ACL lacks the sorted-set commands, a key of
//!   another type under the quota's name): the replica falls back to counting the input's
//!   limits alone, as without Redis, and says so once at ERROR: the deployment may then use up
//!   to the quota once per replica, until an operator fixes it. Redis is asked again at each
//!   request, and the first success is logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use super::Limit;
use crate::state::redis::{QuotaLimit, QuotaReply};
use crate::state::StateStore;

/// How long a request waits before asking Redis again while it does not answer.
pub const OUTAGE_RETRY: Duration = Duration::from_secs(1);

/// An input's limits, counted in Redis. Cloning shares the refusal's log state.
#[derive(Clone, Debug)]
pub struct InputQuota {
    store: Arc<StateStore>,
    input_id: String,
    /// The finite limits, one per period (the smallest number for a period given twice: one
    /// log per period in Redis), in the order the script reports them.
    limits: Vec<Limit>,
    /// Whether Redis refused to count and the fallback was logged.
    refused: Arc<AtomicBool>,
}

/// What Redis said about the next request.
#[derive(Debug)]
pub enum Decision {
    /// Counted in Redis: send it.
    Counted,
    /// Wait this long, for this limit (`None`: Redis is not answering).
    Wait(Duration, Option<Limit>),
    /// Redis refused to count: the caller counts the input's limits alone.
    CountAlone,
}

impl InputQuota {
    /// The quota of input `input_id` in `store`'s Redis; `None` without Redis or without a
    /// finite limit.
    pub fn new(store: &Arc<StateStore>, input_id: &str, limits: &[Limit]) -> Option<InputQuota> {
        store.redis()?;
        let mut finite: Vec<Limit> = Vec::new();
        for l in limits.iter().filter(|l| l.max_requests.is_some()) {
            match finite.iter_mut().find(|f| f.period == l.period) {
                Some(f) if f.max_requests <= l.max_requests => {}
                Some(f) => *f = l.clone(),
                None => finite.push(l.clone()),
            }
        }
        (!finite.is_empty()).then(|| InputQuota {
            store: store.clone(),
            input_id: input_id.to_owned(),
            limits: finite,
            refused: Arc::default(),
        })
    }

    /// Asks Redis to count one request.
    pub async fn take(&self) -> Decision {
        let Some(redis) = self.store.redis() else {
            return Decision::CountAlone;
        };
        let limits: Vec<QuotaLimit> = (self.limits.iter())
            .map(|l| QuotaLimit {
                period: l.period,
                max: l.max_requests.unwrap_or(u32::MAX),
            })
            .collect();
        match redis.take_quota(&self.input_id, &limits).await {
            Ok(QuotaReply::Counted) => {
                if self.refused.swap(false, Ordering::Relaxed) {
                    info!("Redis at {} counts the requests of input {} again: the input's requests_limits hold for all replicas together.", redis.address(), self.input_id);
                }
                Decision::Counted
            }
            Ok(QuotaReply::Wait(wait, i)) => Decision::Wait(wait, self.limits.get(i).cloned()),
            Ok(QuotaReply::Refused(reason)) => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    error!("Redis at {} refused to count the requests of input {}: {reason}; each replica now keeps the input's requests_limits alone, so together they may use the quota once per replica. Grant the Redis user ZADD, ZRANGE, ZRANGEBYSCORE, ZREMRANGEBYSCORE, ZREM, ZCARD and INCR (and check that no other program writes keys under the key_prefix).", redis.address(), self.input_id);
                }
                Decision::CountAlone
            }
            // An outage (or a connection refused whole, which stops the leases too): the store
            // logs it once, and `/ready` shows it.
            Err(_) => Decision::Wait(OUTAGE_RETRY, None),
        }
    }
}
