//! Jobs created ahead (`max_concurrent_jobs`): while one window's job is polled, downloaded and
//! delivered, the jobs of the next windows already run on the server, so a backfill pays the
//! API's job latency about once per `max_concurrent_jobs` windows instead of once per window.
//!
//! Only the creation runs ahead. A job created ahead is not polled or paged until its turn, so
//! it holds no events (unless the server answers the creation with a completed first page,
//! isolation-api.md §4: then that one page waits, at most `max_concurrent_jobs - 1` pages in
//! all). Windows are still delivered and committed strictly in order by the puller; every
//! request still goes through the client's `requests_per_second` pacing and `requests_limits`.
//!
//! A job created ahead is used only for the window it was created for. When a window turns out
//! too big, the planner splits it, and the jobs ahead stay valid: the smaller windows that
//! replace it get jobs of their own at their turn and end, at the latest, where the big window
//! ended, which is where the first job ahead takes over. So no job is dropped while it may
//! still run on the server, and `max_concurrent_jobs` bounds the jobs running at once.
//! Nothing is lost: no event of a job is delivered before its turn.
//!
//! Each job ahead holds a permit of the process's job cap (`isolation::job_cap`), taken only if
//! free: with the cap in use elsewhere, fewer jobs run ahead. The current window may take the
//! last job ahead's permit back ([`LookAhead::give_back_last`]) rather than wait holding it.

use std::collections::VecDeque;

use crate::api::client::{ApiClient, CreatedJob, FetchError};
use crate::api::job_cap::{JobCap, JobPermit};
use crate::clock::SharedClock;
use crate::pipeline::window::{Window, WindowPlanner};
use crate::timestamp::{from_millis, Millis};

/// A job created for a window ahead of its turn.
#[derive(Debug)]
pub struct JobAhead {
    /// The window it was created for (planned with the density known then).
    pub window: Window,
    /// When it was created (wall clock): its snapshot of the API's data is as of then.
    pub created: Millis,
    /// The end of the window it follows: the window before it must end here.
    follows: Millis,
    pub job: CreatedJob,
    /// Its place under the process's job cap, until it is downloaded.
    pub permit: JobPermit,
}

/// The jobs created ahead of the current window, in window order.
#[derive(Debug)]
pub struct LookAhead {
    /// `max_concurrent_jobs`: the current window's job plus the jobs ahead.
    limit: usize,
    jobs: VecDeque<JobAhead>,
}

impl LookAhead {
    pub fn new(max_concurrent_jobs: usize) -> LookAhead {
        LookAhead {
            limit: max_concurrent_jobs.max(1),
            jobs: VecDeque::new(),
        }
    }

    /// The window to fetch now, given the one the planner wants next (`planned`), and its job
    /// if one was created ahead. A job ahead that starts where `planned` starts is used with
    /// its own end (planned with an older density). After a split, `planned` is cut to end
    /// where the first job ahead takes over, and gets a job of its own.
    pub fn take(&mut self, planned: Window) -> (Window, Option<JobAhead>) {
        match self.jobs.front() {
            Some(ahead) if ahead.window.from == planned.from => {
                let ahead = self.jobs.pop_front().expect("front exists");
                (ahead.window, Some(ahead))
            }
            Some(ahead) if ahead.follows > planned.from => {
                let cut = Window {
                    from: planned.from,
                    to: planned.to.min(ahead.follows),
                };
                (cut, None)
            }
            // The plan moved past the jobs ahead (not expected): they are of no use.
            Some(_) => {
                self.jobs.clear();
                (planned, None)
            }
            None => (planned, None),
        }
    }

    /// Drops the last job ahead and returns its permit, for the current window (which must
    /// not wait for a permit while its service holds some). Its window gets a job at its turn.
    pub fn give_back_last(&mut self) -> Option<JobPermit> {
        self.jobs.pop_back().map(|ahead| ahead.permit)
    }

    /// Creates jobs for the windows after `current` until `max_concurrent_jobs - 1` wait ahead
    /// (fewer near the range's end, none while the planner does not know the density yet, and
    /// only while `cap` has a permit free).
    pub async fn top_up(
        &mut self,
        current: Window,
        planner: &WindowPlanner,
        client: &mut ApiClient,
        clock: &SharedClock,
        cap: &JobCap,
    ) -> Result<(), FetchError> {
        while self.jobs.len() + 1 < self.limit {
            let prev = self.jobs.back().map_or(current, |ahead| ahead.window);
            let Some(window) = planner.window_ahead(prev) else {
                break;
            };
            let Some(permit) = cap.try_acquire() else {
                break;
            };
            let created = clock.now_ms();
            let job = client
                .create_job(from_millis(window.from), from_millis(window.to))
                .await?;
            self.jobs.push_back(JobAhead {
                window,
                created,
                follows: prev.to,
                job,
                permit,
            });
        }
        Ok(())
    }
}
