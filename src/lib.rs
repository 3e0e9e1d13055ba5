//! # isolation-collector
//!
//! Pulls Proofpoint Isolation usage data (Browser & Email Isolation, URL Isolation) from the
//! vendor's Reporting API and delivers every event, once, to Devo and other outputs. A
//! re-implementation of Devo's Proofpoint Isolation collector: same services, tables, config
//! layout, wire format and log lines.
//!
//! ## Data flow
//! ```text
//! config.yaml ─► config::Config (all problems at once; one InputConfig per tenant) ─► app::run_collector
//!   per valid input (a tenant, app::tenant: its own cancel token; shared: store, metrics,
//!   window budget, job cap)
//!   per enabled service (own task): isolation::puller::Puller (the window loop)
//!     setup (auth check) ─► with Redis: isolation::lease (stand by until the lease is held)
//!     ─► pre_pull (isolation::checkpoint: load, upgrade, correct, reset)
//!     every request_period_in_seconds: pipeline::window plans the range and its windows
//!       isolation::client job (create, poll, pages) ─► event::parse_page (vendor bytes kept)
//!       ─► sort by date ─► pipeline::dedup (multiset by date + SHA-256, on the originals)
//!       ─► pipeline::obfuscate (obfuscation_data) ─► pipeline::environment
//!       ─► output::Outputs (every output; only the unconfirmed are retried)
//!       ─► all confirmed ─► isolation::checkpoint commits: dedup applied, cursors moved,
//!          state::StateStore::save (atomic; in Redis fenced by the lease)
//! ```
//!
//! ## Layout
//! - [`config`]: YAML → validated runtime config, every problem at once with its key path:
//!   the walker, `${ENV}` substitution, one file per section (globals, outputs, input,
//!   services, obfuscation), and the input blocks of several tenants (`tenants`).
//! - [`service`]: the domain's two services, their Devo tables and vendor hosts, the API path
//!   and the 30-day retention.
//! - [`isolation`]: the vendor API client (with Devo's `requests_limits` limiter) and the
//!   per-service puller (the window loop), with beside it the state's lifecycle (`checkpoint`),
//!   the Redis lease a service is pulled under (`lease`),
//!   Devo's log wording (`devo_log`) and Devo's statistics line (`statistics`).
//! - [`event`]: the page parser, the hot path: events stay the vendor's bytes.
//! - [`pipeline`]: pure logic: window planning, exactly-once dedup, obfuscation and Devo's
//!   `@devo_environment` field (property-tested).
//! - [`output`]: file, console, Devo and syslog outputs with their confirm contract (the TLS
//!   output proves delivery by waiting for the receiver to close after our close_notify), and the
//!   HTTP outputs (a webhook's 2xx, Splunk HEC's indexer acknowledgement).
//! - [`state`]: versioned JSON state per (input id, service), written atomically: files in a
//!   directory, or keys in a Redis whose every write is fenced by the service's lease.
//! - [`trust`]: the roots a TLS connection trusts (built-in, system store, `ca_file`), shared by
//!   the API client and the network outputs.
//! - [`metrics`]: Prometheus metrics, `/health` and `/ready` (the optional HTTP listener).
//! - [`memory`]: Devo's periodic `[GC]` memory line.
//! - [`internal`]: the collector's own warnings and errors delivered to Devo.
//! - [`backfill`]: re-delivery of a past range without touching the live state.
//! - [`reload`]: reload without restart: SIGHUP and `--watch-config` ask for one; what it
//!   changes per tenant (the plan) and which `globals` keys need a restart.
//! - [`backoff`]: the capped exponential backoff every retry loop waits with.
//! - [`clock`]: the injected wall clock, the only place that reads the system time of day.
//! - [`commands`]: the subcommands' bodies behind the thin `main.rs` (one preamble: load the
//!   config, start logging).
//! - [`component`]: the shape each component is built in: from its config and a context, the
//!   running part and its health check (`validate` awaits the checks, `run` runs the parts).
//! - [`app`], [`cli`], [`outcome`], [`telemetry`], [`time`], [`secret`]: wiring and plumbing.
//! - `demo` (the default cargo feature `demo`): the collector against the simulator of the vendor
//!   API, the workspace crate `isolation-sim` (`crates/isolation-sim`; the tests and benchmarks
//!   use it too).

#![forbid(unsafe_code)]
// Tests may run long; the 100-line limit (clippy.toml) is for the code they test.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod api;
pub mod app;
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
