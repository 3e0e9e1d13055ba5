//! `isolation-collector status`: what a running daemon is doing, asked of its metrics listener
//! (`GET /status`, the JSON [`crate::metrics::status`] builds): one line per (input, service),
//! failing ones first, as a table, or the document as is (`--json`); `--watch` redraws it in
//! place like `top` until Ctrl-C.
//!
//! Exit status: 0 when no line is failing, 2 when one is ([`Outcome::NeedsAttention`]), 1 when
//! the daemon cannot be reached or answers something else, 64 for bad usage (no listener to ask).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{load, loader, BadUsage, Outcome};
use crate::clock::SharedClock;
use crate::metrics::status::{AuditSummary, Condition, ServiceStatus, StatusReport};
use crate::timestamp::{parse_event_date, Millis};

/// How long one request for `/status` may take: the daemon answers from memory.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// ANSI: clear the screen, cursor home (what `clear` prints).
const CLEAR_AND_HOME: &str = "\x1b[2J\x1b[H";

/// What `status` was asked.
#[derive(Debug)]
pub struct StatusArgs {
    /// The daemon's config, whose `globals.metrics_listen` is asked.
    pub config: Option<PathBuf>,
    /// `HOST:PORT` of the listener, instead of the config's.
    pub address: Option<String>,
    /// Redraw every this many seconds until Ctrl-C.
    pub watch: Option<u64>,
    /// Print the `/status` document as served.
    pub json: bool,
}

/// Where `/status` is asked, and what named it (for the messages).
#[derive(Debug, PartialEq, Eq)]
struct Target {
    url: String,
    named_by: String,
}

/// `status`: see the module doc.
pub async fn status(args: StatusArgs, clock: &SharedClock) -> Result<Outcome, BadUsage> {
    let target = target(&args, clock)?;
    let http = match reqwest::Client::builder()
        // The listener is the operator's own: a proxy of the environment must not route it.
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            eprintln!("error: cannot start an HTTP client: {e}");
            return Ok(Outcome::Failed);
        }
    };
    match args.watch {
        None => Ok(show_once(&http, &target, args.json).await),
        Some(seconds) => Ok(watch(&http, &target, args.json, seconds).await),
    }
}

/// The `/status` URL the arguments name: `--address`, or the config's `metrics_listen`.
fn target(args: &StatusArgs, clock: &SharedClock) -> Result<Target, BadUsage> {
    if let Some(address) = &args.address {
        return address_target(address).ok_or_else(|| {
            eprintln!("error: --address {address:?} is not HOST:PORT (for example 127.0.0.1:9464, the daemon's globals.metrics_listen)");
            BadUsage
        });
    }
    let Some(path) = &args.config else {
        eprintln!("error: status needs --config FILE (the daemon's) or --address HOST:PORT");
        return Err(BadUsage);
    };
    let config = load(&loader(path), clock)?.config;
    let Some(listen) = config.globals.metrics_listen else {
        eprintln!(
            "error: {} sets no globals.metrics_listen, so its daemon serves no /status: set it (for example metrics_listen: \"127.0.0.1:9464\") and restart the daemon, or name a listener with --address HOST:PORT",
            path.display()
        );
        return Err(BadUsage);
    };
    Ok(Target {
        url: format!("http://{}/status", reachable(listen)),
        named_by: format!("globals.metrics_listen of {}", path.display()),
    })
}

/// `HOST:PORT` as a `/status` URL, if it is one.
fn address_target(address: &str) -> Option<Target> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let url = format!("http://{address}/status");
    let parsed = reqwest::Url::parse(&url).ok()?;
    (!host.is_empty() && parsed.path() == "/status" && parsed.query().is_none()).then(|| Target {
        url,
        named_by: "--address".to_owned(),
    })
}

/// The address to connect to for a listener bound to `listen`: the loopback of its family
/// for a wildcard (0.0.0.0, ::).
fn reachable(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    (ip, listen.port()).into()
}

/// The daemon's answer: the document as served, and what it says.
async fn fetch(http: &reqwest::Client, target: &Target) -> Result<(String, StatusReport), String> {
    let url = &target.url;
    let unreachable = |e: reqwest::Error| {
        format!(
            "cannot reach the collector at {url} ({}): {}. Is the daemon running (`isolation-collector run`), with globals.metrics_listen set to this address?",
            target.named_by,
            innermost(&e)
        )
    };
    let resp = http.get(url).send().await.map_err(unreachable)?;
    let code = resp.status();
    let body = resp.text().await.map_err(unreachable)?;
    if !code.is_success() {
        return Err(format!("the listener at {url} ({}) answered HTTP {code}: is it an isolation-collector that serves /status (this version or newer)?", target.named_by));
    }
    let report = serde_json::from_str(&body)
        .map_err(|e| format!("the answer of {url} is not a collector's status report: {e}"))?;
    Ok((body, report))
}

/// The root cause of an error (for "connection refused" rather than "error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One report printed (or why there is none), and the outcome it means.
async fn show_once(http: &reqwest::Client, target: &Target, json: bool) -> Outcome {
    match fetch(http, target).await {
        Ok((body, report)) => {
            let text = match json {
                true => body,
                false => render(&report, terminal_width()),
            };
            println!("{}", text.trim_end());
            outcome_of(&report)
        }
        Err(why) => {
            eprintln!("error: {why}");
            Outcome::Failed
        }
    }
}

/// `--watch`: a frame every `seconds` until Ctrl-C; on a terminal each replaces the last (a
/// table only: JSON is one document per line, for scripts). An unreachable daemon is shown and
/// asked again. The outcome is the last frame's.
async fn watch(http: &reqwest::Client, target: &Target, json: bool, seconds: u64) -> Outcome {
    let redraw = !json && console::Term::stdout().is_term();
    loop {
        let (frame, outcome) = match fetch(http, target).await {
            Ok((body, report)) => match json {
                true => (body, outcome_of(&report)),
                false => (render(&report, terminal_width()), outcome_of(&report)),
            },
            Err(why) => (format!("error: {why}\n"), Outcome::Failed),
        };
        let mut out = std::io::stdout().lock();
        let written = match redraw {
            true => write!(out, "{CLEAR_AND_HOME}{frame}"),
            // Piped: frames one after the other, a blank line between.
            false => writeln!(out, "{}\n", frame.trim_end()),
        };
        if written.and_then(|()| out.flush()).is_err() {
            return outcome; // the reader went away
        }
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => return outcome,
        }
    }
}

/// 2 when any line is failing, else 0.
fn outcome_of(report: &StatusReport) -> Outcome {
    match report.failing {
        0 => Outcome::Succeeded,
        _ => Outcome::NeedsAttention,
    }
}

/// The terminal's width, when standard output is one.
fn terminal_width() -> Option<usize> {
    let term = console::Term::stdout();
    term.is_term()
        .then(|| term.size_checked())
        .flatten()
        .map(|(_rows, cols)| usize::from(cols))
}

/// The columns of the table, the reason last.
const COLUMNS: [&str; 9] = [
    "CONDITION",
    "INPUT",
    "SERVICE",
    "LAG",
    "LAST MIN",
    "LAST HOUR",
    "LAST AUDIT",
    "LEASE",
    "REASON",
];

/// The table: a header with the counts, one line per service in the report's order (failing
/// first), the reason cut to `width` (a terminal's) if given.
pub fn render(report: &StatusReport, width: Option<usize>) -> String {
    let now = parse_event_date(&report.generated_at);
    let rows: Vec<[String; 9]> = report.services.iter().map(|s| cells(s, now)).collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = format!(
        "{} failing, {} starting, {} standing by, {} collecting: {} at {}\n",
        report.failing,
        report.starting,
        report.standby,
        report.collecting,
        report.replica,
        report.generated_at
    );
    let header = COLUMNS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, w) in row[..8].iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        let room = width.map(|w| w.saturating_sub(line.chars().count()).max(20));
        line.push_str(&cut(&row[8], room));
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if let Some(problem) = &report.persistence_problem {
        text.push_str(&format!("state store: {problem}\n"));
    }
    text
}

/// One service's cells, in [`COLUMNS`]' order.
fn cells(s: &ServiceStatus, now: Option<Millis>) -> [String; 9] {
    let condition = match s.condition {
        Condition::Failing => "failing",
        Condition::Starting => "starting",
        Condition::Standby => "standing by",
        Condition::Collecting => "collecting",
    };
    [
        condition.to_owned(),
        s.input.clone(),
        s.service.clone(),
        s.lag_seconds.map_or("-".to_owned(), human),
        s.delivered_last_minute.to_string(),
        s.delivered_last_hour.to_string(),
        s.last_audit
            .as_ref()
            .map_or("-".to_owned(), |a| audit(a, now)),
        s.lease_holder.clone().unwrap_or_else(|| "-".to_owned()),
        s.reason.clone().unwrap_or_default(),
    ]
}

/// The last audit's verdict, and how long before the report it ran.
fn audit(a: &AuditSummary, now: Option<Millis>) -> String {
    let verdict = match (&a.error, a.missing_events) {
        (Some(_), _) => "failed".to_owned(),
        (None, 0) => "complete".to_owned(),
        (None, n) => format!("missing {n}"),
    };
    match (now, parse_event_date(&a.at)) {
        (Some(now), Some(at)) => format!("{verdict}, {} ago", human((now - at) as f64 / 1000.0)),
        _ => verdict,
    }
}

/// Seconds as a person reads them: `42s`, `17m`, `5h03m`, `3d04h`.
fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// `text` cut to `room` characters (an ellipsis last), if given.
fn cut(text: &str, room: Option<usize>) -> String {
    match room {
        Some(room) if text.chars().count() > room => {
            let mut cut: String = text.chars().take(room.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::status::OutputStatus;

    fn line(input: &str, condition: Condition, reason: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            input: input.into(),
            service: "url_isolation".into(),
            condition,
            reason: reason.map(str::to_owned),
            checkpoint: Some("2026-12-07T09:59:48.000Z".into()),
            lag_seconds: Some(12.0),
            delivered_last_minute: 7,
            delivered_last_hour: 420,
            last_audit: None,
            lease_holder: None,
            outputs: Vec::<OutputStatus>::new(),
        }
    }

    fn report(services: Vec<ServiceStatus>) -> StatusReport {
        StatusReport {
            generated_at: "2026-12-07T10:00:00.000Z".into(),
            replica: "host-a:101".into(),
            persistence_problem: None,
            failing: 1,
            starting: 0,
            standby: 0,
            collecting: 1,
            services,
        }
    }

    #[test]
    fn the_table_has_the_counts_then_a_line_per_service_in_order() {
        let mut good = line("10001", Condition::Collecting, None);
        good.last_audit = Some(AuditSummary {
            at: "2026-12-07T07:55:00.000Z".into(),
            from: "2026-11-07T00:00:00.000Z".into(),
            to: "2026-12-07T07:00:00.000Z".into(),
            hours: 720,
            hours_missing: 1,
            missing_events: 3,
            extra_events: 0,
            error: None,
        });
        good.lease_holder = Some("host-a:101".into());
        let bad = line(
            "10002",
            Condition::Failing,
            Some("setup failed: API Key cccc...03 is not valid."),
        );
        let text = render(&report(vec![bad, good]), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "1 failing, 0 starting, 0 standing by, 1 collecting: host-a:101 at 2026-12-07T10:00:00.000Z"
        );
        assert!(
            lines[1].starts_with(
                "CONDITION   INPUT  SERVICE        LAG  LAST MIN  LAST HOUR  LAST AUDIT"
            ),
            "{text}"
        );
        assert!(
            lines[2].starts_with("failing     10002  url_isolation  12s  7         420        -"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("setup failed: API Key cccc...03 is not valid."),
            "{text}"
        );
        assert!(
            lines[3].contains("missing 3, 2h05m ago  host-a:101"),
            "{text}"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn the_reason_is_cut_to_the_terminal_s_width() {
        let long = "x".repeat(300);
        let text = render(
            &report(vec![line("10002", Condition::Failing, Some(&long))]),
            Some(120),
        );
        let row = text.lines().nth(2).unwrap();
        assert_eq!(row.chars().count(), 120, "{row}");
        assert!(row.ends_with("x…"));
        // Never cut to nothing: at least 20 characters of it on a narrow terminal.
        let narrow = render(
            &report(vec![line("10002", Condition::Failing, Some(&long))]),
            Some(40),
        );
        assert!(narrow
            .lines()
            .nth(2)
            .unwrap()
            .ends_with(&format!("{}…", "x".repeat(19))));
    }

    #[test]
    fn durations_read_as_a_person_reads_them() {
        assert_eq!(human(0.4), "0s");
        assert_eq!(human(119.0), "119s");
        assert_eq!(human(120.0), "2m");
        assert_eq!(human(7_199.0), "119m");
        assert_eq!(human(7_500.0), "2h05m");
        assert_eq!(human(200_000.0), "2d07h");
        assert_eq!(human(-3.0), "0s", "a checkpoint ahead of now");
    }

    #[test]
    fn the_listener_to_ask() {
        let t = address_target("localhost:9464").unwrap();
        assert_eq!(t.url, "http://localhost:9464/status");
        assert_eq!(
            address_target("[::1]:9464").unwrap().url,
            "http://[::1]:9464/status"
        );
        for bad in ["localhost", ":9464", "host:port", "host:9464/x", "a:99999"] {
            assert_eq!(address_target(bad), None, "{bad}");
        }
        assert_eq!(
            reachable("0.0.0.0:9464".parse().unwrap()).to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            reachable("[::]:9464".parse().unwrap()).to_string(),
            "[::1]:9464"
        );
        assert_eq!(
            reachable("10.1.2.3:9464".parse().unwrap()).to_string(),
            "10.1.2.3:9464"
        );
    }
}
