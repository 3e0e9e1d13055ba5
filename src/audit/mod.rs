//! The completeness audit: for each (input, service), how many events the API holds per hour
//! of event time now, against how many were delivered (the ledger in the state,
//! `pipeline::ledger`), with a verdict per hour; and the repair of the hours that lack events,
//! which re-delivers only what the outputs do not have.
//!
//! Used by `isolation-collector audit` (the command) and by the daemon, every
//! `audit_interval_in_hours` (the metrics `missing_events` and `last_audit_timestamp_seconds`,
//! and each status line's `last_audit`: `metrics::status::AuditSummary`).

pub mod repair;
