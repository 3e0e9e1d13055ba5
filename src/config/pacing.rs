//! The keys that pace API requests, read alike at the input (its limits shared by its services,
//! and with Redis by every replica) and at each service: `requests_per_second` and Devo's
//! `requests_limits`.

use std::fmt;
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::yaml_walker::{each_mapping, show, Cx, Obj};

/// The keys that pace API requests, read alike at the input (shared by its services) and at
/// each service.
#[derive(Clone, Debug, Default)]
pub struct RequestPacing {
    /// Minimum spacing of requests, from `requests_per_second`.
    pub min_request_interval: Option<Duration>,
    /// `requests_limits`, as configured.
    pub requests_limits: Vec<Limit>,
}

/// `requests_per_second` and `requests_limits` of the mapping `o`.
pub(super) fn request_pacing(o: &mut Obj<'_>, cx: &mut Cx) -> RequestPacing {
    RequestPacing {
        min_request_interval: requests_per_second(o, cx),
        requests_limits: requests_limits(o, cx),
    }
}

/// `requests_per_second` (any number above zero, up to 1000) as a minimum request spacing.
fn requests_per_second(o: &mut Obj<'_>, cx: &mut Cx) -> Option<Duration> {
    o.number("requests_per_second", 0.001, 1000.0, false, cx)
        .map(|rps| Duration::from_secs_f64(1.0 / rps))
}

/// `requests_limits`: Devo's list of `{period: "<n><unit>", number_of_requests}`.
fn requests_limits(o: &mut Obj<'_>, cx: &mut Cx) -> Vec<Limit> {
    let path = o.path("requests_limits");
    let Some(v) = o.get("requests_limits") else {
        return Vec::new();
    };
    each_mapping(
        &path,
        v,
        "must be a list such as `[{period: 1m, number_of_requests: 60}]`",
        "must be a mapping with `period` and `number_of_requests`",
        cx,
        requests_limit,
    )
}

/// One `requests_limits` entry: `period` and `number_of_requests`.
fn requests_limit(mut e: Obj<'_>, cx: &mut Cx) -> Option<Limit> {
    let period = limit_period(&mut e, cx);
    let number = number_of_requests(&mut e, cx);
    e.finish(cx);
    let ((period, text), max_requests) = (period?, number?);
    Some(Limit {
        period,
        max_requests,
        text,
    })
}

/// `period`: Devo's period text, kept as written for the log.
fn limit_period(e: &mut Obj<'_>, cx: &mut Cx) -> Option<(Duration, String)> {
    match e.string("period", cx) {
        None => {
            cx.error(&e.path("period"), "missing; e.g. \"1m\" (units s, m, h, d, w, M, y)".into());
            None
        }
        Some(text) => parse_period(&text).map(|d| (d, text.clone())).or_else(|| {
            cx.error(&e.path("period"), format!("`{text}` is not a period; write a whole number and a unit: s, m, h, d, w, M (30 days) or y (365 days), e.g. \"5m\""));
            None
        }),
    }
}

/// `number_of_requests`: 1 to 9999999, or -1 (`Some(None)`) for no limit.
fn number_of_requests(e: &mut Obj<'_>, cx: &mut Cx) -> Option<Option<u32>> {
    match e.get("number_of_requests") {
        None => {
            cx.error(
                &e.path("number_of_requests"),
                "missing; 1 to 9999999, or -1 for no limit".into(),
            );
            None
        }
        Some(Value::Number(x)) if x.as_i64() == Some(-1) => Some(None),
        Some(Value::Number(x)) if x.as_i64().is_some_and(|x| (1..=9_999_999).contains(&x)) => {
            x.as_i64().map(|x| Some(x as u32))
        }
        Some(other) => {
            cx.error(
                &e.path("number_of_requests"),
                format!(
                    "must be a whole number from 1 to 9999999, or -1 for no limit, got {}",
                    show(other)
                ),
            );
            None
        }
    }
}

/// Devo's period text: a whole number and one of s, m, h, d, w, M (taken as 30 days) or y
/// (365 days).
pub fn parse_period(text: &str) -> Option<Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'M' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    if n == 0 {
        return None;
    }
    n.checked_mul(secs).map(Duration::from_secs)
}

/// One `requests_limits` entry: `number_of_requests` per `period`; `None`: unlimited (`-1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub period: Duration,
    pub max_requests: Option<u32>,
    /// The period as written (`"1m"`), for log lines.
    pub text: String,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max_requests {
            Some(n) => write!(f, "{n} request(s) per {}", self.text),
            None => write!(f, "unlimited per {}", self.text),
        }
    }
}
