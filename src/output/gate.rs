//! The gate the fan-out asks before each output's turn.
//!
//! Outputs know nothing of leases: [`Outputs`](super::Outputs) holds a [`DeliveryGate`] and
//! waits on it before each output's turn (each try, and each resume). HA implements it (the
//! lease's gate, `isolation::lease::LeaseGate`): a holder paused in the middle of a batch and
//! woken after another process took over stops there. Without leases the gate is [`Open`].

use std::sync::Arc;

use futures_util::future::BoxFuture;

/// Why a gate refused a turn: the gate's own error, handed back through the fan-out
/// ([`FanOutError::Lease`](super::FanOutError::Lease)) to whoever made the gate, which knows its
/// type (HA's is a `StateError`). Boxed, so that outputs depend on no implementor.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Refusal(pub Box<dyn std::error::Error + Send + Sync>);

/// Asked before each output's turn.
pub trait DeliveryGate: Send + Sync {
    /// Resolves when a delivery may start (at once, or after the gate made sure, e.g. by renewing
    /// a lease). An error means: deliver nothing now.
    fn before_delivery(&self) -> BoxFuture<'_, Result<(), Refusal>>;
}

/// The gate of no lease: always open (filesystem and memory stores, backfill, validate).
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

impl DeliveryGate for Open {
    fn before_delivery(&self) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A gate shared by the fan-out and its owner.
pub type SharedGate = Arc<dyn DeliveryGate>;

/// The [`Open`] gate, shared.
pub fn open() -> SharedGate {
    Arc::new(Open)
}
