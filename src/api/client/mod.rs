//! The Reporting API's async job protocol (isolation-api.md §4), with retries.
//!
//! ```text
//! GET ?from&to&pageSize                       -> {jobId, status: PENDING}
//! GET ?from&to&pageSize&jobId   (until COMPLETED, around the job latency learnt)
//! GET ?from&to&pageSize&jobId&pageToken       (until pageToken is absent)
//! ```
//! `from`, `to` and `pageSize` are resent with every request, as Proofpoint's own tools do.
//!
//! A pending job is polled on a schedule fitted to the job latency the client learnt from its
//! earlier jobs ([`poll_schedule`]): the first poll a little before it, then densely, then
//! backing off; without an estimate yet, at `job_poll_initial` and then at 1.25 times the time
//! elapsed, so that a job is picked up less than 25% of its latency late.
//!
//! Each request is retried on its own (429 honouring `Retry-After`, 5xx, timeouts, resets,
//! truncated or malformed bodies) with jittered exponential backoff; a request that keeps
//! failing fails the job, and the puller tries the window again next cycle. 401/403 is an
//! authentication error that names the masked key and is not retried. The key travels in the
//! `Authorization` header by default and never appears in an error or log.
//!
//! The connection ([`ApiConnection`]: roots and proxy) comes decided from the config. A server
//! certificate the roots do not trust, and a proxy asking for credentials, are not retried
//! either: both need an operator, and the error says what to set. Proxy credentials never
//! appear in an error: the proxy is named as `scheme://host:port`.
//!
//! Every attempt, retries included, first keeps the `requests_per_second` spacing, then waits
//! for room in every `requests_limits` level that applies (`limiter.rs`); such waits never fail
//! a request.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::api::limiter::SharedLimits;
use crate::backoff::{Backoff, Jitter};
use crate::config::connection::{ApiConnection, ProxyRoute};
use crate::config::{KeyPlacement, ServiceConfig};
use crate::event::{parse_page, Page};
use crate::metrics::{JobFault, Outcome, ServiceMetrics};
use crate::secret::{redact_then_cut, ApiKey};

mod build;
mod job_pages;
mod poll_schedule;
#[cfg(test)]
mod tests;
pub use build::{build, ApiContext};
use job_pages::{JobPages, Sorted};
use poll_schedule::{Bracket, LatencyEstimate, PollSchedule};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("API Key {masked_key} is not valid. (HTTP {status}; create a new key in the Isolation console: Product Settings > Reporting API)")]
    Auth { masked_key: String, status: u16 },
    #[error("the API rejected the request (HTTP {status}): {body}")]
    Rejected { status: u16, body: String },
    #[error("the API kept failing after {attempts} attempt(s); last error: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("job {job_id} failed with status `{status}`")]
    JobFailed { job_id: String, status: String },
    #[error("job {job_id} was still `{status}` after {waited:?}; abandoned")]
    JobTimeout {
        job_id: String,
        status: String,
        waited: Duration,
    },
    #[error("TLS with {server}{via} failed: {detail}; the server's certificate is not trusted by {trusted}. {fix}")]
    Certificate {
        /// `https://host:port` of the API.
        server: String,
        /// " (via proxy http://host:port)" or "".
        via: String,
        /// rustls' reason, e.g. "invalid peer certificate: UnknownIssuer".
        detail: String,
        trusted: String,
        fix: &'static str,
    },
    #[error("the proxy {proxy} refused the request without valid proxy credentials (HTTP {status}); put them in proxy_url (http://${{PROXY_USER}}:${{PROXY_PASSWORD}}@host:port) and check them")]
    ProxyAuth { proxy: String, status: u16 },
    #[error("job {job_id} {detail}: the API is looping; the job is given up and the window asked for again with a new job after a backoff (if this persists, report it to Proofpoint support)")]
    PageLoop { job_id: String, detail: String },
    #[error("the window {from} to {to} is the narrowest the collector makes and holds more than this service's share of the window memory budget ({share} bytes): given up after holding {held} bytes in {events} events, none delivered; raise globals.window_memory_budget_in_mb (each service gets an equal share of it, at least 1 MiB)")]
    WindowOverBudget {
        from: String,
        to: String,
        share: u64,
        held: u64,
        events: usize,
    },
    #[error("cancelled")]
    Cancelled,
}

impl FetchError {
    pub fn is_auth(&self) -> bool {
        matches!(self, FetchError::Auth { .. })
    }

    /// The job itself is gone: it failed, never completed, or the server no longer knows its
    /// id (expired: 404, or 400/410 as some servers answer). A new job for the same range can
    /// succeed.
    pub fn is_lost_job(&self) -> bool {
        matches!(
            self,
            FetchError::JobFailed { .. }
                | FetchError::JobTimeout { .. }
                | FetchError::Rejected {
                    status: 400 | 404 | 410,
                    ..
                }
        )
    }
}

pub use crate::devo::statistics::ClientStats;

/// A job created but not yet polled or paged ([`ApiClient::create_job`]).
#[derive(Debug)]
pub struct CreatedJob {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// The creation's answer: PENDING, or COMPLETED with the first page (its events are held
    /// until the job's turn).
    answer: Page,
    created: Instant,
}

/// One service's API client.
pub struct ApiClient {
    http: reqwest::Client,
    endpoint: String,
    key: ApiKey,
    placement: KeyPlacement,
    cfg: ServiceConfig,
    min_interval: Option<Duration>,
    next_request: Instant,
    /// `requests_limits` of every level that applies; empty: none.
    limits: SharedLimits,
    pub stats: ClientStats,
    /// Time spent polling jobs that were not complete yet, with nothing else to do (the
    /// client's lifetime; a cycle reports its own part).
    pub job_wait: Duration,
    /// The job latency learnt from this client's completed jobs: it fits the polls of the next.
    job_latency: LatencyEstimate,
    cancel: tokio_util::sync::CancellationToken,
    metrics: ServiceMetrics,
}

/// One attempt's failure, before the retry decision.
enum Attempt {
    Retry {
        /// Text, not a typed cause: the line the retry logs, and [`FetchError::GaveUp`]'s
        /// `last`, written here (the transport error's chain described without the URL, or the
        /// HTTP status); nothing reads the error behind it.
        reason: String,
        after: Option<Duration>,
        outcome: Outcome,
    },
    Fatal(FetchError, Outcome),
}

/// Why a service's API client could not be built: its roots (a CA file that went away since
/// the config was checked), or reqwest.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// The reqwest client of a service: its timeouts, its roots, and exactly its proxy (the route
/// was decided from the config and the environment; reqwest must not look again).
fn http_client(cfg: &ServiceConfig) -> Result<reqwest::Client, BuildError> {
    let ApiConnection { proxy, roots, .. } = &cfg.connection;
    let tls = crate::trust::api_tls(roots)?;
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        .connect_timeout(Duration::from_secs(30).min(cfg.request_timeout))
        .user_agent(concat!("isolation-collector/", env!("CARGO_PKG_VERSION")))
        // A connection left idle between cycles keeps its read buffer (tens of KB, grown to the
        // pages read): drop it once a cycle's polls are over rather than after reqwest's 90 s,
        // which outlasts the default 60 s period (and many servers' own keep-alive timeout).
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
        .use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(tls))
        .no_proxy();
    if let Some(route) = proxy {
        builder = builder.proxy(route.to_reqwest()?);
    }
    Ok(builder.build()?)
}

impl ApiClient {
    pub fn new(
        cfg: &ServiceConfig,
        key: ApiKey,
        placement: KeyPlacement,
        min_interval: Option<Duration>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Self, BuildError> {
        let http = http_client(cfg)?;
        Ok(ApiClient {
            http,
            endpoint: cfg.endpoint(),
            key,
            placement,
            cfg: cfg.clone(),
            min_interval,
            next_request: Instant::now(),
            limits: SharedLimits::default(),
            stats: ClientStats::default(),
            job_wait: Duration::ZERO,
            job_latency: LatencyEstimate::default(),
            metrics: ServiceMetrics::detached(cfg.service),
            cancel,
        })
    }

    /// Every request (retries included) waits until each of `limits` has room.
    pub fn with_limits(mut self, limits: SharedLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts a job (or a window) given up for `kind`.
    pub fn job_fault(&self, kind: JobFault) {
        self.metrics.job_fault(kind);
    }

    /// Counts into `metrics` from now on (a new client counts into a private registry).
    pub fn set_metrics(&mut self, metrics: ServiceMetrics) {
        self.metrics = metrics;
    }

    /// Ends its waits on `cancel` from now on (a lease's tenure).
    pub fn set_cancel(&mut self, cancel: tokio_util::sync::CancellationToken) {
        self.cancel = cancel;
    }

    /// The setup check: one small job creation (the minute before `now`). Only authentication
    /// and reachability matter.
    pub async fn check_auth(&mut self, now: DateTime<Utc>) -> Result<(), FetchError> {
        let to = now;
        let from = to - chrono::Duration::minutes(1);
        self.request(from, to, 1, None, None).await.map(|_| ())
    }

    /// Creates a job over `[from, to]` and returns at once: the server works on it while the
    /// caller does something else ([`ApiClient::finish_job`] polls and pages it later).
    pub async fn create_job(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<CreatedJob, FetchError> {
        let answer = self
            .request(from, to, self.cfg.page_size, None, None)
            .await?;
        Ok(CreatedJob {
            from,
            to,
            answer,
            created: Instant::now(),
        })
    }

    /// Polls `job` until it completes, on the [`PollSchedule`] fitted to the latency learnt
    /// from this client's earlier jobs (at once for a job created long enough ago), learns from
    /// it, then pages it, handing each completed page to `on_page`, which may stop the job early
    /// by returning `false` (window too big). The time spent polling counts as job wait.
    pub async fn finish_job(
        &mut self,
        job: CreatedJob,
        on_page: impl FnMut(Page) -> bool,
    ) -> Result<usize, FetchError> {
        let CreatedJob {
            from,
            to,
            answer: mut page,
            created: started,
        } = job;
        let page_size = self.cfg.page_size;
        let job_id = page.job_id.clone();
        let waiting = Instant::now();
        let schedule = PollSchedule::new(self.cfg.job_poll_initial, self.cfg.job_poll_max);
        let estimate = self.job_latency.get();
        // Times since the creation at which the polls were sent: the last that found the job
        // pending, and the one that found it complete.
        let mut pending = None;
        let mut completed = None;
        while !page.is_completed() {
            if page.is_failed() {
                return Err(FetchError::JobFailed {
                    job_id,
                    status: page.status,
                });
            }
            if started.elapsed() >= self.cfg.job_timeout {
                return Err(FetchError::JobTimeout {
                    job_id,
                    status: page.status,
                    waited: started.elapsed(),
                });
            }
            let due = schedule.next_poll(pending, estimate);
            self.sleep(due.saturating_sub(started.elapsed())).await?;
            self.metrics.job_poll();
            let sent = started.elapsed();
            page = self
                .request(from, to, page_size, Some(&job_id), None)
                .await?;
            *(if page.is_completed() {
                &mut completed
            } else {
                &mut pending
            }) = Some(sent);
        }
        if let Some(completed) = completed {
            self.job_latency.learn(Bracket {
                pending,
                completed,
                planned_first: schedule.first_poll(estimate),
            });
            if let Some(learnt) = self.job_latency.get() {
                self.metrics.job_latency_estimate(learnt);
            }
        }
        let waited = waiting.elapsed();
        self.job_wait += waited;
        self.metrics.job_wait(waited);
        self.page_job(from, to, &job_id, page, on_page).await
    }

    /// Requests a completed job's pages, from `page` (its first) on, handing each to `on_page`,
    /// unless the job loops or repeats a page ([`JobPages`]). Returns the number of pages.
    async fn page_job(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        job_id: &str,
        mut page: Page,
        mut on_page: impl FnMut(Page) -> bool,
    ) -> Result<usize, FetchError> {
        let page_size = self.cfg.page_size;
        let mut pages = JobPages::new(job_id);
        loop {
            let token = page.page_token.take();
            if let Err(e) = pages.check(&page, token.as_deref()) {
                self.metrics.job_fault(JobFault::PageTokenLoop);
                return Err(e);
            }
            let handed_on = match pages.sort(page) {
                Sorted::New(page) => on_page(page),
                Sorted::Held => true,
                Sorted::Dropped => {
                    self.metrics.job_fault(JobFault::RepeatedPage);
                    true
                }
            };
            if !handed_on {
                return Ok(pages.count());
            }
            let Some(token) = token else { break };
            page = self
                .request(from, to, page_size, Some(job_id), Some(&token))
                .await?;
            if page.is_failed() {
                return Err(FetchError::JobFailed {
                    job_id: job_id.to_owned(),
                    status: page.status,
                });
            }
        }
        let (genuine, dropped) = pages.finish();
        for _ in 0..dropped {
            self.metrics.job_fault(JobFault::RepeatedPage);
        }
        for page in genuine {
            if !on_page(page) {
                break;
            }
        }
        Ok(pages.count())
    }

    async fn sleep(&self, d: Duration) -> Result<(), FetchError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(FetchError::Cancelled),
        }
    }

    /// One request, retried.
    async fn request(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        job_id: Option<&str>,
        page_token: Option<&str>,
    ) -> Result<Page, FetchError> {
        let mut params: Vec<(&str, String)> = vec![
            ("from", crate::timestamp::format_api(from)),
            ("to", crate::timestamp::format_api(to)),
            ("pageSize", page_size.to_string()),
        ];
        if let Some(j) = job_id {
            params.push(("jobId", j.to_owned()));
        }
        if let Some(t) = page_token {
            params.push(("pageToken", t.to_owned()));
        }
        // Full jitter on the upper half, so that two collectors do not retry in step.
        let mut backoff =
            Backoff::new(self.cfg.retry_initial, self.cfg.retry_max).jitter(Jitter::UpperHalf);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(min) = self.min_interval {
                let now = Instant::now();
                if self.next_request > now {
                    self.sleep(self.next_request - now).await?;
                }
                self.next_request = Instant::now() + min;
            }
            // After the pacing: the limiter counts the request at the moment it is sent.
            if !self.limits.is_empty() {
                tokio::select! {
                    _ = self.limits.acquire() => {}
                    _ = self.cancel.cancelled() => return Err(FetchError::Cancelled),
                }
            }
            let cancel = self.cancel.clone();
            let outcome = tokio::select! {
                o = self.attempt(&params) => o,
                _ = cancel.cancelled() => return Err(FetchError::Cancelled),
            };
            match outcome {
                Ok(page) => {
                    self.metrics.request(Outcome::Ok);
                    self.metrics.events_received(page.events.len());
                    return Ok(page);
                }
                Err(Attempt::Fatal(e, outcome)) => {
                    self.metrics.request(outcome);
                    return Err(e);
                }
                Err(Attempt::Retry {
                    reason,
                    after,
                    outcome,
                }) => {
                    self.metrics.request(outcome);
                    if attempt > self.cfg.max_retries {
                        return Err(FetchError::GaveUp {
                            attempts: attempt,
                            last: reason,
                        });
                    }
                    self.metrics.retry();
                    let wait = backoff.next_wait_after(after);
                    tracing::warn!(
                        "Request failed ({reason}); retry {attempt}/{} in {:.3} seconds.",
                        self.cfg.max_retries,
                        wait.as_secs_f64()
                    );
                    self.sleep(wait).await?;
                }
            }
        }
    }

    async fn attempt(&mut self, params: &[(&str, String)]) -> Result<Page, Attempt> {
        let mut url = url::Url::parse(&self.endpoint).map_err(|e| {
            Attempt::Fatal(
                FetchError::Rejected {
                    status: 0,
                    body: e.to_string(),
                },
                Outcome::Rejected,
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if self.placement == KeyPlacement::QueryParameter {
                q.append_pair("key", self.key.expose());
            }
        }
        let mut req = self.http.get(url);
        if self.placement == KeyPlacement::BearerHeader {
            req = req.bearer_auth(self.key.expose());
        }
        self.stats.requests += 1;
        // reqwest errors can carry the URL, which may hold the key (query placement): strip it.
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_failure(e.without_url()))?;
        let status = resp.status();
        let proxy_refused = self.proxy_refused(&resp);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_body(resp).await.map_err(|reason| match reason {
            BodyError::Transport(e) => Attempt::Retry {
                outcome: transport_outcome(&e),
                reason: self.describe(&e.without_url()),
                after: None,
            },
            BodyError::TooLarge => Attempt::Retry {
                reason: format!("the response is larger than {MAX_BODY_BYTES} bytes"),
                after: None,
                outcome: Outcome::Malformed,
            },
        })?;
        self.stats.bytes += body.len() as u64;
        match status.as_u16() {
            200..=299 => parse_page(body).map_err(|e| Attempt::Retry {
                reason: format!("bad response: {e}"),
                after: None,
                outcome: Outcome::Malformed,
            }),
            code @ (401 | 403 | 407) if proxy_refused => Err(Attempt::Fatal(
                FetchError::ProxyAuth {
                    proxy: self.proxy_name(),
                    status: code,
                },
                Outcome::Auth,
            )),
            401 | 403 => Err(Attempt::Fatal(
                FetchError::Auth {
                    masked_key: self.key.masked(),
                    status: status.as_u16(),
                },
                Outcome::Auth,
            )),
            429 => Err(Attempt::Retry {
                reason: "HTTP 429 Too Many Requests".into(),
                after: retry_after,
                outcome: Outcome::RateLimited,
            }),
            code @ (408 | 500..=599) => Err(Attempt::Retry {
                reason: format!("HTTP {code}"),
                after: retry_after,
                outcome: if code == 408 {
                    Outcome::Timeout
                } else {
                    Outcome::ServerError
                },
            }),
            code => Err(Attempt::Fatal(
                FetchError::Rejected {
                    status: code,
                    body: self.quote(&body),
                },
                Outcome::Rejected,
            )),
        }
    }

    /// An error body, fit for an error message: redacted whole, then cut to
    /// [`QUOTED_BODY_BYTES`] (cut first, a key straddling the cut would leak in part).
    fn quote(&self, body: &[u8]) -> String {
        let text = self.redact(&String::from_utf8_lossy(body));
        redact_then_cut(&text, &[], QUOTED_BODY_BYTES)
    }

    /// Removes the key and the proxy's password from text that came from elsewhere (a server
    /// echoing it, an error).
    fn redact(&self, text: &str) -> String {
        let mut text = text.replace(self.key.expose(), &self.key.masked());
        if let Some(route) = &self.cfg.connection.proxy {
            for secret in route.secrets() {
                text = text.replace(&secret, "****");
            }
        }
        text
    }

    /// Whether an answer is the proxy refusing our proxy credentials rather than the API's. Only
    /// a forwarding proxy (plain-http target) can answer in the API's place: 407, or, as
    /// tinyproxy does for a wrong password, 401 with its own `Basic` challenge (the API never
    /// sends one). Through a tunnel (https) every answer is the API's.
    fn proxy_refused(&self, resp: &reqwest::Response) -> bool {
        use reqwest::header::{PROXY_AUTHENTICATE, WWW_AUTHENTICATE};
        if self.cfg.connection.proxy.is_none() || self.cfg.base_url.scheme() != "http" {
            return false;
        }
        let basic_challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("basic"));
        resp.status().as_u16() == 407
            || resp.headers().contains_key(PROXY_AUTHENTICATE)
            || basic_challenge
    }

    /// The proxy as `scheme://host:port`, or "(none)".
    fn proxy_name(&self) -> String {
        self.cfg
            .connection
            .proxy
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), ProxyRoute::masked)
    }

    /// A request that got no HTTP answer. An untrusted certificate and a proxy asking for
    /// credentials are fatal (retrying cannot help); anything else is retried.
    fn transport_failure(&self, e: reqwest::Error) -> Attempt {
        if let Some(detail) = certificate_problem(&e) {
            let fix = if detail.contains("NotValidForName") || detail.contains("not valid for name")
            {
                "Check override_base_url; if a proxy inspects TLS, its certificate must name the API host."
            } else {
                "If a proxy inspects TLS, set ca_file to your proxy's CA bundle (PEM), or system_trust_store: true if the system trusts it."
            };
            return Attempt::Fatal(
                FetchError::Certificate {
                    server: self.server_name(),
                    via: self.via(),
                    detail: self.redact(&detail),
                    trusted: self.cfg.connection.trust.clone(),
                    fix,
                },
                Outcome::Transport,
            );
        }
        // hyper-util does not export its tunnel error type; its text is stable
        // ("proxy authorization required", the answer to CONNECT was 407).
        if error_chain(&e).any(|s| s.contains("proxy authorization required")) {
            return Attempt::Fatal(
                FetchError::ProxyAuth {
                    proxy: self.proxy_name(),
                    status: 407,
                },
                Outcome::Auth,
            );
        }
        Attempt::Retry {
            outcome: transport_outcome(&e),
            reason: self.describe(&e),
            after: None,
        }
    }

    /// A transport error in one line: its kind and its innermost cause, with the proxy named.
    /// (The caller stripped the URL, which may hold the key with query placement.)
    fn describe(&self, e: &reqwest::Error) -> String {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "the response body was cut off"
        } else {
            "transport error"
        };
        let detail = error_chain(e).last().unwrap_or_default();
        format!("{kind}{}: {}", self.via(), self.redact(&detail))
    }

    /// " (via proxy http://host:port)" when a proxy is used.
    fn via(&self) -> String {
        match &self.cfg.connection.proxy {
            Some(route) => format!(" (via proxy {})", route.masked()),
            None => String::new(),
        }
    }

    /// `scheme://host:port` of the API.
    fn server_name(&self) -> String {
        let u = &self.cfg.base_url;
        format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port_or_known_default().unwrap_or(0)
        )
    }
}

/// The messages of an error's causes, outermost first.
fn error_chain(e: &reqwest::Error) -> impl Iterator<Item = String> + '_ {
    std::iter::successors(std::error::Error::source(e), |s| s.source()).map(|s| s.to_string())
}

/// rustls' reason when the server's certificate was refused ("invalid peer certificate:
/// UnknownIssuer").
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(err @ rustls::Error::InvalidCertificate(_)) = find_rustls_error(s) {
            return Some(err.to_string());
        }
        source = s.source();
    }
    None
}

/// The TLS connectors wrap rustls' error in one or more `io::Error`s, whose `source()` skips
/// the wrapped error itself; unwrap them with `get_ref`.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    find_rustls_error(inner)
}

/// How much of an API error body an error quotes.
const QUOTED_BODY_BYTES: usize = 300;

/// How long an API connection may stay idle in the client's pool: long enough for the job polls
/// of one cycle (around the job latency learnt, [`PollSchedule`]), shorter than the gap between
/// cycles at the default 60 s period.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest response accepted. A 10,000-event page is about 4 MB; anything near this is a
/// broken server, and reading it whole could exhaust memory.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

fn transport_outcome(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Transport
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

/// Reads a body into one buffer sized from `Content-Length`, so that a 4 MB page does not go
/// through the doubling reallocations (and twice the peak memory) of a growing buffer.
async fn read_body(mut resp: reqwest::Response) -> Result<Bytes, BodyError> {
    let hint = resp
        .content_length()
        .unwrap_or(0)
        .min(MAX_BODY_BYTES as u64) as usize;
    let mut buf = bytes::BytesMut::with_capacity(hint);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
