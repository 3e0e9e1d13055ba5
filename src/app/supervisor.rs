//! The daemon's tenants over its life: started from the config, then changed by reloads.
//!
//! [`crate::reload`] says what asks for a reload (SIGHUP, `--watch-config`) and computes its
//! plan; the [`Supervisor`] applies it. It holds every running tenant's [`TenantHandle`] with
//! the input block it was started from and its fingerprint, and the running configuration's
//! tree as written, and waits for a reload request or the shutdown. A reload loads and
//! validates the file again through the start's [`Loader`] (one read: the tree it compares and
//! the config it applies are the same bytes); a refused one changes nothing. An accepted one first stops the removed and changed tenants, concurrently
//! (each finishes or abandons its window in flight as on shutdown, and releases its leases),
//! then starts the changed and added ones from their new blocks. The other tenants are not
//! touched: their tasks go on, windows in flight included. Reloads never overlap: a request
//! that arrives meanwhile is applied after this one, from the newest files.
//!
//! What the process holds for its whole life stays as it was started: the state store, the
//! metrics listener, the budgets' sizes and the internal-message sender. A changed `globals` key
//! is logged as needing a restart. What follows the tenants is updated after each reload: the
//! window budget is shared among the services now running, and with sharding the replicas'
//! fair share counts them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_yaml_ng::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::tenant::{start_tenant, Shared, TenantHandle};
use crate::config::{Config, Fingerprint, InputConfig, Loaded, Loader};
use crate::reload::{self, Cause, ReloadPlan};

/// The running tenants and what a reload needs to change them.
pub(super) struct Supervisor {
    shared: Shared,
    cancel: CancellationToken,
    /// Every valid input of the running configuration, by id (a disabled one has no tasks).
    tenants: BTreeMap<String, Tenant>,
    /// The running configuration's tree as written, which a reload compares with the new one.
    written: Value,
    /// Whether every tenant stopped by a reload stopped cleanly.
    stopped_ok: bool,
}

/// A running tenant and the block it was started from, with its fingerprint (started again if
/// its new block fails to start).
struct Tenant {
    block: Block,
    handle: TenantHandle,
}

/// An input block and its fingerprint.
#[derive(Clone)]
struct Block {
    input: InputConfig,
    fingerprint: Fingerprint,
}

impl Block {
    /// The valid input `id` of `config`.
    fn of(config: &Config, id: &str) -> Option<Block> {
        Some(Block {
            input: config.input(id)?.clone(),
            fingerprint: *config.fingerprints.get(id)?,
        })
    }
}

impl Supervisor {
    /// Starts every valid input of `config`, whose tree as written is `written`.
    pub(super) fn start(
        config: &Config,
        written: Value,
        shared: Shared,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Supervisor> {
        let mut supervisor = Supervisor {
            shared,
            cancel: cancel.clone(),
            tenants: BTreeMap::new(),
            written,
            stopped_ok: true,
        };
        for block in config
            .inputs
            .iter()
            .filter_map(|i| Block::of(config, &i.id))
        {
            let handle = start_tenant(&block.input, &supervisor.shared, cancel)?;
            supervisor.insert(block, handle);
        }
        Ok(supervisor)
    }

    fn insert(&mut self, block: Block, handle: TenantHandle) {
        let id = block.input.id.clone();
        self.tenants.insert(id, Tenant { block, handle });
    }

    /// Applies each reload request of `source` until the shutdown (without a source, `--once`
    /// or the demo, only waits for the tenants), then waits for every tenant. `true` when every
    /// tenant stopped cleanly (and, with `--once`, delivered everything).
    pub(super) async fn reload_until_shutdown(mut self, source: Option<reload::Source>) -> bool {
        if let Some(mut source) = source {
            loop {
                let cause = tokio::select! {
                    () = self.cancel.cancelled() => break,
                    request = source.requests.next() => request,
                };
                let Some(cause) = cause else { break };
                self.reload(&source.loader, cause).await;
            }
        }
        self.join().await
    }

    /// Waits for every tenant (the end of `--once`, or of a shutdown).
    async fn join(mut self) -> bool {
        let mut all_ok = self.stopped_ok;
        for tenant in self.tenants.values_mut() {
            all_ok &= tenant.handle.join().await;
        }
        all_ok
    }

    /// One reload through `loader`. Returns whether it was applied (the new configuration
    /// runs, and the next reload compares with it).
    async fn reload(&mut self, loader: &Loader, cause: Cause) -> bool {
        info!(
            "Reading the configuration again from {} ({})",
            loader.path().display(),
            cause.describe()
        );
        let Loaded { written, config } = match load(loader, self.shared.clock.now()).await {
            Ok(loaded) => loaded,
            Err(problems) => {
                reload::log_refused(&problems);
                return false;
            }
        };
        if self.shared.options.strict && !config.invalid_inputs.is_empty() {
            let problems = config
                .invalid_inputs
                .iter()
                .flat_map(|i| i.problems.clone());
            reload::log_refused(&problems.collect::<Vec<_>>());
            warn!("run --strict: a configuration with an invalid input is refused; fix it, or run without --strict");
            return false;
        }
        super::log_warnings(&config);
        log_changed_sections(&self.written, &written, &config);
        self.written = written;
        self.log_invalid_inputs(&config);
        let plan = self.plan(&config);
        self.apply(&plan, &config).await;
        let services = self.services();
        self.shared.budget.set_sharers(services);
        if let Some(shard) = &self.shared.shard {
            // The fair share follows the services the replicas now share.
            shard.set_services(services);
        }
        info!("{}", plan.summary());
        true
    }

    /// How many services run now (the window budget's sharers; with sharding, the services
    /// the replicas share).
    fn services(&self) -> usize {
        self.tenants
            .values()
            .filter(|t| t.block.input.enabled)
            .map(|t| t.block.input.services.len())
            .sum()
    }

    /// What the new configuration changes, per input id.
    fn plan(&self, config: &Config) -> ReloadPlan {
        let running = self
            .tenants
            .iter()
            .map(|(id, t)| (id.clone(), t.block.fingerprint))
            .collect();
        reload::plan(
            &running,
            config
                .inputs
                .iter()
                .filter_map(|i| Some((i.id.as_str(), *config.fingerprints.get(&i.id)?))),
            config.invalid_inputs.iter().filter_map(|i| i.id.as_deref()),
        )
    }

    /// Each invalid input of a new configuration with its problems, under its id, and what
    /// becomes of it: not started, or, if it runs, kept running on its previous block.
    fn log_invalid_inputs(&self, config: &Config) {
        for bad in &config.invalid_inputs {
            let id = bad.id.as_deref().unwrap_or("without a valid id");
            let fate = match bad
                .id
                .as_deref()
                .is_some_and(|id| self.tenants.contains_key(id))
            {
                true => "it keeps running on its previous configuration",
                false => "it is not started",
            };
            error!(
                "Input {id} ({}): {} problem(s) in its new configuration block; {fate}",
                bad.source,
                bad.problems.len()
            );
            for p in &bad.problems {
                error!("Configuration of input {id}: {p}");
            }
        }
    }

    /// Stops what the plan stops (all at once), then starts what it starts.
    async fn apply(&mut self, plan: &ReloadPlan, config: &Config) {
        for id in &plan.removed {
            info!("Input {id}: no longer in the configuration; stopping it");
        }
        for id in &plan.restarted {
            info!("Input {id}: its configuration changed; restarting it");
        }
        for id in &plan.added {
            info!("Input {id}: new in the configuration; starting it");
        }
        let stopping: Vec<Tenant> = plan
            .to_stop()
            .filter_map(|id| self.tenants.remove(id))
            .collect();
        let mut previous = BTreeMap::new();
        let stops = stopping.into_iter().map(|t| {
            previous.insert(t.block.input.id.clone(), t.block);
            let id = t.handle.id.clone();
            async move { (id, t.handle.stop().await) }
        });
        for (id, ok) in futures_util::future::join_all(stops).await {
            if !ok {
                error!("Input {id}: a service did not stop cleanly");
                self.stopped_ok = false;
            }
        }
        for id in plan.to_start() {
            let Some(block) = Block::of(config, id) else {
                continue;
            };
            self.start_or_fall_back(block, previous.remove(id));
        }
    }

    /// Starts `block`; if that fails, starts the block it replaced (`previous`) again.
    fn start_or_fall_back(&mut self, block: Block, previous: Option<Block>) {
        if self.cancel.is_cancelled() {
            return;
        }
        let id = block.input.id.clone();
        let e = match start_tenant(&block.input, &self.shared, &self.cancel) {
            Ok(handle) => return self.insert(block, handle),
            Err(e) => e,
        };
        error!("Input {id}: cannot start it: {e:#}");
        let Some(previous) = previous else { return };
        match start_tenant(&previous.input, &self.shared, &self.cancel) {
            Ok(handle) => {
                warn!("Input {id}: started again on its previous configuration");
                self.insert(previous, handle);
            }
            Err(e) => error!("Input {id}: cannot start its previous configuration either: {e:#}; it stays stopped until a reload"),
        }
    }
}

/// [`Loader::load`] on a blocking thread: with an `inputs_dir` of many tenants (and their key
/// files) it reads many files, and the tenants' tasks share the runtime's threads.
async fn load(loader: &Loader, now: DateTime<Utc>) -> Result<Loaded, Vec<String>> {
    let loader = loader.clone();
    match tokio::task::spawn_blocking(move || loader.load(now)).await {
        Ok(loaded) => loaded.map_err(|e| e.problems),
        Err(e) => Err(vec![format!("reading the configuration failed: {e}")]),
    }
}

/// What a reload does not apply, and what it applies through the tenants: a changed `globals`
/// key waits for a restart; a changed global output restarts the inputs that use it (their
/// fingerprints changed), but the internal messages keep going out as the process started.
fn log_changed_sections(old: &Value, new: &Value, config: &Config) {
    for key in reload::changed_keys(old, new, "globals") {
        warn!("Configuration reload: {key} changed; it takes effect at the next restart, the running value stays");
    }
    for key in reload::changed_keys(old, new, "outputs") {
        info!("Configuration reload: {key} changed; the inputs that use it restart with it");
        let name = key.trim_start_matches("outputs.");
        let carries_internal = config
            .outputs
            .iter()
            .any(|o| o.name == name && o.kind.internal_messages());
        if carries_internal {
            warn!("Configuration reload: {key} carries the internal messages; they keep its previous settings until the next restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::api::job_cap::JobCap;
    use crate::clock::SharedClock;
    use crate::metrics::Metrics;
    use crate::pipeline::budget::WindowBudget;
    use crate::state::StateStore;

    /// A config of one disabled input (`id`): a tenant that starts no task.
    fn config_text(id: &str, name: &str) -> String {
        format!(
            "globals: {{name: {name}, persistence: {{type: filesystem, config: {{directory_name: state}}}}}}\noutputs: {{local: {{type: file, config: {{directory: out}}}}}}\ninputs:\n  proofpoint_isolation:\n    id: {id}\n    enabled: false\n    credentials: {{api_key: aaaaaaaaaaaaaaaaaaaa}}\n"
        )
    }

    fn shared(dir: &Path) -> Shared {
        Shared {
            store: Arc::new(StateStore::filesystem(dir.join("state"))),
            metrics: Arc::new(Metrics::new()),
            shard: None,
            clock: SharedClock::for_process(),
            budget: WindowBudget::new(1 << 20, 1),
            jobs: JobCap::new(1),
            audit_jobs: JobCap::new(1),
            spool: crate::config::SpoolSettings::off(),
            audit_interval: None,
            options: Default::default(),
            senders: Default::default(),
        }
    }

    /// A config file whose every open gives the next of `texts` (a FIFO fed by a thread): a
    /// file that changes between two reads, at exactly the point the reader reads it again.
    /// Setting `stop` ends the thread before its next text (see [`release`]).
    fn changing_file(dir: &Path, texts: Vec<String>) -> (PathBuf, Writer) {
        let path = dir.join("config.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let stop = Arc::new(AtomicBool::new(false));
        let (fifo, stopped) = (path.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for text in texts {
                // Blocks until a reader opens the FIFO.
                let mut file = std::fs::File::options().write(true).open(&fifo).unwrap();
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                file.write_all(text.as_bytes()).unwrap();
                // The reader sees EOF once this end closes; the next text waits until the
                // reader closed its end, or it would read on into the next text.
                wait_for("the reader's open", || open_ends(&fifo) >= 2);
                drop(file);
                let stop = || stopped.load(Ordering::SeqCst);
                wait_for("the reader's close", || stop() || open_ends(&fifo) == 0);
            }
        });
        (path, Writer { thread, stop })
    }

    /// The FIFO's feeding thread.
    struct Writer {
        thread: std::thread::JoinHandle<()>,
        stop: Arc<AtomicBool>,
    }

    /// How many descriptors of this process have `path` open.
    fn open_ends(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to == path))
            .count()
    }

    /// Waits until `done`, for 10 s at most.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}: timed out");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Ends the FIFO's thread whether or not the code under test read every text: a reader
    /// opened now lets its pending open return, and it stops there.
    fn release(path: &Path, writer: Writer) {
        writer.stop.store(true, Ordering::SeqCst);
        let _reader = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        writer.thread.join().unwrap();
    }

    /// The daemon's audits take their jobs from their share of the process's cap (a quarter),
    /// so that a thousand services' audits never hold or queue the whole cap.
    #[test]
    fn the_daemons_audits_take_at_most_a_quarter_of_the_job_cap() {
        let dir = tempfile::tempdir().unwrap();
        let text = "globals: {name: n, persistence: {type: filesystem, config: {directory_name: state}}}\noutputs: {local: {type: file, config: {directory: out}}}\ninputs:\n  proofpoint_isolation:\n    id: 10001\n    credentials: {api_key: aaaaaaaaaaaaaaaaaaaa}\n    services:\n      url_isolation: {}\n";
        let now = SharedClock::for_process().now();
        let loaded = Loaded::parse(text, dir.path(), &|_| None, now).unwrap();
        let mut shared = shared(dir.path());
        shared.jobs = JobCap::new(8);
        shared.audit_jobs = super::super::tenant::audit_share(&shared.jobs, 8);
        shared.audit_interval = Some(std::time::Duration::from_secs(3600));
        let input = &loaded.config.inputs[0];
        let limiter = crate::api::limiter::input_limiter(&input.pacing.requests_limits);
        let audit =
            super::super::tenant::scheduled_audit(input, &limiter, &input.services[0], &shared)
                .expect("the daemon audits");
        let held: Vec<_> = (0..2).map(|_| audit.jobs.try_acquire().unwrap()).collect();
        assert!(audit.jobs.try_acquire().is_none(), "a quarter of 8 is 2");
        assert_eq!(shared.jobs.available(), 6, "the pullers keep the rest");
        drop(held);
    }

    /// A write between the reload's reads must not give it one file to compare and another to
    /// apply: what it keeps as the running configuration is what it started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_compares_and_applies_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let first = config_text("10001", "first");
        let now = SharedClock::for_process().now();
        let start = Loaded::parse(&first, dir.path(), &|_| None, now).unwrap();
        let cancel = CancellationToken::new();
        let mut supervisor =
            Supervisor::start(&start.config, start.written, shared(dir.path()), &cancel).unwrap();
        let (path, writer) = changing_file(
            dir.path(),
            vec![
                config_text("10002", "second"),
                config_text("10003", "third"),
            ],
        );
        let loader = Loader::new(path.clone(), crate::config::Env::from_fn(|_| None));
        let applied = supervisor.reload(&loader, Cause::Signal).await;
        release(&path, writer);
        assert!(applied, "the reload is applied");
        let kept = serde_yaml_ng::to_string(&supervisor.written).unwrap();
        let running: Vec<&String> = supervisor.tenants.keys().collect();
        assert_eq!(running.len(), 1);
        assert!(
            kept.contains(&format!("id: {}", running[0])),
            "the reload runs input {} but will compare the next reload with:\n{kept}",
            running[0]
        );
        cancel.cancel();
        assert!(supervisor.join().await);
    }
}
