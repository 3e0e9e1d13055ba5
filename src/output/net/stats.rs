//! Sender statistics, as Devo's collector SDK logs them (devo-platform.md §3.5).
//!
//! The counters are atomics behind an `Arc` so that a periodic logger in another task can read
//! them (through [`StatsHandle`]) while the service task owns the output mutably.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};

/// A snapshot of one output's sender counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderStats {
    /// Records confirmed by the receiver since the output was built.
    pub messages_total: u64,
    /// Bytes of confirmed records (headers and newlines included).
    pub bytes_total: u64,
    /// Batches confirmed (`deliver` calls that returned `Ok`).
    pub batches_total: u64,
    /// Batches that failed (`deliver` calls that returned an error).
    pub failures_total: u64,
    /// Connections opened (one per chunk and attempt, plus checks).
    pub connections_total: u64,
    /// Wall time spent inside `deliver`.
    pub busy: Duration,
    /// Start of the current statistics period.
    pub period_start: SystemTime,
    /// Records confirmed since `period_start`.
    pub period_messages: u64,
    /// Bytes confirmed since `period_start`.
    pub period_bytes: u64,
}

#[derive(Debug)]
struct Period {
    start: SystemTime,
    messages_at_start: u64,
    bytes_at_start: u64,
}

/// Shared, cheaply clonable access to an output's counters.
#[derive(Debug, Clone)]
pub struct StatsHandle(Arc<Counters>);

#[derive(Debug)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    connections: AtomicU64,
    busy_nanos: AtomicU64,
    period: Mutex<Period>,
}

impl StatsHandle {
    /// New zeroed counters whose first period starts at `start`.
    pub fn new(start: SystemTime) -> StatsHandle {
        StatsHandle(Arc::new(Counters {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            period: Mutex::new(Period {
                start,
                messages_at_start: 0,
                bytes_at_start: 0,
            }),
        }))
    }

    /// The current counters.
    pub fn snapshot(&self) -> SenderStats {
        // The lock is never held across an await; a poisoned lock still holds valid numbers.
        let p = self.0.period.lock().unwrap_or_else(|e| e.into_inner());
        self.read(&p)
    }

    /// The counters, with the period measured from `p`.
    fn read(&self, p: &Period) -> SenderStats {
        let c = &*self.0;
        let messages = c.messages.load(Ordering::Relaxed);
        let bytes = c.bytes.load(Ordering::Relaxed);
        SenderStats {
            messages_total: messages,
            bytes_total: bytes,
            batches_total: c.batches.load(Ordering::Relaxed),
            failures_total: c.failures.load(Ordering::Relaxed),
            connections_total: c.connections.load(Ordering::Relaxed),
            busy: Duration::from_nanos(c.busy_nanos.load(Ordering::Relaxed)),
            period_start: p.start,
            period_messages: messages.saturating_sub(p.messages_at_start),
            period_bytes: bytes.saturating_sub(p.bytes_at_start),
        }
    }

    /// Ends the current period at `now` and starts the next one. Returns the counters of the
    /// period that ended (render them with [`render_stats_lines`]).
    pub fn start_period(&self, now: SystemTime) -> SenderStats {
        let mut p = self.0.period.lock().unwrap_or_else(|e| e.into_inner());
        let ended = self.read(&p);
        *p = Period {
            start: now,
            messages_at_start: ended.messages_total,
            bytes_at_start: ended.bytes_total,
        };
        ended
    }

    pub(crate) fn add_confirmed(&self, messages: u64, bytes: u64) {
        self.0.messages.fetch_add(messages, Ordering::Relaxed);
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_batch(&self, ok: bool, took: Duration) {
        let counter = if ok {
            &self.0.batches
        } else {
            &self.0.failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn add_connection(&self) {
        self.0.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// Devo's periodic sender lines for `stats`, with the period's elapsed time measured up to `now`:
///
/// ```text
/// Number of available senders: 1, sender manager internal queue size: 0
/// Standard - Total number of messages sent: T, messages sent since "<iso time>": n (elapsed x.xxx seconds)
/// ```
///
/// There is one sender per output and no internal queue (a batch is delivered synchronously),
/// so the first line is constant, as it is in Devo's logs.
pub fn render_stats_lines(stats: &SenderStats, now: SystemTime) -> [String; 2] {
    let since: DateTime<Utc> = stats.period_start.into();
    let elapsed = now
        .duration_since(stats.period_start)
        .unwrap_or(Duration::ZERO);
    [
        "Number of available senders: 1, sender manager internal queue size: 0".to_string(),
        format!(
            "Standard - Total number of messages sent: {}, messages sent since \"{}\": {} \
             (elapsed {:.3} seconds)",
            stats.messages_total,
            since.to_rfc3339_opts(SecondsFormat::Millis, true),
            stats.period_messages,
            elapsed.as_secs_f64()
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_rendering() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_557_600_123);
        let h = StatsHandle::new(t0);
        h.add_connection();
        h.add_confirmed(10, 1000);
        h.add_batch(true, Duration::from_millis(5));
        h.add_batch(false, Duration::from_millis(1));
        let t1 = t0 + Duration::from_millis(60_500);
        let ended = h.start_period(t1);
        assert_eq!(ended.period_messages, 10);
        assert_eq!(ended.batches_total, 1);
        assert_eq!(ended.failures_total, 1);
        assert_eq!(ended.busy, Duration::from_millis(6));
        assert_eq!(
            render_stats_lines(&ended, t1),
            [
                "Number of available senders: 1, sender manager internal queue size: 0".to_string(),
                "Standard - Total number of messages sent: 10, messages sent since \
                 \"2024-05-01T10:00:00.123Z\": 10 (elapsed 60.500 seconds)"
                    .to_string()
            ]
        );
        h.add_confirmed(5, 50);
        let s = h.snapshot();
        assert_eq!(
            (s.messages_total, s.period_messages, s.period_bytes),
            (15, 5, 50)
        );
        assert_eq!(s.period_start, t1);
    }
}
