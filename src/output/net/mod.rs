//! Network plumbing shared by the `devo_platform`/`syslog` output and the `relp` output: their
//! common configuration keys ([`config`]), the TCP/TLS connector with its proof of delivery and
//! error classification ([`connect`]), the TLS files ([`tls`]), Devo's syslog record
//! ([`format`](mod@format)) and the sender statistics Devo's SDK logs ([`stats`]).
//!
//! Neither output imports the other: what both need lives here.

pub mod config;
pub mod connect;
pub mod format;
pub mod stats;
pub mod tls;

pub use config::{NetworkOutputConfig, TlsFiles, DEFAULT_MAX_RECORD_BYTES};
