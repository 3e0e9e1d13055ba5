//! The audit's result: per hour the API's count, the delivered count, the events set aside,
//! the difference and a verdict; per service its range, its hours and its summary
//! (`metrics::status::AuditSummary`); and the two ways to print it (a table, one JSON
//! document). The JSON is a contract (the README documents it): add fields, never rename.

use std::fmt::Write as _;

use serde::Serialize;

use super::count::Counted;
use crate::metrics::status::AuditSummary;
use crate::pipeline::ledger::HOUR_MS;
use crate::timestamp::{format_iso, Millis};

/// What an hour's counts mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The API holds what was delivered (and set aside).
    Complete,
    /// The API holds more: `missing` events were not delivered.
    Missing,
    /// More was delivered than the API holds now (`extra`): an event the API no longer shows,
    /// or a count that went wrong.
    MoreDelivered,
    /// The ledger does not cover the hour (before the state tracked, or older than it keeps).
    NotTracked,
}

/// One audited hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HourLine {
    /// The start of the hour (ISO 8601, UTC).
    pub hour: String,
    /// The audited part of it, `[from, to)`.
    pub from: String,
    pub to: String,
    /// Events the API holds in it; `None` when not tracked (not asked).
    pub api: Option<u64>,
    /// How `api` was found (`total` or `download`).
    pub api_counted: Option<Counted>,
    /// Events delivered (the ledger); `None` when not tracked.
    pub delivered: Option<u64>,
    /// Events of the hour set aside as unreadable (dead letters whose date is known).
    pub set_aside: u64,
    /// `api - delivered - set_aside`.
    pub difference: Option<i64>,
    pub verdict: Verdict,
    /// Events missing (positive difference), else 0.
    pub missing: u64,
    /// Events delivered beyond the API's count (negative difference), else 0.
    pub extra: u64,
}

impl HourLine {
    /// An hour the ledger does not track.
    pub fn not_tracked(hour: Millis, from: Millis, to: Millis, set_aside: u64) -> HourLine {
        HourLine {
            hour: format_iso(hour),
            from: format_iso(from),
            to: format_iso(to),
            api: None,
            api_counted: None,
            delivered: None,
            set_aside,
            difference: None,
            verdict: Verdict::NotTracked,
            missing: 0,
            extra: 0,
        }
    }

    /// An hour with both counts.
    pub fn counted(
        (hour, from, to): (Millis, Millis, Millis),
        api: u64,
        counted: Counted,
        delivered: u64,
        set_aside: u64,
    ) -> HourLine {
        let difference = api as i64 - delivered as i64 - set_aside as i64;
        let verdict = match difference {
            0 => Verdict::Complete,
            d if d > 0 => Verdict::Missing,
            _ => Verdict::MoreDelivered,
        };
        HourLine {
            hour: format_iso(hour),
            from: format_iso(from),
            to: format_iso(to),
            api: Some(api),
            api_counted: Some(counted),
            delivered: Some(delivered),
            set_aside,
            difference: Some(difference),
            verdict,
            missing: difference.max(0) as u64,
            extra: (-difference).max(0) as u64,
        }
    }

    /// The verdict as the table says it.
    pub fn verdict_text(&self) -> String {
        match self.verdict {
            Verdict::Complete => "complete".to_owned(),
            Verdict::Missing => format!("missing {}", self.missing),
            Verdict::MoreDelivered => {
                format!("more delivered than the API holds ({})", self.extra)
            }
            Verdict::NotTracked => "not tracked".to_owned(),
        }
    }
}

/// The audit of one (input, service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAudit {
    pub input: String,
    pub service: String,
    /// The audited range, `[from, to)` (whole hours; see `audit::range`).
    pub from: String,
    pub to: String,
    pub hours: Vec<HourLine>,
    /// Why the audit of this service could not run (masked); `hours` is then empty.
    pub error: Option<String>,
}

impl ServiceAudit {
    /// The summary the metrics and `/status` keep, as of `at`.
    pub fn summary(&self, at: Millis) -> AuditSummary {
        let tracked = || {
            self.hours
                .iter()
                .filter(|h| h.verdict != Verdict::NotTracked)
        };
        AuditSummary {
            at: format_iso(at),
            from: self.from.clone(),
            to: self.to.clone(),
            hours: tracked().count() as u32,
            hours_missing: tracked().filter(|h| h.missing > 0).count() as u32,
            missing_events: tracked().map(|h| h.missing).sum(),
            extra_events: tracked().map(|h| h.extra).sum(),
            error: self.error.clone(),
        }
    }

    /// Whether any hour misses events.
    pub fn misses_events(&self) -> bool {
        self.hours.iter().any(|h| h.missing > 0)
    }
}

/// What `audit --repair` did for one hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepairLine {
    pub input: String,
    pub service: String,
    /// The start of the hour (ISO 8601, UTC).
    pub hour: String,
    /// Events delivered to the outputs (those they lacked).
    pub delivered: u64,
    /// Why nothing was delivered for the hour, if so.
    pub refused: Option<String>,
}

/// The whole audit: `audit --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// When the audit ran (ISO 8601, UTC).
    pub generated_at: String,
    pub services: Vec<ServiceAudit>,
    /// Every audited hour of every service is complete (or not tracked), and none failed.
    pub complete: bool,
    /// Events missing over every service and hour.
    pub missing_events: u64,
    /// With `--repair`: what each hour that missed events got (the hours' lines above are
    /// those of the audit after the repair).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<RepairLine>,
}

impl AuditReport {
    pub fn new(generated_at: Millis, services: Vec<ServiceAudit>) -> AuditReport {
        let missing_events = services
            .iter()
            .flat_map(|s| &s.hours)
            .map(|h| h.missing)
            .sum();
        let complete = services
            .iter()
            .all(|s| s.error.is_none() && !s.misses_events());
        AuditReport {
            generated_at: format_iso(generated_at),
            services,
            complete,
            missing_events,
            repairs: Vec::new(),
        }
    }

    /// The report with what `--repair` did.
    pub fn with_repairs(mut self, repairs: Vec<RepairLine>) -> AuditReport {
        self.repairs = repairs;
        self
    }

    /// The report as a table per service (for a terminal), after what `--repair` did.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for r in &self.repairs {
            let _ = match &r.refused {
                None => writeln!(
                    out,
                    "repair {} {} {}: delivered {}",
                    r.input, r.service, r.hour, r.delivered
                ),
                Some(why) => writeln!(
                    out,
                    "repair {} {} {}: refused: {why}",
                    r.input, r.service, r.hour
                ),
            };
        }
        if !self.repairs.is_empty() {
            out.push_str("after the repair:\n");
        }
        for s in &self.services {
            let _ = writeln!(out, "{} {}: {} to {}", s.input, s.service, s.from, s.to);
            if let Some(why) = &s.error {
                let _ = writeln!(out, "  audit failed: {why}");
                continue;
            }
            if s.hours.is_empty() {
                let _ = writeln!(out, "  no settled hour in the range");
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<24} {:>9} {:>9} {:>9} {:>10}  verdict",
                "hour (UTC)", "api", "delivered", "set aside", "difference"
            );
            for h in &s.hours {
                let number = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
                let partial = if h.from != h.hour { " (from " } else { "" };
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9} {:>9} {:>9} {:>10}  {}{partial}{}",
                    h.hour,
                    number(h.api),
                    number(h.delivered),
                    h.set_aside,
                    h.difference.map_or("-".to_owned(), |d| format!("{d:+}")),
                    h.verdict_text(),
                    if partial.is_empty() {
                        String::new()
                    } else {
                        format!("{})", h.from)
                    },
                );
            }
            let summary = s.summary(0);
            let _ = writeln!(
                out,
                "  {} hour(s) audited: {} event(s) missing in {} hour(s), {} delivered beyond the API's count",
                summary.hours, summary.missing_events, summary.hours_missing, summary.extra_events
            );
        }
        out
    }
}

/// The hours of `[from, to)`: `(hour start, audited from, audited to)`, the first one cut at
/// `from`.
pub fn hours_of(from: Millis, to: Millis) -> Vec<(Millis, Millis, Millis)> {
    let mut hours = Vec::new();
    let mut hour = crate::pipeline::ledger::hour_of(from);
    while hour < to {
        hours.push((hour, from.max(hour), (hour + HOUR_MS).min(to)));
        hour += HOUR_MS;
    }
    hours
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 1_796_000_400_000 / HOUR_MS * HOUR_MS;

    #[test]
    fn the_verdict_follows_the_difference_and_set_aside_events_are_not_missing() {
        let range = (H, H, H + HOUR_MS);
        let complete = HourLine::counted(range, 10, Counted::Total, 10, 0);
        assert_eq!((complete.verdict, complete.missing), (Verdict::Complete, 0));
        let missing = HourLine::counted(range, 10, Counted::Download, 7, 0);
        assert_eq!((missing.verdict, missing.missing), (Verdict::Missing, 3));
        assert_eq!(missing.verdict_text(), "missing 3");
        let set_aside = HourLine::counted(range, 10, Counted::Download, 8, 2);
        assert_eq!(set_aside.verdict, Verdict::Complete);
        let extra = HourLine::counted(range, 5, Counted::Download, 6, 0);
        assert_eq!((extra.verdict, extra.extra), (Verdict::MoreDelivered, 1));
        assert_eq!(
            extra.verdict_text(),
            "more delivered than the API holds (1)"
        );
    }

    #[test]
    fn the_summary_counts_tracked_hours_only() {
        let range = (H, H, H + HOUR_MS);
        let audit = ServiceAudit {
            input: "1".into(),
            service: "url_isolation".into(),
            from: format_iso(H - HOUR_MS),
            to: format_iso(H + HOUR_MS),
            hours: vec![
                HourLine::not_tracked(H - HOUR_MS, H - HOUR_MS, H, 0),
                HourLine::counted(range, 9, Counted::Download, 4, 0),
            ],
            error: None,
        };
        let s = audit.summary(H);
        assert_eq!((s.hours, s.hours_missing, s.missing_events), (1, 1, 5));
        let report = AuditReport::new(H, vec![audit]);
        assert!(!report.complete);
        assert!(report.table().contains("missing 5"), "{}", report.table());
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("repairs").is_none(), "{json}");
        let repaired = report.with_repairs(vec![RepairLine {
            input: "1".into(),
            service: "url_isolation".into(),
            hour: format_iso(H),
            delivered: 5,
            refused: None,
        }]);
        assert!(
            repaired.table().starts_with("repair 1 url_isolation 2026-"),
            "{}",
            repaired.table()
        );
        assert_eq!(
            serde_json::to_value(&repaired).unwrap()["repairs"][0]["delivered"],
            5
        );
    }

    #[test]
    fn hours_cut_the_first_hour_at_from() {
        let hours = hours_of(H + 600_000, H + 2 * HOUR_MS);
        assert_eq!(
            hours,
            vec![
                (H, H + 600_000, H + HOUR_MS),
                (H + HOUR_MS, H + HOUR_MS, H + 2 * HOUR_MS)
            ]
        );
        assert!(hours_of(H, H).is_empty());
    }
}
