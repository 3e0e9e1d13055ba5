//! The schedule, pure: when a job of a given latency is picked up, and after how many polls.

use std::time::Duration;

use super::{Bracket, LatencyEstimate, PollSchedule};
use crate::backoff::Backoff;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The default `job_poll_initial` / `job_poll_max`: 2 s and 30 s.
fn default_schedule() -> PollSchedule {
    PollSchedule::new(secs(2.0), secs(30.0))
}

/// How one job of `latency` went: polled as `schedule` says with `estimate`, complete at the
/// first poll at or after `latency`.
#[derive(Clone, Copy, Debug)]
struct Pickup {
    /// The completing poll, since the creation.
    at: Duration,
    /// Polls that found the job pending.
    pending_polls: u32,
    bracket: Bracket,
}

impl Pickup {
    /// Time lost after the job was ready.
    fn late(&self, latency: Duration) -> Duration {
        self.at - latency
    }
}

fn run(schedule: &PollSchedule, estimate: Option<Duration>, latency: Duration) -> Pickup {
    let mut last = None;
    let mut pending_polls = 0;
    loop {
        let at = schedule.next_poll(last, estimate);
        assert!(last.is_none_or(|last| at > last), "{at:?} after {last:?}");
        if at >= latency {
            return Pickup {
                at,
                pending_polls,
                bracket: Bracket {
                    pending: last,
                    completed: at,
                    planned_first: schedule.first_poll(estimate),
                },
            };
        }
        pending_polls += 1;
        last = Some(at);
    }
}

/// `jobs` jobs of `latency` in turn, each learning from the one before; the last's pickup.
fn learnt(schedule: &PollSchedule, jobs: usize, latency: Duration) -> (Pickup, LatencyEstimate) {
    let mut estimate = LatencyEstimate::default();
    let mut pickup = run(schedule, None, latency);
    estimate.learn(pickup.bracket);
    for _ in 1..jobs {
        pickup = run(schedule, estimate.get(), latency);
        estimate.learn(pickup.bracket);
    }
    (pickup, estimate)
}

/// The schedule this one replaced: 2 s, doubling, gaps capped at 30 s, each from the last poll.
fn run_fixed_doubling(latency: Duration) -> Pickup {
    let mut backoff = Backoff::new(secs(2.0), secs(30.0));
    let mut at = Duration::ZERO;
    let mut pending_polls = 0;
    loop {
        let last = at;
        at += backoff.next_wait();
        if at >= latency {
            return Pickup {
                at,
                pending_polls,
                bracket: Bracket {
                    pending: (pending_polls > 0).then_some(last),
                    completed: at,
                    planned_first: secs(2.0),
                },
            };
        }
        pending_polls += 1;
    }
}

/// Latencies from 0 to 30 s, every 10 ms.
fn latencies() -> impl Iterator<Item = Duration> {
    (0..=3000).map(|cs| Duration::from_millis(cs * 10))
}

#[test]
fn without_an_estimate_a_job_is_picked_up_less_than_a_quarter_of_its_latency_late() {
    let schedule = default_schedule();
    for latency in latencies() {
        let pickup = run(&schedule, None, latency);
        if latency <= secs(2.0) {
            assert_eq!(pickup.at, secs(2.0), "{latency:?}");
        } else {
            assert!(
                pickup.late(latency) < latency / 4,
                "{latency:?}: {pickup:?}"
            );
        }
    }
    assert_eq!(run(&schedule, None, secs(30.0)).pending_polls, 13);
    assert_eq!(run(&schedule, None, secs(10.0)).pending_polls, 8);
}

#[test]
fn with_an_estimate_a_job_as_slow_as_usual_is_picked_up_within_one_dense_step() {
    let schedule = default_schedule();
    for estimate in (1..=30).map(|s| secs(f64::from(s))) {
        let step = estimate.mul_f64(0.05).max(secs(0.25));
        // From the first poll (one step before the estimate) to 1.5 times the estimate.
        for latency in latencies().filter(|l| *l + step >= estimate && *l <= estimate * 3 / 2) {
            let pickup = run(&schedule, Some(estimate), latency);
            assert!(
                pickup.late(latency) <= step,
                "{estimate:?} {latency:?}: {pickup:?}"
            );
            assert!(pickup.pending_polls <= 11, "{pickup:?}");
        }
        let usual = run(&schedule, Some(estimate), estimate);
        assert!(usual.pending_polls <= 1, "{estimate:?}: {usual:?}");
    }
}

/// The service learns from its own jobs: from the second job of a latency on, a job of 2 s or
/// more (the first poll without an estimate) is picked up within 15% of its latency, and from
/// the fifth on any job within 5% or 250 ms (the floor), with at most 3 pending polls.
#[test]
fn a_service_learns_the_latency_from_its_own_jobs() {
    let schedule = default_schedule();
    for latency in latencies().step_by(7) {
        let floor = secs(0.25);
        let (second, _) = learnt(&schedule, 2, latency);
        assert!(
            latency < secs(2.0) || second.late(latency) <= latency.mul_f64(0.15),
            "{latency:?}: {second:?}"
        );
        for jobs in 5..10 {
            let (pickup, estimate) = learnt(&schedule, jobs, latency);
            assert!(
                pickup.late(latency) <= latency.mul_f64(0.05).max(floor),
                "{latency:?} job {jobs}: {pickup:?} {estimate:?}"
            );
            assert!(pickup.pending_polls <= 3, "{latency:?}: {pickup:?}");
        }
    }
}

/// Jobs that got much faster (30 s, then 2 s) or slower: within twelve jobs they are picked up
/// within 5% of their latency or the floor again.
#[test]
fn the_estimate_follows_jobs_that_got_faster_or_slower() {
    let schedule = default_schedule();
    for (before, after) in [(30.0, 2.0), (2.0, 30.0), (10.0, 0.0)] {
        let (_, mut estimate) = learnt(&schedule, 5, secs(before));
        let mut pickup = None;
        for _ in 0..12 {
            let job = run(&schedule, estimate.get(), secs(after));
            estimate.learn(job.bracket);
            pickup = Some(job);
        }
        let pickup = pickup.unwrap();
        assert!(
            pickup.late(secs(after)) <= secs(after * 0.05).max(secs(0.25)),
            "{before} -> {after}: {pickup:?} {estimate:?}"
        );
    }
}

#[test]
fn a_job_much_slower_than_the_estimate_backs_off_to_the_longest_gap() {
    let schedule = default_schedule();
    let latency = secs(600.0);
    let pickup = run(&schedule, Some(secs(2.0)), latency);
    assert!(pickup.late(latency) <= secs(30.0), "{pickup:?}");
    // 2 s to 3 s densely (6 polls), 1.25 times each up to 120 s (16), then every 30 s (16).
    assert!(pickup.pending_polls <= 40, "{pickup:?}");
    let last_gap = pickup.at - pickup.bracket.pending.unwrap();
    assert_eq!(last_gap, secs(30.0));
}

/// The tests' and the benchmark's `job_poll_initial_interval_in_seconds: 0.01`: a job that
/// completes at once is picked up at once, before and after the service learnt that.
#[test]
fn a_job_that_completes_at_once_is_picked_up_at_once() {
    let schedule = PollSchedule::new(secs(0.01), secs(0.05));
    assert_eq!(run(&schedule, None, Duration::ZERO).at, secs(0.01));
    let (pickup, estimate) = learnt(&schedule, 2, Duration::ZERO);
    assert!(pickup.at <= secs(0.01), "{pickup:?} {estimate:?}");
    // And polls 10 ms apart at least, 50 ms at most.
    let slow = run(&schedule, estimate.get(), secs(3.0));
    assert!(slow.late(secs(3.0)) <= secs(0.05), "{slow:?}");
}

#[test]
fn a_first_poll_that_came_late_teaches_nothing() {
    let mut estimate = LatencyEstimate::default();
    estimate.learn(Bracket {
        pending: None,
        completed: secs(20.0),
        planned_first: secs(2.0),
    });
    assert_eq!(estimate.get(), None);
    // On time, it says the job took less than that: 3/4 of it.
    estimate.learn(Bracket {
        pending: None,
        completed: secs(2.0),
        planned_first: secs(2.0),
    });
    assert_eq!(estimate.get(), Some(secs(1.5)));
    // A bracket with a pending poll: its midpoint, weighted by half.
    estimate.learn(Bracket {
        pending: Some(secs(4.0)),
        completed: secs(5.0),
        planned_first: secs(1.25),
    });
    assert_eq!(estimate.get(), Some(secs(3.0)));
}

/// The figures for the report (printed with `--nocapture`): time lost and pending polls per
/// latency, for the fixed 2 s doubling, this schedule without an estimate, and with one learnt
/// from one, then four, earlier jobs of the same latency. The fixed schedule loses up to half the latency.
#[test]
fn figures_before_and_after() {
    let schedule = default_schedule();
    eprintln!("latency | fixed doubling: late, polls | no estimate | 2nd job | 5th job");
    for latency in [0.0, 2.0, 5.0, 10.0, 20.0, 30.0].map(secs) {
        let fixed = run_fixed_doubling(latency);
        let first = run(&schedule, None, latency);
        let (second, _) = learnt(&schedule, 2, latency);
        let (fitted, _) = learnt(&schedule, 5, latency);
        eprintln!(
            "{:>5.1} s | {:>6.2} s {:>2} | {:>6.2} s {:>2} | {:>6.2} s {:>2} | {:>6.2} s {:>2}",
            latency.as_secs_f64(),
            fixed.late(latency).as_secs_f64(),
            fixed.pending_polls,
            first.late(latency).as_secs_f64(),
            first.pending_polls,
            second.late(latency).as_secs_f64(),
            second.pending_polls,
            fitted.late(latency).as_secs_f64(),
            fitted.pending_polls,
        );
        assert!(fitted.late(latency) <= first.late(latency).max(secs(0.25)));
    }
    assert_eq!(run_fixed_doubling(secs(10.0)).late(secs(10.0)), secs(4.0));
    assert_eq!(run_fixed_doubling(secs(15.0)).late(secs(15.0)), secs(15.0));
}

/// `job_poll_max` bounds the wait from the creation to the first poll too: with polls at most
/// 50 ms apart, a 0.3 s job after 1.5 s ones (a window after a whole-range job) is still picked
/// up within 50 ms, whatever the estimate; and a 600 s first poll without one waits 600 s.
#[test]
fn the_first_poll_comes_no_later_than_the_longest_gap() {
    let schedule = PollSchedule::new(secs(0.01), secs(0.05));
    let pickup = run(&schedule, Some(secs(1.5)), secs(0.3));
    assert!(pickup.late(secs(0.3)) <= secs(0.05), "{pickup:?}");
    let defaults = default_schedule();
    assert_eq!(defaults.first_poll(Some(secs(100.0))), secs(30.0));
    let patient = PollSchedule::new(secs(600.0), secs(600.0));
    assert_eq!(patient.first_poll(None), secs(600.0));
    assert_eq!(
        PollSchedule::new(secs(5.0), secs(1.0)).first_poll(None),
        secs(1.0)
    );
}
