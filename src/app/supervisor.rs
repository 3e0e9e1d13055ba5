//! The daemon's tenants over its life: started from the config, then changed by reloads.
//!
//! [`crate::reload`] says what asks for a reload (SIGHUP, `--watch-config`) and computes its
//! plan; the [`Supervisor`] applies it. It holds every running tenant's [`TenantHandle`] with
//! the input block it was started from, and waits for a reload request or the shutdown. A
//! reload loads and validates the file again (`Config::load`, as at start); a refused one
//! changes nothing. An accepted one first stops the removed and changed tenants, concurrently
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
use std::path::Path;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::tenant::{start_tenant, Shared, TenantHandle};
use crate::config::{Config, InputConfig};
use crate::reload::{self, Cause, ReloadPlan};

/// The running tenants and what a reload needs to change them.
pub(super) struct Supervisor {
    shared: Shared,
    cancel: CancellationToken,
    /// Every valid input of the running configuration, by id (a disabled one has no tasks).
    tenants: BTreeMap<String, Tenant>,
    /// Whether every tenant stopped by a reload stopped cleanly.
    stopped_ok: bool,
}

/// A running tenant and the block it was started from (started again if its new block fails
/// to start).
struct Tenant {
    input: InputConfig,
    handle: TenantHandle,
}

impl Supervisor {
    /// Starts every valid input of `config`.
    pub(super) fn start(
        config: &Config,
        shared: Shared,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Supervisor> {
        let mut supervisor = Supervisor {
            shared,
            cancel: cancel.clone(),
            tenants: BTreeMap::new(),
            stopped_ok: true,
        };
        for input in &config.inputs {
            let handle = start_tenant(input, &supervisor.shared, cancel)?;
            supervisor.insert(input, handle);
        }
        Ok(supervisor)
    }

    fn insert(&mut self, input: &InputConfig, handle: TenantHandle) {
        let tenant = Tenant {
            input: input.clone(),
            handle,
        };
        self.tenants.insert(input.id.clone(), tenant);
    }

    /// Applies each reload request of `source` until the shutdown (without a source, `--once`
    /// or the demo, only waits for the tenants), then waits for every tenant. `true` when every
    /// tenant stopped cleanly (and, with `--once`, delivered everything).
    pub(super) async fn reload_until_shutdown(mut self, source: Option<reload::Source>) -> bool {
        if let Some(mut source) = source {
            let mut text = read_text(&source.path);
            loop {
                let cause = tokio::select! {
                    () = self.cancel.cancelled() => break,
                    request = source.requests.next() => request,
                };
                let Some(cause) = cause else { break };
                if let Some(new_text) = self.reload(&source.path, &text, cause).await {
                    text = new_text;
                }
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

    /// One reload of the file at `path` (`text`: the running configuration's). Returns the new
    /// text when the reload was applied.
    async fn reload(&mut self, path: &Path, text: &str, cause: Cause) -> Option<String> {
        info!(
            "Reading the configuration again from {} ({})",
            path.display(),
            cause.describe()
        );
        let new_text = read_text(path);
        let config = match load(path, self.shared.clock.now()).await {
            Ok(config) => config,
            Err(problems) => {
                reload::log_refused(&problems);
                return None;
            }
        };
        if self.shared.options.strict && !config.invalid_inputs.is_empty() {
            let problems = config
                .invalid_inputs
                .iter()
                .flat_map(|i| i.problems.clone());
            reload::log_refused(&problems.collect::<Vec<_>>());
            warn!("run --strict: a configuration with an invalid input is refused; fix it, or run without --strict");
            return None;
        }
        super::log_warnings(&config);
        log_changed_sections(text, &new_text, &config);
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
        Some(new_text)
    }

    /// How many services run now (the window budget's sharers; with sharding, the services
    /// the replicas share).
    fn services(&self) -> usize {
        self.tenants
            .values()
            .filter(|t| t.input.enabled)
            .map(|t| t.input.services.len())
            .sum()
    }

    /// What the new configuration changes, per input id.
    fn plan(&self, config: &Config) -> ReloadPlan {
        let running = self
            .tenants
            .iter()
            .map(|(id, t)| (id.clone(), t.handle.fingerprint))
            .collect();
        reload::plan(
            &running,
            config.inputs.iter().map(|i| (i.id.as_str(), i.fingerprint)),
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
            previous.insert(t.input.id.clone(), t.input);
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
            let Some(input) = config.input(id) else {
                continue;
            };
            self.start_or_fall_back(input, previous.remove(id));
        }
    }

    /// Starts `input`; if that fails, starts the block it replaced (`previous`) again.
    fn start_or_fall_back(&mut self, input: &InputConfig, previous: Option<InputConfig>) {
        if self.cancel.is_cancelled() {
            return;
        }
        let e = match start_tenant(input, &self.shared, &self.cancel) {
            Ok(handle) => return self.insert(input, handle),
            Err(e) => e,
        };
        error!("Input {}: cannot start it: {e:#}", input.id);
        let Some(previous) = previous else { return };
        match start_tenant(&previous, &self.shared, &self.cancel) {
            Ok(handle) => {
                warn!("Input {}: started again on its previous configuration", input.id);
                self.insert(&previous, handle);
            }
            Err(e) => error!("Input {}: cannot start its previous configuration either: {e:#}; it stays stopped until a reload", input.id),
        }
    }
}

/// `Config::load` on a blocking thread: with an `inputs_dir` of many tenants (and their key
/// files) it reads many files, and the tenants' tasks share the runtime's threads.
async fn load(path: &Path, now: DateTime<Utc>) -> Result<Config, Vec<String>> {
    let path = path.to_owned();
    match tokio::task::spawn_blocking(move || Config::load(&path, now)).await {
        Ok(loaded) => loaded.map_err(|e| e.problems),
        Err(e) => Err(vec![format!("reading the configuration failed: {e}")]),
    }
}

/// The config file's text; empty when unreadable (the load then fails and says why).
fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// What a reload does not apply, and what it applies through the tenants: a changed `globals`
/// key waits for a restart; a changed global output restarts the inputs that use it (their
/// fingerprints changed), but the internal messages keep going out as the process started.
fn log_changed_sections(old_text: &str, new_text: &str, config: &Config) {
    for key in reload::changed_keys(old_text, new_text, "globals") {
        warn!("Configuration reload: {key} changed; it takes effect at the next restart, the running value stays");
    }
    for key in reload::changed_keys(old_text, new_text, "outputs") {
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
