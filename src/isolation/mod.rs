//! The vendor side: the Reporting API client (async job protocol) and the puller that turns
//! jobs into delivered, checkpointed windows.

pub mod client;
pub mod connection;
pub mod puller;
