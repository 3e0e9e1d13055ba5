//! The one contract of an output kind: built from its configuration (plain data, read by the
//! registry's parser) and a context, into its running output and its health check. A kind
//! knows only this trait and its own types; the registry (`registry.rs`) wraps each kind's
//! output into the running [`Output`](super::Output) enum.
//!
//! `run` builds each service's outputs with [`OutputBuilder::build`]; `validate` and the check
//! at start run [`OutputBuilder::healthcheck`] instead, which builds a probe the same way and
//! checks it without delivering an event (directory writable, receiver reachable, TLS and
//! credentials accepted). The trait has no default methods: a new kind says both.

use futures_util::future::BoxFuture;

use super::OutputError;
use crate::clock::SharedClock;

/// What outputs are built with, besides their configuration.
#[derive(Clone)]
pub struct OutputContext {
    /// Stamps records (syslog dates, console timestamps) and statistics periods.
    pub clock: SharedClock,
}

/// An output's health check: resolves once the check is done (`Ok`: usable).
pub type Healthcheck = BoxFuture<'static, Result<(), OutputError>>;

/// Builds one output kind from its configuration.
pub trait OutputBuilder {
    /// The kind's running output.
    type Output;

    /// The running output named `name` (`outputs.<name>`).
    ///
    /// # Errors
    /// A setting the output cannot run with (an unreadable TLS file, a bad host name).
    fn build(&self, name: &str, cx: &OutputContext) -> Result<Self::Output, OutputError>;

    /// The output's health check, built as [`OutputBuilder::build`] builds (the same errors),
    /// run by `validate` and the check at start.
    ///
    /// # Errors
    /// As [`OutputBuilder::build`].
    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError>;
}
