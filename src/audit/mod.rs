//! The completeness audit: for each (input, service), how many events the API holds per hour
//! of event time now, against how many were delivered (the ledger in the state,
//! `pipeline::ledger`), with a verdict per hour; and the repair of the hours that lack events,
//! which re-delivers only what the outputs do not have.
//!
//! Used by `isolation-collector audit` (the command) and by the daemon, every
//! `audit_interval_in_hours` (the metrics `missing_events` and `last_audit_timestamp_seconds`,
//! and each status line's `last_audit`: `metrics::status::AuditSummary`).
//!
//! - [`count`]: the API's count of an hour, as cheaply as can be trusted (and what `total` is
//!   worth, measured against the simulator).
//! - [`service`]: one service's audit: its settled hours, the ledger's and the dead letters'
//!   counts against the API's, per hour.
//! - [`report`]: the verdicts, the summary, the table and the JSON document.
//! - [`repair`]: re-delivers only what the outputs lack, for the hours that miss events.
//! - [`schedule`]: the daemon's audit every `audit_interval_in_hours`.

pub mod count;
pub mod repair;
pub mod report;
pub mod schedule;
pub mod service;
