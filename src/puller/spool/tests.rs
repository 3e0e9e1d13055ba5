use super::*;

const DAY: Millis = 86_400_000;

fn settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        directory: dir.to_path_buf(),
        max_bytes: 1 << 30,
    }
}

/// An event dated `date` (or undated) whose JSON names `i`.
fn event(i: usize, date: Option<Millis>) -> Event {
    let json = match date {
        Some(d) => format!(
            "{{\"i\":{i},\"date\":\"{}\"}}",
            crate::timestamp::format_iso(d)
        ),
        None => format!("{{\"i\":{i}}}"),
    };
    Event::from_json(json.into()).unwrap()
}

fn spool_over(dir: &Path, w: Window, k: usize) -> Spool {
    Spool::create(&settings(dir), w, k, 64 * 1024).unwrap()
}

/// Takes every window of the spool: (window, events).
fn drain(spool: &mut Spool, cap: usize) -> Vec<(Window, Vec<Event>)> {
    let mut out = Vec::new();
    while let Some((w, n_events, _, n)) = spool.plan_next(cap, u64::MAX).unwrap() {
        let events = spool.take(n).unwrap();
        assert_eq!(events.len(), n_events);
        out.push((w, events));
    }
    out
}

#[test]
fn buckets_are_twice_the_windows_between_two_and_the_most() {
    assert_eq!(bucket_count(10_000, 1_000), 20);
    assert_eq!(bucket_count(10, 1_000), 2);
    assert_eq!(bucket_count(10_000_000, 1_000), MAX_BUCKETS);
    assert_eq!(bucket_count(1_001, 1_000), 3);
}

#[test]
fn the_buckets_cover_the_range_and_the_last_includes_its_end() {
    let b = cut(1_000, 11_000, 4);
    let bounds: Vec<(Millis, Millis)> = b.iter().map(|b| (b.from, b.to)).collect();
    assert_eq!(
        bounds,
        [
            (1_000, 3_500),
            (3_500, 6_000),
            (6_000, 8_500),
            (8_500, 11_000)
        ]
    );
    assert_eq!(bucket_of(&b, 1_000), 0);
    assert_eq!(bucket_of(&b, 3_499), 0);
    assert_eq!(bucket_of(&b, 3_500), 1);
    assert_eq!(bucket_of(&b, 11_000), 3, "the last includes `to`");
    assert_eq!(bucket_of(&b, 99_000), 3, "past the range: the last");
    assert_eq!(bucket_of(&b, 0), 0, "before the range: the first");
    assert_eq!(bucket_of(&b, UNDATED), 0, "undated: the first");
}

/// Every event comes back once, with its bytes, key and date, in windows that follow each
/// other in time, each within the cap; chunks were written (the buffers are small).
#[test]
fn events_come_back_whole_in_time_ordered_windows_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    let originals: Vec<Event> = (0..3_000)
        .map(|i| event(i, Some((i as Millis * 7_919 * 1_000) % (30 * DAY))))
        .collect();
    let mut spool = spool_over(dir.path(), w, bucket_count(3_000, 500));
    spool.push_all(originals.clone()).unwrap();
    spool.finish().unwrap();
    assert!(spool.len > 0, "chunks were written to the file");
    let windows = drain(&mut spool, 500);
    assert!(windows.len() >= 6, "{} windows", windows.len());
    let mut prev_to = w.from;
    let mut back = Vec::new();
    for (win, events) in windows {
        assert_eq!(win.from, prev_to, "windows follow each other");
        assert!(events.len() <= 500);
        for e in &events {
            assert!(
                e.date_ms >= win.from && e.date_ms <= win.to,
                "{e:?} in {win:?}"
            );
        }
        prev_to = win.to;
        back.extend(events);
    }
    assert_eq!(prev_to, w.to, "the last window ends at the job's end");
    let key = |e: &Event| (e.key, e.date_ms, e.json.clone());
    let mut a: Vec<_> = originals.iter().map(key).collect();
    let mut b: Vec<_> = back.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn undated_events_come_with_the_first_window() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 10 * DAY,
    };
    let mut spool = spool_over(dir.path(), w, 10);
    spool
        .push_all(vec![
            event(1, Some(9 * DAY)),
            event(2, None),
            event(3, Some(DAY)),
        ])
        .unwrap();
    spool.finish().unwrap();
    let windows = drain(&mut spool, 1);
    let first = &windows[0].1;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].date_ms, UNDATED);
}

/// All events in one second of a 30-day range: the bucket is cut finer, again and again,
/// until each window fits the cap.
#[test]
fn a_burst_is_rebucketed_into_windows_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    let at = 10 * DAY;
    let events: Vec<Event> = (0..2_000)
        .map(|i| event(i, Some(at + i as Millis * 50)))
        .collect();
    let mut spool = spool_over(dir.path(), w, 4);
    spool.push_all(events).unwrap();
    spool.finish().unwrap();
    let written = spool.len;
    let windows = drain(&mut spool, 300);
    assert!(spool.len > written, "the burst was written again, finer");
    let sizes: Vec<usize> = windows.iter().map(|(_, e)| e.len()).collect();
    assert!(sizes.iter().all(|&n| n <= 300), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2_000);
    assert_eq!(windows.last().unwrap().0.to, w.to);
}

/// A burst in a span that cannot be split comes back whole (the caller checks its bytes).
#[test]
fn a_burst_at_the_narrowest_span_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    let events: Vec<Event> = (0..50).map(|i| event(i, Some(DAY))).collect();
    let mut spool = spool_over(dir.path(), w, 4);
    spool.push_all(events).unwrap();
    spool.finish().unwrap();
    let sizes: Vec<usize> = drain(&mut spool, 10).iter().map(|(_, e)| e.len()).collect();
    assert!(sizes.contains(&50), "{sizes:?}");
}

#[test]
fn a_full_disk_is_an_error_not_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    let file = tempfile::tempfile_in(dir.path()).unwrap();
    let storage = Box::new(Cramped { file, room: 10_000 });
    let mut spool = Spool::with_storage(storage, &settings(dir.path()), w, 2, 8_192);
    let events: Vec<Event> = (0..1_000)
        .map(|i| event(i, Some(i as Millis * 1_000)))
        .collect();
    let err = spool.push_all(events).unwrap_err();
    assert!(
        matches!(&err, SpoolError::Io(e) if e.raw_os_error() == Some(28)),
        "{err}"
    );
}

#[test]
fn the_size_bound_stops_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    let small = SpoolSettings {
        directory: dir.path().to_path_buf(),
        max_bytes: 20_000,
    };
    let mut spool = Spool::create(&small, w, 2, 8_192).unwrap();
    let events: Vec<Event> = (0..1_000)
        .map(|i| event(i, Some(i as Millis * 1_000)))
        .collect();
    assert!(matches!(
        spool.push_all(events),
        Err(SpoolError::TooBig(20_000))
    ));
}

/// The file has no name: nothing is left in the directory, even while it is in use.
#[test]
fn the_spool_leaves_no_file_in_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = spool_over(dir.path(), Window { from: 0, to: DAY }, 2);
    spool.push_all(vec![event(1, Some(5))]).unwrap();
    spool.finish().unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A window's read-back buffer is reused for a later window once its events are dropped, and
/// not while they are still held (the window in delivery).
#[test]
fn a_delivered_windows_buffer_is_reused_and_a_held_ones_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let w = Window {
        from: 0,
        to: 30 * DAY,
    };
    // Windows of equal bytes: 100 events each, of equal lengths.
    let events: Vec<Event> = (100..700)
        .map(|i| event(i, Some((i - 100) as Millis * 4_000_000)))
        .collect();
    let mut spool = spool_over(dir.path(), w, 6);
    spool.push_all(events).unwrap();
    spool.finish().unwrap();
    let next = |spool: &mut Spool| {
        let (_, _, _, n) = spool.plan_next(100, u64::MAX).unwrap().unwrap();
        spool.take(n).unwrap()
    };
    let start = |events: &[Event]| events[0].json.as_ptr() as usize - HEADER;
    let first = next(&mut spool);
    let second = next(&mut spool);
    let third = next(&mut spool);
    assert_ne!(
        start(&third),
        start(&first),
        "the first window's events are still held"
    );
    let second_at = start(&second);
    drop(second);
    let fourth = next(&mut spool);
    assert_eq!(
        start(&fourth),
        second_at,
        "the second window's buffer, reused"
    );
    drop(first);
}
