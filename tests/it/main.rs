//! The integration test binary (one binary, ripgrep-style). Each module's first comment says
//! what belongs in it.

// Tests may run long; the 100-line limit (clippy.toml) is for the code they test.
#![allow(clippy::too_many_lines)]

// The clock-jump and crash tests spawn the binary with its test hooks, which only the feature
// compiles in (Cargo.toml, `[features]`): without it they would fail, or pass without testing.
#[cfg(not(feature = "test-hooks"))]
compile_error!(
    "run the tests with --features isolation-collector/test-hooks, as .ci/run does (the test hooks are not a dev-dependency, so that `cargo bench` and `cargo test --release` leave no hook in target/release)"
);

// The shared support: the test environment, processes, waiting, comparisons, metrics.
mod support;

// End-to-end collection against the simulator: quirks, faults, late data.
mod collect;

// kill -9 during a backfill, and a crash between the state write and its rename.
mod crash;

// The completeness audit against the simulator: complete ranges, events published hours late,
// a crash, and the daemon's schedule.
mod audit;

// Files and state: a position applies only to its own file, a partial last line is cut, one
// process per state directory.
mod file_identity;

// The CLI contract: exit codes, validate, state, secrets.
mod cli;

// A real egress proxy (tinyproxy) and an API over HTTPS with a test CA: proxy_url, HTTPS_PROXY,
// proxy credentials, ca_file and the certificate error.
mod proxy;

// A real redis-server (append-only, fsync always) started per test on a free port.
mod redis_server;

// The partition harness: a TCP proxy in front of Redis or the API that can blackhole, hold
// replies, refuse and heal.
mod netproxy;
// Redis with Sentinel: a master, a replica and three redis-sentinels; the failover.
mod sentinel;

// Redis persistence: exactly once with the state in Redis, state show/reset/copy, validate
// against a Redis down or refusing the password, a holder whose lease another token took.
mod redis;

// What a commit costs in Redis: bytes and time of a fenced write at 100 events/s with the default
// lookback, and a renewal issued while a large write is in flight.
mod redis_commit;

// High availability on Redis: two collector daemons with one config and a shared file output;
// kill -9, SIGSTOP and SIGTERM of the lease holder, Redis killed mid-window and down at start.
mod ha;

// Health-aware sharding (issue 21 §1): a replica alive but unable to reach the API leaves its
// services to the other; a service nobody pulls fails /ready on every replica.
mod ha_health;
// Network partitions: each of two replicas behind its own proxies to Redis and the API; the
// holder cut from Redis, from the API, from both and healed; every output's history checked.
mod partitions;
// A Redis that forgets (issue 21 §2): restarted without persistence and FLUSHDB under two
// daemons (the file output stays exact), the persistence warnings of validate and run, and the
// lease gate after an outage and after a renewal answered too late.
mod ha_forget;

// Sharding on Redis: three replicas share twelve tenants' leases evenly, and again after one is
// killed and replaced; every tenant's file output exact.
mod sharding;

// An input's requests_limits counted in Redis: two replicas together keep one API key's quota.
mod quota;

// A real rsyslog (TLS with client certificates, and plain TCP) started per test.
mod rsyslog;

// The syslog/Devo output against rsyslog: byte-exact records, proof of delivery, failures.
mod syslog_tls;

// The collector binary with a devo_platform output into a real mutual-TLS rsyslog, end to end.
mod devo_e2e;

// The relp output into a real rsyslog imrelp over mutual TLS: exact multisets, a rejected
// certificate, a receiver killed mid-batch, the kill -9 crash bound.
mod relp;

// The metrics listener against the truth, /health and /ready, and --log-format json.
mod metrics;

// The status page at `/` in a real headless chromium (chromedriver, fantoccini): failing
// tenants first, its reload, paging and the filter form with many tenants; the README's
// screenshot.
mod status_page;

// Several tenants in one process: a refused key does not stop the others, validate and
// --strict with invalid input blocks.
mod tenants;

// `isolation-collector status` against a running daemon: failing lines first, masked reasons,
// --json, --watch, and a listener nobody runs.
mod status;

// obfuscation_data end to end: no original value of an obfuscated field in any output or log.
mod obfuscate;

// Jobs that overlap (max_concurrent_jobs) against jobs that take time: counts and exactly-once;
// the process-wide cap (globals.max_concurrent_jobs) across services.
mod overlap;

// SIGTERM mid-backfill, the grace period, a second signal.
mod shutdown;

// Reload without restart: SIGHUP and --watch-config adding, removing and changing tenants of a
// running daemon, an invalid config refused; exact file output per tenant afterwards.
mod reload;

// The window memory budget shared by both services, and the next window fetched ahead: exactly
// once under a small budget, across kill -9 and SIGTERM.
mod budget;

// The fault matrix: 429 storms, 5xx bursts, clock jumps, a full state disk, output outages.
mod faults;

// Devo-layout configs with every documented key: accepted, and each key's effect at run time.
mod devo_keys;

// Receivers for the HTTP outputs: a webhook and a stand-in for Splunk's HTTP Event Collector.
mod http_receivers;

// The http (webhook) and splunk_hec outputs end to end: 5xx, 429, 413, tokens, acknowledgements.
mod http_outputs;

// Partial failures of the outputs: one down, one request refused, HEC misconfigured.
mod partial_failures;
// Events that cannot be read (issue 20 §3): set aside in the dead-letter store with their raw
// bytes, every other event delivered once; `state show` lists them, `state discard` removes them.
mod dead_letters;

// The spool: one large job consumed as many windows; kill -9 mid-spool; a full spool disk.
mod spool;

// What ships in deploy/: the Prometheus rules pass promtool's check and unit tests, the Grafana
// dashboard's queries parse, and every metric either uses is in a real scrape.
mod deploy;
// The sealed per-hour digests of delivered events in Redis (issue 24, `audit --repair`).
mod digests;
