//! The one contract of an output kind: built from its configuration (plain data, read by the
//! registry's parser) and a context, into the running [`Output`] and its health check.
//!
//! `run` builds each service's outputs with [`OutputBuilder::build`]; `validate` and the check
//! at start run [`OutputBuilder::healthcheck`] instead, which builds a probe the same way and
//! checks it without delivering an event (directory writable, receiver reachable, TLS and
//! credentials accepted). The trait has no default methods: a new kind says both.

use futures_util::future::BoxFuture;

use super::{Output, OutputError};
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
    /// The running output named `name` (`outputs.<name>`).
    ///
    /// # Errors
    /// A setting the output cannot run with (an unreadable TLS file, a bad host name).
    fn build(&self, name: &str, cx: &OutputContext) -> Result<Output, OutputError>;

    /// The output's health check, built as [`OutputBuilder::build`] builds (the same errors),
    /// run by `validate` and the check at start.
    ///
    /// # Errors
    /// As [`OutputBuilder::build`].
    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError>;
}

/// The health check of a probe built for it: [`Output::check`] (an output kind's
/// [`OutputBuilder::healthcheck`] that builds its probe as it builds itself).
pub fn probe(mut output: Output) -> Healthcheck {
    Box::pin(async move { output.check().await })
}
