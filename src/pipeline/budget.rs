//! The window memory budget (`globals.window_memory_budget_in_mb`): the bytes of events that the
//! services of one process may hold at once, shared by all of them (and later by its tenants).
//!
//! A window's events are held until every output confirmed them, so what bounds memory is the
//! bytes held in windows, not an event count per service. Each service sizes its windows to its
//! [`share`](WindowBudget::share) (the planner turns bytes into events with the bytes per event it
//! learnt) and asks the budget for a window's bytes once the first page says how many events
//! the window holds ([`WindowBudget::reserve`]); the reservation is released when the window is
//! dropped, that is once it is delivered and committed, or abandoned.
//!
//! Why it cannot deadlock: a window asks with one call for all the bytes it expects, and waits
//! only while it holds nothing else for itself (a tokio semaphore's `acquire_many` takes all of
//! its permits at once or none). What the service may still hold meanwhile is the window being
//! delivered, which never waits on the budget and releases its bytes when it is committed. A
//! window that grows past its reservation takes more only if it is free ([`Reservation::grow`]),
//! never waiting with bytes in hand. A request bigger than the whole budget is cut to the whole
//! budget: it waits until everything else is released and then goes through alone.
//!
//! Why it is fair: the semaphore serves waiters in order (FIFO), so a big request is not
//! starved by small ones, and each service's windows are sized to an equal share (at least
//! [`SHARE_FLOOR`]: with hundreds of tenants the shares add up to more than the budget, and the
//! services whose windows do not fit at the moment wait their turn).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The unit of the semaphore's permits (it counts in `u32` per request).
const UNIT: u64 = 1024;

/// The least bytes a service's share may fall to, however many services share the budget.
pub const SHARE_FLOOR: u64 = 1024 * 1024;

/// The budget of a process; cloned handles share it.
#[derive(Clone, Debug)]
pub struct WindowBudget {
    semaphore: Arc<Semaphore>,
    /// The whole budget, in [`UNIT`]s.
    units: u32,
    /// How many services share it; a reload that adds or removes tenants changes it
    /// ([`WindowBudget::set_sharers`]), and every handle sees the new count at its next window.
    sharers: Arc<AtomicUsize>,
}

/// Bytes held from a [`WindowBudget`] for one window; released when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl WindowBudget {
    /// A budget of `bytes` shared by `sharers` services.
    pub fn new(bytes: u64, sharers: usize) -> WindowBudget {
        let units = (bytes / UNIT).clamp(1, u32::MAX as u64) as u32;
        WindowBudget {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
            sharers: Arc::new(AtomicUsize::new(sharers.max(1))),
        }
    }

    /// The bytes one service may hold at once: an equal share of the budget, but not less than
    /// [`SHARE_FLOOR`] (nor more than the whole budget). With many tenants an equal share would
    /// shrink to windows of a few events; the floor keeps windows useful, and the semaphore
    /// still bounds the total: beyond it, services wait their turn.
    pub fn share(&self) -> u64 {
        let whole = self.whole();
        let sharers = self.sharers.load(Ordering::Relaxed) as u64;
        (whole / sharers).max(SHARE_FLOOR.min(whole))
    }

    /// Shares the budget among `sharers` services from now on (a reload changed the tenants).
    pub fn set_sharers(&self, sharers: usize) {
        self.sharers.store(sharers.max(1), Ordering::Relaxed);
    }

    /// The bytes free now (tests and debugging).
    pub fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }

    /// The whole budget in bytes (`window_memory_budget_in_mb`, in whole KiB).
    pub fn whole(&self) -> u64 {
        self.units as u64 * UNIT
    }

    /// The bytes windows hold now (the metric `window_memory_held_bytes`).
    pub fn held(&self) -> u64 {
        self.whole().saturating_sub(self.available())
    }

    /// Waits until `bytes` are free and holds them (at most the whole budget: a window bigger
    /// than the budget waits for all of it and then runs alone).
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let units = units_for(bytes).min(self.units);
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation {
            permit: Some(permit),
        }
    }
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT
    }

    /// Whether nothing is held yet.
    pub fn is_empty(&self) -> bool {
        self.permit.is_none()
    }

    /// Holds `more` bytes in addition if they are free now; never waits (see the module doc).
    /// Returns whether they were taken.
    pub fn grow(&mut self, budget: &WindowBudget, more: u64) -> bool {
        let units = units_for(more);
        if units == 0 {
            return true;
        }
        let Ok(extra) = budget.semaphore.clone().try_acquire_many_owned(units) else {
            return false;
        };
        match self.permit.as_mut() {
            Some(p) => p.merge(extra),
            None => self.permit = Some(extra),
        }
        true
    }
}

/// Whole units covering `bytes`, saturated at `u32::MAX`.
fn units_for(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_share_does_not_fall_below_the_floor_with_many_tenants() {
        assert_eq!(WindowBudget::new(16 << 20, 2).share(), 8 << 20);
        // 1,000 tenants x 2 services: an equal share would be 8 KiB.
        assert_eq!(WindowBudget::new(16 << 20, 2000).share(), SHARE_FLOOR);
        // Never more than the whole budget.
        assert_eq!(WindowBudget::new(512 << 10, 2000).share(), 512 << 10);
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn each_service_gets_an_equal_share() {
        assert_eq!(WindowBudget::new(24 * MIB, 2).share(), 12 * MIB);
        assert_eq!(WindowBudget::new(24 * MIB, 3).share(), 8 * MIB);
        assert_eq!(WindowBudget::new(24 * MIB, 0).share(), 24 * MIB);
    }

    #[test]
    fn every_handle_sees_a_new_number_of_sharers() {
        let budget = WindowBudget::new(24 * MIB, 2);
        let held_by_a_service = budget.clone();
        budget.set_sharers(6);
        assert_eq!(held_by_a_service.share(), 4 * MIB);
        budget.set_sharers(0);
        assert_eq!(held_by_a_service.share(), 24 * MIB);
    }

    #[tokio::test]
    async fn a_reservation_is_released_when_dropped() {
        let budget = WindowBudget::new(10 * MIB, 2);
        let r = budget.reserve(3 * MIB + 1).await;
        assert_eq!(r.bytes(), 3 * MIB + UNIT);
        assert_eq!(budget.available(), 7 * MIB - UNIT);
        assert_eq!((budget.whole(), budget.held()), (10 * MIB, 3 * MIB + UNIT));
        drop(r);
        assert_eq!(budget.available(), 10 * MIB);
        assert_eq!(budget.held(), 0);
    }

    // Paused time: the sleep below returns only once every other task has run as far as it
    // can, so the check after it cannot pass merely because a task was not scheduled yet.
    #[tokio::test(start_paused = true)]
    async fn a_window_bigger_than_the_budget_waits_for_all_of_it_and_runs_alone() {
        let budget = WindowBudget::new(4 * MIB, 2);
        let small = budget.reserve(MIB).await;
        let b = budget.clone();
        let mut big = tokio::spawn(async move { b.reserve(100 * MIB).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!big.is_finished(), "it must wait for the bytes held");
        drop(small);
        let big = (&mut big).await.unwrap();
        assert_eq!(big.bytes(), 4 * MIB);
        assert_eq!(budget.available(), 0);
        // Nobody else gets in while it runs.
        let mut other = Reservation::default();
        assert!(!other.grow(&budget, 1));
        drop(big);
        assert!(other.grow(&budget, 1));
    }

    #[tokio::test]
    async fn growing_never_waits_and_takes_only_free_bytes() {
        let budget = WindowBudget::new(4 * MIB, 1);
        let mut r = budget.reserve(3 * MIB).await;
        assert!(r.grow(&budget, MIB));
        assert_eq!(r.bytes(), 4 * MIB);
        assert!(!r.grow(&budget, 1), "nothing is free");
        assert_eq!(r.bytes(), 4 * MIB);
        assert!(r.grow(&budget, 0));
        drop(r);
        assert_eq!(budget.available(), 4 * MIB);
    }

    /// Fair (FIFO): a big request that waits is served before smaller ones that came later, so
    /// a service with a big window is not starved by another's stream of small ones.
    // Paused time: the sleep below returns only once every other task has run as far as it
    // can, so the check after it cannot pass merely because a task was not scheduled yet.
    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let budget = WindowBudget::new(4 * MIB, 2);
        let held = budget.reserve(3 * MIB).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for (name, bytes) in [("big", 4 * MIB), ("small", MIB)] {
            let (b, tx) = (budget.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let r = b.reserve(bytes).await;
                tx.send(name).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(r);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One MiB is free, but the small request queues behind the big one.
        assert!(rx.try_recv().is_err());
        drop(held);
        assert_eq!(rx.recv().await, Some("big"));
        assert_eq!(rx.recv().await, Some("small"));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(budget.available(), 4 * MIB);
    }

    /// Two services that each hold a window being delivered and ask for the next one with the
    /// budget full: both get through once their delivered windows are released (no deadlock).
    #[tokio::test]
    async fn services_waiting_with_windows_in_delivery_all_progress() {
        let budget = WindowBudget::new(4 * MIB, 2);
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let b = budget.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    let delivering = b.reserve(2 * MIB).await;
                    let next = b.reserve(2 * MIB);
                    let release = async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        drop(delivering);
                    };
                    let (next, ()) = tokio::join!(next, release);
                    drop(next);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("no deadlock")
                .unwrap();
        }
        assert_eq!(budget.available(), 4 * MIB);
    }
}
