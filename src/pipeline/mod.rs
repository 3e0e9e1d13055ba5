//! The pure parts of the pull pipeline: planning query windows, exactly-once dedup and the
//! obfuscation of events before delivery. Nothing here does I/O, so all are covered by
//! property tests.

pub mod dedup;
pub mod obfuscate;
pub mod window;
