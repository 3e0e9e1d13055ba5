//! `isolation-collector audit`: per hour of event time, what the API holds now against what
//! was delivered (`crate::audit`), as a table or one JSON document (`--json`); with
//! `--repair`, the hours that miss events are re-delivered (`crate::audit::repair`) and
//! audited again.
//!
//! Exit status: 0 when every audited hour is complete, 2 when an hour misses events, 1 when
//! the audit could not run for a service (the API refused or failed: the error, key masked),
//! 64 for a bad argument or config.

use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::{start_logging, BadUsage, Outcome};
use crate::api::job_cap::JobCap;
use crate::api::limiter::input_limiter;
use crate::audit::repair::{self, HourToRepair};
use crate::audit::report::{AuditReport, RepairLine};
use crate::audit::service::{audit_service, AuditContext, AuditRange, Audited};
use crate::backfill::BackfillError;
use crate::clock::SharedClock;
use crate::config::{Config, InputConfig, ServiceConfig};
use crate::logging::LogFormat;
use crate::pipeline::ledger::HOUR_MS;
use crate::service::{Service, RETENTION};
use crate::timestamp::{format_iso, Millis};

/// The arguments of `audit`.
pub struct AuditArgs<'a> {
    pub input: Option<&'a str>,
    pub service: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub json: bool,
    pub repair: bool,
    /// With `repair`: forget the hours' in-flight marks first (`audit::repair::clear_in_flight`).
    pub clear_in_flight: bool,
}

/// Why an audit cannot start (exit 64). A bad time or range is said as `backfill` says it.
#[derive(Debug, thiserror::Error)]
pub enum AuditUsage {
    #[error("--input `{0}` is not the id of a valid input of this config; its inputs are {1}")]
    UnknownInput(String, String),
    #[error("--service `{0}` is not an enabled service of the chosen input(s); use browser_and_email_isolation or url_isolation")]
    UnknownService(String),
    #[error(transparent)]
    Range(#[from] BackfillError),
}

/// The (input, service) pairs and the range an `audit` asks for.
pub struct Chosen<'a> {
    pub services: Vec<(&'a InputConfig, &'a ServiceConfig)>,
    pub range: AuditRange,
}

impl<'a> Chosen<'a> {
    /// Checks the arguments against `config` at `now`.
    pub fn parse(
        config: &'a Config,
        args: &AuditArgs<'_>,
        now: Millis,
    ) -> Result<Chosen<'a>, AuditUsage> {
        if let Some(id) = args.input {
            if config.input(id).is_none_or(|i| !i.enabled) {
                let ids: Vec<&str> = config.services().map(|(i, _)| i.id.as_str()).collect();
                let mut ids = ids;
                ids.dedup();
                return Err(AuditUsage::UnknownInput(id.to_owned(), ids.join(", ")));
            }
        }
        let service = match args.service {
            Some(name) => Some(
                Service::from_name(name)
                    .ok_or_else(|| AuditUsage::UnknownService(name.to_owned()))?,
            ),
            None => None,
        };
        let services: Vec<_> = config
            .services()
            .filter(|(i, s)| {
                args.input.is_none_or(|id| i.id == id) && service.is_none_or(|x| s.service == x)
            })
            .collect();
        if services.is_empty() {
            let name = args.service.unwrap_or_default().to_owned();
            return Err(AuditUsage::UnknownService(name));
        }
        let time = |which, value: Option<&str>| -> Result<Option<Millis>, BackfillError> {
            value
                .map(|v| {
                    crate::timestamp::parse_user_time(v)
                        .map(|t| t.timestamp_millis())
                        .ok_or_else(|| BackfillError::BadTime {
                            which,
                            value: v.to_owned(),
                        })
                })
                .transpose()
        };
        let (from, to) = (time("from", args.from)?, time("to", args.to)?);
        let iso = crate::timestamp::format_iso;
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(BackfillError::Empty {
                    from: iso(f),
                    to: iso(t),
                }
                .into());
            }
        }
        if let Some(f) = from.filter(|&f| f < now - RETENTION.as_millis() as Millis) {
            return Err(BackfillError::TooOld(iso(f)).into());
        }
        Ok(Chosen {
            services,
            range: AuditRange {
                from,
                to,
                span: None,
            },
        })
    }
}

/// `audit`: prints the report; see the module doc for the exit status.
pub async fn audit(
    path: &Path,
    args: AuditArgs<'_>,
    log_format: LogFormat,
    clock: SharedClock,
) -> Result<Outcome, BadUsage> {
    let (config, store) = super::open_config_and_store(path, &clock)?;
    let chosen = Chosen::parse(&config, &args, clock.now_ms()).map_err(|e| {
        eprintln!("error: {e}");
        BadUsage
    })?;
    let store = Arc::new(store);
    start_logging(&config, log_format, &clock);
    let jobs = JobCap::new(config.globals.max_concurrent_jobs);
    let cancel = super::cancel_on_signal();
    let mut audits = Vec::new();
    let mut repairs = Vec::new();
    for (input, svc) in &chosen.services {
        let limiter = input_limiter(&input.pacing.requests_limits);
        let cx = AuditContext {
            store: &store,
            limiter: &limiter,
            jobs: &jobs,
            clock: clock.clone(),
            cancel: cancel.clone(),
            keep_events: args.repair,
        };
        let mut audited = audit_service(input, svc, chosen.range, &cx).await;
        if args.repair {
            let service = (*input, *svc);
            let clear = args.clear_in_flight;
            repairs
                .extend(repair_and_audit_again(&config, service, &mut audited, &cx, clear).await);
        }
        audits.push(audited.report);
    }
    let report = AuditReport::new(clock.now_ms(), audits).with_repairs(repairs);
    print_report(&report, args.json);
    Ok(outcome_of(&report))
}

/// `--repair` of one service: the hours that miss events get what the outputs lack
/// (`audit::repair`, with the events the audit downloaded), then are audited again, their
/// lines in `audited` replaced by the new ones; with `clear_in_flight`, those hours' marks of
/// repairs in flight are forgotten first. Returns what each hour got.
async fn repair_and_audit_again(
    config: &Config,
    (input, svc): (&InputConfig, &ServiceConfig),
    audited: &mut Audited,
    cx: &AuditContext<'_>,
    clear_in_flight: bool,
) -> Vec<RepairLine> {
    let missing: Vec<Millis> = (audited.counts.iter())
        .filter(|c| c.api > c.hour.expected)
        .map(|c| c.hour.hour)
        .collect();
    let (Some(&first), Some(&last)) = (missing.first(), missing.last()) else {
        return Vec::new();
    };
    let hours: Vec<HourToRepair> = std::mem::take(&mut audited.counts)
        .into_iter()
        .filter(|c| missing.contains(&c.hour.hour))
        .map(|c| HourToRepair {
            hour: c.hour.hour,
            api_events: c.events,
        })
        .collect();
    let line = |hour: Millis, delivered, refused| RepairLine {
        input: input.id.clone(),
        service: svc.service.name().to_owned(),
        hour: format_iso(hour),
        delivered,
        refused,
    };
    if clear_in_flight {
        clear_marks(config, input, svc.service, &missing, cx).await;
    }
    let lines: Vec<RepairLine> =
        match repair::repair(config, input, svc.service, hours, cx.clock.clone()).await {
            Ok(done) => (done.into_iter())
                .map(|h| line(h.hour, h.delivered, h.refused))
                .collect(),
            Err(e) => (missing.iter())
                .map(|&h| line(h, 0, Some(e.to_string())))
                .collect(),
        };
    let range = AuditRange {
        from: Some(first),
        to: Some(last + HOUR_MS),
        span: None,
    };
    let again = audit_service(input, svc, range, cx).await;
    if let Some(why) = again.report.error {
        audited.report.error = Some(format!("the audit after the repair failed: {why}"));
    }
    for new in again.report.hours {
        if let Some(old) = audited.report.hours.iter_mut().find(|h| h.hour == new.hour) {
            *old = new;
        }
    }
    lines
}

/// `--clear-in-flight`: forgets the marks of repairs in flight of `hours`, saying which (the
/// repair that follows refuses any hour whose mark could not be cleared, saying why).
async fn clear_marks(
    config: &Config,
    input: &InputConfig,
    service: Service,
    hours: &[Millis],
    cx: &AuditContext<'_>,
) {
    match repair::clear_in_flight(config, input, service, hours, cx.clock.clone()).await {
        Ok(cleared) => {
            for hour in cleared {
                info!(
                    "Forgot the mark of the repair in flight of {} {} hour {}: its missing events are sent again.",
                    input.id,
                    service,
                    format_iso(hour)
                );
            }
        }
        Err(e) => warn!("Could not clear the marks of repairs in flight: {e}"),
    }
}

/// The report on standard output: the table, or one JSON document.
fn print_report(report: &AuditReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("the report serialises")
        );
    } else {
        print!("{}", report.table());
    }
}

/// 1 when a service's audit could not run, else 2 when an hour misses events, else 0.
fn outcome_of(report: &AuditReport) -> Outcome {
    let failed = report.services.iter().any(|s| s.error.is_some());
    let missing = report.services.iter().any(|s| s.misses_events());
    match (failed, missing) {
        (true, _) => Outcome::Failed,
        (false, true) => Outcome::NeedsAttention,
        (false, false) => Outcome::Succeeded,
    }
}
