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

/// Each counted copy goes into its hour's pending digest; a sealed digest leaves the state
/// only if it is still the one sealed; the digests travel with the document.
#[test]
fn pending_digests_follow_the_counts_and_leave_when_sealed() {
    let mut l = AuditLedger::tracking_from(T0);
    let key = [9u8; 32];
    l.record_copy(T0 + 5, &key, 1);
    l.record_copy(T0 + 5, &key, 2);
    l.record_copy(T0 + H + 1, &key, 1);
    l.record_copy(T0 - 1, &key, 1); // before tracked_from: neither counted nor digested
    assert_eq!(l.pending(T0).unwrap().sketch.elements(), 2);
    assert_eq!(l.pending(T0 + H).unwrap().sketch.elements(), 1);
    assert!(l.pending(T0 - H).is_none());
    let back = AuditLedger::from_doc(&l.to_doc()).unwrap();
    assert_eq!(back, l);
    // Only the hours that end by the given time are ready to seal.
    let ready = l.pending_before(T0 + H + H / 2);
    assert_eq!(ready.len(), 1);
    let (hour, digest) = &ready[0];
    assert_eq!(*hour, T0);
    l.sealed(T0, digest.seal ^ 1); // another seal: kept
    assert!(l.pending(T0).is_some());
    l.sealed(T0, digest.seal);
    assert!(l.pending(T0).is_none());
    // A copy after the seal starts a new digest with a new seal id.
    l.record_copy(T0 + 7, &key, 3);
    let again = l.pending(T0).unwrap();
    assert_ne!(again.seal, digest.seal);
    assert_eq!(again.sketch.elements(), 1);
    l.prune(T0 + H);
    assert!(l.pending(T0).is_none());
    assert!(l.pending(T0 + H).is_some());
}

/// A repair in flight is kept, with the document, until cleared.
#[test]
fn a_repair_in_flight_travels_with_the_document_until_cleared() {
    let mut l = AuditLedger::tracking_from(T0);
    let marker = InFlight {
        since: T0 + 5 * H,
        events: 3,
        outputs: vec!["devo".into()],
    };
    l.set_in_flight(T0 + 7, Some(marker.clone()));
    assert_eq!(l.in_flight(T0), Some(&marker));
    let back = AuditLedger::from_doc(&l.to_doc()).unwrap();
    assert_eq!(back, l);
    l.set_in_flight(T0, None);
    assert_eq!(l.in_flight(T0), None);
    assert!(l.to_doc().repairs_in_flight.is_empty());
}
