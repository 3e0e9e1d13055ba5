//! Reload without restart: what asks for one, and what a reload changes.
//!
//! Two things ask the daemon to read its configuration again: SIGHUP ([`listen_for_sighup`])
//! and, with `run --watch-config`, a change of the configuration's bytes ([`watch`]: the config
//! file and the files of its `inputs_dir`, polled every [`WATCH_PERIOD`]). Both go through one
//! [`Trigger`] into one [`Requests`] queue of length one: requests that arrive while one is
//! pending fold into it (the pending reload reads the newest files anyway). The supervisor in
//! `app` takes them one at a time, so two reloads never overlap.
//!
//! A reload loads and validates the new file through the same [`Loader`] as the start, which
//! reads the bytes once: what [`changed_keys`] compares and what [`plan`] applies come from the
//! same read (`config::Loaded`). Problems outside the input blocks refuse it whole: the running configuration stays. Otherwise
//! [`plan`] compares the running tenants' fingerprints with the new valid inputs, per input id:
//! added ones start, removed ones stop, changed ones restart, unchanged ones are not touched,
//! and a running tenant whose new block is invalid keeps running on its old block.
//! [`changed_keys`] names the `globals` keys that changed: they take effect at the next
//! restart only (the store, the listener and the budgets live as long as the process).
//!
//! This module is pure logic and plumbing; the supervisor that applies a plan is in `app`.

mod plan;
mod watch;

pub use plan::{changed_keys, plan, Fingerprint, ReloadPlan};
pub use watch::{digest, watch, Digest, WATCH_PERIOD};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Loader;

/// Why a reload was asked for (said in its first log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// SIGHUP.
    Signal,
    /// `--watch-config` saw the configuration's bytes change.
    FileChanged,
}

impl Cause {
    /// The reason as the reload's first log line says it.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Signal => "SIGHUP",
            Cause::FileChanged => "the configuration changed (--watch-config)",
        }
    }
}

/// Asks for a reload; cloned by each source.
#[derive(Clone, Debug)]
pub struct Trigger {
    sender: mpsc::Sender<Cause>,
}

/// The reload requests, in order; a request that arrives while another is pending is folded
/// into it.
#[derive(Debug)]
pub struct Requests {
    receiver: mpsc::Receiver<Cause>,
}

/// A trigger and the queue it feeds.
pub fn channel() -> (Trigger, Requests) {
    // One slot: a pending reload reads the files when it runs, so a second request adds nothing.
    let (sender, receiver) = mpsc::channel(1);
    (Trigger { sender }, Requests { receiver })
}

impl Trigger {
    /// Asks for a reload unless one is already pending.
    pub fn request(&self, cause: Cause) {
        // Full: one is pending and will read the newest files. Closed: the daemon is stopping.
        let _ = self.sender.try_send(cause);
    }
}

impl Requests {
    /// The next request; `None` once every trigger is gone.
    pub async fn next(&mut self) -> Option<Cause> {
        self.receiver.recv().await
    }
}

/// Where a daemon's reloads come from (handed to `app::run_collector`).
#[derive(Debug)]
pub struct Source {
    /// The loader of the start (the config file as resolved then, and the environment): every
    /// reload loads through it, and the watcher watches what it reads.
    pub loader: Loader,
    pub requests: Requests,
    /// `--watch-config`: the trigger the watcher pulls, and the digest of the configuration
    /// taken before the running one was loaded.
    pub watch: Option<(Trigger, Digest)>,
}

/// The reload source of a daemon started from `loader`'s file, and the SIGHUP task (which the caller
/// spawns for the life of the process, like the shutdown signal's). Call it before the config
/// is loaded: from then on SIGHUP no longer ends the process, and a change made while it loads
/// is seen by the watcher.
pub fn source(
    loader: Loader,
    watch_config: bool,
) -> std::io::Result<(
    Source,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let (trigger, requests) = channel();
    let watch = watch_config.then(|| (trigger.clone(), digest(&loader)));
    let hangups = listen_for_sighup(trigger)?;
    let source = Source {
        loader,
        requests,
        watch,
    };
    Ok((source, hangups))
}

/// Installs the SIGHUP handler now (from then on SIGHUP no longer ends the process) and returns
/// the task that turns each SIGHUP into a reload request. It does not touch SIGINT and SIGTERM,
/// which `app::shutdown_on_signal` handles with its own streams.
#[cfg(unix)]
pub fn listen_for_sighup(
    trigger: Trigger,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            info!("Received the \"SIGHUP\" system signal (code: 1), the configuration will be read again");
            trigger.request(Cause::Signal);
        }
    })
}

/// Without Unix signals there is no SIGHUP: only `--watch-config` reloads.
#[cfg(not(unix))]
pub fn listen_for_sighup(
    trigger: Trigger,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async move {
        let _keep = trigger;
        std::future::pending::<()>().await
    })
}

/// Logs a refused reload: the summary line, then each problem, as a start logs them.
pub fn log_refused(problems: &[String]) {
    warn!(
        "Configuration reload refused: {} problem(s); the running configuration stays",
        problems.len()
    );
    for p in problems {
        tracing::error!("Configuration reload: {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_arriving_while_one_is_pending_fold_into_it() {
        let (trigger, mut requests) = channel();
        trigger.request(Cause::Signal);
        trigger.request(Cause::FileChanged);
        trigger.clone().request(Cause::Signal);
        assert_eq!(requests.next().await, Some(Cause::Signal));
        // Nothing else pending: the next request is a new one.
        trigger.request(Cause::FileChanged);
        assert_eq!(requests.next().await, Some(Cause::FileChanged));
        drop(trigger);
        assert_eq!(requests.next().await, None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_asks_for_a_reload_and_does_not_end_the_process() {
        let (trigger, mut requests) = channel();
        let listener = listen_for_sighup(trigger).unwrap();
        let task = tokio::spawn(listener);
        // SIGHUP to this test process: with the handler installed it is only a request.
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), requests.next()).await;
        assert_eq!(got, Ok(Some(Cause::Signal)));
        task.abort();
    }
}
