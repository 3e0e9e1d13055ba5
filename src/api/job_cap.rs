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
//!
//! The daemon's audits (`audit::schedule`) draw from a share of the cap ([`JobCap::share`]):
//! with a thousand tenants, every service's audit starts near the same time, and their jobs
//! queued on the cap (FIFO) would make the pullers' current windows wait behind all of them. A
//! share holds and queues at most its own limit on the cap, so a puller waits behind at most
//! that many audit jobs.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DEFAULT_MAX_CONCURRENT_JOBS;

/// The cap of a process, or a share of it ([`JobCap::share`]); cloned handles share it.
#[derive(Clone, Debug)]
pub struct JobCap {
    semaphore: Arc<Semaphore>,
    /// A share's whole cap, whose permit it takes after one of its own.
    whole: Option<Arc<Semaphore>>,
}

/// One job's place under the cap (and under the share it came from); released when dropped.
#[derive(Debug)]
pub struct JobPermit {
    _permit: OwnedSemaphorePermit,
    _of_whole: Option<OwnedSemaphorePermit>,
}

impl JobCap {
    /// A cap of `limit` jobs alive at once (at least 1).
    pub fn new(limit: usize) -> JobCap {
        JobCap {
            semaphore: Arc::new(Semaphore::new(limit.max(1))),
            whole: None,
        }
    }

    /// A share of this cap: at most `limit` (at least 1) of its permits held, or waited for, by
    /// the share's users at once; each of their jobs holds a permit of both.
    pub fn share(&self, limit: usize) -> JobCap {
        JobCap {
            semaphore: Arc::new(Semaphore::new(limit.max(1))),
            whole: Some(self.whole.clone().unwrap_or_else(|| self.semaphore.clone())),
        }
    }

    /// Waits for a permit, in turn (FIFO): a share's first, then the whole cap's.
    pub async fn acquire(&self) -> JobPermit {
        let permit = acquire(&self.semaphore).await;
        let of_whole = match &self.whole {
            Some(whole) => Some(acquire(whole).await),
            None => None,
        };
        JobPermit {
            _permit: permit,
            _of_whole: of_whole,
        }
    }

    /// A permit if one is free now (of the share and of the whole cap); never waits.
    pub fn try_acquire(&self) -> Option<JobPermit> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        let of_whole = match &self.whole {
            Some(whole) => Some(whole.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(JobPermit {
            _permit: permit,
            _of_whole: of_whole,
        })
    }

    /// The permits free now (tests and debugging).
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    (semaphore.clone().acquire_owned().await).expect("the job cap's semaphore is never closed")
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

    /// A share's users hold and wait for at most its limit of the whole cap's permits: the
    /// others' jobs find the rest free, not queued behind the share's.
    #[tokio::test(start_paused = true)]
    async fn a_share_takes_at_most_its_limit_of_the_cap() {
        let cap = JobCap::new(4);
        let audits = cap.share(1);
        let held = audits.acquire().await;
        assert_eq!(cap.available(), 3);
        assert!(
            audits.try_acquire().is_none(),
            "the share's one permit is held"
        );
        let waiting = tokio::spawn({
            let audits = audits.clone();
            async move { audits.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The share's waiter waits on the share, not on the cap: the cap's others go first.
        let others: Vec<JobPermit> = (0..3).map(|_| cap.try_acquire().unwrap()).collect();
        drop(held);
        drop(others);
        let second = waiting.await.unwrap();
        assert_eq!(cap.available(), 3);
        drop(second);
        assert_eq!((cap.available(), audits.available()), (4, 1));
    }
}
