//! Time: the vendor's date formats in, the API's and Devo's formats out.
//!
//! Event dates are parsed by hand: it runs once per event on the hot path, and the vendor's one
//! shape (`2025-03-04T10:15:27.412+0000`) is parsed in a few nanoseconds without allocating.
//! Other shapes (`Z`, `+00:00`, other offsets, no fraction, up to nanoseconds) are accepted too.
//! The current time is not read here: it comes from the injected [`crate::clock`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Parses an event `date`: `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HHMM|±HH:MM|±HH]`, no zone = UTC.
pub fn parse_event_date(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        Some(n)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0u32;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let digits: Vec<u8> = rest.iter().copied().filter(|c| *c != b':').collect();
            if !digits.iter().all(u8::is_ascii_digit)
                || !matches!(digits.len(), 2 | 4)
                || (rest.len() == 5 && rest[2] != b':')
            {
                return None;
            }
            let h = i64::from((digits[0] - b'0') * 10 + (digits[1] - b'0'));
            let m = if digits.len() == 4 {
                i64::from((digits[2] - b'0') * 10 + (digits[3] - b'0'))
            } else {
                0
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = date.and_hms_milli_opt(hour, minute, second, millis)?;
    Some(time.and_utc().timestamp_millis() - offset_secs * 1000)
}

/// Parses a time given by a person (config `start_time_in_utc`, CLI `--from`): RFC 3339, the
/// event format, or a bare date (`2024-06-01`, midnight UTC). A time without zone is UTC.
pub fn parse_user_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(ms) = parse_event_date(s) {
        return Utc.timestamp_millis_opt(ms).single();
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
        return Some(t.and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds to a UTC time (saturating at chrono's range, which events never reach).
pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The API's query format: UTC with milliseconds and `Z` (isolation-api.md §11).
pub fn format_api(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The format used in state files and logs: RFC 3339, UTC, milliseconds.
pub fn format_iso(ms: Millis) -> String {
    format_api(from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_date_shapes() {
        let want = 1_741_083_327_412;
        for s in [
            "2025-03-04T10:15:27.412+0000",
            "2025-03-04T10:15:27.412Z",
            "2025-03-04T10:15:27.412+00:00",
            "2025-03-04T10:15:27.412",
            "2025-03-04T10:15:27.412999+0000",
            "2025-03-04T11:15:27.412+0100",
            "2025-03-04T05:15:27.412-05",
        ] {
            assert_eq!(parse_event_date(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_event_date("2025-03-04T10:15:27+0000"),
            Some(want - 412)
        );
        assert_eq!(parse_event_date("2025-03-04T10:15:27.4Z"), Some(want - 12));
    }

    #[test]
    fn bad_event_dates() {
        for s in [
            "",
            "2025-03-04",
            "2025-13-04T10:15:27Z",
            "2025-03-04T10:15:27.Z",
            "2025-03-04T10:15:27+25:00",
            "2025-03-04T10:15:27 +0000",
            "yesterday",
            "2025-03-04T10:15:27+00:0",
        ] {
            assert_eq!(parse_event_date(s), None, "{s}");
        }
    }

    #[test]
    fn user_times() {
        assert_eq!(
            parse_user_time("2024-06-01").unwrap().to_rfc3339(),
            "2024-06-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_user_time("2024-06-01T10:00:00Z")
                .unwrap()
                .to_rfc3339(),
            "2024-06-01T10:00:00+00:00"
        );
        assert_eq!(
            parse_user_time("2023-05-16T00:00:00.000000Z")
                .unwrap()
                .to_rfc3339(),
            "2023-05-16T00:00:00+00:00"
        );
        assert!(parse_user_time("01/06/2024").is_none());
    }

    #[test]
    fn api_format() {
        assert_eq!(format_iso(1_741_083_327_412), "2025-03-04T10:15:27.412Z");
    }

    proptest::proptest! {
        #[test]
        fn event_date_round_trips(ms in 0i64..4_102_444_800_000) {
            let t = from_millis(ms);
            let s = t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string();
            proptest::prop_assert_eq!(parse_event_date(&s), Some(ms));
        }

        #[test]
        fn event_date_never_panics(s in "\\PC{0,40}") {
            let _ = parse_event_date(&s);
        }
    }
}
