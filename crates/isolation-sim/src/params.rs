//! Query-string parsing: the request parameters (§3) and the accepted date formats.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// The parameters of one request, as raw strings (validated when a job is created, ignored
/// afterwards: a job keeps its own window and page size).
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    pub from: Option<String>,
    pub to: Option<String>,
    pub page_size: Option<String>,
    pub job_id: Option<String>,
    pub page_token: Option<String>,
    pub key: Option<String>,
}

impl Params {
    /// Parses a raw query string. A repeated parameter keeps its last value; empty values count
    /// as absent (a client that sends `pageToken=` has no token).
    pub fn parse(query: &str) -> Params {
        let mut p = Params::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let v = if v.is_empty() {
                None
            } else {
                Some(v.into_owned())
            };
            match k.as_ref() {
                "from" => p.from = v,
                "to" => p.to = v,
                "pageSize" => p.page_size = v,
                "jobId" => p.job_id = v,
                "pageToken" => p.page_token = v,
                "key" => p.key = v,
                _ => {}
            }
        }
        p
    }
}

/// Parses a `from`/`to` value into epoch milliseconds. Accepts `2022-01-20`,
/// `2025-01-11T11:27:08`, `2025-01-22T18:04:44.123`, RFC 3339 with `Z` or any offset, and the
/// event form `…+0000`. A value without a zone is UTC (every known client computes in UTC).
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Formats a time as `2025-01-22T18:04:44.123Z` (UTC, milliseconds), a form clients send.
pub fn format_param_date(dt: DateTime<Utc>) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_formats() {
        let base = parse_date("2025-01-11T11:27:08Z").expect("rfc3339");
        assert_eq!(parse_date("2025-01-11T11:27:08"), Some(base));
        assert_eq!(parse_date("2025-01-11T11:27:08.000"), Some(base));
        assert_eq!(parse_date("2025-01-11T12:27:08+01:00"), Some(base));
        assert_eq!(parse_date("2025-01-11T11:27:08.000+0000"), Some(base));
        assert_eq!(parse_date("2025-01-11T11:27:08.123"), Some(base + 123));
        assert_eq!(
            parse_date("2025-01-11"),
            Some(base - (11 * 3600 + 27 * 60 + 8) * 1000)
        );
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2025-13-01"), None);
    }
}
