//! The vendor side: the Reporting API client (async job protocol, paced by `requests_per_second`
//! and Devo's `requests_limits`), and the puller that turns jobs into delivered, checkpointed
//! windows.

pub mod client;
pub mod connection;
pub mod limiter;
pub mod puller;
