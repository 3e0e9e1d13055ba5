//! High availability with Redis: which replica pulls which service, next to the state store
//! ([`crate::state::redis`]) whose scripts it uses.
//!
//! - [`lease`]: a service's lease: standby, renewal, and the gate before each delivery (the
//!   fan-out asks it through [`crate::output`]'s gate trait).
//! - [`shard`]: the replicas' heartbeats, their health, and the fair share of leases each takes.

pub mod lease;
pub mod shard;
