//! A service's keys (`inputs.proofpoint_isolation.services.<name>`): periods, windows, the
//! vendor host, job polling and retries, its Devo table and its obfuscation rules.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::obfuscation::parse_obfuscation;
use super::pacing::{request_pacing, RequestPacing};
use crate::config::connection::ApiConnection;
use crate::pipeline::obfuscate::ObfuscationRule;
use crate::service::{Service, API_PATH, BASE_TAG};
use crate::yaml_walker::{Cx, Obj};

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub service: Service,
    /// The Devo table (`override_tag`, else `override_base_tag` + suffix, else the service's).
    pub table: String,
    /// Devo's "Overriding rule" lines for the `override_*` keys given, logged at start.
    pub overrides: Vec<String>,
    pub request_period: Duration,
    /// `use_time_slots_for_retrievals`: daemon cycles start at wall-clock multiples of
    /// `request_period` (after the first, which starts at once).
    pub use_time_slots: bool,
    /// The service's own `requests_per_second` and `requests_limits` (its limiter is built per
    /// puller).
    pub pacing: RequestPacing,
    /// `start_time_in_utc` as configured (`None`: the API's 30-day retention).
    pub start_time: Option<DateTime<Utc>>,
    /// `start_time_in_utc` exactly as written, stored in state to detect a change.
    pub start_time_text: Option<String>,
    pub window_offset: Duration,
    pub lookback: Duration,
    pub sweep_interval: Duration,
    /// Base URL without trailing slash; [`API_PATH`] is appended.
    pub base_url: url::Url,
    pub page_size: u32,
    pub max_events_per_window: usize,
    pub request_timeout: Duration,
    pub job_poll_initial: Duration,
    pub job_poll_max: Duration,
    pub job_timeout: Duration,
    /// `max_concurrent_jobs`: the current window's job plus the jobs created ahead for the
    /// next windows (`isolation::lookahead`). 1 = one job at a time.
    pub max_concurrent_jobs: usize,
    pub max_retries: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// `obfuscation_data`, in config order: applied to every event before any output sees it.
    /// (`Debug` never shows an HMAC secret.)
    pub obfuscation: Vec<ObfuscationRule>,
    /// The input's `proxy_url`/`ca_file`/`ca_file_only`/`system_trust_store`, with the route
    /// resolved for this service's `base_url`. (`Debug` never shows proxy credentials.)
    pub connection: ApiConnection,
}

impl ServiceConfig {
    /// The full endpoint URL.
    pub fn endpoint(&self) -> String {
        format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            API_PATH
        )
    }

    /// Defaults for a service, as if its config section were empty.
    pub fn defaults(service: Service) -> ServiceConfig {
        ServiceConfig {
            service,
            table: service.table().to_owned(),
            overrides: Vec::new(),
            request_period: Duration::from_secs(60),
            use_time_slots: false,
            pacing: RequestPacing::default(),
            start_time: None,
            start_time_text: None,
            window_offset: Duration::ZERO,
            lookback: Duration::from_secs(35 * 60),
            sweep_interval: Duration::from_secs(15 * 60),
            base_url: url::Url::parse(service.default_base_url()).expect("constant URL"),
            page_size: 10_000,
            max_events_per_window: 50_000,
            request_timeout: Duration::from_secs(300),
            job_poll_initial: Duration::from_secs(2),
            job_poll_max: Duration::from_secs(30),
            job_timeout: Duration::from_secs(30 * 60),
            max_concurrent_jobs: 8,
            max_retries: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            obfuscation: Vec::new(),
            connection: ApiConnection::default(),
        }
    }
}

/// A service's section: each key in turn, starting from the service's defaults (an absent or
/// invalid key keeps its default; the problem is recorded).
pub(super) fn parse_service(
    service: Service,
    mut s: Obj<'_>,
    cx: &mut Cx,
) -> Option<ServiceConfig> {
    let mut c = ServiceConfig::defaults(service);
    c.request_period = s.duration(
        "request_period_in_seconds",
        1.0..=604_800.0,
        c.request_period,
        cx,
    );
    (c.start_time_text, c.start_time) = start_time(&mut s, cx);
    windows(&mut s, &mut c, cx);
    c.base_url = base_url(&mut s, c.base_url, cx);
    page_limits(&mut s, &mut c, cx);
    job_timings(&mut s, &mut c, cx);
    retries(&mut s, &mut c, cx);
    (c.table, c.overrides) = service_table(service, &mut s, cx);
    c.obfuscation = match s.get("obfuscation_data") {
        None => Vec::new(),
        Some(v) => parse_obfuscation(&s.path("obfuscation_data"), v, cx),
    };
    c.pacing = request_pacing(&mut s, cx);
    c.use_time_slots = use_time_slots(&mut s, c.request_period, cx);
    s.ignored = &["retries"];
    s.finish(cx);
    // `c.connection` keeps its default: the input's trust and route are set once all services
    // are read.
    Some(c)
}

/// `start_time_in_utc`: as written (stored in state to detect a change) and parsed; a time in
/// the future is refused.
fn start_time(s: &mut Obj<'_>, cx: &mut Cx) -> (Option<String>, Option<DateTime<Utc>>) {
    let start_time_text = s.string("start_time_in_utc", cx);
    let start_time =
        start_time_text
            .as_deref()
            .and_then(|t| match crate::timestamp::parse_user_time(t) {
                Some(t) if t > cx.now + chrono::Duration::minutes(5) => {
                    cx.error(
                        &s.path("start_time_in_utc"),
                        format!(
                        "`{t}` is in the future; use a past UTC time such as 2024-06-01T00:00:00Z"
                    ),
                    );
                    None
                }
                Some(t) => Some(t),
                None => {
                    cx.error(
                        &s.path("start_time_in_utc"),
                        format!(
                            "`{t}` is not a date; use ISO 8601 in UTC such as 2024-06-01T00:00:00Z"
                        ),
                    );
                    None
                }
            });
    (start_time_text, start_time)
}

/// The query window keys: its offset from now, the late-arrival lookback and sweep interval.
fn windows(s: &mut Obj<'_>, c: &mut ServiceConfig, cx: &mut Cx) {
    for (key, min, field) in [
        (
            "override_query_window_offset_in_minutes",
            0.0,
            &mut c.window_offset,
        ),
        ("late_arrival_lookback_in_minutes", 0.0, &mut c.lookback),
        (
            "late_arrival_sweep_interval_in_minutes",
            0.0167,
            &mut c.sweep_interval,
        ),
    ] {
        *field = s.duration(key, min..=1440.0, *field, cx);
    }
}

/// `override_base_url`: scheme, host and port only (the collector appends [`API_PATH`]);
/// `default` if absent or invalid.
fn base_url(s: &mut Obj<'_>, default: url::Url, cx: &mut Cx) -> url::Url {
    let Some(text) = s.string("override_base_url", cx) else {
        return default;
    };
    match url::Url::parse(&text) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                cx.error(
                    &s.path("override_base_url"),
                    "must not carry credentials or a query; give scheme, host and port only".into(),
                );
            }
            if u.path().trim_end_matches('/').ends_with("usage-data") {
                cx.error(
                    &s.path("override_base_url"),
                    format!(
                        "give only scheme, host and port: the collector appends {API_PATH} itself"
                    ),
                );
            }
            if u.scheme() == "http" {
                cx.warn(&s.path("override_base_url"), format!("`{text}` is plain http: the API key travels unencrypted; use it only for a local simulator or proxy"));
            }
            u
        }
        _ => {
            cx.error(&s.path("override_base_url"), format!("`{text}` is not an http(s) URL with a host, e.g. https://proofpointisolation.com or http://127.0.0.1:8080"));
            default
        }
    }
}

/// `page_size` and `max_events_per_window`, which must hold at least one page.
fn page_limits(s: &mut Obj<'_>, c: &mut ServiceConfig, cx: &mut Cx) {
    c.page_size = s
        .number("page_size", 1.0, 10_000.0, true, cx)
        .map(|n| n as u32)
        .unwrap_or(c.page_size);
    c.max_events_per_window = s
        .number("max_events_per_window", 1.0, 10_000_000.0, true, cx)
        .map(|n| n as usize)
        .unwrap_or(c.max_events_per_window);
    if c.max_events_per_window < c.page_size as usize {
        cx.error(
            &s.path("max_events_per_window"),
            format!(
                "({}) must be at least `page_size` ({})",
                c.max_events_per_window, c.page_size
            ),
        );
    }
}

/// The request timeout, the polling of a report job, and how many jobs run at once.
fn job_timings(s: &mut Obj<'_>, c: &mut ServiceConfig, cx: &mut Cx) {
    for (key, range, field) in [
        (
            "request_timeout_in_seconds",
            0.1..=3600.0,
            &mut c.request_timeout,
        ),
        (
            "job_poll_initial_interval_in_seconds",
            0.001..=600.0,
            &mut c.job_poll_initial,
        ),
        (
            "job_poll_max_interval_in_seconds",
            0.001..=3600.0,
            &mut c.job_poll_max,
        ),
        ("job_timeout_in_minutes", 0.001..=1440.0, &mut c.job_timeout),
    ] {
        *field = s.duration(key, range, *field, cx);
    }
    c.max_concurrent_jobs = s
        .number("max_concurrent_jobs", 1.0, 16.0, true, cx)
        .map(|n| n as usize)
        .unwrap_or(c.max_concurrent_jobs);
}

/// `max_retries` and the backoff between retries.
fn retries(s: &mut Obj<'_>, c: &mut ServiceConfig, cx: &mut Cx) {
    c.max_retries = s
        .number("max_retries", 0.0, 100.0, true, cx)
        .map(|n| n as u32)
        .unwrap_or(c.max_retries);
    for (key, max, field) in [
        (
            "retry_initial_interval_in_seconds",
            600.0,
            &mut c.retry_initial,
        ),
        ("retry_max_interval_in_seconds", 3600.0, &mut c.retry_max),
    ] {
        *field = s.duration(key, 0.001..=max, *field, cx);
    }
}

/// `use_time_slots_for_retrievals`, with a warning that says what it changes.
fn use_time_slots(s: &mut Obj<'_>, request_period: Duration, cx: &mut Cx) -> bool {
    let use_time_slots = s.boolean("use_time_slots_for_retrievals", false, cx);
    if use_time_slots {
        cx.warn(&s.path("use_time_slots_for_retrievals"), format!("pull cycles after the first start at wall-clock multiples of request_period_in_seconds ({} s); each cycle still asks for everything up to its start", request_period.as_secs_f64()));
    }
    use_time_slots
}

/// A valid Devo table name (or base tag): 1 to 1024 characters, no spaces or colons, and no
/// `/` or NUL: the file output writes `<directory>/<table>.jsonl`, and a `/` (`../x`, an
/// absolute `/etc/x`) would put that file outside its directory.
fn table_name(s: &mut Obj<'_>, key: &str, cx: &mut Cx) -> Option<String> {
    let t = s.string(key, cx)?;
    let problem = if t.is_empty()
        || t.len() > 1024
        || t.chars().any(|c| c.is_whitespace() || c == ':')
    {
        "1 to 1024 characters, no spaces or colons"
    } else if t.contains(['/', '\0']) {
        "no `/` or NUL: the file output names its file after the table, and those would put it outside the file output's directory; write dot-separated words such as `my.isolation.web`"
    } else {
        return Some(t);
    };
    cx.error(
        &s.path(key),
        format!("`{t}` is not a Devo table name ({problem})"),
    );
    None
}

/// The service's table: `override_tag` replaces it whole and wins; `override_base_tag` replaces
/// the base (`tap.proofpoint.isolation`) before the service's suffix. Returns the table and
/// Devo's "Overriding rule" lines for the log.
fn service_table(service: Service, s: &mut Obj<'_>, cx: &mut Cx) -> (String, Vec<String>) {
    let tag = table_name(s, "override_tag", cx);
    let base = table_name(s, "override_base_tag", cx);
    let mut overrides = Vec::new();
    if let Some(b) = &base {
        overrides.push(format!(
            "Overriding rule #{} - base_tag: \"{BASE_TAG}\" -> \"{b}\"",
            overrides.len() + 1
        ));
    }
    if let Some(t) = &tag {
        overrides.push(format!(
            "Overriding rule #{} - tag: \"{}\" -> \"{t}\"",
            overrides.len() + 1,
            service.table()
        ));
        if base.is_some() {
            cx.warn(
                &s.path("override_base_tag"),
                format!(
                    "has no effect on this service: `override_tag` sets its whole table (`{t}`)"
                ),
            );
        }
    }
    let table = match (tag, base) {
        (Some(t), _) => t,
        (None, Some(b)) => format!("{}.{}", b.trim_end_matches('.'), service.tag_suffix()),
        (None, None) => service.table().to_owned(),
    };
    (table, overrides)
}
