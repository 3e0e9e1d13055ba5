//! The support of the integration tests, shared by every module of the `it` binary: a module
//! says `use crate::support::*;` and has
//! - [`TestEnv`] (env.rs): a work directory, its config and two simulators, runs of the collector;
//! - process.rs: the collector's command line, a daemon logging into a file, SIGTERM and
//!   kill -9, what a finished run printed;
//! - wait.rs: [`wait_for`], the one poll loop with a deadline, and [`Wait`], its settings;
//! - compare.rs: output files as multisets against the simulators' events, logs, statistics;
//! - metrics.rs: free ports, HTTP GETs of the metrics listener, parsed expositions.
//!
//! Fixtures with a life of their own stay beside their tests and use these primitives:
//! redis_server.rs, rsyslog.rs, netproxy.rs, ha.rs's `Replica` and `Ha`.

mod compare;
mod env;
mod metrics;
mod process;
mod wait;

pub use compare::*;
pub use env::*;
pub use metrics::*;
pub use process::*;
pub use wait::*;
