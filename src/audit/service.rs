//! The audit of one (input, service): which hours, what the collection says it has for each
//! (the ledger, the dead letters), what the API holds ([`super::count`]), and the verdicts.
//!
//! Only hours the collection has settled are audited: every event of an hour before the
//! service's `settled` cursor has been delivered, late ones included (`pipeline::window`),
//! while the hour that holds the cursor may still get events. So the range is whole hours,
//! from the hour of `--from` to the end of the hour of `--to`, cut at the last whole hour
//! before the settled cursor. An hour that starts before the ledger's `tracked_from` is audited
//! from `tracked_from` on (the ledger counts from there); an hour the ledger does not track at
//! all is reported "not tracked", and the API is not asked about it.
//!
//! Events set aside as unreadable (`state::dead_letter`, the letters no output has) are in the
//! API's count but not in the ledger: each is put in the hour of its `date` when its bytes
//! still show one, and reported in its own column, never as missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::count::{count_hours, CountContext, HourCount, HourToCount};
use super::report::{hours_of, HourLine, ServiceAudit};
use crate::api::job_cap::JobCap;
use crate::api::limiter::InputLimiter;
use crate::clock::SharedClock;
use crate::config::{InputConfig, ServiceConfig};
use crate::pipeline::ledger::{hour_of, HOUR_MS};
use crate::service::RETENTION;
use crate::state::{ServiceState, StateStore};
use crate::timestamp::{format_iso, parse_event_date, Millis};

/// The range asked for; `None`: the default (`to`: the settled cursor; `from`: `span` (a day
/// unless set) before `to`, or where the ledger starts if later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditRange {
    pub from: Option<Millis>,
    pub to: Option<Millis>,
    /// How far back from `to` the default `from` is (`None`: 24 h).
    pub span: Option<Millis>,
}

/// What auditing a service needs besides its config.
pub struct AuditContext<'a> {
    pub store: &'a Arc<StateStore>,
    /// The input's `requests_limits` limiter (shared with its pullers in the daemon).
    pub limiter: &'a InputLimiter,
    /// The process's job cap.
    pub jobs: &'a JobCap,
    pub clock: SharedClock,
    pub cancel: CancellationToken,
    /// Keep the downloaded events of the hours that miss some (for `--repair`).
    pub keep_events: bool,
}

/// One service's audit, and the API's counts behind it (with their downloaded events when
/// they were kept).
pub struct Audited {
    pub report: ServiceAudit,
    pub counts: Vec<HourCount>,
}

/// Audits `svc` of `input` over `range`.
pub async fn audit_service(
    input: &InputConfig,
    svc: &ServiceConfig,
    range: AuditRange,
    cx: &AuditContext<'_>,
) -> Audited {
    let key = StateStore::key(&input.id, svc.service.name());
    let failed = |from: String, to: String, why: String| Audited {
        report: ServiceAudit {
            input: input.id.clone(),
            service: svc.service.name().to_owned(),
            from,
            to,
            hours: Vec::new(),
            error: Some(why),
        },
        counts: Vec::new(),
    };
    let state = match cx.store.load(&key).await {
        Ok(Some((state, _))) => state,
        Ok(None) => {
            let why = format!(
                "no state at {}: the collector has not delivered anything for this service yet",
                cx.store.location(&key)
            );
            return failed(String::new(), String::new(), why);
        }
        Err(e) => return failed(String::new(), String::new(), e.to_string()),
    };
    let (from, to) = settled_range(&state, range, cx.clock.now().timestamp_millis());
    let set_aside = match cx.store.dead_letters(&key).await {
        Ok(letters) => unreadable_per_hour(letters.iter().filter(|l| l.output.is_none())),
        Err(e) => return failed(format_iso(from), format_iso(to), e.to_string()),
    };
    let mut lines = BTreeMap::new();
    let mut to_count = Vec::new();
    for (hour, start, end) in hours_of(from, to) {
        let aside = set_aside.get(&hour).copied().unwrap_or(0);
        let tracked_from = state.ledger.tracked_from();
        match state.ledger.delivered(hour) {
            Some(delivered) if end > tracked_from => to_count.push(HourToCount {
                hour,
                from: start.max(tracked_from),
                to: end,
                expected: delivered + aside,
            }),
            _ => {
                lines.insert(hour, HourLine::not_tracked(hour, start, end, aside));
            }
        }
    }
    let count = CountContext {
        input,
        svc,
        limiter: cx.limiter,
        store: cx.store,
        jobs: cx.jobs,
        cancel: cx.cancel.clone(),
        keep_events: cx.keep_events,
    };
    let counts = match count_hours(&count, &to_count).await {
        Ok(counts) => counts,
        Err(e) => return failed(format_iso(from), format_iso(to), e.to_string()),
    };
    for c in &counts {
        let h = c.hour;
        let aside = set_aside.get(&h.hour).copied().unwrap_or(0);
        let delivered = h.expected - aside;
        let line = HourLine::counted((h.hour, h.from, h.to), c.api, c.counted, delivered, aside);
        lines.insert(h.hour, line);
    }
    Audited {
        report: ServiceAudit {
            input: input.id.clone(),
            service: svc.service.name().to_owned(),
            from: format_iso(from),
            to: format_iso(to),
            hours: lines.into_values().collect(),
            error: None,
        },
        counts,
    }
}

/// The whole hours of `range` that the collection has settled (see the module doc), within
/// the API's retention at `now`: `[from, to)`, empty when `to <= from`.
pub fn settled_range(state: &ServiceState, range: AuditRange, now: Millis) -> (Millis, Millis) {
    let last_settled_hour = hour_of(state.cursors.settled);
    let to = match range.to {
        Some(t) => ceil_hour(t).min(last_settled_hour),
        None => last_settled_hour,
    };
    let oldest = now - RETENTION.as_millis() as Millis;
    let from = match range.from {
        Some(f) => hour_of(f),
        None => (to - range.span.unwrap_or(24 * HOUR_MS)).max(hour_of(state.ledger.tracked_from())),
    };
    let from = from.max(hour_of(oldest) + HOUR_MS);
    (from, to.max(from))
}

fn ceil_hour(t: Millis) -> Millis {
    let hour = hour_of(t);
    if hour == t {
        t
    } else {
        hour + HOUR_MS
    }
}

/// How many unreadable letters fall in each hour, by the `date` their bytes still show
/// (letters without one are left out: their hour is unknown).
fn unreadable_per_hour<'a>(
    letters: impl Iterator<Item = &'a crate::state::dead_letter::DeadLetter>,
) -> BTreeMap<Millis, u64> {
    let mut per_hour = BTreeMap::new();
    for letter in letters {
        if let Some(date) = date_in(&letter.raw()) {
            *per_hour.entry(hour_of(date)).or_insert(0) += 1;
        }
    }
    per_hour
}

/// The `date` member of an event's bytes that do not parse as an event (not UTF-8, nested too
/// deep): the first `"date": "<text>"` whose text is a date.
fn date_in(raw: &[u8]) -> Option<Millis> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("\"date\"").find_map(|(at, name)| {
        let rest = text[at + name.len()..].trim_start().strip_prefix(':')?;
        let value = rest.trim_start().strip_prefix('"')?;
        parse_event_date(&value[..value.find('"')?])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ledger::AuditLedger;

    const H: Millis = 1_796_000_400_000 / HOUR_MS * HOUR_MS;

    fn state(tracked_from: Millis, settled: Millis) -> ServiceState {
        let mut s = ServiceState::new(None, tracked_from);
        s.cursors.settled = settled;
        s.ledger = AuditLedger::tracking_from(tracked_from);
        s
    }

    #[test]
    fn the_range_is_whole_settled_hours_and_starts_with_the_ledger() {
        let s = state(H - 30 * HOUR_MS + 900_000, H + 1_200_000);
        // Default: the day before the last settled hour's end.
        assert_eq!(
            settled_range(&s, AuditRange::default(), H),
            (H - 24 * HOUR_MS, H)
        );
        // A ledger younger than a day: from its hour.
        let young = state(H - 3 * HOUR_MS + 900_000, H + 1_200_000);
        assert_eq!(
            settled_range(&young, AuditRange::default(), H),
            (H - 3 * HOUR_MS, H)
        );
        // --to beyond the settled cursor is cut; a --to inside an hour takes the whole hour.
        let asked = AuditRange {
            from: Some(H - 2 * HOUR_MS + 5),
            to: Some(H - HOUR_MS + 5),
            span: None,
        };
        assert_eq!(settled_range(&s, asked, H), (H - 2 * HOUR_MS, H));
        let beyond = AuditRange {
            from: Some(H - HOUR_MS),
            to: Some(H + 5 * HOUR_MS),
            span: None,
        };
        assert_eq!(settled_range(&s, beyond, H), (H - HOUR_MS, H));
    }

    #[test]
    fn an_unreadable_letter_is_put_in_the_hour_of_its_date() {
        let raw = b"{\"userId\":\"\xffx\",\"date\" : \"2026-12-07T09:15:27.412+0000\",\"x\":1}";
        let date = date_in(raw).expect("a date");
        assert_eq!(format_iso(date), "2026-12-07T09:15:27.412Z");
        assert_eq!(date_in(b"{\"date\":\"soon\"}"), None);
        assert_eq!(date_in(b"{\"nested\":[[[[1]]]]}"), None);
    }
}
