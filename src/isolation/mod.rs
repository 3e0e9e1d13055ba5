//! The vendor side: the Reporting API client (async job protocol, paced by `requests_per_second`
//! and Devo's `requests_limits`), and the puller that turns jobs into delivered, checkpointed
//! windows.
//!
//! - [`client`], [`connection`], [`limiter`]: the API client, its route (proxy, TLS) and its
//!   request limits.
//! - [`puller`]: one service's window loop: plan a window, fetch it, deliver it, commit it.
//! - [`lookahead`]: the jobs of the next windows, created while the current one is delivered.
//! - [`job_cap`]: the process-wide cap on API jobs alive at once, shared fairly by the tenants.
//! - [`checkpoint`]: the service's state through its lifecycle (Devo's `pre_pull` steps: load,
//!   upgrade, correct, reset; the commit after each confirmed window).
//! - [`lease`]: with Redis, the service's lease: standby, renewal, and the gate before each
//!   delivery.
//! - [`devo_log`]: Devo's thread names and log lines for setup, `pre_pull` and the loop.
//! - [`statistics`]: a cycle's totals and Devo's per-pull statistics line.

pub mod checkpoint;
pub mod client;
pub mod connection;
pub mod devo_log;
pub mod job_cap;
pub mod lease;
pub mod limiter;
pub mod lookahead;
pub mod puller;
pub mod statistics;
