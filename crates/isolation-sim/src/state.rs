//! The simulator's shared state and the job protocol (isolation-api.md §4, §5, §10).
//!
//! Everything mutable lives in one [`Inner`] behind a `std::sync::Mutex`. Events and jobs belong
//! to a [`Tenant`], one per accepted key: single-key mode has one (index 0, generated at start);
//! multi-key mode ([`SimConfig::keys`]) generates a key's tenant on the key's first
//! authenticated request, so a thousand keys cost what the keys in use cost. The lock is never held
//! across an `.await`: the HTTP layer (`server.rs`) does its waiting (fault delays) before it
//! calls [`Shared::handle`], which is synchronous. A page is serialised under the lock; that
//! costs a few milliseconds for 10,000 events and keeps the code simple (the collector talks to
//! one host sequentially, so there is no contention to speak of).
//!
//! Invariants:
//! * A tenant's `events` is only appended to, so the `u32` indices in a job's snapshot stay valid; the
//!   first `base_len` events are sorted by date; `events.len()` stays below `u32::MAX`.
//! * A job belongs to the tenant that created it: another key's requests do not find it.
//! * A job's snapshot and page size are fixed at creation; later `from`/`to`/`pageSize`
//!   parameters are ignored.
//! * Page `k` (`k >= 1`) is reachable only through the token issued on page `k - 1`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::Rng;

use super::config::{KeySet, RetentionMode, SimConfig, TokenLoop, TotalMode};
use super::dataset::{generate_base, generate_injected, push_json_str, EventRec, Generator, Mix};
use super::faults::{FaultQueue, FaultTarget};
use super::params::{parse_date, Params};
use super::{RequestRecord, SimStats};

/// How many requests the request log keeps (the oldest go first), so a long-running simulator
/// does not grow without bound.
pub(crate) const REQUEST_LOG_LEN: usize = 100_000;

/// Largest accepted `pageSize` (§3).
pub(crate) const MAX_PAGE_SIZE: i64 = 10_000;

/// Request counters, readable without the lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub job_creates: AtomicU64,
    pub polls: AtomicU64,
    pub page_requests: AtomicU64,
    pub events_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub errors_injected: AtomicU64,
    pub auth_failures: AtomicU64,
    pub bad_requests: AtomicU64,
    pub not_found: AtomicU64,
    pub max_running_jobs: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            requests: g(&self.requests),
            job_creates: g(&self.job_creates),
            polls: g(&self.polls),
            page_requests: g(&self.page_requests),
            events_served: g(&self.events_served),
            bytes_served: g(&self.bytes_served),
            errors_injected: g(&self.errors_injected),
            auth_failures: g(&self.auth_failures),
            bad_requests: g(&self.bad_requests),
            not_found: g(&self.not_found),
            max_running_jobs: g(&self.max_running_jobs),
        }
    }
}

/// One asynchronous job.
#[derive(Debug)]
struct Job {
    created_ms: i64,
    /// Polls before this answer PENDING (the job latency, [`SimConfig::job_latency`]).
    ready_ms: i64,
    /// Indices into its tenant's `events`, in serving order.
    snapshot: Vec<u32>,
    page_size: usize,
    /// PENDING answers still to give to polls.
    polls_left: u32,
    /// Stays PENDING forever ([`super::SimHandle::stick_next_jobs`]).
    stuck: bool,
    /// Answers ERROR forever ([`super::Fault::JobError`]).
    failed: bool,
    /// Caught in a page-token loop ([`SimConfig::token_loop_jobs`]).
    looping: bool,
    completed: bool,
    /// Issued token -> page index.
    tokens: HashMap<String, usize>,
    /// Page index -> its token, so that re-reading a page re-issues the same next token.
    token_of_page: HashMap<usize, String>,
}

/// One key's data: its events and its jobs.
#[derive(Debug)]
struct Tenant {
    /// Seed of its events and of its shuffles.
    seed: u64,
    events: Vec<EventRec>,
    base_len: usize,
    /// The events served spoiled (knobs `non_utf8_events` and `deep_events`), by index.
    spoiled: HashMap<u32, Spoil>,
    jobs: HashMap<String, Job>,
    job_seq: u64,
    inject_mix: Mix,
}

impl Tenant {
    /// The tenant's dataset under `seed`, ending at `end_ms`.
    fn generate(cfg: &SimConfig, seed: u64, end_ms: i64) -> Tenant {
        let events = generate_base(cfg, seed, end_ms);
        Tenant {
            seed,
            spoiled: spoiled(cfg, events.len()),
            base_len: events.len(),
            events,
            jobs: HashMap::new(),
            job_seq: 0,
            inject_mix: Mix(seed ^ 0x1A7E_A881_7A15),
        }
    }
}

/// How an event is spoiled when it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spoil {
    /// A stray 0xFF byte: not UTF-8.
    NotUtf8,
    /// A member nested [`DEEP_NESTING`] deep.
    Deep,
}

/// How deep the `nested` member of a `deep_events` event is.
pub const DEEP_NESTING: usize = 130;

/// The spoiled events of a day of `n`: evenly spread, the deep ones just after the others.
fn spoiled(cfg: &SimConfig, n: usize) -> HashMap<u32, Spoil> {
    let spread = |count: usize, offset: usize| {
        (0..count)
            .map(move |k| ((k + 1) * n / (count + 1) + offset).min(n.saturating_sub(1)) as u32)
    };
    let mut spoiled: HashMap<u32, Spoil> = spread(cfg.deep_events, 1)
        .map(|i| (i, Spoil::Deep))
        .collect();
    spoiled.extend(spread(cfg.non_utf8_events, 0).map(|i| (i, Spoil::NotUtf8)));
    spoiled
}

/// Appends event `rec` as served: spoiled as `spoil` says.
fn write_served(
    generator: &Generator,
    out: &mut Vec<u8>,
    rec: &EventRec,
    pretty: bool,
    spoil: Option<Spoil>,
) {
    let mut json = String::with_capacity(480);
    generator.write_event(&mut json, rec, pretty);
    match spoil {
        None => out.extend_from_slice(json.as_bytes()),
        Some(Spoil::NotUtf8) => {
            // After the third quote: the first byte of the first member's value.
            let at = json.match_indices('"').nth(2).map_or(0, |(i, _)| i + 1);
            out.extend_from_slice(&json.as_bytes()[..at]);
            out.push(0xFF);
            out.extend_from_slice(&json.as_bytes()[at..]);
        }
        Some(Spoil::Deep) => {
            let close = json.rfind('}').unwrap_or(json.len());
            out.extend_from_slice(&json.as_bytes()[..close]);
            out.extend_from_slice(b",\"nested\":");
            out.extend(std::iter::repeat_n(b'[', DEEP_NESTING));
            out.extend(std::iter::repeat_n(b']', DEEP_NESTING));
            out.extend_from_slice(&json.as_bytes()[close..]);
        }
    }
}

/// Mutable state.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Tenant index (see [`Shared::tenant_of`]) -> its data, generated on first use.
    tenants: HashMap<u32, Tenant>,
    pub faults: FaultQueue,
    stick: u32,
    /// Jobs still to be caught in a page-token loop.
    token_loops: u32,
}

/// An answer, before it becomes an HTTP response (so that faults can mangle it).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Events in `body`.
    pub events: u64,
}

impl Reply {
    fn json(body: String, events: u64) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: body.into_bytes(),
            events,
        }
    }

    fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into_bytes(),
            events: 0,
        }
    }

    fn bad(param: &str, why: impl std::fmt::Display) -> Reply {
        Reply::text(400, format!("Invalid parameter '{param}': {why}."))
    }
}

/// Everything a listener shares between its requests and its [`super::SimHandle`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    /// The end of every tenant's generated date range (epoch ms).
    end_ms: i64,
    pub generator: Generator,
    pub stats: Counters,
    /// The latest requests, oldest first (at most [`REQUEST_LOG_LEN`]).
    pub request_log: Mutex<std::collections::VecDeque<RequestRecord>>,
    inner: Mutex<Inner>,
}

/// A job creation's validated parameters.
struct JobRequest {
    page_size: usize,
    from: i64,
    to: i64,
}

impl Tenant {
    /// A new job's snapshot: the indices of the events dated in `from..to` (`to` inclusive if
    /// configured) and visible at `now_ms`, in date order, ties in storage order.
    fn snapshot(&self, cfg: &SimConfig, from: i64, to: i64, now_ms: i64) -> Vec<u32> {
        let in_window = |e: &EventRec| {
            e.date_ms >= from
                && if cfg.to_inclusive {
                    e.date_ms <= to
                } else {
                    e.date_ms < to
                }
        };
        let base = &self.events[..self.base_len];
        let lo = base.partition_point(|e| e.date_ms < from);
        let hi = if cfg.to_inclusive {
            base.partition_point(|e| e.date_ms <= to)
        } else {
            base.partition_point(|e| e.date_ms < to)
        };
        let mut snapshot: Vec<u32> = (lo..hi.max(lo))
            .filter(|&i| base[i].ingest_ms <= now_ms)
            .map(|i| i as u32)
            .collect();
        let before = snapshot.len();
        for (i, e) in self.events.iter().enumerate().skip(self.base_len) {
            if e.ingest_ms <= now_ms && in_window(e) {
                snapshot.push(i as u32);
            }
        }
        if snapshot.len() != before {
            // Injected events are appended out of date order; ties keep storage order.
            let events = &self.events;
            snapshot.sort_by_key(|&i| (events[i as usize].date_ms, i));
        }
        snapshot
    }
}

fn dur_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// How long after its creation a job of `events` events is ready: the fixed latency plus the
/// per-10,000-event part, pro rata.
fn job_latency_ms(cfg: &SimConfig, events: usize) -> i64 {
    let per_10k = dur_ms(cfg.job_latency_per_10k).saturating_mul(events as i64) / 10_000;
    dur_ms(cfg.job_latency).saturating_add(per_10k)
}

fn random_job_id() -> String {
    let mut r = rand::rng();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        r.random::<u32>(),
        r.random::<u16>(),
        r.random::<u16>() & 0xfff,
        (r.random::<u16>() & 0x3fff) | 0x8000,
        r.random::<u64>() & 0xffff_ffff_ffff
    )
}

fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut r = rand::rng();
    (0..32)
        .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Shared {
    /// Generates the dataset (single-key mode; multi-key mode generates each key's dataset on
    /// its first use); `now_ms` is the start time.
    pub fn new(cfg: SimConfig, now_ms: i64) -> Shared {
        let end_ms = match cfg.anchor {
            Some(a) => a.timestamp_millis(),
            None => now_ms - dur_ms(cfg.end_offset),
        };
        let mut tenants = HashMap::new();
        if cfg.keys.is_none() {
            tenants.insert(0, Tenant::generate(&cfg, cfg.seed, end_ms));
        }
        let generator = Generator::new(&cfg);
        let inner = Inner {
            tenants,
            faults: FaultQueue::default(),
            stick: 0,
            token_loops: cfg.token_loop_jobs,
        };
        Shared {
            cfg,
            end_ms,
            generator,
            stats: Counters::default(),
            request_log: Mutex::default(),
            inner: Mutex::new(inner),
        }
    }

    /// The tenant index of a presented key: 0 for the key of single-key mode, the key's index
    /// in multi-key mode; `None` for any other key (or none).
    pub fn tenant_of(&self, key: Option<&str>) -> Option<u32> {
        let key = key?;
        match &self.cfg.keys {
            None => (key == self.cfg.api_key).then_some(0),
            Some(keys) => keys.index_of(key),
        }
    }

    /// The tenant `index` (a value of [`Shared::tenant_of`]), generated if it is not yet.
    fn tenant<'a>(&self, inner: &'a mut Inner, index: u32) -> &'a mut Tenant {
        inner.tenants.entry(index).or_insert_with(|| {
            let seed = match &self.cfg.keys {
                None => self.cfg.seed,
                Some(keys) => KeySet::seed_of(self.cfg.seed, &keys.key(index)),
            };
            Tenant::generate(&self.cfg, seed, self.end_ms)
        })
    }

    /// How many tenants have their dataset (tests of the lazy generation).
    #[cfg(test)]
    pub fn tenants_generated(&self) -> usize {
        self.lock().tenants.len()
    }

    /// Locks the state. A panic while the lock was held cannot leave `Inner` half-updated in a
    /// way that matters to a test double, so a poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a request to the log.
    pub fn log_request(&self, record: RequestRecord) {
        let mut log = self
            .request_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REQUEST_LOG_LEN {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub fn stick_next_jobs(&self, n: u32) {
        let mut inner = self.lock();
        inner.stick = inner.stick.saturating_add(n);
    }

    /// Adds late events to tenant `index`.
    pub fn inject(&self, index: u32, count: usize, from_ms: i64, to_ms: i64, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let tenant = self.tenant(&mut inner, index);
        let recs = generate_injected(count, from_ms, to_ms, now_ms, &mut tenant.inject_mix);
        tenant.events.extend(recs);
        count
    }

    /// Compact JSON of tenant `index`'s events visible at `now_ms` with a date in `range`
    /// (inclusive), in storage order.
    pub fn visible_events(
        &self,
        index: u32,
        now_ms: i64,
        range: Option<(i64, i64)>,
    ) -> Vec<String> {
        let mut inner = self.lock();
        let tenant = self.tenant(&mut inner, index);
        tenant
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| tenant.spoiled.get(&(*i as u32)) != Some(&Spoil::NotUtf8))
            .filter(|(_, e)| e.ingest_ms <= now_ms)
            .filter(|(_, e)| range.is_none_or(|(f, t)| e.date_ms >= f && e.date_ms <= t))
            .map(|(i, e)| match tenant.spoiled.get(&(i as u32)) {
                Some(&spoil) => {
                    let mut served = Vec::new();
                    write_served(&self.generator, &mut served, e, false, Some(spoil));
                    String::from_utf8(served).expect("a deep event is UTF-8")
                }
                None => self.generator.event_json(e),
            })
            .collect()
    }

    /// The exact bytes (compact) of tenant `index`'s events served with a stray byte that is
    /// not UTF-8 (knob `non_utf8_events`), visible at `now_ms`, in storage order.
    pub fn unreadable_events(&self, index: u32, now_ms: i64) -> Vec<Vec<u8>> {
        let mut inner = self.lock();
        let tenant = self.tenant(&mut inner, index);
        let mut unreadable: Vec<(u32, Vec<u8>)> = tenant
            .spoiled
            .iter()
            .filter(|&(&i, &spoil)| {
                spoil == Spoil::NotUtf8 && tenant.events[i as usize].ingest_ms <= now_ms
            })
            .map(|(&i, &spoil)| {
                let mut served = Vec::new();
                write_served(
                    &self.generator,
                    &mut served,
                    &tenant.events[i as usize],
                    false,
                    Some(spoil),
                );
                (i, served)
            })
            .collect();
        unreadable.sort();
        unreadable.into_iter().map(|(_, bytes)| bytes).collect()
    }

    /// Classifies a request of tenant `index` for the fault queue (see [`FaultTarget`]).
    pub fn classify(&self, index: u32, p: &Params, now_ms: i64) -> FaultTarget {
        match (&p.job_id, &p.page_token) {
            (None, _) => FaultTarget::Create,
            (Some(_), Some(_)) => FaultTarget::Page,
            (Some(id), None) => match self.tenant(&mut self.lock(), index).jobs.get(id) {
                Some(j)
                    if !j.failed
                        && !j.stuck
                        && (j.completed || (j.polls_left == 0 && now_ms >= j.ready_ms)) =>
                {
                    FaultTarget::Page
                }
                _ => FaultTarget::Poll,
            },
        }
    }

    /// Answers one authenticated request of tenant `index`. `force_error` fails the job (fault
    /// `JobError`).
    pub fn handle(&self, index: u32, p: &Params, now_ms: i64, force_error: bool) -> Reply {
        match &p.job_id {
            None => self.create(index, p, now_ms, force_error),
            Some(id) => {
                let token = p.page_token.as_deref();
                self.follow_up(index, id, token, now_ms, force_error)
            }
        }
    }

    fn create(&self, index: u32, p: &Params, now_ms: i64, force_error: bool) -> Reply {
        let cfg = &self.cfg;
        let JobRequest {
            page_size,
            from,
            to,
        } = match self.job_request(p, now_ms) {
            Ok(request) => request,
            Err(reply) => return reply,
        };

        let mut guard = self.lock();
        let stuck = guard.stick > 0;
        if stuck {
            guard.stick -= 1;
        }
        let looping = guard.token_loops > 0;
        guard.token_loops = guard.token_loops.saturating_sub(1);
        let inner = self.tenant(&mut guard, index);
        let ttl = dur_ms(cfg.job_ttl);
        inner.jobs.retain(|_, j| now_ms - j.created_ms <= ttl);

        let mut snapshot = inner.snapshot(cfg, from, to, now_ms);
        inner.job_seq += 1;
        if cfg.shuffle {
            Mix(inner.seed ^ inner.job_seq.wrapping_mul(0x2545_F491_4F6C_DD1D))
                .shuffle(&mut snapshot);
        }
        let id = random_job_id();
        let ready_ms = now_ms + job_latency_ms(cfg, snapshot.len());
        let complete_now = cfg.complete_on_create && ready_ms <= now_ms && !stuck && !force_error;
        inner.jobs.insert(
            id.clone(),
            Job {
                created_ms: now_ms,
                ready_ms,
                snapshot,
                page_size,
                polls_left: cfg.pending_polls,
                stuck,
                failed: force_error,
                looping,
                completed: complete_now,
                tokens: HashMap::new(),
                token_of_page: HashMap::new(),
            },
        );
        Counters::add(&self.stats.job_creates, 1);
        let running = inner
            .jobs
            .values()
            .filter(|j| !j.failed && now_ms < j.ready_ms)
            .count();
        self.stats
            .max_running_jobs
            .fetch_max(running as u64, Ordering::Relaxed);
        if force_error {
            self.status_only(&id, &cfg.error_status)
        } else if complete_now {
            self.page(inner, &id, 0)
        } else {
            self.status_only(&id, &cfg.pending_status)
        }
    }

    /// Validates a job creation's parameters (§3): the page size, then the range, which the
    /// retention clamps or refuses. `Err` is the 400 reply that names the parameter.
    fn job_request(&self, p: &Params, now_ms: i64) -> Result<JobRequest, Reply> {
        let cfg = &self.cfg;
        let page_size = match &p.page_size {
            None => cfg.default_page_size.max(1),
            Some(s) => match s.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n as usize,
                Ok(n) if cfg.clamp_page_size => n.clamp(1, MAX_PAGE_SIZE) as usize,
                _ => {
                    return Err(Reply::bad(
                        "pageSize",
                        format!("must be an integer from 1 to {MAX_PAGE_SIZE}, got {s:?}"),
                    ))
                }
            },
        };
        let page_size = cfg
            .page_size_cap
            .map_or(page_size, |c| page_size.min(c.max(1)));
        let Some(from_s) = &p.from else {
            return Err(Reply::bad("from", "is required"));
        };
        let Some(mut from) = parse_date(from_s) else {
            return Err(Reply::bad(
                "from",
                format!("cannot parse {from_s:?} as a date"),
            ));
        };
        let to = match &p.to {
            None => now_ms,
            Some(s) => match parse_date(s) {
                Some(t) => t,
                None => return Err(Reply::bad("to", format!("cannot parse {s:?} as a date"))),
            },
        };
        if from > to {
            return Err(Reply::bad("from", format!("{from_s:?} is after 'to'")));
        }
        let oldest = now_ms - dur_ms(cfg.retention);
        if from < oldest {
            match cfg.retention_mode {
                RetentionMode::Clamp => from = oldest,
                RetentionMode::Reject => {
                    return Err(Reply::bad(
                        "from",
                        format!(
                            "{from_s:?} is older than the {}-day retention",
                            cfg.retention.as_secs() / 86_400
                        ),
                    ))
                }
            }
        }
        Ok(JobRequest {
            page_size,
            from,
            to,
        })
    }

    fn follow_up(
        &self,
        index: u32,
        id: &str,
        token: Option<&str>,
        now_ms: i64,
        force_error: bool,
    ) -> Reply {
        let cfg = &self.cfg;
        let mut guard = self.lock();
        let inner = self.tenant(&mut guard, index);
        let expired = match inner.jobs.get(id) {
            None => true,
            Some(j) => now_ms - j.created_ms > dur_ms(cfg.job_ttl),
        };
        if expired {
            inner.jobs.remove(id);
            Counters::add(&self.stats.not_found, 1);
            let status = if cfg.unknown_job_status == 0 {
                404
            } else {
                cfg.unknown_job_status
            };
            return Reply::text(status, format!("Job {id} not found or expired."));
        }
        let Some(job) = inner.jobs.get_mut(id) else {
            return Reply::text(404, format!("Job {id} not found or expired."));
        };
        if force_error {
            job.failed = true;
        }
        if job.failed {
            return self.status_only(id, &cfg.error_status);
        }
        if let Some(token) = token {
            return match job.tokens.get(token) {
                Some(&k) => self.page(inner, id, k),
                None => Reply::bad("pageToken", format!("{token:?} is not a token of job {id}")),
            };
        }
        if job.stuck {
            return self.status_only(id, &cfg.pending_status);
        }
        if !job.completed {
            if job.polls_left > 0 {
                job.polls_left -= 1;
                return self.status_only(id, &cfg.pending_status);
            }
            if now_ms < job.ready_ms {
                return self.status_only(id, &cfg.pending_status);
            }
            job.completed = true;
        }
        self.page(inner, id, 0)
    }

    fn status_only(&self, id: &str, status: &str) -> Reply {
        let mut body = String::with_capacity(80);
        body.push_str("{\"jobId\":");
        push_json_str(&mut body, id);
        body.push_str(",\"status\":");
        push_json_str(&mut body, status);
        body.push('}');
        Reply::json(body, 0)
    }

    /// Serialises page `k` of job `id` (`k` counts the pages served, a repeated one included),
    /// issuing the next page's token if there is one.
    fn page(&self, inner: &mut Tenant, id: &str, k: usize) -> Reply {
        let Tenant {
            events,
            jobs,
            spoiled,
            ..
        } = inner;
        let Some(job) = jobs.get_mut(id) else {
            return Reply::text(404, format!("Job {id} not found or expired."));
        };
        let n = job.snapshot.len();
        let ps = job.page_size.max(1);
        // With a page served twice, the pages after it are one further along.
        let (real, repeated_next) = match self.cfg.repeat_page {
            Some(r) if k > r => (k - 1, false),
            Some(r) => (k, k == r && r * ps < n),
            None => (k, false),
        };
        let looping = job.looping && k > 0;
        let new_start = (real * ps).min(n);
        let end = if looping && self.cfg.token_loop == TokenLoop::EmptyPages {
            new_start
        } else {
            (new_start + ps).min(n)
        };
        let repeat = if real > 0 {
            self.cfg.repeat_across_pages.min(ps - 1)
        } else {
            0
        };
        let start = new_start.saturating_sub(repeat).min(end);
        // A looping job hands back the token that asked for this page.
        let next = if looping { k } else { k + 1 };
        let has_next = looping || end < n || repeated_next;
        let pretty = self.cfg.whitespace;

        let mut body = String::with_capacity((end - start) * 420 + 200);
        let mut spoilt = Vec::new();
        body.push_str("{\"jobId\":");
        push_json_str(&mut body, id);
        body.push_str(",\"status\":\"COMPLETED\"");
        match self.cfg.total_mode {
            TotalMode::Number => body.push_str(&format!(",\"total\":{n}")),
            TotalMode::String => body.push_str(&format!(",\"total\":\"{n}\"")),
            TotalMode::Absent => {}
        }
        if has_next {
            let token = job
                .token_of_page
                .entry(next)
                .or_insert_with(random_token)
                .clone();
            job.tokens.insert(token.clone(), next);
            body.push_str(",\"pageToken\":");
            push_json_str(&mut body, &token);
        }
        body.push_str(",\"data\":[");
        for (j, &idx) in job.snapshot[start..end].iter().enumerate() {
            if j > 0 {
                body.push(',');
            }
            if pretty {
                body.push('\n');
            }
            match spoiled.get(&idx) {
                // Written after the text (they may not be UTF-8), at this place.
                Some(&spoil) => spoilt.push((body.len(), idx, spoil)),
                None => self
                    .generator
                    .write_event(&mut body, &events[idx as usize], pretty),
            }
        }
        body.push_str("]}");
        let mut reply = Reply::json(body, (end - start) as u64);
        for &(at, idx, spoil) in spoilt.iter().rev() {
            let mut served = Vec::new();
            write_served(
                &self.generator,
                &mut served,
                &events[idx as usize],
                pretty,
                Some(spoil),
            );
            reply.body.splice(at..at, served);
        }
        reply
    }
}
