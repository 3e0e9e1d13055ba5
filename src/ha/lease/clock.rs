//! The lease's validity clock, injected: `CLOCK_BOOTTIME` in production.
//!
//! A lease is valid for its TTL by Redis's clock, and Redis's clock keeps running while this
//! machine is suspended (a laptop lid, a VM paused by its hypervisor or migrated live) or this
//! process is stopped (SIGSTOP). The local clock that tells a holder how much of its lease is
//! left must count both, or a holder woken from a suspend would believe it still holds a lease
//! that another replica took long ago. Tokio's `Instant` is `CLOCK_MONOTONIC`, which on Linux
//! stops while the machine is suspended; `CLOCK_BOOTTIME` is the same clock plus the time spent
//! suspended. Both count a SIGSTOP.
//!
//! The clock is a trait so that tests can move it by hand (a suspend cannot be made on a test
//! machine; a clock that jumps by the TTL between sending a renewal and reading its reply can).

use std::sync::Arc;
use std::time::Duration;

/// A point on a lease clock: the time since the clock's origin (boot, for [`BootClock`]).
pub type LeaseTime = Duration;

/// A monotonic clock that counts time the machine spends suspended.
pub trait LeaseClock: Send + Sync {
    fn now(&self) -> LeaseTime;
}

/// `CLOCK_BOOTTIME`: monotonic, counting suspends (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct BootClock;

impl LeaseClock for BootClock {
    fn now(&self) -> LeaseTime {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The clock counts from boot: never negative, and its nanoseconds are below 1e9.
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
}

/// A cheap-to-clone handle on a lease clock.
#[derive(Clone)]
pub struct SharedLeaseClock(Arc<dyn LeaseClock>);

impl SharedLeaseClock {
    pub fn new(clock: impl LeaseClock + 'static) -> SharedLeaseClock {
        SharedLeaseClock(Arc::new(clock))
    }

    /// `CLOCK_BOOTTIME`.
    pub fn boot() -> SharedLeaseClock {
        SharedLeaseClock::new(BootClock)
    }

    pub fn now(&self) -> LeaseTime {
        self.0.now()
    }
}

impl Default for SharedLeaseClock {
    fn default() -> Self {
        SharedLeaseClock::boot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boot clock moves forward with the monotonic one (it is that clock plus the time spent
    /// suspended, which no test machine spends while this test runs) and is never behind it.
    #[test]
    fn the_boot_clock_moves_with_the_monotonic_clock() {
        let monotonic = || rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let (boot0, mono0) = (BootClock.now(), monotonic());
        std::thread::sleep(Duration::from_millis(50));
        let (boot1, mono1) = (BootClock.now(), monotonic());
        let mono = |t: rustix::time::Timespec| Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
        let boot_elapsed = boot1 - boot0;
        let mono_elapsed = mono(mono1) - mono(mono0);
        assert!(
            boot_elapsed >= Duration::from_millis(50),
            "{boot_elapsed:?}"
        );
        let skew = boot_elapsed.abs_diff(mono_elapsed);
        assert!(
            skew < Duration::from_millis(5),
            "{boot_elapsed:?} vs {mono_elapsed:?}"
        );
        // Boot time = monotonic time + time suspended: never less.
        assert!(boot1 + Duration::from_millis(1) >= mono(mono1));
    }
}
