//! `isolation-sim`: the Proofpoint Isolation Reporting API simulator as a process.
//!
//! Serves the two datasets on two listeners (Browser & Email Isolation = `web`, URL Isolation =
//! `url`), prints `web: URL` and `url: URL` on stdout once both listen, runs until SIGINT or
//! SIGTERM, then prints each listener's request statistics. All behaviour is in
//! the `isolation_sim` library; this file only maps flags to [`SimConfig`].
//!
//! Multi-key mode (`--keys N`, `--key-prefix P`): both listeners accept the keys `P0001` to
//! `PN` (zero-padded to 4 digits, or to N's width when wider; see [`KeySet`]) instead of
//! `--api-key`, each key a tenant with its own `--events` events per dataset and its own jobs;
//! a third line `keys: P0001..PN` follows `url: URL` on stdout.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use isolation_sim::{
    AuthFailureMode, CategoriesMode, Dataset, KeySet, RetentionMode, SimConfig, SimHandle,
    SimStats, TotalMode,
};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TotalArg {
    Number,
    String,
    Absent,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CategoriesArg {
    Present,
    Absent,
    Empty,
}

/// Fake Proofpoint Isolation Reporting API (usage-data), one listener per dataset.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Listen address of the Browser & Email Isolation dataset.
    #[arg(long, default_value = "127.0.0.1:8080")]
    web_listen: String,
    /// Listen address of the URL Isolation dataset.
    #[arg(long, default_value = "127.0.0.1:8081")]
    url_listen: String,
    /// Events generated per dataset (with `--keys`: per key and dataset).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Seed of the generated data (the url dataset uses a different stream of the same seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events are spread over this many hours, ending `--end-offset-minutes` ago.
    #[arg(long, default_value_t = 24.0)]
    span_hours: f64,
    /// The newest event is this many minutes old at start.
    #[arg(long, default_value_t = 5.0)]
    end_offset_minutes: f64,
    /// The accepted API key.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
    api_key: String,
    /// Multi-key mode: accept the N keys `<key-prefix>0001` .. `<key-prefix>N` instead of
    /// `--api-key`, each with its own dataset (seeded from the key) and its own jobs.
    #[arg(long, conflicts_with = "api_key", value_parser = clap::value_parser!(u32).range(1..))]
    keys: Option<u32>,
    /// Text before each key's number in multi-key mode.
    #[arg(long, default_value = "key-", requires = "keys")]
    key_prefix: String,
    /// PENDING answers to polls before the job completes.
    #[arg(long, default_value_t = 1)]
    pending_polls: u32,
    /// A job is ready this many milliseconds after its creation; polls before answer PENDING.
    #[arg(long, default_value_t = 0)]
    job_latency_ms: u64,
    /// Added to `--job-latency-ms` per 10,000 events in the job (pro rata).
    #[arg(long, default_value_t = 0)]
    job_latency_ms_per_10k: u64,
    /// Every page request is answered this many milliseconds later.
    #[arg(long, default_value_t = 0)]
    page_latency_ms: u64,
    /// The create request answers COMPLETED with the first page.
    #[arg(long)]
    complete_on_create: bool,
    /// Serve events in a seed-determined random order.
    #[arg(long)]
    shuffle: bool,
    /// At most this many events per page, whatever pageSize asks for.
    #[arg(long)]
    page_size_cap: Option<usize>,
    /// Clamp pageSize into 1..=10000 instead of answering 400.
    #[arg(long)]
    clamp_page_size: bool,
    /// Late arrival: each event becomes visible up to this many minutes after its date.
    #[arg(long, default_value_t = 0.0)]
    late_max_delay_minutes: f64,
    /// Late arrival in batches: visibility rounded up to a multiple of this many minutes.
    #[arg(long)]
    late_batch_minutes: Option<f64>,
    /// Fraction of events sharing the previous event's timestamp.
    #[arg(long, default_value_t = 0.02)]
    burst_fraction: f64,
    /// Fraction of events that are byte-identical copies of the previous one.
    #[arg(long, default_value_t = 0.01)]
    identical_fraction: f64,
    /// Serve events with spaces and newlines.
    #[arg(long)]
    whitespace: bool,
    /// Events this many times the default's mean size (compact JSON), their URLs lengthened by
    /// tracking query strings: 2 doubles the bytes per event.
    #[arg(long, default_value_t = 1.0)]
    event_size_factor: f64,
    /// How `categories` appears.
    #[arg(long, value_enum, default_value_t = CategoriesArg::Present)]
    categories: CategoriesArg,
    /// How `total` appears.
    #[arg(long, value_enum, default_value_t = TotalArg::Number)]
    total: TotalArg,
    /// `to` is exclusive (date < to) instead of inclusive.
    #[arg(long)]
    to_exclusive: bool,
    /// Answer 400 to a `from` older than the retention instead of clamping it.
    #[arg(long)]
    reject_old_from: bool,
    /// Answer a bad key with 401 and a JSON body instead of 403 text.
    #[arg(long)]
    auth_401_json: bool,
    /// Job time-to-live in seconds.
    #[arg(long, default_value_t = 3600)]
    job_ttl_secs: u64,
    /// Status word of jobs that are not done.
    #[arg(long, default_value = "PENDING")]
    pending_status: String,
    /// Pin the end of the generated date range (RFC 3339) instead of start time minus
    /// `--end-offset-minutes`: the same seed and anchor give the same events in every run.
    #[arg(long)]
    anchor: Option<chrono::DateTime<chrono::Utc>>,
    /// Print the compact JSON of every event (web events, then url events, one per line, each
    /// prefixed by `web ` or `url `; with `--keys`, by `web KEY ` or `url KEY `, key by key)
    /// and exit without listening. With `--anchor`, exactly the events a server started with
    /// the same flags serves (late arrival aside).
    #[arg(long)]
    dump_events: bool,
    /// A live feed: every second, this many new events (per dataset) become visible, dated in
    /// the last second (see `--live-late-fraction`). 0 = the dataset is fixed at start.
    #[arg(long, default_value_t = 0.0)]
    live_rate: f64,
    /// Fraction of the live events that arrive late: dated uniformly in the last
    /// `--live-late-minutes` instead of the last second.
    #[arg(long, default_value_t = 0.0)]
    live_late_fraction: f64,
    /// How late the late live events can be, in minutes.
    #[arg(long, default_value_t = 1.0)]
    live_late_minutes: f64,
}

fn minutes(m: f64) -> Duration {
    Duration::from_secs_f64((m * 60.0).max(0.0))
}

impl Args {
    fn key_set(&self) -> Option<KeySet> {
        self.keys.map(|count| KeySet {
            prefix: self.key_prefix.clone(),
            count,
        })
    }

    fn config(&self, dataset: Dataset) -> SimConfig {
        let mut c = SimConfig::new(dataset);
        c.api_key = self.api_key.clone();
        c.keys = self.key_set();
        c.events = self.events;
        c.seed = self.seed;
        c.span = minutes(self.span_hours * 60.0);
        c.end_offset = minutes(self.end_offset_minutes);
        c.pending_polls = self.pending_polls;
        c.job_latency = Duration::from_millis(self.job_latency_ms);
        c.job_latency_per_10k = Duration::from_millis(self.job_latency_ms_per_10k);
        c.page_latency = Duration::from_millis(self.page_latency_ms);
        c.complete_on_create = self.complete_on_create;
        c.shuffle = self.shuffle;
        c.page_size_cap = self.page_size_cap;
        c.clamp_page_size = self.clamp_page_size;
        c.late_max_delay = minutes(self.late_max_delay_minutes);
        c.late_batch_interval = self.late_batch_minutes.map(minutes);
        c.burst_fraction = self.burst_fraction;
        c.identical_fraction = self.identical_fraction;
        c.whitespace = self.whitespace;
        c.event_size_factor = self.event_size_factor;
        c.categories_mode = match self.categories {
            CategoriesArg::Present => CategoriesMode::Present,
            CategoriesArg::Absent => CategoriesMode::Absent,
            CategoriesArg::Empty => CategoriesMode::Empty,
        };
        c.total_mode = match self.total {
            TotalArg::Number => TotalMode::Number,
            TotalArg::String => TotalMode::String,
            TotalArg::Absent => TotalMode::Absent,
        };
        c.to_inclusive = !self.to_exclusive;
        if self.reject_old_from {
            c.retention_mode = RetentionMode::Reject;
        }
        if self.auth_401_json {
            c.auth_failure = AuthFailureMode::Unauthorized401Json;
        }
        c.job_ttl = Duration::from_secs(self.job_ttl_secs);
        c.pending_status = self.pending_status.clone();
        c.anchor = self.anchor;
        c
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn print_stats(out: &mut impl std::io::Write, name: &str, s: &SimStats) -> std::io::Result<()> {
    writeln!(
        out,
        "{name} stats: requests={} job_creates={} polls={} page_requests={} events_served={} \
         bytes_served={} errors_injected={} auth_failures={} bad_requests={} not_found={} \
         max_running_jobs={}",
        s.requests,
        s.job_creates,
        s.polls,
        s.page_requests,
        s.events_served,
        s.bytes_served,
        s.errors_injected,
        s.auth_failures,
        s.bad_requests,
        s.not_found,
        s.max_running_jobs
    )
}

/// `--dump-events`: every event of both datasets, visible or not yet, then exit.
async fn dump_events(args: &Args) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let far_future = chrono::Utc::now() + chrono::Duration::days(3650);
    for dataset in [Dataset::Web, Dataset::Url] {
        let sim = SimHandle::start(args.config(dataset)).await?;
        let name = dataset.name();
        match args.key_set() {
            None => {
                for event in sim.events_visible_at(far_future) {
                    writeln!(out, "{name} {event}")?;
                }
            }
            Some(keys) => {
                for key in keys.keys() {
                    let events = sim.events_of_key_visible_at(&key, far_future);
                    for event in events.context("a key of the set is accepted")? {
                        writeln!(out, "{name} {key} {event}")?;
                    }
                }
            }
        }
        sim.shutdown().await;
    }
    out.flush()?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.dump_events {
        return dump_events(&args).await;
    }
    let web_listener = TcpListener::bind(&args.web_listen)
        .await
        .with_context(|| format!("binding {}", args.web_listen))?;
    let url_listener = TcpListener::bind(&args.url_listen)
        .await
        .with_context(|| format!("binding {}", args.url_listen))?;
    let web = SimHandle::start_on(args.config(Dataset::Web), web_listener).await?;
    let url = SimHandle::start_on(args.config(Dataset::Url), url_listener).await?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "web: {}", web.base_url())?;
    writeln!(out, "url: {}", url.base_url())?;
    if let Some(keys) = args.key_set() {
        let last = keys.key(keys.count - 1);
        writeln!(out, "keys: {}..{last}", keys.key(0))?;
    }
    out.flush()?;
    drop(out);

    let (web, url) = (std::sync::Arc::new(web), std::sync::Arc::new(url));
    let mut feed = None;
    if args.live_rate > 0.0 {
        let (rate, late_fraction) = (args.live_rate, args.live_late_fraction.clamp(0.0, 1.0));
        let late = chrono::Duration::milliseconds((args.live_late_minutes * 60_000.0) as i64);
        let (web, url) = (web.clone(), url.clone());
        feed = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let (mut on_time_due, mut late_due) = (0.0_f64, 0.0_f64);
            loop {
                tick.tick().await;
                on_time_due += rate * (1.0 - late_fraction);
                late_due += rate * late_fraction;
                let (n_on_time, n_late) = (on_time_due.floor(), late_due.floor());
                on_time_due -= n_on_time;
                late_due -= n_late;
                let now = chrono::Utc::now();
                for sim in [&web, &url] {
                    sim.inject(n_on_time as usize, now - chrono::Duration::seconds(1), now);
                    sim.inject(n_late as usize, now - late, now);
                }
            }
        }));
    }

    shutdown_signal().await?;

    if let Some(feed) = feed {
        feed.abort();
        let _ = feed.await;
    }
    let web = std::sync::Arc::into_inner(web).context("the live feed still holds the web host")?;
    let url = std::sync::Arc::into_inner(url).context("the live feed still holds the url host")?;
    let (web_stats, url_stats) = (web.stats(), url.stats());
    web.shutdown().await;
    url.shutdown().await;
    let mut out = std::io::stdout().lock();
    print_stats(&mut out, "web", &web_stats)?;
    print_stats(&mut out, "url", &url_stats)?;
    out.flush()?;
    Ok(())
}
