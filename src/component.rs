//! The shape every component kind is made in (Vector's `SinkConfig::build(&self, cx) -> (Sink,
//! Healthcheck)`, docs/style-guide.md): the configuration is data; a builder takes it and a
//! context (only what the part needs: the clock, the metrics, a budget, a shutdown token) and
//! returns the running part and its [`Healthcheck`]. `validate` awaits the health checks and
//! drops the parts; `run` runs the parts.
//!
//! The builders: the state store ([`crate::state::build`]), a service's API client
//! ([`crate::api::client::build`]) and a service's lease
//! ([`crate::ha::lease::Lease::build`], which has no check of its own: it lives in the
//! state store, whose check stands for it). The outputs have their own builder trait ([`crate::output::builder::OutputBuilder`]).

use futures_util::future::BoxFuture;

/// A component's health check, returned with the part by its builder: asks the far end once
/// whether the part can work (reachable, credentials accepted) and changes nothing there. It does
/// nothing until awaited, so a caller that runs the part instead (whose own start checks the
/// same) drops it unawaited at no cost.
pub type Healthcheck<E> = BoxFuture<'static, Result<(), E>>;
