//! The vendor's Reporting API (`../shared/docs/isolation-api.md`): everything that talks to it.
//!
//! - [`client`]: the async job protocol (create a job, poll it, read its pages), with retries.
//! - The route to a host (proxy, TLS roots, timeouts) is config data: [`crate::config::connection`].
//! - [`limiter`]: Devo's `requests_per_second` and `requests_limits` pacing, per input (in Redis
//!   across replicas).
//! - [`job_cap`]: the process-wide cap on API jobs alive at once, shared fairly by the tenants.

pub mod client;
pub mod job_cap;
pub mod limiter;
