//! The wall clock, injected: `main` builds one [`SharedClock`] and hands it down to everything
//! that reads the time of day (the puller's cycles, windows and corrections, the setup check,
//! backfill and config limits, metrics, log lines, internal messages, console and syslog
//! timestamps). This module is the only place that reads the system clock; `clippy.toml` bans
//! `Utc::now`, `Local::now` and `SystemTime::now` everywhere else, so a new read cannot bypass it.
//!
//! Durations and deadlines use the monotonic `Instant::now()`, which is not a time of day and
//! not injected.
//!
//! **Test hook** (cargo feature `test-hooks`, which only the test command names): the
//! reliability tests run the binary with a clock that jumped forward or back, by setting
//! `ISOLATION_COLLECTOR_CLOCK_OFFSET_SECS` (signed seconds). Without the feature, as in every
//! release build, the variable is never read and its name is not in the binary.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::timestamp::Millis;

/// A source of the time of day.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one permitted read of the system clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system's clock shifted by a fixed offset (the clock-jump test hook).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    pub offset: chrono::Duration,
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + self.offset
    }
}

/// A cheap-to-clone handle on the process's clock.
#[derive(Clone)]
pub struct SharedClock(Arc<dyn Clock>);

impl SharedClock {
    pub fn new(clock: impl Clock + 'static) -> SharedClock {
        SharedClock(Arc::new(clock))
    }

    /// The system's clock.
    pub fn system() -> SharedClock {
        SharedClock::new(SystemClock)
    }

    /// The clock of this process: the system's, or, in a build with the `test-hooks` feature,
    /// the system's shifted by `ISOLATION_COLLECTOR_CLOCK_OFFSET_SECS` (read here, once).
    pub fn for_process() -> SharedClock {
        #[cfg(feature = "test-hooks")]
        {
            let var = std::env::var("ISOLATION_COLLECTOR_CLOCK_OFFSET_SECS").ok();
            if let Some(offset) = test_offset(var.as_deref()) {
                return SharedClock::new(OffsetClock { offset });
            }
        }
        SharedClock::system()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        self.now().timestamp_millis()
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedClock")
    }
}

/// The hook's offset: a signed integer number of seconds; unset, empty or unparsable is none.
#[cfg(feature = "test-hooks")]
fn test_offset(value: Option<&str>) -> Option<chrono::Duration> {
    let secs: i64 = value?.trim().parse().ok()?;
    (secs != 0).then(|| chrono::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_clock_runs_the_offset_ahead_of_the_system_clock() {
        let offset = chrono::Duration::hours(3);
        let clock = SharedClock::new(OffsetClock { offset });
        let before = SystemClock.now();
        let shifted = clock.now();
        let after = SystemClock.now();
        assert!(shifted >= before + offset && shifted <= after + offset);
        let back = SharedClock::new(OffsetClock { offset: -offset });
        assert!(back.now() <= SystemClock.now() - offset);
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn the_test_hook_reads_signed_seconds_and_ignores_junk() {
        assert_eq!(test_offset(Some("10800")), Some(chrono::Duration::hours(3)));
        assert_eq!(
            test_offset(Some(" -1200 ")),
            Some(chrono::Duration::minutes(-20))
        );
        for junk in [None, Some(""), Some("0"), Some("3h"), Some("1.5")] {
            assert_eq!(test_offset(junk), None, "{junk:?}");
        }
    }
}
