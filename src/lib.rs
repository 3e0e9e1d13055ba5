//! # isolation-collector
//!
//! Pulls Proofpoint Isolation usage data (Browser & Email Isolation, URL Isolation) from the
//! vendor's Reporting API and delivers every event, once, to Devo and other outputs. A
//! re-implementation of Devo's Proofpoint Isolation collector: same services, tables, config
//! layout, wire format and log lines.
//!
//! ## Data flow
//! ```text
//! config.yaml ─► config::Loader (read once) ─► config::Config (all problems at once; one
//!   InputConfig per tenant; plain data) ─► app::run_collector builds the parts from it
//!   per valid input (a tenant, app::tenant: its own cancel token; shared: store, metrics,
//!   window budget, job cap)
//!   per enabled service (own task): puller::Puller (the window loop)
//!     setup (auth check) ─► with Redis: ha::lease (stand by until the lease is held)
//!     ─► pre_pull (puller::checkpoint: load, upgrade, correct, reset)
//!     every request_period_in_seconds: pipeline::window plans the range and its windows
//!       api::client job (create, poll, pages) ─► event::parse_page (vendor bytes kept)
//!       ─► sort by date ─► pipeline::dedup (multiset by date + SHA-256, on the originals)
//!       ─► pipeline::obfuscate (obfuscation_data) ─► pipeline::environment
//!       ─► output::Outputs (every output, each turn asked of the gate; only the
//!          unconfirmed are retried)
//!       ─► all confirmed ─► puller::checkpoint commits: dedup applied, cursors moved,
//!          state::StateStore::save (atomic; in Redis fenced by the lease)
//! ```
//!
//! ## Layout
//! One module a role, in layers: a module imports only its own layer and those below it, and no
//! two files import each other (`scripts/layers.py` checks both in CI). From the top:
//! - entry: [`commands`] (the subcommands' bodies behind the thin `main.rs`; one preamble: load
//!   the config, start logging), [`cli`], `demo`.
//! - wiring: [`app`] (builds the parts from the config and runs them; `validate` runs their
//!   health checks), [`backfill`] (re-delivery of a past range without touching the live
//!   state), [`reload`] (SIGHUP and `--watch-config`; what a reload changes per tenant),
//!   [`audit`] (the completeness audit against the API, and its repair).
//! - [`puller`]: one service's window loop, the jobs ahead, and the state's lifecycle
//!   (`checkpoint`: Devo's `pre_pull` steps, the commit after each confirmed window).
//! - [`ha`]: with Redis, the lease a service is pulled under (it implements the outputs'
//!   delivery gate) and the replicas' fair share of the leases.
//! - [`api`]: the vendor's Reporting API: the client (async jobs, pages), Devo's
//!   `requests_limits` limiter, the process-wide job cap.
//! - [`devo`]: Devo compatibility: its log wording, statistics line, `[GC]` line and internal
//!   messages.
//! - [`state`]: versioned JSON state per (input id, service), written atomically: files in a
//!   directory, or keys in a Redis whose every write is fenced by the service's lease.
//! - [`config`]: YAML → config data (no live object), every problem at once with its key path:
//!   one loader, `${ENV}` substitution, one file per section, the API's route, the input blocks
//!   of several tenants (`tenants`).
//! - [`output`]: one folder per kind (file, console, Devo/syslog, RELP, HTTP, Splunk HEC), each
//!   built from its config through one trait and one registry, with its confirm contract; the
//!   fan-out, which asks a gate before each output's turn.
//! - [`pipeline`]: pure logic: window planning, exactly-once dedup, obfuscation and Devo's
//!   `@devo_environment` field (property-tested).
//! - observability: [`metrics`] (Prometheus, `/health`, `/ready`, `/status`), [`logging`]
//!   (Devo's lines; the tap internal messages read).
//! - domain and plumbing: [`event`] (the page parser, the hot path: events stay the vendor's
//!   bytes), [`service`] (the two services, their tables and hosts), [`clock`] (the injected
//!   wall clock, the only reader of the time of day), [`timestamp`] (date formats),
//!   [`component`] (a part and its health check), [`outcome`], [`trust`] (the roots a TLS
//!   connection trusts), [`secret`], [`backoff`], `yaml_walker`.
//! - `demo` (the default cargo feature `demo`): the collector against the simulator of the vendor
//!   API, the workspace crate `isolation-sim` (`crates/isolation-sim`; the tests and benchmarks
//!   use it too).

#![forbid(unsafe_code)]
// Tests may run long; the 100-line limit (clippy.toml) is for the code they test.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod api;
pub mod app;
pub mod audit;
pub mod backfill;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod component;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devo;
pub mod event;
pub mod ha;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod output;
pub mod pipeline;
pub mod puller;
pub mod reload;
pub mod secret;
pub mod service;
pub mod state;
pub mod timestamp;
pub mod trust;
pub(crate) mod yaml_walker;
