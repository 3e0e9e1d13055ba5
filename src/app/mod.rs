//! Wiring: builds the store, outputs and pullers from a [`Config`](crate::config::Config) and runs them.
//!
//! Each input of the config is a tenant (`tenant`): [`run_collector`] starts every valid one with
//! [`start_tenant`] under the `supervisor`, which in the daemon applies each reload (SIGHUP,
//! `--watch-config`; [`crate::reload`]) until the shutdown, then joins them. Each enabled
//! service of a tenant runs as its own task (`service_task`) with its own API client and
//! output instances, so services and tenants are independent: one failing (bad key for one
//! host, an outage of one API) never stops another.
//! With Redis persistence a service pulls only while this process holds its lease. Before any
//! tenant starts, `start_check` checks every output once and names the ones that fail.
//!
//! Shutdown: the first SIGINT/SIGTERM cancels a token that every await point of the pullers
//! watches; a window in flight is abandoned before its checkpoint (it is asked for again after
//! the restart), the pullers close their outputs, each held lease is released at once, and
//! `run_collector` returns. A second signal exits at once. Every task it spawns is in a
//! `JoinSet` it owns (each tenant's services, and the `Background` tasks), joined before it
//! returns and aborted if it is dropped: no task outlives `run_collector`.
//!
//! The files, one job each: `run` (the collector from a config, [`run_collector`]),
//! `config_lines` (the config's warnings and invalid inputs, at start and each reload), `store` (where the state is
//! kept, said at start), `background` (the tasks besides the services, and their stop), `sender_monitor` (Devo's
//! sender statistics), `tenant`, `service_task`, `supervisor` (reloads), `start_check`,
//! `validate`, and `signals` (the shutdown signals and the `[EXIT]` line).

mod background;
mod config_lines;
pub mod outputs;
mod run;
mod sender_monitor;
mod service_task;
mod signals;
mod start_check;
mod store;
mod supervisor;
mod tenant;
mod validate;

pub use config_lines::{log_invalid_inputs, log_warnings};
pub use run::run_collector;
pub use signals::{grace_elapsed, log_exit, shutdown_on_signal};
pub use tenant::{start_tenant, SenderRegistry, Shared, TenantHandle};
pub use validate::validate;

/// How [`run_collector`] behaves (the `run` command's options).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// One catch-up cycle per service, then return.
    pub once: bool,
    /// Keep the state in memory only (`--no-save-state`).
    pub no_save_state: bool,
    /// `--strict`: refuse to start (exit 64) when any input block is invalid, instead of
    /// starting the valid ones, and (exit 1) when an output fails its check at start.
    pub strict: bool,
}
