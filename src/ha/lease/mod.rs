//! A service's lease: at most one process pulls a service at a time (Redis persistence).
//!
//! [`Lease::take_until_held`] stands by until this process holds the service's lease in Redis,
//! and starts a [`Tenure`]: a renewal every TTL/3 in its own task, and a [`LeaseGate`] that the
//! outputs' fan-out asks before each output's turn of each window delivery (it is the
//! fan-out's [`DeliveryGate`](crate::output::DeliveryGate)). The gate keeps a local validity
//! clock: the lease is valid until the TTL after the last successful take or renewal was *sent*,
//! by `CLOCK_BOOTTIME` ([`clock`]), which keeps counting while the process is stopped by SIGSTOP
//! and while the machine is suspended, as Redis's clock does. A delivery needs more than TTL/3
//! left, and no failed Redis operation since the lease was last confirmed (an outage may have
//! wiped it, and only a renewal tells: an answer to any other call does not); otherwise the gate
//! renews first, and refuses the delivery if that fails, or if the renewal's answer came back
//! after the validity had run out (the holder was paused between sending it and reading it). So a
//! holder paused past its TTL delivers, after waking, at most the one output's batch it was in
//! the middle of: the next output's turn finds the clock run out, and its renewal and its fenced
//! write are refused.
//!
//! A refused renewal or write ends the tenure: the gate's token is cancelled, which stops the
//! puller at its next await point (the window in flight is abandoned, nothing committed), and the
//! service goes back to standby. A shutdown ends it too, and the lease is released at once so
//! that the other replica takes over within its standby retry rather than after the TTL.
//!
//! With a [`Shard`] (the daemon on Redis), the service asks the process's coordinator before each
//! try, so that the replicas share the leases out ([`crate::ha::shard`]); when the coordinator asks
//! for the lease to be handed over, the puller stops at its next window boundary
//! ([`LeaseGate::hand_over_requested`]) and [`Lease::hand_over`] releases it. The service also
//! reports its health there ([`Lease::setup_passed`], and each cycle through the gate): a holder
//! whose cycles keep failing gives its lease up when another replica is able to pull
//! ([`LeaseGate::cycle_failed`], `shard`'s health module).
//!
//! After Redis was wiped, a process that finds a service's state missing and did not hold it last
//! leaves the lease to the others for a while ([`Lease::leave_to_others`]): the replica that
//! holds the state in memory writes it back (`crate::puller::checkpoint`). Its claim stays counted as
//! held meanwhile, or the fair-share rule would keep the others waiting for this replica (which
//! looks below its share) to take the very lease it leaves.
//!
//! Filesystem and memory stores have no leases: the gate is always open and taking never waits.

pub mod clock;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ha::shard::{Claim, Health, Registration, Shard};
use crate::metrics::ServiceMetrics;
use crate::service::Service;
use crate::state::{holder_name, lease_token, replica_of, RedisCause, StateError, StateStore};
use clock::{LeaseTime, SharedLeaseClock};

/// The lease of one service, from which tenures are taken.
pub struct Lease {
    store: Arc<StateStore>,
    /// The state's key (input id and service).
    key: String,
    service: Service,
    metrics: ServiceMetrics,
    /// The process's coordinator of the replicas' shares (the daemon on Redis).
    shard: Option<Arc<Shard>>,
    /// This service's health, as the coordinator counts it.
    health: Option<Registration>,
    /// The validity clock of the tenures' leases.
    clock: SharedLeaseClock,
    /// Not taken before then: left to the others ([`Self::leave_to_others`]), with the claim
    /// of the tenure that left it (with a coordinator), kept meanwhile.
    left: Mutex<Option<(Instant, Option<Claim>)>>,
}

/// Why taking the lease gave up.
#[derive(Debug)]
pub enum TakeError {
    /// A shutdown request came first.
    Cancelled,
    /// `run --once`: another process held it for the whole wait.
    HeldBy { holder: String, waited: Duration },
    /// `run --once`: Redis did not answer (or refused us) for the whole wait.
    Store(StateError),
}

/// What a service's lease is built with besides the service.
pub struct LeaseContext<'a> {
    /// The store the lease lives in (only Redis has leases: elsewhere taking never waits).
    pub store: &'a Arc<StateStore>,
    pub metrics: ServiceMetrics,
    /// The process's coordinator of the replicas' shares (the daemon on Redis).
    pub shard: Option<&'a Arc<Shard>>,
}

impl Lease {
    /// The lease of `service` of input `input_id` (the shape of [`crate::component`], without a
    /// health check of its own: the lease lives in the state store, whose check stands for it).
    pub fn build(input_id: &str, service: Service, cx: LeaseContext<'_>) -> Lease {
        let key = StateStore::key(input_id, service.name());
        let lease = Lease::new(cx.store.clone(), key, service, cx.metrics);
        match cx.shard {
            Some(shard) => lease.with_shard(shard.clone()),
            None => lease,
        }
    }

    pub fn new(
        store: Arc<StateStore>,
        key: String,
        service: Service,
        metrics: ServiceMetrics,
    ) -> Lease {
        Lease {
            store,
            key,
            service,
            metrics,
            shard: None,
            health: None,
            clock: SharedLeaseClock::boot(),
            left: Mutex::new(None),
        }
    }

    /// Measures the leases' validity by `clock` instead of `CLOCK_BOOTTIME`.
    pub fn with_clock(mut self, clock: SharedLeaseClock) -> Lease {
        self.clock = clock;
        self
    }

    /// Takes the lease only within this replica's share of `shard`, and hands it over when asked.
    /// The service counts as unable to pull until [`Self::setup_passed`].
    pub fn with_shard(mut self, shard: Arc<Shard>) -> Lease {
        self.health = Some(shard.register(&self.key, self.metrics.clone()));
        self.shard = Some(shard);
        self
    }

    /// The setup check passed (`true`), or must pass again before the lease is taken (`false`).
    pub fn setup_passed(&self, passed: bool) {
        if let Some(health) = &self.health {
            health.health().setup_passed(passed);
        }
    }

    /// The lease's TTL, if the store has leases.
    pub fn ttl(&self) -> Option<Duration> {
        self.store.redis().map(|r| r.ttl())
    }

    /// Takes the lease, retrying every clamp(TTL/10, 0.1 s, 1 s) while another process holds it
    /// or Redis is unreachable, until `cancel`, or for at most `limit`. Says once per standby
    /// period who holds it.
    pub async fn take_until_held(
        &self,
        cancel: &CancellationToken,
        limit: Option<Duration>,
    ) -> Result<Tenure, TakeError> {
        let Some(redis) = self.store.redis() else {
            return Ok(Tenure::unshared(cancel));
        };
        let ttl = redis.ttl();
        let started = Instant::now();
        let mut said: Option<String> = None;
        loop {
            if self.left_to_others() {
                tokio::select! {
                    _ = tokio::time::sleep(standby_retry(ttl)) => continue,
                    _ = cancel.cancelled() => return Err(TakeError::Cancelled),
                }
            }
            let claim = match &self.shard {
                Some(shard) => match shard.claim(&self.key) {
                    Some(claim) => Some(claim),
                    // This replica holds its share: the lease is left to the others.
                    None => {
                        tokio::select! {
                            _ = tokio::time::sleep(standby_retry(ttl)) => continue,
                            _ = cancel.cancelled() => return Err(TakeError::Cancelled),
                        }
                    }
                },
                None => None,
            };
            let token = lease_token();
            let sent = self.clock.now();
            let failures = redis.failures();
            match redis.take(&self.key, &token).await {
                Ok(r) if r.done => {
                    info!("Holding the lease of {} as {token}; pulling.", self.service);
                    self.metrics.lease_held(true);
                    let mut held = Held::new(
                        self.store.clone(),
                        self.key.clone(),
                        token,
                        ttl,
                        (self.clock.clone(), sent, failures),
                        cancel,
                    );
                    held.health = self.health.as_ref().map(Registration::health);
                    return Ok(Tenure::start(held, claim));
                }
                Ok(r) => {
                    self.metrics.lease_holder(replica_of(&r.holder));
                    if limit.is_some_and(|l| started.elapsed() >= l) {
                        return Err(TakeError::HeldBy {
                            holder: r.holder,
                            waited: started.elapsed(),
                        });
                    }
                    if said.as_deref() != Some(r.holder.as_str()) {
                        info!(
                            "The lease of {} is held by {}; standing by.",
                            self.service, r.holder
                        );
                        said = Some(r.holder);
                    }
                }
                // An outage is logged by the store, once; a refusal (credentials) here, once.
                Err(e) if e.is_unavailable() => {}
                Err(e) => {
                    let line = e.to_string();
                    if said.as_deref() != Some(line.as_str()) {
                        error!("Cannot take the lease of {}: {line}", self.service);
                        said = Some(line);
                    }
                }
            }
            // Not taken: no longer counted while standing by.
            drop(claim);
            tokio::select! {
                _ = tokio::time::sleep(standby_retry(ttl)) => {}
                _ = cancel.cancelled() => return Err(TakeError::Cancelled),
            }
        }
    }

    /// Ends `tenure` after a shutdown: stops its renewal and releases the lease at once.
    pub async fn release(&self, tenure: Tenure) {
        let Some(held) = tenure.end() else { return };
        self.metrics.lease_held(false);
        let Some(redis) = self.store.redis() else {
            return;
        };
        match redis.release(&self.key, &held.token).await {
            Ok(r) if r.done => info!("Released the lease of {}.", self.service),
            Ok(r) => info!(
                "The lease of {} was no longer ours to release (held by {}).",
                self.service,
                holder_name(&r.holder)
            ),
            Err(e) => warn!(
                "Could not release the lease of {} ({e}); it expires after lease_ttl_in_seconds.",
                self.service
            ),
        }
    }

    /// Ends `tenure` at a window boundary, as the coordinator asked: releases the lease for
    /// another replica to take (the state is committed: it resumes exactly there).
    pub async fn hand_over(&self, mut tenure: Tenure) {
        let claim = tenure.claim.take();
        let Some(held) = tenure.end() else { return };
        self.metrics.lease_held(false);
        let Some(redis) = self.store.redis() else {
            return;
        };
        match redis.release(&self.key, &held.token).await {
            Ok(r) if r.done => info!(
                "Handed the lease of {} over: released it at a window boundary for another replica to take.",
                self.service
            ),
            Ok(r) => info!(
                "The lease of {} was no longer ours to hand over (held by {}).",
                self.service,
                holder_name(&r.holder)
            ),
            Err(e) => warn!(
                "Could not release the lease of {} to hand it over ({e}); it expires after lease_ttl_in_seconds.",
                self.service
            ),
        }
        if let Some(claim) = claim {
            claim.handed_over();
        }
    }

    /// Ends `tenure` and releases the lease, which this process then leaves to the others for
    /// `time` (its state was missing after a wipe, and another replica may hold it in memory).
    pub async fn leave_to_others(&self, mut tenure: Tenure, time: Duration) {
        // The claim stays counted as held meanwhile: the other replicas must not wait for this
        // one to take its share (it looks below it), they are to take this lease.
        let claim = tenure.claim.take();
        *lock(&self.left) = Some((Instant::now() + time, claim));
        warn!(
            "Left the lease of {} to the other replicas for {:.0} s: its state is missing since Redis was wiped, and a replica that held it last can write it back.",
            self.service,
            time.as_secs_f64()
        );
        self.release(tenure).await;
    }

    /// Whether the lease is still left to the others; the claim kept for it goes when not.
    fn left_to_others(&self) -> bool {
        let mut left = lock(&self.left);
        if left
            .as_ref()
            .is_some_and(|(until, _)| Instant::now() >= *until)
        {
            *left = None;
        }
        left.is_some()
    }

    /// Ends `tenure` after the lease was lost for `reason`: says so, counts it, stands by.
    pub fn lost(&self, tenure: Tenure, reason: &str) {
        tenure.end();
        self.metrics.lease_held(false);
        self.metrics.lease_lost();
        warn!(
            "Lost the lease of {}: {reason}; stopped pulling it and standing by.",
            self.service
        );
    }
}

/// How often a standby process tries to take the lease: clamp(TTL/10, 0.1 s, 1 s).
pub fn standby_retry(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Whether a lease valid until `valid_until` (by the local clock) may cover a delivery at `now`:
/// more than a third of `ttl` must be left.
pub fn may_deliver(valid_until: LeaseTime, now: LeaseTime, ttl: Duration) -> bool {
    valid_until.saturating_sub(now) > ttl / 3
}

/// The lease as held by this process in one tenure.
struct Held {
    store: Arc<StateStore>,
    key: String,
    token: String,
    ttl: Duration,
    /// Valid until then by `clock` (the TTL after the last successful take or renewal was sent).
    valid_until: Mutex<LeaseTime>,
    clock: SharedLeaseClock,
    /// The store's count of failed operations when the last successful take or renewal was
    /// sent: while it is still the count, no outage came between (see [`LeaseGate`]).
    confirmed: AtomicU64,
    /// The lease was lost to another holder (not to its expiry).
    lost_to_another: AtomicBool,
    /// Cancelled when the tenure ends: the lease was lost, or a shutdown (a child of its token).
    stop: CancellationToken,
    /// Cancelled when the coordinator asks for the lease to be handed over (never without one).
    hand_over: CancellationToken,
    /// Why the lease was lost, if it was.
    lost: Mutex<Option<String>>,
    /// The service's health (with a coordinator), fed with each cycle's outcome.
    health: Option<Health>,
}

impl Held {
    fn new(
        store: Arc<StateStore>,
        key: String,
        token: String,
        ttl: Duration,
        (clock, sent, failures): (SharedLeaseClock, LeaseTime, u64),
        cancel: &CancellationToken,
    ) -> Held {
        Held {
            store,
            key,
            token,
            ttl,
            valid_until: Mutex::new(sent + ttl),
            clock,
            confirmed: AtomicU64::new(failures),
            lost_to_another: AtomicBool::new(false),
            stop: cancel.child_token(),
            hand_over: CancellationToken::new(),
            lost: Mutex::new(None),
            health: None,
        }
    }

    /// Renews the lease; a refusal ends the tenure.
    async fn renew(&self) -> Result<(), StateError> {
        let redis = self.store.redis().expect("a held lease is in Redis");
        let sent = self.clock.now();
        let failures = redis.failures();
        let r = redis.renew(&self.key, &self.token).await?;
        if r.done {
            let mut until = lock(&self.valid_until);
            *until = (*until).max(sent + self.ttl);
            self.confirmed.fetch_max(failures, Ordering::SeqCst);
            return Ok(());
        }
        self.lost_to(&r.holder);
        self.lose(format!(
            "the renewal was refused, the lease is held by {}",
            holder_name(&r.holder)
        ));
        Err(StateError::LeaseLost { holder: r.holder })
    }

    fn lost_to(&self, holder: &str) {
        if !holder.is_empty() {
            self.lost_to_another.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the lease may cover a delivery now without a renewal: more than TTL/3 left on
    /// its clock, and no failed Redis operation since it was last confirmed.
    fn may_deliver(&self) -> bool {
        let until = *lock(&self.valid_until);
        let confirmed = self.confirmed.load(Ordering::SeqCst);
        let no_outage_since = self.store.redis().is_none_or(|r| r.failures() == confirmed);
        may_deliver(until, self.clock.now(), self.ttl) && no_outage_since
    }

    fn lose(&self, reason: String) {
        lock(&self.lost).get_or_insert(reason);
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the puller asks before each window delivery; always open without leases.
#[derive(Clone, Default)]
pub struct LeaseGate(Option<Arc<Held>>);

impl LeaseGate {
    /// The gate of no lease: always open (filesystem and memory stores, backfill, validate).
    pub fn open() -> LeaseGate {
        LeaseGate(None)
    }

    /// The lease's token, which fences the tenure's writes.
    pub fn token(&self) -> Option<String> {
        self.0.as_ref().map(|h| h.token.clone())
    }

    /// Waits until a delivery may start: at once while more than TTL/3 is left on the lease's
    /// clock and no Redis operation failed since the lease was last confirmed, else after a
    /// successful renewal. An error means: deliver nothing now.
    pub async fn before_delivery(&self) -> Result<(), StateError> {
        let Some(held) = &self.0 else { return Ok(()) };
        if lock(&held.lost).is_some() {
            return Err(StateError::LeaseLost {
                holder: String::new(),
            });
        }
        // After an outage the lease may be gone (a Redis restarted empty, another holder since):
        // the renewal first, which is also the probe that ends the outage.
        if held.may_deliver() {
            return Ok(());
        }
        // A renewal's "done" is true of the moment Redis ran it. A holder paused (SIGSTOP, a
        // suspend) between sending it and reading the reply may find its validity run out by
        // then, and another holder since: it asks Redis once more, and delivers only on a
        // reply that comes back in time.
        for _ in 0..2 {
            held.renew().await?;
            if held.may_deliver() {
                return Ok(());
            }
        }
        Err(StateError::Unavailable {
            address: held.store.redis().map_or("", |r| r.address()).to_owned(),
            reason: RedisCause::LateRenewals,
        })
    }

    /// Whether the coordinator asked for the lease to be handed over: the puller stops at its
    /// next window boundary.
    pub fn hand_over_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|h| h.hand_over.is_cancelled())
    }

    /// Resolves when the coordinator asks for the lease to be handed over (never without one).
    pub async fn hand_over_wanted(&self) {
        match &self.0 {
            Some(held) => held.hand_over.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// A pull cycle succeeded (sharding's health).
    pub fn cycle_succeeded(&self) {
        if let Some(health) = self.0.as_ref().and_then(|h| h.health.as_ref()) {
            health.cycle_succeeded();
        }
    }

    /// A pull cycle failed: whether to give the lease up now, because the cycles keep failing
    /// and another replica is able to pull (never without a coordinator).
    pub fn cycle_failed(&self) -> bool {
        let health = self.0.as_ref().and_then(|h| h.health.as_ref());
        health.is_some_and(Health::cycle_failed)
    }

    /// Records a fenced write's refusal: the tenure ends.
    pub fn refused(&self, e: &StateError) {
        if let (Some(held), StateError::LeaseLost { holder }) = (&self.0, e) {
            held.lost_to(holder);
            held.lose(format!(
                "a state write was refused, the lease is held by {}",
                holder_name(holder)
            ));
        }
    }
}

/// The fan-out asks the lease before each output's turn (outputs know nothing of leases).
impl crate::output::DeliveryGate for LeaseGate {
    fn before_delivery(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<(), crate::output::gate::Refusal>> {
        Box::pin(async {
            LeaseGate::before_delivery(self)
                .await
                .map_err(|e| crate::output::gate::Refusal(Box::new(e)))
        })
    }
}

/// One tenure: from taking the lease to losing or releasing it.
pub struct Tenure {
    held: Option<Arc<Held>>,
    /// The tenure's token: cancelled when it ends (loss or shutdown).
    stop: CancellationToken,
    renewal: Option<tokio::task::JoinHandle<()>>,
    /// This replica's claim on the lease (with a coordinator): counted as held until dropped.
    claim: Option<Claim>,
}

impl Tenure {
    /// The tenure of a store without leases: it ends only with a shutdown.
    fn unshared(cancel: &CancellationToken) -> Tenure {
        Tenure {
            held: None,
            stop: cancel.child_token(),
            renewal: None,
            claim: None,
        }
    }

    /// Starts renewing `held` every TTL/3; `claim` (with a coordinator) is this replica's.
    fn start(mut held: Held, claim: Option<Claim>) -> Tenure {
        if let Some(claim) = &claim {
            claim.taken();
            held.hand_over = claim.hand_over();
        }
        let held = Arc::new(held);
        let stop = held.stop.clone();
        let renewal = tokio::spawn(renew_every(held.clone()));
        Tenure {
            held: Some(held),
            stop,
            renewal: Some(renewal),
            claim,
        }
    }

    /// The gate the outputs ask before each delivery.
    pub fn gate(&self) -> LeaseGate {
        LeaseGate(self.held.clone())
    }

    /// Cancelled when the tenure ends: the puller's token for it.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Why the lease was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.held.as_ref().and_then(|h| lock(&h.lost).clone())
    }

    /// Whether the lease was lost to another holder (who may have moved the state on since).
    pub fn lost_to_another(&self) -> bool {
        (self.held.as_ref()).is_some_and(|h| h.lost_to_another.load(Ordering::SeqCst))
    }

    /// Stops the renewal; the held lease, if any.
    fn end(mut self) -> Option<Arc<Held>> {
        self.stop.cancel();
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        self.held.take()
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
    }
}

/// The renewal task: every TTL/3 (sooner after a failure), until the tenure ends.
async fn renew_every(held: Arc<Held>) {
    let mut wait = held.ttl / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = held.stop.cancelled() => return,
        }
        wait = match held.renew().await {
            Ok(()) => held.ttl / 3,
            Err(StateError::LeaseLost { .. }) => return,
            // Unreachable (logged by the store): try again soon; the gate stops deliveries
            // once the lease's clock runs low.
            Err(_) => standby_retry(held.ttl),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standby_retry_is_a_tenth_of_the_ttl_within_bounds() {
        assert_eq!(
            standby_retry(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            standby_retry(Duration::from_secs(3)),
            Duration::from_millis(300)
        );
        assert_eq!(
            standby_retry(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(
            standby_retry(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
    }

    /// A delivery needs more than a third of the TTL left on the local clock.
    #[test]
    fn the_gate_needs_a_third_of_the_ttl_left() {
        let ttl = Duration::from_secs(30);
        let sent = Duration::from_secs(1_000);
        let until = sent + ttl;
        assert!(may_deliver(until, sent, ttl));
        assert!(may_deliver(until, sent + Duration::from_secs(19), ttl));
        assert!(!may_deliver(until, sent + Duration::from_secs(20), ttl));
        assert!(!may_deliver(until, sent + Duration::from_secs(29), ttl));
        // Woken long after the TTL (SIGSTOP): nothing left.
        assert!(!may_deliver(until, sent + Duration::from_secs(300), ttl));
    }

    /// A suspend counts on the lease's clock: a holder whose machine slept past the TTL right
    /// after a renewal wakes with no validity left, as Redis's clock says. (A suspend cannot be
    /// made on a test machine: this is the arithmetic, on a clock that jumps as
    /// `CLOCK_BOOTTIME` does across one; `CLOCK_MONOTONIC` would not have moved.)
    #[test]
    fn a_suspend_past_the_ttl_leaves_no_validity() {
        use clock::LeaseClock;
        struct Suspended(AtomicU64);
        impl LeaseClock for Suspended {
            fn now(&self) -> LeaseTime {
                Duration::from_secs(self.0.load(Ordering::SeqCst))
            }
        }
        let clock = Arc::new(Suspended(AtomicU64::new(5_000)));
        let ttl = Duration::from_secs(30);
        let until = clock.now() + ttl;
        assert!(may_deliver(until, clock.now(), ttl));
        clock.0.fetch_add(45, Ordering::SeqCst); // the lid closed for 45 s
        assert!(!may_deliver(until, clock.now(), ttl));
        assert_eq!(until.saturating_sub(clock.now()), Duration::ZERO);
    }

    /// Without leases the gate is always open and a tenure ends only with a shutdown.
    #[tokio::test]
    async fn without_leases_the_gate_is_open() {
        let cancel = CancellationToken::new();
        let lease = Lease::new(
            Arc::new(StateStore::memory()),
            "k".into(),
            Service::UrlIsolation,
            ServiceMetrics::detached(Service::UrlIsolation),
        );
        assert_eq!(lease.ttl(), None, "no leases in memory");
        let tenure = lease.take_until_held(&cancel, None).await.unwrap();
        assert!(tenure.gate().before_delivery().await.is_ok());
        assert_eq!(tenure.gate().token(), None);
        assert!(!tenure.token().is_cancelled());
        cancel.cancel();
        assert!(tenure.token().is_cancelled());
        assert_eq!(tenure.lost(), None);
    }
}
