//! Any text as an event date or a user time: a value or `None`, never a panic; a parsed event
//! date formats and parses back to itself when it is in the years 1..9999.
#![no_main]

use isolation_collector::timestamp::{format_iso, parse_event_date, parse_user_time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ms) = parse_event_date(s) {
        let text = format_iso(ms);
        // 0001-01-01 .. 9999-12-31T23:59:59.999Z: the format's four-digit years.
        if (-62_135_596_800_000..=253_402_300_799_999).contains(&ms) {
            assert_eq!(parse_event_date(&text), Some(ms), "{s:?} -> {text}");
        }
    }
    if let Some(t) = parse_user_time(s) {
        let _ = format_iso(t.timestamp_millis());
    }
});
