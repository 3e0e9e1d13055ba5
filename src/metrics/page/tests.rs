//! The status page: escaping, order, paging of 1,000 lines, the filter and the query, the reload.

use super::*;
use crate::metrics::status::OutputStatus;

fn line(input: &str, service: &str, condition: Condition, lag: f64) -> ServiceStatus {
    ServiceStatus {
        input: input.to_owned(),
        service: service.to_owned(),
        condition,
        reason: (condition == Condition::Failing).then(|| "API Key 1a2b...9z is not valid".into()),
        checkpoint: Some("2026-12-07T09:00:00.000Z".into()),
        lag_seconds: Some(lag),
        delivered_last_minute: 7,
        delivered_last_hour: 420,
        last_audit: None,
        lease_holder: Some("host-a:42".into()),
        outputs: vec![OutputStatus {
            name: "local".into(),
            ok: true,
            reason: None,
        }],
    }
}

fn report(services: Vec<ServiceStatus>) -> StatusReport {
    let count = |c| services.iter().filter(|s| s.condition == c).count();
    StatusReport {
        generated_at: "2026-12-07T10:00:00.000Z".into(),
        replica: "host-a:42".into(),
        persistence_problem: None,
        failing: count(Condition::Failing),
        starting: count(Condition::Starting),
        standby: count(Condition::Standby),
        collecting: count(Condition::Collecting),
        services,
    }
}

/// 1,000 tenants' url_isolation lines, `10000`..`10999`; every 100th is failing.
fn thousand() -> Vec<ServiceStatus> {
    let mut lines: Vec<ServiceStatus> = (0..1_000)
        .map(|i| {
            let c = match i % 100 {
                0 => Condition::Failing,
                _ => Condition::Collecting,
            };
            line(&format!("{}", 10_000 + i), "url_isolation", c, i as f64)
        })
        .collect();
    sort_for_display(&mut lines);
    lines
}

fn query(page: usize, per_page: usize) -> PageQuery {
    PageQuery {
        page,
        per_page,
        ..PageQuery::default()
    }
}

/// The classes of the table's rows, in order.
fn row_classes(html: &str) -> Vec<&str> {
    let body = &html[html.find("<tbody>").unwrap()..];
    body.split("<tr class=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect()
}

/// The text of each row's `td.input` cell, in order.
fn row_inputs(html: &str) -> Vec<&str> {
    html.split("<td class=\"input\">")
        .skip(1)
        .map(|s| &s[..s.find("</td>").unwrap()])
        .collect()
}

#[test]
fn text_from_the_config_errors_and_the_query_is_escaped() {
    let mut bad = line(
        "<script>alert(1)</script>",
        "url_isolation",
        Condition::Failing,
        1.0,
    );
    bad.reason = Some("</td><img src=x onerror=alert(2)>".into());
    bad.outputs[0].name = "a\"b<i>".into();
    bad.outputs.push(OutputStatus {
        name: "hook".into(),
        ok: false,
        reason: Some("<em>down</em>".into()),
    });
    bad.lease_holder = Some("<b>h</b>".into());
    let q = PageQuery {
        q: "\"><script>alert(3)</script>".into(),
        ..PageQuery::default()
    };
    let mut r = report(vec![bad]);
    r.persistence_problem = Some("<u>redis</u>".into());
    // The lines unfiltered, then the query echoed in the form (it matches no line).
    let html = render(&r, &PageQuery::default()).into_string() + &render(&r, &q).into_string();
    for raw in ["<script>", "<img", "<i>", "<b>", "<u>", "<em>"] {
        assert!(!html.contains(raw), "{raw} unescaped in\n{html}");
    }
    for escaped in [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&lt;/td&gt;&lt;img src=x onerror=alert(2)&gt;",
        "a&quot;b&lt;i&gt;",
        "hook failing: &lt;em&gt;down&lt;/em&gt;",
        "&lt;b&gt;h&lt;/b&gt;",
        "&lt;u&gt;redis&lt;/u&gt;",
        "value=\"&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;\"",
    ] {
        assert!(html.contains(escaped), "{escaped} not in\n{html}");
    }
}

#[test]
fn failing_lines_come_first_marked_with_the_word_and_the_largest_lag_first() {
    let services = vec![
        line("1", "url_isolation", Condition::Collecting, 900.0),
        line("2", "url_isolation", Condition::Failing, 10.0),
        line("3", "url_isolation", Condition::Standby, 5.0),
        line("4", "url_isolation", Condition::Starting, 1.0),
        line("5", "url_isolation", Condition::Failing, 50.0),
    ];
    let html = render(&report(services), &PageQuery::default()).into_string();
    assert_eq!(
        row_classes(&html),
        ["failing", "failing", "starting", "standby", "collecting"]
    );
    assert_eq!(row_inputs(&html), ["5", "2", "4", "3", "1"]);
    assert!(html
        .contains("<tr class=\"failing\"><td class=\"condition\"><strong>failing</strong></td>"));
    assert!(html.contains("<li class=\"failing\" id=\"count-failing\"><a href=\"?condition=failing\"><strong>2</strong> failing</a></li>"), "{html}");
}

#[test]
fn pages_of_1000_lines_at_several_sizes_and_past_the_end() {
    let lines = thousand();
    // (per page, page asked) -> (page shown, pages, first index, lines shown)
    for ((per_page, asked), expected) in [
        ((100, 1), (1, 10, 0, 100)),
        ((100, 10), (10, 10, 900, 100)),
        ((100, 11), (10, 10, 900, 100)),
        ((100, usize::MAX), (10, 10, 900, 100)),
        ((300, 4), (4, 4, 900, 100)),
        ((7, 143), (143, 143, 994, 6)),
        ((1_000, 1), (1, 1, 0, 1_000)),
        ((1, 1_000), (1_000, 1_000, 999, 1)),
    ] {
        let s = select(&lines, &query(asked, per_page));
        assert_eq!(
            (s.page, s.pages, s.first, s.lines.len()),
            expected,
            "per_page {per_page}, page {asked}"
        );
        assert_eq!(s.matching, 1_000);
        assert_eq!(s.lines[0].input, lines[s.first].input);
    }
    let none = select(&[], &query(3, 100));
    assert_eq!((none.page, none.pages, none.lines.len()), (1, 1, 0));

    // Page 5 of 10: its lines, the count of failing lines of every page, links both ways.
    let html = render(&report(lines.clone()), &query(5, 100)).into_string();
    assert!(html.contains("Lines 401–500 of 1000"), "{html}");
    assert!(html.contains("<strong>10</strong> failing"), "{html}");
    assert_eq!(row_inputs(&html).len(), 100);
    assert_eq!(row_inputs(&html)[0], lines[400].input);
    assert!(html.contains("href=\"?page=4\""));
    assert!(html.contains("href=\"?page=6\""));
    assert!(html.contains("href=\"?page=10\""));
    let last = render(&report(lines), &query(99, 100)).into_string();
    assert!(last.contains("Lines 901–1000 of 1000"), "{last}");
    assert!(last.contains("<span class=\"disabled\">next ›</span>"));
}

#[test]
fn the_filter_keeps_substrings_of_input_or_service_and_one_condition() {
    let mut lines = thousand();
    lines.push(line(
        "ACME-7",
        "browser_and_email_isolation",
        Condition::Standby,
        3.0,
    ));
    sort_for_display(&mut lines);
    let inputs = |q: &str, condition: Option<Condition>| -> Vec<String> {
        let query = PageQuery {
            q: q.into(),
            condition,
            per_page: MAX_PER_PAGE,
            ..PageQuery::default()
        };
        select(&lines, &query)
            .lines
            .iter()
            .map(|s| s.input.clone())
            .collect()
    };
    assert_eq!(inputs("10099", None), ["10099"]);
    assert_eq!(inputs("acme", None), ["ACME-7"]);
    assert_eq!(inputs("BROWSER", None), ["ACME-7"]);
    assert_eq!(inputs("url_iso", None).len(), 1_000);
    assert_eq!(inputs("", Some(Condition::Standby)), ["ACME-7"]);
    assert_eq!(inputs("", Some(Condition::Failing)).len(), 10);
    assert_eq!(inputs("1050", Some(Condition::Failing)), ["10500"]);
    assert_eq!(inputs("1050", Some(Condition::Collecting)).len(), 9);
    assert!(inputs("nobody", None).is_empty());

    // The failing count stays the whole report's; the links keep the filter.
    let q = PageQuery {
        q: "10 5".into(),
        condition: Some(Condition::Collecting),
        refresh: 0,
        ..PageQuery::default()
    };
    let html = render(&report(lines), &q).into_string();
    assert!(html.contains("No line matches"), "{html}");
    assert!(html.contains("<strong>10</strong> failing"), "{html}");
    assert_eq!(
        q.link_to_page(2),
        "?q=10+5&condition=collecting&refresh=0&page=2"
    );
}

#[test]
fn the_query_is_checked_and_every_bad_parameter_named() {
    let raw = |page: &str, per_page: &str, condition: &str, refresh: &str| RawPageQuery {
        page: Some(page.into()),
        per_page: Some(per_page.into()),
        q: Some("  acme ".into()),
        condition: Some(condition.into()),
        refresh: Some(refresh.into()),
    };
    assert_eq!(
        PageQuery::parse(&raw("3", "50", "Failing", "0")),
        Ok(PageQuery {
            page: 3,
            per_page: 50,
            q: "acme".into(),
            condition: Some(Condition::Failing),
            refresh: 0,
        })
    );
    // Empty fields (a submitted form) are the defaults.
    assert_eq!(
        PageQuery::parse(&raw("", "", "", "")),
        Ok(PageQuery {
            q: "acme".into(),
            ..PageQuery::default()
        })
    );
    let problems = PageQuery::parse(&raw("0", "1001", "broken", "-1")).unwrap_err();
    assert_eq!(problems.len(), 4, "{problems:?}");
    for (p, words) in problems.iter().zip([
        "page=\"0\"",
        "per_page=\"1001\"",
        "refresh=\"-1\"",
        "condition=\"broken\" is not a condition: use one of failing, starting, standby, collecting",
    ]) {
        assert!(p.contains(words), "{p}");
    }
    let html = render_bad_query(&problems).into_string();
    assert!(
        html.contains("per_page=&quot;1001&quot; is out of range"),
        "{html}"
    );
}

#[test]
fn the_page_reloads_itself_unless_told_not_to() {
    let r = report(vec![line("1", "url_isolation", Condition::Collecting, 1.0)]);
    let html = render(&r, &PageQuery::default()).into_string();
    assert!(
        html.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{html}"
    );
    let q = PageQuery {
        refresh: 30,
        ..PageQuery::default()
    };
    assert!(render(&r, &q).into_string().contains("content=\"30\""));
    let q = PageQuery {
        refresh: 0,
        ..PageQuery::default()
    };
    let html = render(&r, &q).into_string();
    assert!(!html.contains("http-equiv"), "{html}");
    // Every link and the form are relative: the page works under a proxy's path prefix too.
    assert!(
        html.contains("<form id=\"filter\" method=\"get\" action=\"\">"),
        "{html}"
    );
    assert!(!html.contains("href=\"/"), "{html}");
    assert!(!render_bad_query(&["x".into()])
        .into_string()
        .contains("href=\"/"));
    // Nothing is fetched from anywhere: no script, stylesheet link or image.
    for tag in ["<script", "<link", "<img", "src=", "http://", "https://"] {
        assert!(!html.contains(tag), "{tag} in\n{html}");
    }
}

#[test]
fn every_field_of_a_status_line_has_its_column() {
    let mut l = line("1", "url_isolation", Condition::Failing, 1.0);
    l.last_audit = Some(AuditSummary {
        at: "2026-12-07T00:00:00.000Z".into(),
        from: "2026-11-07T00:00:00.000Z".into(),
        to: "2026-12-07T00:00:00.000Z".into(),
        hours: 720,
        hours_missing: 2,
        missing_events: 31,
        extra_events: 0,
        error: None,
    });
    let json = serde_json::to_value(&l).unwrap();
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut columns: Vec<&str> = COLUMNS.iter().map(|(f, _)| *f).collect();
    fields.sort_unstable();
    columns.sort_unstable();
    assert_eq!(
        fields, columns,
        "a field of ServiceStatus without its column on the page"
    );
    let html = render(&report(vec![l]), &PageQuery::default()).into_string();
    for field in columns {
        assert!(html.contains(&format!("<td class=\"{field}\"")), "{field}");
    }
    assert!(html.contains("missing 31 in 2 of 720 h"), "{html}");
}

#[test]
fn lags_read_in_the_largest_units() {
    assert_eq!(format_lag(0.4), "0 s");
    assert_eq!(format_lag(59.0), "59 s");
    assert_eq!(format_lag(185.0), "3 min 5 s");
    assert_eq!(format_lag(7_440.0), "2 h 4 min");
    assert_eq!(format_lag(266_400.0), "3 d 2 h");
    assert_eq!(format_lag(-3.0), "0 s");
}

#[test]
fn an_output_reason_the_line_already_gives_is_not_repeated() {
    let mut l = line("1", "url_isolation", Condition::Failing, 1.0);
    l.reason = Some("output local: connection refused".into());
    l.outputs = vec![
        OutputStatus {
            name: "local".into(),
            ok: false,
            reason: Some("connection refused".into()),
        },
        OutputStatus {
            name: "hook".into(),
            ok: false,
            reason: Some("HTTP 503".into()),
        },
    ];
    let html = render(&report(vec![l]), &PageQuery::default()).into_string();
    assert!(
        html.contains("title=\"connection refused\">local failing</span>"),
        "{html}"
    );
    assert!(html.contains(">hook failing: HTTP 503</span>"), "{html}");
}
