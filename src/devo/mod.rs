//! Devo compatibility: what a Devo user sees of the collector, word for word
//! (`../shared/docs/devo-platform.md`).
//!
//! - [`log_lines`]: Devo's thread names and log lines for setup, `pre_pull` and the pull loop.
//! - [`statistics`]: a cycle's totals and Devo's per-pull statistics line.
//! - [`gc_line`]: Devo's periodic `[GC]` memory line.
//! - [`internal_messages`]: the collector's own warnings and errors delivered to Devo's
//!   `devo.collectors.out.local.*` tables.

pub mod gc_line;
pub mod internal_messages;
pub mod log_lines;
pub mod statistics;
