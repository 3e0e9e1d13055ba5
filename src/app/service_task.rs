//! One service's task ([`ServiceTask`]): its setup, then the lease loop. With Redis persistence
//! a service pulls only while this process holds its lease ([`crate::ha::lease`]): after
//! setup it stands by until it takes the lease, pre_pulls, pulls, and goes back to standby if the
//! lease is lost. With a sharding coordinator it takes the lease only within this replica's fair
//! share, and hands it over at a window boundary when the coordinator asks
//! ([`crate::ha::shard`]). It reports its health there: able once its setup passed; when
//! its cycles keep failing and another replica is able to pull, it hands the lease over and runs
//! the setup check again before it takes a lease again. Its `cancel` is its tenant's token: a
//! tenant stopped (shutdown, or a reload that removes or changes it) ends the tenure like a
//! shutdown, and the lease is released.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use super::RunOptions;
use crate::config::connection::ProxyRoute;
use crate::config::ServiceConfig;
use crate::ha::lease::{Lease, LeaseGate, TakeError, Tenure};
use crate::puller::{Ended, PullError, Puller};
use crate::state::StateError;

/// One service's task: its puller, and the lease it pulls under.
pub(super) struct ServiceTask {
    pub(super) puller: Puller,
    pub(super) svc: ServiceConfig,
    pub(super) lease: Lease,
    pub(super) options: RunOptions,
    pub(super) cancel: CancellationToken,
}

/// Why a tenure ended.
enum Stopped {
    /// A shutdown, or the end of `--once`: release the lease.
    Done,
    /// The coordinator asked for the lease, and the window in flight is committed: hand it over.
    HandOver,
    /// The cycles keep failing and another replica is able to pull: hand the lease over, and
    /// pass the setup check again before taking a lease again.
    Unable,
    /// The lease was lost (why): stand by.
    LeaseLost(String),
    /// The state is missing since Redis was wiped and another replica may hold it: release the
    /// lease and leave it to the others for this long.
    LeftToOthers(Duration),
}

impl ServiceTask {
    /// Pulls the service until it is stopped: `--once` (one cycle), or the daemon (the lease
    /// loop, until the shutdown). In the daemon, every wait before pulling
    /// starts (the setup retry, the standby, the `pre_pull` retry) ends at once on `cancel`, and
    /// a service stopped there stopped cleanly.
    pub(super) async fn pull_until_stopped(mut self, setup_span: tracing::Span) -> bool {
        info!("Starting thread");
        setup_span.in_scope(|| log_connection(&self.svc));
        if self.options.once {
            return self.run_once(setup_span).await;
        }
        warn!("Waiting until setup will be executed");
        if !self.set_up(&setup_span).await {
            return true;
        }
        loop {
            let tenure = match self.lease.take_until_held(&self.cancel, None).await {
                Ok(tenure) => tenure,
                Err(_) => return true,
            };
            match self.run_tenure(&tenure).await {
                Stopped::Done => {
                    self.lease.release(tenure).await;
                    return true;
                }
                Stopped::HandOver => {
                    self.puller.another_holds_it(true).await;
                    self.lease.hand_over(tenure).await;
                }
                Stopped::Unable => {
                    self.puller.another_holds_it(true).await;
                    if !self.give_up(tenure, &setup_span).await {
                        return true;
                    }
                }
                Stopped::LeaseLost(reason) => {
                    if tenure.lost_to_another() {
                        self.puller.another_holds_it(false).await;
                    }
                    self.lease.lost(tenure, &reason);
                }
                Stopped::LeftToOthers(time) => self.lease.leave_to_others(tenure, time).await,
            }
        }
    }

    /// Hands the lease of a service whose cycles keep failing over to a replica able to pull it,
    /// then runs the setup check until it passes again (`false`: cancelled meanwhile).
    async fn give_up(&mut self, tenure: Tenure, setup_span: &tracing::Span) -> bool {
        warn!(
            "Handing the lease of {} over: its last {} pull cycles failed and another replica is able to pull it. This replica takes a lease again only after its setup check passes again; the errors above say what fails here.",
            self.svc.service,
            crate::ha::shard::UNABLE_AFTER
        );
        self.lease.setup_passed(false);
        self.lease.hand_over(tenure).await;
        // The tenure's token is cancelled: the setup check runs under the service's.
        self.puller
            .start_tenure(LeaseGate::open(), self.cancel.clone());
        self.set_up(setup_span).await
    }

    /// Runs the setup check until it passes (then the service counts as able to pull), or until
    /// `cancel` (`false`).
    async fn set_up(&mut self, setup_span: &tracing::Span) -> bool {
        let passed = self
            .puller
            .setup_until_ready()
            .instrument(setup_span.clone())
            .await
            .is_ok();
        self.lease.setup_passed(passed);
        passed
    }

    /// Pulls while `tenure` lasts: `pre_pull` (the state is read again for each tenure, so
    /// outputs resume from its committed positions), then the pull cycles.
    async fn run_tenure(&mut self, tenure: &Tenure) -> Stopped {
        self.puller.start_tenure(tenure.gate(), tenure.token());
        let mut outage =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            let wait = match self.puller.pre_pull().await {
                Ok(()) => break,
                Err(e) if e.is_lease_lost() => return Stopped::LeaseLost(e.to_string()),
                Err(e) if e.left_to_others().is_some() => {
                    return Stopped::LeftToOthers(e.left_to_others().unwrap_or_default())
                }
                // Logged once by the store.
                Err(e) if e.is_unavailable() => outage.next_wait(),
                Err(e) => {
                    error!("{e}. Sleeping 60 sec before retry pre-pull");
                    Duration::from_secs(60)
                }
            };
            let stop = tenure.token();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return self.why_stopped(tenure, None),
            }
        }
        match self.puller.run_forever().await {
            Ended::HandOver => Stopped::HandOver,
            Ended::Unable => Stopped::Unable,
            Ended::Cancelled => self.why_stopped(tenure, None),
            Ended::LeaseLost(e) => self.why_stopped(tenure, Some(e)),
        }
    }

    fn why_stopped(&self, tenure: &Tenure, lost: Option<StateError>) -> Stopped {
        if self.cancel.is_cancelled() {
            return Stopped::Done;
        }
        match (tenure.lost(), lost) {
            (Some(reason), _) => Stopped::LeaseLost(reason),
            (None, Some(e)) => Stopped::LeaseLost(e.to_string()),
            // The daemon's tenure ends only with a shutdown or a loss; `--once`'s at its end.
            (None, None) => Stopped::Done,
        }
    }

    /// `run --once`: setup, the lease (waiting at most its TTL and 5 s), one catch-up cycle.
    async fn run_once(&mut self, setup_span: tracing::Span) -> bool {
        if let Err(e) = self.puller.setup().instrument(setup_span).await {
            error!("{e}");
            return false;
        }
        let limit = self.lease_wait_limit();
        let tenure = match self.lease.take_until_held(&self.cancel, limit).await {
            Ok(tenure) => tenure,
            Err(TakeError::Cancelled) => return false,
            Err(TakeError::HeldBy { holder, waited }) => {
                error!(
                    "The lease of {} is still held by {holder} after {:.0} s: another collector pulls this service; stop it, or let it run",
                    self.svc.service,
                    waited.as_secs_f64()
                );
                return false;
            }
            Err(TakeError::Store(e)) => {
                error!("Cannot take the lease of {}: {e}", self.svc.service);
                return false;
            }
        };
        self.puller.start_tenure(tenure.gate(), tenure.token());
        let ok = self.pull_once().await;
        match self.why_stopped(&tenure, None) {
            Stopped::LeaseLost(reason) => {
                self.lease.lost(tenure, &reason);
                false
            }
            // `--once` has no coordinator: it takes every lease it may.
            Stopped::Done | Stopped::HandOver | Stopped::Unable | Stopped::LeftToOthers(_) => {
                self.lease.release(tenure).await;
                ok
            }
        }
    }

    /// How long `--once` waits for the lease: its TTL and 5 s (none without leases).
    fn lease_wait_limit(&self) -> Option<Duration> {
        self.lease.ttl().map(|ttl| ttl + Duration::from_secs(5))
    }

    /// `pre_pull` and one pull cycle.
    async fn pull_once(&mut self) -> bool {
        if let Err(e) = self.puller.pre_pull().await {
            error!("{e}");
            return false;
        }
        match self.puller.pull().await {
            Ok(_) => true,
            Err(PullError::Cancelled) => {
                warn!("Retrieving loop has been interrupted due to a controlled stopping action has been activated");
                false
            }
            Err(e) => {
                error!("Pull failed for {}: {e}", self.svc.service);
                false
            }
        }
    }
}

/// Says how a service reaches the API: "via proxy http://host:port (from HTTPS_PROXY)" or
/// "direct", and which roots it trusts (never proxy credentials).
pub(super) fn log_connection(svc: &ServiceConfig) {
    let c = &svc.connection;
    info!(
        "API connection for {}: {}; trusting {}",
        svc.service,
        ProxyRoute::describe(c.proxy.as_ref()),
        c.trust
    );
}
