//! Capped exponential backoff: the one wait policy behind every retry loop (API requests, the
//! setup check, failed pull cycles, the outputs fan-out and the syslog sender).
//!
//! A [`Backoff`] hands out waits `initial`, `initial × multiplier`, … capped at `max`, each
//! optionally jittered ([`Jitter`]). It only computes waits: every caller sleeps itself, so that
//! a wait which must stay cancellable races the sleep against its cancellation token.
//!
//! Written here rather than taken from a crate: `backoff` is unmaintained, and `backon` and
//! `exponential-backoff` wrap the retried call in their own loop with their own jitter (added on
//! top of the wait, or symmetric around it). Our loops decide per error (an auth failure waits a
//! period, a 429 waits its `Retry-After`, only some transport errors are retried) and keep the
//! exact wait bounds the collector has always had, so a 60-line type that only computes waits
//! serves that better than adapting a retry framework.

use std::time::Duration;

/// How a wait is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// The exact sequence: for waits only one party takes (a puller's own cycle, acknowledgement polls).
    None,
    /// "Equal jitter": a wait `d` becomes uniformly `[d/2, d]`, half fixed, half random. Retries of
    /// several collectors or outputs do not fall into step, yet never come back immediately.
    UpperHalf,
}

/// Longest `Retry-After` a server gets honoured (unless our own backoff is longer).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A capped exponential backoff; see the module documentation.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: u32,
    jitter: Jitter,
    /// Waits handed out since the start or the last [`Backoff::reset`].
    attempts: u32,
}

impl Backoff {
    /// Waits `initial`, doubling each time, capped at `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            multiplier: 2,
            jitter: Jitter::None,
            attempts: 0,
        }
    }

    /// Each wait is this many times the previous one (before jitter and the cap). Default 2.
    pub fn multiplier(mut self, multiplier: u32) -> Backoff {
        self.multiplier = multiplier;
        self
    }

    /// Randomises each wait with `jitter`. Default [`Jitter::None`].
    pub fn jitter(mut self, jitter: Jitter) -> Backoff {
        self.jitter = jitter;
        self
    }

    /// How many waits were handed out since the start or the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts again at `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.base(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        match self.jitter {
            Jitter::None => base,
            Jitter::UpperHalf => upper_half(base, rand::random::<f64>()),
        }
    }

    /// The next wait when the server asked for `retry_after` (HTTP `Retry-After`): the server's
    /// wait wins, cut to [`MAX_RETRY_AFTER`] unless our own backoff is longer. The backoff still
    /// advances, so later waits without a `Retry-After` keep growing.
    pub fn next_wait_after(&mut self, retry_after: Option<Duration>) -> Duration {
        let own = self.next_wait();
        retry_after.map_or(own, |a| a.min(MAX_RETRY_AFTER).max(own.min(a)))
    }

    /// The wait before jitter after `n` earlier waits: `initial × multiplierⁿ`, capped at `max`.
    fn base(&self, n: u32) -> Duration {
        self.initial
            .saturating_mul(self.multiplier.saturating_pow(n))
            .min(self.max)
    }
}

/// `d` scaled into `[d/2, d]` by `fraction` in `[0, 1]`.
fn upper_half(d: Duration, fraction: f64) -> Duration {
    let half = d / 2;
    half + half.mul_f64(fraction.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn waits(b: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| b.next_wait()).collect()
    }

    #[test]
    fn waits_grow_by_the_multiplier_up_to_the_cap() {
        let mut b = Backoff::new(500 * MS, 5_000 * MS);
        assert_eq!(
            waits(&mut b, 6),
            [500, 1_000, 2_000, 4_000, 5_000, 5_000].map(|ms| ms * MS)
        );
        assert_eq!(b.attempts(), 6);
        let mut b = Backoff::new(MS, Duration::MAX).multiplier(3);
        assert_eq!(waits(&mut b, 4), [1, 3, 9, 27].map(|ms| ms * MS));
    }

    #[test]
    fn reset_starts_again_at_initial() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        waits(&mut b, 3);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_wait(), Duration::from_secs(5));
    }

    #[test]
    fn the_cap_holds_however_many_attempts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            b.next_wait();
        }
        assert_eq!(b.next_wait(), Duration::from_secs(60));
        // An initial above the cap is capped too.
        let mut b = Backoff::new(Duration::from_secs(90), Duration::from_secs(60));
        assert_eq!(b.next_wait(), Duration::from_secs(60));
    }

    #[test]
    fn upper_half_jitter_spans_half_to_all_of_the_wait() {
        let d = Duration::from_millis(1_000);
        assert_eq!(upper_half(d, 0.0), 500 * MS);
        assert_eq!(upper_half(d, 0.5), 750 * MS);
        assert_eq!(upper_half(d, 1.0), d);
        assert_eq!(upper_half(d, 7.0), d, "a fraction out of range is clamped");
    }

    #[test]
    fn jittered_waits_stay_within_their_bounds() {
        let mut b =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).jitter(Jitter::UpperHalf);
        let mut seen_below_full = false;
        for i in 0..400u32 {
            if i % 4 == 0 {
                b.reset();
            }
            let full = Duration::from_secs(1 << (i % 4).min(2));
            let w = b.next_wait();
            assert!(
                w >= full / 2 && w <= full,
                "wait {w:?} outside [{:?}, {full:?}]",
                full / 2
            );
            seen_below_full |= w < full;
        }
        assert!(
            seen_below_full,
            "400 jittered waits were all exactly the full wait"
        );
    }

    #[test]
    fn retry_after_wins_up_to_its_limit() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(60));
        assert_eq!(b.next_wait_after(None), s(1));
        assert_eq!(b.next_wait_after(Some(s(7))), s(7), "longer than ours");
        assert_eq!(b.next_wait_after(Some(MS)), MS, "shorter than ours");
        assert_eq!(
            b.next_wait_after(Some(s(3600))),
            MAX_RETRY_AFTER,
            "cut to the limit"
        );
        assert_eq!(b.attempts(), 4);
        let mut long = Backoff::new(s(900), s(3600));
        assert_eq!(
            long.next_wait_after(Some(s(3600))),
            s(900),
            "our longer backoff beats the cut"
        );
    }
}
