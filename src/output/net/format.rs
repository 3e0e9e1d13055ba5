//! The syslog record, byte-compatible with Devo's Python SDK (devo-platform.md §2.2, §2.3):
//!
//! ```text
//! <14>YYYY-MM-DD HH:MM:SS.mmm HOSTNAME TABLE: JSON\n
//! ```
//!
//! PRI 14 is facility user, severity info. The date is the UTC time at which the record is
//! formatted, with milliseconds, as the SDK does (Devo's `eventdate` is the ingestion time, so the
//! header date is informational). Framing is newline-terminated, records back to back; there is no
//! octet counting and no `\0` terminator.
//!
//! Everything here writes into a caller-owned `Vec<u8>` that is reused across records: the only
//! per-record work is copying the prefix and the JSON bytes. [`RecordFormatter`] keeps the
//! `<14>DATE HOST TABLE: ` prefix ready and rewrites only its 23 date bytes when the
//! millisecond changes, so formatting costs about one `memcpy` per record.

use chrono::{DateTime, Datelike, Timelike};

/// `<PRI>` for facility user (1) and severity info (6): 1 × 8 + 6.
pub const PRI: &[u8] = b"<14>";

/// Length of `YYYY-MM-DD HH:MM:SS.mmm`.
pub const DATE_LEN: usize = 23;

/// Devo's limit on the tag (table name), from the collector SDK.
pub const MAX_TABLE_LEN: usize = 1024;

/// Appends `YYYY-MM-DD HH:MM:SS.mmm` (UTC) for `unix_ms` to `out`.
///
/// Times outside the years 0..=9999 (never produced by a clock) are clamped to those bounds so
/// that the header keeps its fixed width.
pub fn write_date(out: &mut Vec<u8>, unix_ms: i64) {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z.
    const MIN_MS: i64 = -62_167_219_200_000;
    const MAX_MS: i64 = 253_402_300_799_999;
    let ms = unix_ms.clamp(MIN_MS, MAX_MS);
    let t = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let mut b = [0u8; DATE_LEN];
    put_digits(&mut b[0..4], t.year() as u32);
    b[4] = b'-';
    put_digits(&mut b[5..7], t.month());
    b[7] = b'-';
    put_digits(&mut b[8..10], t.day());
    b[10] = b' ';
    put_digits(&mut b[11..13], t.hour());
    b[13] = b':';
    put_digits(&mut b[14..16], t.minute());
    b[16] = b':';
    put_digits(&mut b[17..19], t.second());
    b[19] = b'.';
    put_digits(&mut b[20..23], ms.rem_euclid(1000) as u32);
    out.extend_from_slice(&b);
}

fn put_digits(dst: &mut [u8], mut v: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `<14>DATE HOSTNAME TABLE: ` to `out`.
pub fn write_prefix(out: &mut Vec<u8>, unix_ms: i64, hostname: &str, table: &str) {
    out.extend_from_slice(PRI);
    write_date(out, unix_ms);
    out.push(b' ');
    out.extend_from_slice(hostname.as_bytes());
    out.push(b' ');
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(b": ");
}

/// Formats records for one (hostname, table) pair, reusing the prefix between records.
#[derive(Debug, Clone)]
pub struct RecordFormatter {
    /// `<14>DATE HOSTNAME TABLE: `
    prefix: Vec<u8>,
    /// The millisecond the date bytes in `prefix` show.
    prefix_ms: i64,
}

impl RecordFormatter {
    /// A formatter for records of `table` sent from `hostname`.
    pub fn new(hostname: &str, table: &str) -> RecordFormatter {
        let mut prefix =
            Vec::with_capacity(PRI.len() + DATE_LEN + hostname.len() + table.len() + 4);
        write_prefix(&mut prefix, 0, hostname, table);
        RecordFormatter {
            prefix,
            prefix_ms: 0,
        }
    }

    /// Length of the record for `json`, in bytes (the prefix has a fixed width).
    pub fn record_len(&self, json: &[u8]) -> usize {
        self.prefix.len() + json.len() + 1
    }

    /// Appends the record for `json` stamped with `unix_ms`.
    pub fn write_at(&mut self, out: &mut Vec<u8>, unix_ms: i64, json: &[u8]) {
        if unix_ms != self.prefix_ms {
            let mut date = Vec::with_capacity(DATE_LEN);
            write_date(&mut date, unix_ms);
            self.prefix[PRI.len()..PRI.len() + DATE_LEN].copy_from_slice(&date);
            self.prefix_ms = unix_ms;
        }
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(json);
        out.push(b'\n');
    }
}

/// The system's host name (what Python's `socket.gethostname()` returns), or `localhost` when it
/// cannot be read.
pub fn system_hostname() -> String {
    // The kernel's UTS name is what gethostname(2) returns; reading it avoids a libc dependency.
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Checks that `name` can stand in a syslog header field: not empty, no spaces or control
/// characters (they would shift the fields a receiver parses). Returns a description of the
/// problem.
pub fn check_header_field(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_string());
    }
    if name.len() > max_len {
        return Err(format!("is longer than {max_len} bytes"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains the character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One complete record (`<14>DATE HOSTNAME TABLE: JSON\n`), as the SDK's `send_str` writes
    /// it: the reference the formatter is checked against.
    fn write_record(out: &mut Vec<u8>, unix_ms: i64, hostname: &str, table: &str, json: &[u8]) {
        write_prefix(out, unix_ms, hostname, table);
        out.extend_from_slice(json);
        out.push(b'\n');
    }

    // 2024-05-01T10:00:00.123Z
    const T: i64 = 1_714_557_600_123;

    #[test]
    fn golden_record() {
        let mut out = Vec::new();
        write_record(
            &mut out,
            T,
            "collector-host",
            "tap.proofpoint.isolation.url_isolation",
            br#"{"date":"2024-05-01T10:00:00.000Z","url":"https://example.com/"}"#,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<14>2024-05-01 10:00:00.123 collector-host tap.proofpoint.isolation.url_isolation: \
             {\"date\":\"2024-05-01T10:00:00.000Z\",\"url\":\"https://example.com/\"}\n"
        );
    }

    #[test]
    fn golden_dates() {
        let cases = [
            (0, "1970-01-01 00:00:00.000"),
            (1_680_538_730_783, "2023-04-03 16:18:50.783"),
            (951_782_400_007, "2000-02-29 00:00:00.007"),
            (1_735_689_599_999, "2024-12-31 23:59:59.999"),
            (-1, "1969-12-31 23:59:59.999"),
            (i64::MAX, "9999-12-31 23:59:59.999"),
            (i64::MIN, "0000-01-01 00:00:00.000"),
        ];
        for (ms, want) in cases {
            let mut out = Vec::new();
            write_date(&mut out, ms);
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "ms = {ms}");
        }
    }

    #[test]
    fn formatter_matches_pure_function_and_updates_date() {
        let mut f = RecordFormatter::new("h", "my.table");
        let json = "{\"user\":\"Zoë 東京 🚀\"}".as_bytes();
        for ms in [T, T, T + 1, T + 86_400_000, 0] {
            let mut a = Vec::new();
            let mut b = Vec::new();
            f.write_at(&mut a, ms, json);
            write_record(&mut b, ms, "h", "my.table", json);
            assert_eq!(a, b);
            assert_eq!(a.len(), f.record_len(json));
        }
    }

    #[test]
    fn formatter_appends_to_reused_buffer() {
        let mut f = RecordFormatter::new("h", "t");
        let mut out = Vec::new();
        f.write_at(&mut out, T, b"{}");
        f.write_at(&mut out, T, b"{\"a\":1}");
        assert_eq!(
            out,
            b"<14>2024-05-01 10:00:00.123 h t: {}\n<14>2024-05-01 10:00:00.123 h t: {\"a\":1}\n"
        );
    }

    #[test]
    fn header_fields() {
        assert!(check_header_field("tap.proofpoint.isolation.url_isolation", 1024).is_ok());
        assert!(check_header_field("", 1024).is_err());
        assert!(check_header_field("a b", 1024).is_err());
        assert!(check_header_field("a\nb", 1024).is_err());
        assert!(check_header_field("abc", 2).is_err());
        assert!(!system_hostname().is_empty());
    }

    #[test]
    fn formats_a_million_records_quickly() {
        // Guards the hot path against accidental per-record allocation or date formatting.
        // Debug builds are slow, so the bound is loose; release builds take ~20 ms.
        let json = vec![b'x'; 350];
        let mut f =
            RecordFormatter::new("collector-host", "tap.proofpoint.isolation.url_isolation");
        let mut out = Vec::with_capacity(64 * 1024);
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for i in 0..1_000_000 {
            out.clear();
            // A new millisecond every 1,000 records, as a busy output sees.
            f.write_at(&mut out, T + i / 1_000, &json);
            total += out.len();
        }
        let took = start.elapsed();
        assert_eq!(total, 1_000_000 * f.record_len(&json));
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }
}
