//! A fake Proofpoint Isolation Reporting API (`GET /api/v2/reporting/usage-data`), in-process.
//!
//! The collector's tests and the `isolation-sim` binary start one [`SimHandle`] per dataset
//! (Browser & Email Isolation = [`Dataset::Web`], URL Isolation = [`Dataset::Url`]); each listens
//! on its own port and plays one vendor host. Behaviour follows isolation-api.md §10; every point
//! the vendor documentation leaves open is a knob in [`SimConfig`].
//!
//! A host serves one key (single-key mode, [`SimConfig::api_key`]) or, in multi-key mode
//! ([`SimConfig::keys`]), many: each key is a tenant with its own small dataset and its own jobs,
//! so that one host can play the API of a thousand customers (the collector's many-tenant
//! benchmark). The fault queue and the counters stay per host. The methods that read or add
//! events without a key ([`SimHandle::visible_events`], [`SimHandle::inject`], ...) act on the
//! first key's tenant; [`SimHandle::events_of_key_visible_at`] names the key.
//!
//! # Layout
//! * `config.rs`: [`SimConfig`] and its enums (the knobs).
//! * `dataset.rs`: deterministic event generation; events are stored as 24-byte records and
//!   serialised on demand, so 1,000,000 events per dataset fit in memory.
//! * `state.rs`: tenants (one per key: events and jobs), jobs (snapshot at creation, PENDING
//!   polls, pages with opaque tokens).
//! * `faults.rs`: the fault FIFO and the responses faults produce.
//! * `params.rs`: query parameters and date formats.
//! * `server.rs`: axum routes, auth, applying faults; HTTPS serving ([`SimHandle::start_tls`]).
//!
//! # Time
//! Visibility (late arrival), retention and job TTL use the wall clock (`chrono::Utc::now`),
//! because the collector under test compares against the wall clock too. Generated dates are
//! relative to the start time unless [`SimConfig::anchor`] pins them.

#![forbid(unsafe_code)]
// Tests may run long; the 100-line limit (clippy.toml) is for the code they test.
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod config;
mod dataset;
mod faults;
mod params;
mod server;
mod state;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    AuthFailureMode, CategoriesMode, Dataset, KeySet, RetentionMode, SimConfig, TokenLoop,
    TotalMode,
};
pub use faults::{Fault, FaultTarget};
pub use params::format_param_date;
pub use state::DEEP_NESTING;

use state::Shared;

/// Path the collector appends to [`SimHandle::base_url`].
pub const USAGE_DATA_PATH: &str = "/api/v2/reporting/usage-data";

/// Request counters of one simulated host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every request to a usage-data route.
    pub requests: u64,
    /// Jobs created.
    pub job_creates: u64,
    /// Authenticated polls that found (or would have found) the job not done.
    pub polls: u64,
    /// Authenticated requests for a page (with `pageToken`, or the completing poll).
    pub page_requests: u64,
    /// Events sent in complete responses.
    pub events_served: u64,
    /// Body bytes sent (half the body for truncated responses; faults' own bodies not counted).
    pub bytes_served: u64,
    /// Faults taken from the queue (delays included).
    pub errors_injected: u64,
    /// Requests with a wrong or missing key.
    pub auth_failures: u64,
    /// 400 answers.
    pub bad_requests: u64,
    /// Requests for an unknown or expired job.
    pub not_found: u64,
    /// The most jobs running at once: created, not failed, and their job latency not yet over
    /// (counted at each creation, the new job included). 0 while jobs have no latency.
    pub max_running_jobs: u64,
}

/// One request as the simulator received it (see [`SimHandle::request_log`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived (wall clock).
    pub at: DateTime<Utc>,
    /// `Create`, `Poll` or `Page`; `None` when authentication failed.
    pub kind: Option<FaultTarget>,
    /// `pageSize` as sent (the setup check asks for 1).
    pub page_size: Option<u32>,
}

/// A running simulated host. Dropping it stops the server (in-flight requests finish);
/// [`SimHandle::shutdown`] also waits for that.
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// `http`, or `https` when started with [`SimHandle::start_tls`].
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Generates the dataset and serves it on `127.0.0.1:<ephemeral port>`.
    ///
    /// # Errors
    /// Binding the listener failed.
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        SimHandle::start_on(config, listener).await
    }

    /// Generates the dataset and serves it on `listener`.
    ///
    /// # Errors
    /// The listener has no local address.
    pub async fn start_on(config: SimConfig, listener: TcpListener) -> std::io::Result<SimHandle> {
        SimHandle::serve(config, listener, None).await
    }

    /// Like [`SimHandle::start`], over HTTPS with the certificate chain and key of the PEM files
    /// `cert` and `key` (tests of the collector's `ca_file` and certificate errors).
    ///
    /// # Errors
    /// Binding failed, or the files are not a usable PEM certificate chain and key.
    pub async fn start_tls(
        config: SimConfig,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> std::io::Result<SimHandle> {
        let tls = server::tls_config(cert, key)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        SimHandle::serve(config, listener, Some(tls)).await
    }

    async fn serve(
        config: SimConfig,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let now_ms = Utc::now().timestamp_millis();
        // Generating a million events takes a moment; keep it off the async worker threads.
        let shared = tokio::task::spawn_blocking(move || Shared::new(config, now_ms))
            .await
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(shared);
        let app = server::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            if let Some(tls) = tls {
                return server::serve_tls(listener, app, tls, stopped).await;
            }
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "Simulator server stopped with an error.");
            }
        });
        Ok(SimHandle {
            shared,
            addr,
            scheme,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://ADDR:PORT` (or `https://`), without a path.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The full usage-data URL (`base_url() + USAGE_DATA_PATH`).
    pub fn usage_url(&self) -> String {
        format!("{}{}", self.base_url(), USAGE_DATA_PATH)
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The knobs this host runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// Queues `fault` for the next `times` authenticated requests that match `target`. Entries
    /// are consulted in FIFO order; each matching request consumes one use of the first
    /// matching entry.
    pub fn push_fault(&self, target: FaultTarget, fault: Fault, times: u32) {
        self.shared.lock().faults.push(target, fault, times);
    }

    /// The next `n` jobs created stay PENDING forever.
    pub fn stick_next_jobs(&self, n: u32) {
        self.shared.stick_next_jobs(n);
    }

    /// Adds `count` new events with dates in `[from, to]` that become visible now (late
    /// arrivals): new jobs see them, existing jobs do not. Returns `count`.
    pub fn inject(&self, count: usize, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let now = Utc::now().timestamp_millis();
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        self.shared.inject(0, count, from, to, now)
    }

    /// Compact JSON of every event visible now, whatever its date: exactly the bytes the server
    /// sends (in compact form when the `whitespace` knob is on). Base events come in date order,
    /// then injected events in injection order. Events served with a byte that is not UTF-8
    /// (knob `non_utf8_events`) are left out: [`SimHandle::unreadable_events`] has them.
    pub fn visible_events(&self) -> Vec<String> {
        self.shared
            .visible_events(0, Utc::now().timestamp_millis(), None)
    }

    /// The exact bytes of the visible events served with a stray byte that is not UTF-8 (knob
    /// `non_utf8_events`), in storage order; [`SimHandle::visible_events`] leaves them out.
    pub fn unreadable_events(&self) -> Vec<Vec<u8>> {
        self.shared
            .unreadable_events(0, Utc::now().timestamp_millis())
    }

    /// Like [`SimHandle::visible_events`], as seen at `at` (events that arrive late included
    /// once `at` is past their arrival): `isolation-sim --dump-events` uses it.
    pub fn events_visible_at(&self, at: DateTime<Utc>) -> Vec<String> {
        self.shared.visible_events(0, at.timestamp_millis(), None)
    }

    /// Like [`SimHandle::events_visible_at`], for the tenant of `key` (either mode); `None`
    /// when the host does not accept `key`. The key's dataset is generated if no request has
    /// used it yet (it is the same either way).
    pub fn events_of_key_visible_at(&self, key: &str, at: DateTime<Utc>) -> Option<Vec<String>> {
        let tenant = self.shared.tenant_of(Some(key))?;
        Some(
            self.shared
                .visible_events(tenant, at.timestamp_millis(), None),
        )
    }

    /// Like [`SimHandle::visible_events`], restricted to dates in `[from, to]` (inclusive).
    pub fn visible_events_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        self.shared.visible_events(
            0,
            Utc::now().timestamp_millis(),
            Some((from.timestamp_millis(), to.timestamp_millis())),
        )
    }

    /// The latest requests (up to 100,000), oldest first, with their arrival times.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        let log = self
            .shared
            .request_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter().copied().collect()
    }

    /// The request counters so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Stops accepting connections and waits (up to 2 s) for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // A delayed response (fault `Delay`) or an idle keep-alive connection could hold
            // the graceful shutdown open; don't let a test wait for it.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
