//! `isolation-collector backfill`: re-deliver a past range to the outputs.
//!
//! Uses the normal puller (same windows, dedup within the run, obfuscation, proof of
//! delivery) with a memory state, so the live state and its checkpoint are never touched. File
//! outputs write to `<directory>/backfill/<table>.jsonl`: the live files keep exactly-once
//! semantics (their committed lengths are in the live state), and a re-delivery of events that
//! were already delivered would otherwise repeat them there. Network outputs get the events in
//! their usual tables: re-delivering to Devo is what a backfill is for.
//!
//! Progress: a bar with an ETA when standard error is a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use crate::api::client::{self, ApiContext};
use crate::api::limiter::input_limiter;
use crate::app::outputs::build_outputs;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::devo::statistics::CycleStats;
use crate::pipeline::budget::WindowBudget;
use crate::puller::{Progress, Puller};
use crate::service::{Service, RETENTION};
use crate::state::StateStore;
use crate::timestamp::{format_iso, Millis};

/// Why a backfill cannot start (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("the config has several inputs ({0}); name one with --input <id>")]
    WhichInput(String),
    #[error("--input `{0}` is not the id of a valid input of this config")]
    UnknownInput(String),
    #[error("--service `{0}` is not an enabled service of this config; use browser_and_email_isolation or url_isolation")]
    UnknownService(String),
    #[error("--{which} `{value}` is not a date; use ISO 8601 in UTC such as 2026-11-20T00:00:00Z")]
    BadTime { which: &'static str, value: String },
    #[error("--from {from} is not before --to {to}")]
    Empty { from: String, to: String },
    #[error(
        "--from {0} is older than the API's 30-day retention; the API no longer has those events"
    )]
    TooOld(String),
}

/// The validated request.
pub struct Request {
    /// The input's id.
    pub input: String,
    pub service: Service,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Request {
    pub fn parse(
        config: &Config,
        input: Option<&str>,
        service: &str,
        from: &str,
        to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Request, BackfillError> {
        let input = match (input, config.inputs.as_slice()) {
            (Some(id), _) => config
                .input(id)
                .ok_or_else(|| BackfillError::UnknownInput(id.to_owned()))?,
            (None, [only]) => only,
            (None, all) => {
                let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
                return Err(BackfillError::WhichInput(ids.join(", ")));
            }
        };
        let service = Service::from_name(service)
            .filter(|s| input.enabled && input.services.iter().any(|c| c.service == *s))
            .ok_or_else(|| BackfillError::UnknownService(service.to_owned()))?;
        let input = input.id.clone();
        let parse = |which, value: &str| {
            crate::timestamp::parse_user_time(value).ok_or_else(|| BackfillError::BadTime {
                which,
                value: value.to_owned(),
            })
        };
        let from = parse("from", from)?;
        let to = match to {
            Some(t) => parse("to", t)?.min(now),
            None => now,
        };
        if from >= to {
            return Err(BackfillError::Empty {
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
            });
        }
        if from < now - chrono::Duration::from_std(RETENTION).expect("30 days fit") {
            return Err(BackfillError::TooOld(from.to_rfc3339()));
        }
        Ok(Request {
            input,
            service,
            from,
            to,
        })
    }
}

/// Runs the backfill with `clock` as the wall clock: `Ok` once the whole range was delivered.
pub async fn pull_range(
    config: Config,
    request: Request,
    clock: SharedClock,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (input, svc) = config
        .services()
        .find(|(i, s)| i.id == request.input && s.service == request.service)
        .expect("Request::parse checked the input and the service");
    let (mut input, mut svc) = (input.clone(), svc.clone());
    svc.start_time = Some(request.from);
    svc.start_time_text = Some(format_iso(request.from.timestamp_millis()));
    // One pass over a fixed range: no late-arrival sweep, no lag behind its end.
    svc.lookback = std::time::Duration::ZERO;
    svc.window_offset = std::time::Duration::ZERO;
    for o in &mut input.outputs {
        if let Some(directory) = o.kind.directory_mut() {
            *directory = directory.join("backfill");
        }
    }
    let outputs = build_outputs(&input.outputs, &clock)?;
    let store = Arc::new(StateStore::memory());
    let (from, to) = (
        request.from.timestamp_millis(),
        request.to.timestamp_millis(),
    );
    info!(
        "Backfill of {} from {} to {}: the live state is not touched; file outputs write under backfill/.",
        svc.service,
        format_iso(from),
        format_iso(to)
    );
    let span = crate::logging::puller_span(&input.name, &input.id, svc.service);
    let budget = WindowBudget::new(config.globals.window_memory_budget, 1);
    let input_limiter = input_limiter(&input.pacing.requests_limits);
    let api = ApiContext {
        limiter: &input_limiter,
        store: &store,
        cancel: cancel.clone(),
        clock: clock.clone(),
    };
    let (client, _setup_check) = client::build(&input, &svc, api)?;
    let mut puller = Puller::new(&input, svc, client, outputs, store, cancel, clock)
        .with_budget(budget)
        .with_spool(config.globals.spool.clone())
        .with_cycle_end(to)
        .with_progress(progress(from, to));
    async move {
        puller.setup().await?;
        puller.pre_pull().await?;
        let stats = puller.pull().await?;
        info!(
            "Backfill complete: {} event(s) delivered, {} duplicate(s) filtered.",
            stats.sent, stats.duplicates
        );
        anyhow::Ok(())
    }
    .instrument(span)
    .await
}

/// The progress reporter: a bar on a terminal, lines otherwise.
fn progress(from: Millis, to: Millis) -> Progress {
    let started = Instant::now();
    let span = (to - from).max(1) as f64;
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(1_000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% ETA {eta:>4} {msg}")
                .expect("a valid template"),
        );
        Box::new(move |done: Millis, stats: &CycleStats| {
            bar.set_position(((done - from) as f64 / span * 1_000.0) as u64);
            bar.set_message(format!("{} events, up to {}", stats.sent, format_iso(done)));
            if done >= to {
                bar.finish();
            }
        })
    } else {
        let mut last_report: Option<Instant> = None;
        Box::new(move |done: Millis, stats: &CycleStats| {
            let fraction = ((done - from) as f64 / span).clamp(0.0, 1.0);
            let due = last_report.is_none_or(|t| t.elapsed().as_secs() >= 5) || done >= to;
            if !due {
                return;
            }
            last_report = Some(Instant::now());
            let elapsed = started.elapsed().as_secs_f64();
            let eta = if fraction > 0.0 {
                elapsed / fraction - elapsed
            } else {
                f64::NAN
            };
            info!(
                "Backfill progress: {:.1}% (up to {}), {} event(s) delivered, ETA {:.0} s",
                fraction * 100.0,
                format_iso(done),
                stats.sent,
                eta
            );
        })
    }
}
