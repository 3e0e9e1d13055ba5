//! The status page at `/`: the table of `/status` ([`StatusReport`]) as one HTML page, for a
//! person at a browser in a SOC.
//!
//! What it must survive decides its shape:
//! - **An air-gapped network.** The page is rendered here, on the server, as one document: the
//!   style is inline, there is no JavaScript, no font, image or script from anywhere else, and
//!   nothing to build. It refreshes itself with `<meta http-equiv="refresh">`, which reloads the
//!   same URL, query included; `?refresh=0` turns that off, `?refresh=N` changes the period.
//! - **A thousand tenants.** One line per (input, service) would be 2,000 lines: the page shows
//!   `per_page` of them (100 by default; `?page=N`), after the filters of a plain GET form
//!   (`?q=` a substring of the input id or the service, case-insensitive; `?condition=failing`
//!   and the other conditions). The header counts every line per condition, whatever the filter
//!   and the page, so the number of failing lines is visible on every page.
//! - **Failing first, visibly.** Lines keep `/status`'s order (failing, starting, standing by,
//!   collecting; the largest lag first), sorted again here so the page never depends on who
//!   built the report. A failing line has the class `failing`, a red background and the word.
//! - **Text from outside.** Input ids come from the config, reasons from errors (masked already,
//!   but still any text). Every value goes through `maud`'s `html!`, which escapes whatever it
//!   interpolates unless told otherwise (`PreEscaped`, used here for the fixed style sheet only).
//!   maud was chosen over a template engine such as askama because its templates are Rust
//!   expressions checked at compile time, with no template files, and escaping is the default
//!   rather than a setting.
//!
//! Bad query parameters (a page that is not a number, an unknown condition) answer
//! `400 Bad Request` with a line per problem saying what is accepted; a page past the last one
//! shows the last one.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use super::status::{sort_for_display, AuditSummary, Condition, ServiceStatus, StatusReport};

/// Lines per page unless `?per_page=` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 100;
/// The most lines one page may show (`?per_page=` above it is refused).
pub const MAX_PER_PAGE: usize = 1_000;
/// A parameter's value, trimmed; `None` when absent or empty (an empty form field).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Seconds between reloads unless `?refresh=` says otherwise.
pub const DEFAULT_REFRESH_SECONDS: u32 = 5;
/// The longest reload period `?refresh=` accepts, in seconds (an hour).
const MAX_REFRESH_SECONDS: u32 = 3_600;

/// Every condition, in display order, with the word the page and `?condition=` use.
const CONDITIONS: [(Condition, &str); 4] = [
    (Condition::Failing, "failing"),
    (Condition::Starting, "starting"),
    (Condition::Standby, "standby"),
    (Condition::Collecting, "collecting"),
];

/// The query string as sent: every parameter optional and still text, so that a bad value is
/// reported by [`PageQuery::parse`] in words, not refused by the extractor.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPageQuery {
    pub page: Option<String>,
    pub per_page: Option<String>,
    pub q: Option<String>,
    pub condition: Option<String>,
    pub refresh: Option<String>,
}

/// What the page shows: the checked query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageQuery {
    /// 1-based; past the last page, the last page is shown.
    pub page: usize,
    pub per_page: usize,
    /// Lines whose input id or service contains it (case-insensitive); empty: every line.
    pub q: String,
    /// Only the lines in this condition; `None`: every condition.
    pub condition: Option<Condition>,
    /// Seconds between reloads; 0: no reload.
    pub refresh: u32,
}

impl Default for PageQuery {
    fn default() -> Self {
        PageQuery {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            q: String::new(),
            condition: None,
            refresh: DEFAULT_REFRESH_SECONDS,
        }
    }
}

impl PageQuery {
    /// Checks every parameter; `Err` lists each bad one with what is accepted instead.
    pub fn parse(raw: &RawPageQuery) -> Result<PageQuery, Vec<String>> {
        let mut problems = Vec::new();
        let mut query = PageQuery::default();
        if let Some(v) = given(&raw.page) {
            match v.parse::<usize>() {
                Ok(n) if n >= 1 => query.page = n,
                _ => problems.push(format!(
                    "page={v:?} is not a page number: use a whole number from 1"
                )),
            }
        }
        if let Some(v) = given(&raw.per_page) {
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => query.per_page = n,
                _ => problems.push(format!(
                    "per_page={v:?} is out of range: use a whole number from 1 to {MAX_PER_PAGE}"
                )),
            }
        }
        if let Some(v) = given(&raw.refresh) {
            match v.parse::<u32>() {
                Ok(n) if n <= MAX_REFRESH_SECONDS => query.refresh = n,
                _ => problems.push(format!(
                    "refresh={v:?} is out of range: use seconds from 1 to {MAX_REFRESH_SECONDS}, or 0 for no reload"
                )),
            }
        }
        if let Some(v) = given(&raw.condition) {
            match CONDITIONS
                .iter()
                .find(|(_, name)| name.eq_ignore_ascii_case(v))
            {
                Some((c, _)) => query.condition = Some(*c),
                None => problems.push(format!(
                    "condition={v:?} is not a condition: use one of {}, or leave it empty for all",
                    CONDITIONS.map(|(_, n)| n).join(", ")
                )),
            }
        }
        query.q = given(&raw.q).unwrap_or_default().to_owned();
        match problems.is_empty() {
            true => Ok(query),
            false => Err(problems),
        }
    }

    /// This query's URL (relative, `?...`) at another page; parameters at their default are
    /// left out, so the links stay short and a refresh keeps exactly what was asked.
    fn link_to_page(&self, page: usize) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            url.append_pair("q", &self.q);
        }
        if let Some(c) = self.condition {
            url.append_pair("condition", condition_name(c));
        }
        if self.per_page != DEFAULT_PER_PAGE {
            url.append_pair("per_page", &self.per_page.to_string());
        }
        if self.refresh != DEFAULT_REFRESH_SECONDS {
            url.append_pair("refresh", &self.refresh.to_string());
        }
        if page != 1 {
            url.append_pair("page", &page.to_string());
        }
        format!("?{}", url.finish())
    }
}

fn condition_name(c: Condition) -> &'static str {
    CONDITIONS
        .iter()
        .find(|(k, _)| *k == c)
        .map(|(_, n)| *n)
        .expect("every condition is in CONDITIONS")
}

/// One page of the lines that pass the filters.
#[derive(Debug)]
pub struct Selection<'a> {
    /// The page shown (1-based; the last one if more was asked).
    pub page: usize,
    /// How many pages the matching lines fill (at least 1, even with no line).
    pub pages: usize,
    /// Lines that pass the filters, on every page.
    pub matching: usize,
    /// The 0-based index, among the matching lines, of this page's first line.
    pub first: usize,
    pub lines: Vec<&'a ServiceStatus>,
}

/// The lines of `services` (in display order already) that pass `query`'s filters, cut to its
/// page.
pub fn select<'a>(services: &'a [ServiceStatus], query: &PageQuery) -> Selection<'a> {
    let needle = query.q.to_lowercase();
    let matching: Vec<&ServiceStatus> = services
        .iter()
        .filter(|s| query.condition.is_none_or(|c| s.condition == c))
        .filter(|s| {
            needle.is_empty()
                || s.input.to_lowercase().contains(&needle)
                || s.service.to_lowercase().contains(&needle)
        })
        .collect();
    let pages = matching.len().div_ceil(query.per_page).max(1);
    let page = query.page.min(pages);
    let first = (page - 1) * query.per_page;
    let lines = matching
        .iter()
        .skip(first)
        .take(query.per_page)
        .copied()
        .collect();
    Selection {
        page,
        pages,
        matching: matching.len(),
        first,
        lines,
    }
}

/// The whole page for `report`, as `query` asks.
pub fn render(report: &StatusReport, query: &PageQuery) -> Markup {
    let mut services = report.services.clone();
    sort_for_display(&mut services);
    let selection = select(&services, query);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if query.refresh > 0 {
                    meta http-equiv="refresh" content=(query.refresh);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "isolation-collector: " (report.failing) " failing" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(report, query))
                (filter_form(query))
                (pager(query, &selection))
                (table(&selection))
            }
        }
    }
}

/// The page for a query that [`PageQuery::parse`] refused: what was wrong, and a way back.
pub fn render_bad_query(problems: &[String]) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "isolation-collector: bad query" } }
            body {
                h1 { "This status page query cannot be shown" }
                ul { @for p in problems { li { (p) } } }
                p { a href="?" { "Show every line" } }
            }
        }
    }
}

/// The title, this replica and the time, the counts per condition (of every line), and Redis's
/// problem if there is one.
fn header(report: &StatusReport, query: &PageQuery) -> Markup {
    let count = |c: Condition| match c {
        Condition::Failing => report.failing,
        Condition::Starting => report.starting,
        Condition::Standby => report.standby,
        Condition::Collecting => report.collecting,
    };
    html! {
        header {
            h1 { "isolation-collector" }
            p.meta {
                "Replica " span #replica { (report.replica) }
                " · generated at " span #generated-at { (report.generated_at) }
                " · "
                @if query.refresh > 0 {
                    "reloads every " (query.refresh) " s ("
                    a href=(PageQuery { refresh: 0, ..query.clone() }.link_to_page(query.page)) { "stop" }
                    ")"
                } @else {
                    "not reloading ("
                    a href=(PageQuery { refresh: DEFAULT_REFRESH_SECONDS, ..query.clone() }.link_to_page(query.page)) {
                        "reload every " (DEFAULT_REFRESH_SECONDS) " s"
                    }
                    ")"
                }
            }
            ul.counts {
                @for (c, name) in CONDITIONS {
                    li class=(name) id={ "count-" (name) } {
                        a href=(PageQuery { condition: Some(c), ..query.clone() }.link_to_page(1)) {
                            strong { (count(c)) } " " (name)
                        }
                    }
                }
            }
            @if let Some(problem) = &report.persistence_problem {
                p.failing #persistence-problem { "Redis: " (problem) }
            }
        }
    }
}

/// The GET form of the filters; submitting it starts again at page 1. Its action and every
/// link are relative (`""`, `?...`), so the page also works behind a proxy that serves it under
/// a path of its own.
fn filter_form(query: &PageQuery) -> Markup {
    html! {
        form #filter method="get" action="" {
            label { "Input or service contains " input type="search" name="q" value=(query.q); }
            " "
            label {
                "Condition "
                select name="condition" {
                    option value="" selected[query.condition.is_none()] { "any" }
                    @for (c, name) in CONDITIONS {
                        option value=(name) selected[query.condition == Some(c)] { (name) }
                    }
                }
            }
            @if query.per_page != DEFAULT_PER_PAGE {
                input type="hidden" name="per_page" value=(query.per_page);
            }
            @if query.refresh != DEFAULT_REFRESH_SECONDS {
                input type="hidden" name="refresh" value=(query.refresh);
            }
            " "
            button type="submit" { "Filter" }
            " "
            a href="?" { "clear" }
        }
    }
}

/// Which lines this page shows, and links to the neighbouring and the end pages.
fn pager(query: &PageQuery, s: &Selection) -> Markup {
    let link = |page: usize, text: &str| {
        html! {
            @if page != s.page && (1..=s.pages).contains(&page) {
                a href=(query.link_to_page(page)) { (text) }
            } @else {
                span.disabled { (text) }
            }
        }
    };
    html! {
        nav #pager {
            span #shown {
                @if s.matching == 0 {
                    "No line matches"
                } @else {
                    "Lines " (s.first + 1) "–" (s.first + s.lines.len()) " of " (s.matching)
                }
                " · page " span #page-number { (s.page) } " of " span #page-count { (s.pages) }
            }
            " "
            (link(1, "« first")) " " (link(s.page.saturating_sub(1), "‹ previous")) " "
            (link(s.page + 1, "next ›")) " " (link(s.pages, "last »"))
        }
    }
}

/// The titles of the table's columns; `field` is the [`ServiceStatus`] field each shows (a
/// unit test checks that every field of the JSON has its column).
const COLUMNS: [(&str, &str); 11] = [
    ("condition", "Condition"),
    ("input", "Input"),
    ("service", "Service"),
    ("reason", "Why"),
    ("checkpoint", "Checkpoint"),
    ("lag_seconds", "Lag"),
    ("delivered_last_minute", "Delivered, last minute"),
    ("delivered_last_hour", "Delivered, last hour"),
    ("last_audit", "Last audit"),
    ("lease_holder", "Lease holder"),
    ("outputs", "Outputs"),
];

fn table(s: &Selection) -> Markup {
    html! {
        table #services {
            thead { tr { @for (field, title) in COLUMNS { th class=(field) { (title) } } } }
            tbody { @for line in &s.lines { (row(line)) } }
        }
    }
}

fn row(s: &ServiceStatus) -> Markup {
    let name = condition_name(s.condition);
    html! {
        tr class=(name) {
            td.condition { strong { (name) } }
            td.input { (s.input) }
            td.service { (s.service) }
            td.reason { (s.reason.as_deref().unwrap_or("")) }
            td.checkpoint { (s.checkpoint.as_deref().unwrap_or("none yet")) }
            td.lag_seconds title=[s.lag_seconds.map(|l| format!("{l:.3} s"))] {
                (s.lag_seconds.map(format_lag).unwrap_or_default())
            }
            td.delivered_last_minute { (s.delivered_last_minute) }
            td.delivered_last_hour { (s.delivered_last_hour) }
            td.last_audit { (audit_cell(s.last_audit.as_ref())) }
            td.lease_holder { (s.lease_holder.as_deref().unwrap_or("")) }
            td.outputs {
                @for o in &s.outputs {
                    @if o.ok {
                        span.output.ok { (o.name) " ok" }
                    } @else {
                        span.output.failing title=[o.reason.as_deref()] {
                            (o.name) " failing"
                            // Its reason, unless the line's own reason already says it.
                            @if let Some(why) = o.reason.as_deref().filter(|w| !s.reason.as_deref().unwrap_or("").contains(w)) {
                                ": " (why)
                            }
                        }
                    }
                    " "
                }
            }
        }
    }
}

/// The audit's verdict in words, its range and time in the tooltip.
fn audit_cell(audit: Option<&AuditSummary>) -> Markup {
    let Some(a) = audit else {
        return html! { "never" };
    };
    let verdict = match (&a.error, a.missing_events, a.extra_events) {
        (Some(e), _, _) => format!("could not finish: {e}"),
        (None, 0, 0) => format!("complete ({} h)", a.hours),
        (None, 0, extra) => format!("{extra} more delivered than the API holds"),
        (None, missing, _) => format!("missing {missing} in {} of {} h", a.hours_missing, a.hours),
    };
    let missing = a.error.is_some() || a.missing_events > 0;
    html! {
        span class=[missing.then_some("failing")] title={ (a.from) " to " (a.to) ", at " (a.at) } {
            (verdict)
        }
    }
}

/// A lag for a person: `42 s`, `3 min 5 s`, `2 h 4 min`, `3 d 2 h`.
fn format_lag(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// The page's whole style: inline, so nothing is fetched from anywhere.
const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #1b1b1b; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.meta { color: #555; margin: 0 0 .5em; }
ul.counts { list-style: none; padding: 0; display: flex; gap: .5em; }
ul.counts li { padding: .2em .6em; border-radius: 4px; background: #eee; }
ul.counts li.failing { background: #c62828; } ul.counts li.failing a { color: #fff; }
ul.counts a { color: inherit; text-decoration: none; }
form, nav { margin: .5em 0; }
.disabled { color: #999; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
tr.failing { background: #fde2e1; border-left: 4px solid #c62828; }
tr.failing td.condition, span.failing, p.failing { color: #b71c1c; }
tr.starting { background: #fff4d6; }
tr.standby td.condition { color: #555; }
tr.collecting td.condition { color: #2e7d32; }
span.output.ok { color: #2e7d32; }
span.output.failing { font-weight: bold; }
td.delivered_last_minute, td.delivered_last_hour, td.lag_seconds { text-align: right; }
";

#[cfg(test)]
mod tests;
