//! A puller's checkpoint: its service's state (cursors, dedup memory, output positions) in memory
//! and on disk, through its lifecycle.
//!
//! A module of its own because the rules for when the state may move are what make delivery
//! exactly-once, and they do not depend on how windows are fetched or delivered:
//! - at start, Devo's `pre_pull` steps ([`Checkpoint::restore`]): load, upgrade, correct, reset
//!   when `start_time_in_utc` changed, and write the state back if any step changed it;
//! - after a window that every output confirmed ([`Checkpoint::commit`]): the dedup memory, the
//!   outputs' positions and the cursors move together, in one atomic write;
//! - after a failed write, the state in memory is ahead of the one that would survive a crash, so
//!   the next cycle starts from the one on disk ([`Checkpoint::reload_if_behind`]).
//!
//! A state missing from a Redis that was wiped (its generation marker says so,
//! [`crate::state::redis::RedisStore::check_generation`]) is not silently started afresh from
//! `start_time_in_utc`, which would deliver up to 30 days again to every output:
//! - a process that held the state last (its last tenure did not end by a hand-over, nor by
//!   losing the lease to another holder, unless that holder took a lease the wipe had just
//!   freed) writes back the state it has in memory, and warns;
//! - any other process leaves the service to the others for [`WIPE_GRACE_TTLS`] lease TTLs
//!   (`StateError::LeftToOthers`: the lease is released and not taken meanwhile), so that the
//!   replica that held it can write it back;
//! - after that grace, a process with an older state in memory writes that one back (what came
//!   after it is collected again), and one with none starts afresh, with an error that says so.
//!
//! A missing state in a store that was *not* wiped is a first start or a `state reset`: it starts
//! afresh from `start_time_in_utc`, as before.
//!
//! [`crate::state`] does the storing (format, atomic writes, the correction rules); this module
//! decides when. With Redis, every write carries the token of the service's lease (its
//! *fence*, [`Checkpoint::set_fence`]) and is refused once another process holds the lease.

use std::sync::Arc;

use tracing::{error, warn};

use crate::config::ServiceConfig;
use crate::devo::log_lines;
use crate::event::UNDATED;
use crate::metrics::ServiceMetrics;
use crate::output::Position;
use crate::pipeline::dedup::DedupPlan;
use crate::pipeline::ledger::sketch::Sketch;
use crate::pipeline::ledger::InFlight;
use crate::pipeline::window::Window;
use crate::service::RETENTION;
use crate::state::dead_letter::DeadLetter;
use crate::state::redis::Wipe;
use crate::state::{correct, ServiceState, StateError, StateStore, WIPE_GRACE_TTLS};
use crate::timestamp::{format_iso, Millis};

/// One service's state and where it is stored.
pub struct Checkpoint {
    store: Arc<StateStore>,
    /// The state's key in the store (input id and service).
    key: String,
    state: ServiceState,
    /// The state in memory may be ahead of the one on disk (a failed write): reload it.
    needs_reload: bool,
    /// Counts failed writes and shows the committed checkpoint.
    metrics: ServiceMetrics,
    /// The token of the lease this process holds for the service (Redis: writes are fenced).
    fence: Option<String>,
    /// What the state in memory is worth if the store loses it.
    memory: Memory,
}

/// The state in memory, as a copy of the stored one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Memory {
    /// None yet: a fresh state until the first [`Checkpoint::restore`].
    Nothing,
    /// The state of this process's last tenure, which nobody else held after it (as far as this
    /// process knows): the newest there is.
    Last,
    /// The state of a tenure that ended with the lease going to another holder, who may have
    /// moved it on.
    Older,
}

/// The earliest time the API still serves, with a margin for the time a job takes.
fn earliest_available(now: Millis) -> Millis {
    now - RETENTION.as_millis() as Millis + 10 * 60_000
}

impl Checkpoint {
    /// The checkpoint of `svc` stored under `key`; its state is a fresh one until [`Self::restore`].
    pub fn new(
        store: Arc<StateStore>,
        key: String,
        svc: &ServiceConfig,
        metrics: ServiceMetrics,
    ) -> Checkpoint {
        let start = svc.start_time.map_or(0, |t| t.timestamp_millis());
        Checkpoint {
            store,
            key,
            state: ServiceState::new(svc.start_time_text.clone(), start),
            needs_reload: false,
            metrics,
            fence: None,
            memory: Memory::Nothing,
        }
    }

    /// Stores `letters` in the service's dead-letter store (fenced by the lease like every
    /// write), before the window that set them aside commits. Returns those that were not there
    /// yet: a window fetched again (a failed delivery, a crash before its commit) sets the same
    /// letters aside again, and each is stored, counted and logged once.
    pub async fn set_aside(&self, letters: Vec<DeadLetter>) -> Result<Vec<DeadLetter>, StateError> {
        if letters.is_empty() {
            return Ok(letters);
        }
        let mut known: std::collections::HashSet<String> = (self.store.dead_letters(&self.key))
            .await?
            .into_iter()
            .map(|l| l.id)
            .collect();
        let new: Vec<DeadLetter> = letters
            .into_iter()
            .filter(|l| known.insert(l.id.clone()))
            .collect();
        self.store
            .set_aside(&self.key, &new, self.fence.as_deref())
            .await?;
        Ok(new)
    }

    /// The tenure ended with the lease going to another holder (`handed_over`, or lost to
    /// another): the state in memory may be older than the stored one from now on. Unless the
    /// store was wiped just now: then the other took a lease that the wipe freed, and this
    /// process's state is still the newest there is.
    pub async fn another_holds_it(&mut self, handed_over: bool) {
        if self.memory != Memory::Last {
            return;
        }
        let ttl = self.store.redis().map(|r| r.ttl());
        let wiped_now = !handed_over
            && matches!(
                (self.store.check_generation().await, ttl),
                (Ok(Some(wipe)), Some(ttl)) if wipe.age < ttl
            );
        if !wiped_now {
            self.memory = Memory::Older;
        }
    }

    /// Fences every write from now on with `token`, the lease of this tenure.
    pub fn set_fence(&mut self, token: Option<String>) {
        self.fence = token;
    }

    /// Counts into `metrics` from now on.
    pub fn set_metrics(&mut self, metrics: ServiceMetrics) {
        self.metrics = metrics;
    }

    /// The state in memory.
    pub fn state(&self) -> &ServiceState {
        &self.state
    }

    /// The position `output` committed for `table`, if any.
    pub fn position(&self, output: &str, table: &str) -> Option<Position> {
        self.state.positions.get(output)?.get(table).cloned()
    }

    /// Devo's `pre_pull` persistence steps: load, upgrade, correct, reset, save if changed.
    pub async fn restore(&mut self, svc: &ServiceConfig, now: Millis) -> Result<(), StateError> {
        log_lines::reading_persisted_data();
        let wipe = self.store.check_generation().await?;
        let (loaded, mut changed) = self.load_upgraded().await?;
        let loaded = match (loaded, wipe) {
            (None, Some(wipe)) => self.after_wipe(wipe)?,
            (loaded, _) => loaded,
        };
        log_lines::corrections_steps();
        let mut loaded = loaded.map(|mut s| {
            for change in correct(&mut s, now, earliest_available(now)) {
                warn!("Correction: {change}.");
                changed = true;
            }
            s
        });
        // The reset step: a different start_time_in_utc restarts the persistence (Devo).
        log_lines::reset_steps();
        if loaded.as_ref().is_some_and(|s| start_time_changed(s, svc)) {
            loaded = None;
            changed = true;
        }
        let previous = loaded.as_ref().map(ServiceState::summary);
        let fresh = || ServiceState::new(svc.start_time_text.clone(), start_ms(svc, now));
        let state = loaded.unwrap_or_else(fresh);
        if changed {
            log_lines::persistence_changed(previous.as_deref().unwrap_or("{}"), &state.summary());
            self.save_state(&state).await?;
            log_lines::persistence_updated();
        } else {
            log_lines::persistence_unchanged();
        }
        self.metrics.checkpoint(state.cursors.checkpoint);
        self.state = state;
        self.memory = Memory::Last;
        Ok(())
    }

    /// The state to go on from when it is missing from a store that was wiped (`wipe`): the one
    /// in memory, none (start afresh), or an error that leaves the service to another replica
    /// for the rest of the grace (see the module doc).
    fn after_wipe(&self, wipe: Wipe) -> Result<Option<ServiceState>, StateError> {
        let location = self.store.location(&self.key);
        let grace =
            (self.store.redis()).map_or(std::time::Duration::ZERO, |r| r.ttl() * WIPE_GRACE_TTLS);
        let remaining = grace.saturating_sub(wipe.age);
        match self.memory {
            Memory::Last => {}
            _ if !remaining.is_zero() => {
                return Err(StateError::LeftToOthers {
                    location,
                    remaining,
                })
            }
            Memory::Older => {}
            Memory::Nothing => {
                error!(
                    "The state at {location} is missing since Redis was wiped, and no replica wrote it back within {} s: it starts again from start_time_in_utc, and its events are delivered again to every output.",
                    grace.as_secs()
                );
                return Ok(None);
            }
        }
        warn!(
            "The state at {location} was missing since Redis was wiped; wrote back the state this process held (checkpoint {}){}.",
            format_iso(self.state.cursors.checkpoint),
            match self.memory {
                Memory::Last => ": nothing is collected again",
                _ => ", from an earlier tenure: what was collected after it is collected again",
            }
        );
        self.metrics.state_written_back();
        Ok(Some(self.state.clone()))
    }

    /// The load and upgrade steps: the stored state, if any, and whether it must be written back
    /// (there was none, or it was upgraded).
    async fn load_upgraded(&self) -> Result<(Option<ServiceState>, bool), StateError> {
        match self.store.load(&self.key).await? {
            None => {
                log_lines::persistence_empty();
                Ok((None, true))
            }
            Some((state, report)) => {
                log_lines::persistence_retrieved(&state.summary());
                log_lines::upgrade_steps();
                match report.upgraded_from {
                    Some(1) => warn!("Upgraded the persistence from @persistence_version 1; events at the last checkpoint's second may be delivered again once."),
                    Some(v) => warn!("Upgraded the persistence from @persistence_version {v}; each file output's position learns which file it is of at its next start (nothing is delivered again)."),
                    None => {}
                }
                Ok((Some(state), report.upgraded_from.is_some()))
            }
        }
    }

    /// Starts the next cycle from the state on disk if a write failed since the last one.
    pub async fn reload_if_behind(&mut self) -> Result<(), StateError> {
        if self.needs_reload {
            if let Some((s, _)) = self.store.load(&self.key).await? {
                self.state = s;
            }
            self.needs_reload = false;
        }
        Ok(())
    }

    /// Writes the positions outputs reported when they resumed.
    pub async fn save_positions(
        &mut self,
        table: &str,
        positions: Vec<(String, Position)>,
    ) -> Result<(), StateError> {
        self.record_positions(table, positions);
        self.save_state(&self.state).await
    }

    /// Writes that a late-arrival sweep ran at `now`.
    pub async fn swept(&mut self, now: Millis) -> Result<(), StateError> {
        self.state.cursors.last_sweep = Some(now);
        self.save_state(&self.state).await
    }

    /// Commits window `w` (whose job was created at `created`), which every output confirmed:
    /// applies its dedup `plan`, records the outputs' `positions`, moves the cursors past it and
    /// writes the state. If the write fails, the next cycle reloads the state from disk.
    pub async fn commit(
        &mut self,
        w: Window,
        created: Millis,
        plan: DedupPlan,
        positions: Vec<(String, Position)>,
        svc: &ServiceConfig,
    ) -> Result<(), StateError> {
        log_lines::updating_persistence();
        self.record_in_ledger(&plan);
        self.state.dedup.apply(plan);
        self.record_positions(&svc.table, positions);
        self.advance_cursors(w, created, svc.lookback.as_millis() as Millis);
        self.seal_closed_hours().await;
        self.write_or_reload().await?;
        self.metrics.checkpoint(self.state.cursors.checkpoint);
        Ok(())
    }

    /// Commits a repair (`crate::audit::repair`) of events delivered to every output: each of
    /// `copies` (`(date, dedup key, copy number)`) is counted in its hour with its digest, the
    /// outputs' `positions` in `table` recorded, and the hour's repair in flight cleared; the
    /// cursors and the dedup memory do not move (the repaired hours are behind the dedup
    /// horizon). If the write fails, the next use reloads the state from disk.
    pub async fn commit_repair(
        &mut self,
        table: &str,
        hour: Millis,
        copies: &[(Millis, [u8; 32], u32)],
        positions: Vec<(String, Position)>,
    ) -> Result<(), StateError> {
        self.state.ledger.set_in_flight(hour, None);
        for (date, key, copy) in copies {
            self.state.ledger.record_copy(*date, key, *copy);
        }
        self.record_positions(table, positions);
        self.seal_closed_hours().await;
        self.write_or_reload().await
    }

    /// Writes that a repair of the hour starting at `hour` is sending to outputs that cannot take
    /// it back (`Some`), before it does; or clears that (`None`).
    pub async fn set_repair_in_flight(
        &mut self,
        hour: Millis,
        repair: Option<InFlight>,
    ) -> Result<(), StateError> {
        self.state.ledger.set_in_flight(hour, repair);
        self.write_or_reload().await
    }

    /// The digest of the copies delivered in the hour starting at `hour`: sealed and pending.
    pub async fn delivered_digest(&self, hour: Millis) -> Result<Sketch, StateError> {
        (self.store)
            .delivered_digest(&self.key, &self.state.ledger, hour)
            .await
    }

    /// Counts the events `plan` delivers for the first time in the audit ledger, which then
    /// forgets what the API no longer keeps.
    fn record_in_ledger(&mut self, plan: &DedupPlan) {
        let state = &mut self.state;
        for (date, key, copy) in state.dedup.new_copies(plan) {
            if date != UNDATED {
                state.ledger.record_copy(date, key, copy);
            }
        }
        state
            .ledger
            .prune(state.cursors.checkpoint - RETENTION.as_millis() as Millis);
    }

    /// Seals the pending digests of the hours that the dedup horizon has passed (no query returns
    /// their events again) into the store, then drops them from the state that is saved next
    /// (see `crate::state::digests`: a crash between the two seals the same entries again). A
    /// seal that fails keeps them pending, to be sealed at a later commit: nothing is lost.
    async fn seal_closed_hours(&mut self) {
        let ready = (self.state.ledger).pending_before(self.state.cursors.horizon());
        if ready.is_empty() {
            return;
        }
        let fence = self.fence.as_deref();
        match self.store.seal_digests(&self.key, &ready, fence).await {
            Ok(()) => {
                for (hour, digest) in &ready {
                    self.state.ledger.sealed(*hour, digest.seal);
                }
            }
            // An unreachable store fails the state's write right after, which logs the outage
            // once (the contract's line); a second line for the same outage would only repeat it.
            Err(e) if e.is_unavailable() => {}
            Err(e) => warn!(
                "Could not seal the digests of {} hour(s) into the store ({e}); they stay in the state and are sealed at a later commit.",
                ready.len()
            ),
        }
    }

    /// Stores outputs' positions in `table`, to be saved with the next state.
    fn record_positions(&mut self, table: &str, positions: Vec<(String, Position)>) {
        for (output, p) in positions {
            self.state
                .positions
                .entry(output)
                .or_default()
                .insert(table.to_owned(), p);
        }
    }

    /// Moves the cursors past the delivered window `w` (whose job was created at `created`) and
    /// forgets dedup records behind the new horizon.
    fn advance_cursors(&mut self, w: Window, created: Millis, lookback: Millis) {
        let c = &mut self.state.cursors;
        if w.from <= c.settled {
            let settled_by_now = created - lookback;
            c.settled = c.settled.max(w.to.min(settled_by_now));
        }
        c.checkpoint = c.checkpoint.max(w.to);
        let horizon = c.horizon();
        self.state.dedup.prune(horizon);
    }

    /// Writes the state; if the write fails, the next use reloads it from the store (whether
    /// the write landed is unknown).
    async fn write_or_reload(&mut self) -> Result<(), StateError> {
        let written = self.save_state(&self.state).await;
        self.needs_reload |= written.is_err();
        written
    }

    /// Writes `state`, counting a failure.
    async fn save_state(&self, state: &ServiceState) -> Result<(), StateError> {
        let result = self
            .store
            .save(&self.key, state, self.fence.as_deref())
            .await;
        if result.is_err() {
            self.metrics.state_write_failed();
        }
        result
    }
}

/// The reset check: whether `state` was created for another `start_time_in_utc` than the
/// configured one (it then restarts, as Devo's persistence does), saying so if it was.
fn start_time_changed(state: &ServiceState, svc: &ServiceConfig) -> bool {
    if state.start_time_in_utc == svc.start_time_text {
        return false;
    }
    warn!(
        "start_time_in_utc changed from {:?} to {:?}: the persistence is restarted and events are collected again from the new start.",
        state.start_time_in_utc.as_deref().unwrap_or("default"),
        svc.start_time_text.as_deref().unwrap_or("default")
    );
    true
}

/// The configured start, clamped to the API's retention.
fn start_ms(svc: &ServiceConfig, now: Millis) -> Millis {
    let earliest = earliest_available(now);
    match svc.start_time {
        None => earliest,
        Some(t) if t.timestamp_millis() < earliest => {
            warn!(
                "start_time_in_utc {} is older than the API's 30-day retention; starting at {} instead.",
                svc.start_time_text.as_deref().unwrap_or_default(),
                format_iso(earliest)
            );
            earliest
        }
        Some(t) => t.timestamp_millis(),
    }
}
