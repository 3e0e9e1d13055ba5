//! The pure parts of the pull pipeline: planning query windows, exactly-once dedup, the
//! obfuscation of events before delivery and Devo's `environment` field, and the audit ledger (delivered events per hour). Nothing here does I/O,
//! so all are covered by property tests. Beside them, the window memory budget shared by the
//! services (`budget`).

pub mod budget;
pub mod dedup;
pub mod environment;
pub mod ledger;
pub mod obfuscate;
pub mod window;
