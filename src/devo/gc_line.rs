//! Devo's periodic memory line (devo-platform.md §3.5), every `memory_log_period_in_sec`:
//!
//! ```text
//! [GC] global: 41.2% -> 41.1%, process: RSS(80.12MiB -> 79.50MiB), VMS(1.20GiB -> 1.20GiB)
//! ```
//!
//! Devo's SDK runs Python's garbage collector between the two reads; we have no collector (and
//! calling `malloc_trim` would need `unsafe` FFI for little gain), so the "before" and "after"
//! are two reads taken one after the other. The shape is kept for operators' searches and
//! dashboards that parse it; a difference between the two only shows concurrent allocation.
//! Read from `/proc` (Linux); elsewhere nothing is logged.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// One reading of the process and machine memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemorySample {
    /// Share of the machine's memory in use, percent: `(MemTotal - MemAvailable) / MemTotal`.
    pub global_percent: f64,
    /// Resident set size in bytes (`VmRSS`).
    pub rss: u64,
    /// Virtual memory size in bytes (`VmSize`).
    pub vms: u64,
}

/// Reads `/proc/self/status` and `/proc/meminfo`; `None` where they do not exist.
pub fn read() -> Option<MemorySample> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse(&status, &meminfo)
}

/// The sample from the text of `/proc/self/status` and `/proc/meminfo`.
pub fn parse(status: &str, meminfo: &str) -> Option<MemorySample> {
    let total = kib_field(meminfo, "MemTotal:")?;
    let available = kib_field(meminfo, "MemAvailable:")?;
    let global_percent = if total == 0 {
        0.0
    } else {
        total.saturating_sub(available) as f64 * 100.0 / total as f64
    };
    Some(MemorySample {
        global_percent,
        rss: kib_field(status, "VmRSS:")? * 1024,
        vms: kib_field(status, "VmSize:")? * 1024,
    })
}

/// A `Name:   1234 kB` line's number.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Bytes in Devo's units: B, KiB, MiB or GiB with two decimals.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Devo's `[GC]` line from the readings before and after.
pub fn gc_line(before: &MemorySample, after: &MemorySample) -> String {
    format!(
        "[GC] global: {:.1}% -> {:.1}%, process: RSS({} -> {}), VMS({} -> {})",
        before.global_percent,
        after.global_percent,
        format_bytes(before.rss),
        format_bytes(after.rss),
        format_bytes(before.vms),
        format_bytes(after.vms),
    )
}

/// Logs the `[GC]` line every `period` until `cancel` (from the caller's span: the main thread).
pub async fn log_every(period: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; Devo logs after a period
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        match (read(), read()) {
            (Some(before), Some(after)) => info!("{}", gc_line(&before, &after)),
            _ => {
                debug!("No /proc memory figures on this system; the [GC] line is not logged.");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_have_two_decimals() {
        assert_eq!(format_bytes(0), "0.00B");
        assert_eq!(format_bytes(1023), "1023.00B");
        assert_eq!(format_bytes(1024), "1.00KiB");
        assert_eq!(format_bytes(1536), "1.50KiB");
        assert_eq!(format_bytes(84_011_090), "80.12MiB");
        assert_eq!(format_bytes(1_288_490_189), "1.20GiB");
        assert_eq!(format_bytes(5 << 40), "5120.00GiB");
    }

    #[test]
    fn the_line_has_devos_shape() {
        let before = MemorySample {
            global_percent: 41.24,
            rss: 84_011_090,
            vms: 1_288_490_189,
        };
        let after = MemorySample {
            global_percent: 41.1,
            rss: 83_361_792,
            ..before
        };
        assert_eq!(
            gc_line(&before, &after),
            "[GC] global: 41.2% -> 41.1%, process: RSS(80.12MiB -> 79.50MiB), VMS(1.20GiB -> 1.20GiB)"
        );
    }

    #[test]
    fn proc_text_is_parsed() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmSize:\t 2048 kB\nVmRSS:\t  1024 kB\n";
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        let s = parse(status, meminfo).unwrap();
        assert_eq!(s.rss, 1024 * 1024);
        assert_eq!(s.vms, 2048 * 1024);
        assert!((s.global_percent - 75.0).abs() < 1e-9);
        assert_eq!(parse("", meminfo), None);
        #[cfg(target_os = "linux")]
        assert!(read().is_some_and(|s| s.rss > 0 && s.vms >= s.rss));
    }
}
