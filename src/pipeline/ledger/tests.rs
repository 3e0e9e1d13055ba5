use super::*;

const H: Millis = HOUR_MS;
const T0: Millis = 1_780_000_000_000 / H * H;

#[test]
fn counts_events_per_hour_of_their_date() {
    let mut l = AuditLedger::tracking_from(T0);
    for date in [T0 + 1, T0 + H - 1, T0 + H, T0 + 3 * H + 5] {
        l.record(date);
    }
    assert_eq!(l.delivered(T0), Some(2));
    assert_eq!(l.delivered(T0 + H), Some(1));
    assert_eq!(l.delivered(T0 + 2 * H), Some(0));
    assert_eq!(l.delivered(T0 + 3 * H + 10), Some(1));
}

#[test]
fn hours_before_tracking_are_not_audited_and_earlier_hours_are_filled_in() {
    let mut l = AuditLedger::tracking_from(T0 + H / 2);
    l.record(T0 + 2 * H);
    l.record(T0 + H / 2 + 1);
    l.record(T0 + 1); // before tracked_from: not counted
    assert_eq!(l.delivered(T0 - H), None);
    assert_eq!(l.delivered(T0), Some(1));
    assert_eq!(l.delivered(T0 + 2 * H), Some(1));
}

#[test]
fn keeps_at_most_the_retention_and_round_trips_through_the_document() {
    let mut l = AuditLedger::tracking_from(T0);
    for h in 0..(MAX_HOURS as i64 + 10) {
        l.record(T0 + h * H);
    }
    assert_eq!(l.counts.len(), MAX_HOURS);
    assert_eq!(l.delivered(T0 + (MAX_HOURS as i64 + 9) * H), Some(1));
    l.prune(T0 + 100 * H);
    assert_eq!(l.delivered(T0 + 50 * H), None);
    assert_eq!(l.delivered(T0 + 100 * H), Some(1));
    let back = AuditLedger::from_doc(&l.to_doc()).unwrap();
    assert_eq!(back, l);
}
