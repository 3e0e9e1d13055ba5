//! How many events the API holds for one hour of event time, asked as cheaply as can be
//! trusted.
//!
//! ## The cheap request and how far `total` is trusted
//! Per hour, one job over the hour with a page size of 1: its first COMPLETED answer carries
//! `total` (isolation-api.md §5) after one event's download. That `total` is trusted only to
//! confirm: when it equals what the collection says it has (the ledger's delivered count plus
//! the events set aside as unreadable), the hour is complete. When `total` is absent, is not a
//! number, or disagrees, the hour's events are downloaded (a job over the hour with the
//! service's page size) and counted: a "missing" or "more delivered" verdict therefore always
//! rests on a download, and that download is also what `audit --repair` re-delivers from.
//!
//! What the simulator (`crates/isolation-sim`) showed about `total`, per its `TotalMode`:
//! - `Number` (the default) and `String`: `total` is the whole job's event count (the job's
//!   snapshot at its creation), the same on every page, whatever the page size; the client
//!   parses both forms (`event::Page::total`). Late events not yet published at the job's
//!   creation are not in it, as they are not in the pages.
//! - `Absent`: no `total` at all: every hour is downloaded.
//! - A repeated page (`repeat_page`) or events repeated across pages (`repeat_across_pages`)
//!   do not change `total` (it counts the snapshot), while a download sees them: the client
//!   drops a repeated page (`api::client::job_pages`), and events repeated within the job are
//!   counted as the puller's window counts them, copy by copy per (date, key), so the download
//!   agrees with what the puller delivered.
//! - Events that are not readable (not UTF-8, nested too deep) are in `total` and in the pages;
//!   the download counts them apart (`unreadable`), as the dead-letter store holds them.
//! - Whether `to` is inclusive is a knob of the simulator (`to_inclusive`) and unknown for the
//!   real API: the probe asks for `[from, to - 1 ms]` (right under either reading but for an
//!   event in that very millisecond, which only makes the count disagree and so download), and
//!   the download asks for `[from, to]` and keeps the dates in `[from, to)`.
//!
//! Hours are counted concurrently, each with a client of its own built like the puller's
//! (`api::client::build`), all on one set of limits: every request waits for the input's
//! `requests_limits` limiter (the pullers' own in the daemon; counted in Redis with Redis
//! persistence) and one of the service's `requests_limits`, and every job holds a permit of
//! the process's job cap (`globals.max_concurrent_jobs`). A service paced by
//! `requests_per_second` is counted one hour at a time.

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::client::{ApiClient, FetchError};
use crate::api::job_cap::JobCap;
use crate::api::limiter::input_quota::InputQuota;
use crate::api::limiter::{InputLimiter, SharedLimits};
use crate::config::{InputConfig, ServiceConfig};
use crate::event::Event;
use crate::state::StateStore;
use crate::timestamp::{from_millis, Millis};

/// The largest page the API serves (isolation-api.md §3): the download's page size.
const DOWNLOAD_PAGE_SIZE: u32 = 10_000;

/// One hour (or the part of it that is audited) to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourToCount {
    /// The start of the hour.
    pub hour: Millis,
    /// The audited part of it, `[from, to)`.
    pub from: Millis,
    pub to: Millis,
    /// What the collection says it has for it (delivered plus set aside as unreadable): a
    /// `total` equal to it is trusted.
    pub expected: u64,
}

/// How the API's count of an hour was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Counted {
    /// The job's `total`, which agreed with the collection.
    Total,
    /// The hour's events, downloaded and counted.
    Download,
}

/// The API's count of one hour.
#[derive(Clone, Debug)]
pub struct HourCount {
    pub hour: HourToCount,
    /// Events the API holds in `[from, to)`, readable or not.
    pub api: u64,
    /// Of them, the elements that are not readable events (only known from a download).
    pub unreadable: u64,
    pub counted: Counted,
    /// The readable events downloaded (empty when `total` was trusted, or when they were not
    /// asked to be kept).
    pub events: Vec<Event>,
}

/// What the counting needs besides the hours.
pub struct CountContext<'a> {
    pub input: &'a InputConfig,
    pub svc: &'a ServiceConfig,
    /// The input's `requests_limits` limiter (the pullers' own, in the daemon).
    pub limiter: &'a InputLimiter,
    /// Where the input's request quota is counted with Redis persistence.
    pub store: &'a Arc<StateStore>,
    pub jobs: &'a JobCap,
    /// Ends the counting's waits and requests.
    pub cancel: CancellationToken,
    /// Keep the downloaded events (for `--repair`).
    pub keep_events: bool,
}

/// Counts every hour of `hours`, at most the service's `max_concurrent_jobs` at once (one at a
/// time when `requests_per_second` spaces the service's requests: the spacing is per client);
/// the counts come back in the order of `hours`. The first error ends the counting.
pub async fn count_hours(
    cx: &CountContext<'_>,
    hours: &[HourToCount],
) -> Result<Vec<HourCount>, FetchError> {
    let spaced = cx.input.request_interval(cx.svc).is_some();
    let concurrency = if spaced {
        1
    } else {
        cx.svc.max_concurrent_jobs.max(1)
    };
    // One set of limits for all the audit's clients: the input's (shared with the pullers, and
    // counted in Redis with Redis persistence) and one of the service's own.
    let quota = InputQuota::new(cx.store, &cx.input.id, &cx.input.pacing.requests_limits);
    let limits = SharedLimits::for_service(cx.limiter, cx.svc).counted_in(quota);
    let mut counted: Vec<HourCount> = stream::iter(hours.iter().copied())
        .map(|hour| count_hour(cx, &limits, hour))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    counted.sort_by_key(|c| c.hour.hour);
    Ok(counted)
}

/// Counts one hour: its `total`, trusted if it agrees, else its download.
async fn count_hour(
    cx: &CountContext<'_>,
    limits: &SharedLimits,
    hour: HourToCount,
) -> Result<HourCount, FetchError> {
    let (from, to) = (from_millis(hour.from), from_millis(hour.to));
    let total = {
        let _permit = cx.jobs.acquire().await;
        let mut probe = client_with_page_size(cx, limits, 1)?;
        job_total(&mut probe, from, to - chrono::Duration::milliseconds(1)).await?
    };
    if total == Some(hour.expected) {
        return Ok(HourCount {
            hour,
            api: hour.expected,
            unreadable: 0,
            counted: Counted::Total,
            events: Vec::new(),
        });
    }
    let _permit = cx.jobs.acquire().await;
    let page_size = cx.svc.page_size.clamp(1, DOWNLOAD_PAGE_SIZE);
    let mut download = client_with_page_size(cx, limits, page_size)?;
    let job = download.create_job(from, to).await?;
    let mut events = Vec::new();
    let (mut readable, mut unreadable) = (0u64, 0u64);
    download
        .finish_job(job, |page| {
            unreadable += page.unreadable.len() as u64;
            let in_hour = |e: &Event| (hour.from..hour.to).contains(&e.date_ms);
            for event in page.events.into_iter().filter(in_hour) {
                readable += 1;
                // Only a repair needs them: an event holds its page's bytes alive, and an hour
                // of a busy service is hundreds of megabytes (the daemon's audit keeps none).
                if cx.keep_events {
                    events.push(event);
                }
            }
            true
        })
        .await?;
    Ok(HourCount {
        hour,
        api: readable + unreadable,
        unreadable,
        counted: Counted::Download,
        events,
    })
}

/// The `total` of a job over `[from, to]`, from its first completed answer (one page of the
/// probe's size is downloaded); `None` when the answer has none.
async fn job_total(
    client: &mut ApiClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<u64>, FetchError> {
    let job = client.create_job(from, to).await?;
    let mut total = None;
    client
        .finish_job(job, |page| {
            total = page.total;
            false // the first page is enough
        })
        .await?;
    Ok(total)
}

/// A client of the service with `page_size`, on `limits` (its own connections: one hour's job
/// at a time).
fn client_with_page_size(
    cx: &CountContext<'_>,
    limits: &SharedLimits,
    page_size: u32,
) -> Result<ApiClient, FetchError> {
    let mut svc = cx.svc.clone();
    svc.page_size = page_size;
    let client = ApiClient::new(
        &svc,
        cx.input.api_key.clone(),
        cx.input.key_placement,
        cx.input.request_interval(cx.svc),
        cx.cancel.clone(),
    )
    .map_err(|e| FetchError::GaveUp {
        attempts: 0,
        last: format!("cannot build the API client: {e}"),
    })?;
    Ok(client.with_limits(limits.clone()))
}
