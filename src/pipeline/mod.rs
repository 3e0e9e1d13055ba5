//! The pure parts of the pull pipeline: planning query windows and exactly-once dedup.
//! Nothing here does I/O, so both are covered by property tests.

pub mod dedup;
pub mod window;
