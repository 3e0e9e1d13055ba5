//! The process-wide cap on API jobs alive at once (`globals.max_concurrent_jobs`): a job holds
//! a permit from its creation until its last page is downloaded.
//!
//! With many tenants in one process, the jobs they run at once add up on the network and in
//! memory (a job created with a completed first page holds that page). The cap is a tokio
//! semaphore, which serves waiters in order (FIFO): a tenant waiting for a permit is served
//! before anyone who asked later, so permits are handed out fairly.
//!
//! Why no tenant can hold the cap hostage: only a service's CURRENT window waits for a permit.
//! Jobs created ahead (`isolation::lookahead`) only take a permit that is free now
//! ([`JobCap::try_acquire`]) and are simply not created otherwise. And a current window that
//! finds no free permit while its own service holds permits for jobs ahead takes one of those
//! back (the last job ahead is dropped; its window gets a job again at its turn) instead of
//! waiting with permits in hand. So every waiter holds nothing, and every permit is held by a
//! job that is being downloaded or that its service will use or drop: the cap cannot deadlock.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DEFAULT_MAX_CONCURRENT_JOBS;

/// The cap of a process; cloned handles share it.
#[derive(Clone, Debug)]
pub struct JobCap {
    semaphore: Arc<Semaphore>,
}

/// One job's place under the cap; released when dropped.
#[derive(Debug)]
pub struct JobPermit {
    _permit: OwnedSemaphorePermit,
}

impl JobCap {
    /// A cap of `limit` jobs alive at once (at least 1).
    pub fn new(limit: usize) -> JobCap {
        JobCap {
            semaphore: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// Waits for a permit, in turn (FIFO).
    pub async fn acquire(&self) -> JobPermit {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the job cap's semaphore is never closed");
        JobPermit { _permit: permit }
    }

    /// A permit if one is free now; never waits.
    pub fn try_acquire(&self) -> Option<JobPermit> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(JobPermit { _permit: permit })
    }

    /// The permits free now (tests and debugging).
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

impl Default for JobCap {
    fn default() -> Self {
        JobCap::new(DEFAULT_MAX_CONCURRENT_JOBS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_turn_and_try_acquire_never_waits() {
        let cap = JobCap::new(1);
        let held = cap.acquire().await;
        assert!(cap.try_acquire().is_none());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (cap, tx) = (cap.clone(), tx.clone());
            tokio::spawn(async move {
                let _p = cap.acquire().await;
                tx.send(n).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            });
            // Each asks after the one before.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        let order: Vec<i32> = vec![
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(order, [0, 1, 2]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cap.available(), 1);
    }
}
