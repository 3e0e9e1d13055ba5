//! The shutdown signals, the grace period's bound, and Devo's `[EXIT]` line.

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// When the first shutdown signal arrived, for the `[EXIT]` line.
static SIGNALLED_AT: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Waits for SIGINT or SIGTERM, cancels `token` (Devo's wording), and exits the process at once
/// on a second signal. Both waits listen on the same streams, installed once: a listener made
/// after the first signal would miss a second one sent before it existed (tokio hands a signal
/// only to the listeners alive when it arrives), and the process would wait out its grace.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let mut signals = ShutdownSignals::install();
    let (name, code) = signals.next().await;
    let _ = SIGNALLED_AT.set(std::time::Instant::now());
    warn!("Received the \"{name}\" system signal (code: {code}), all the processes will be gracefully stopped (a second signal stops at once)");
    token.cancel();
    let (name, _) = signals.next().await;
    error!("Received the \"{name}\" system signal again; exiting now without waiting.");
    std::process::exit(130);
}

/// Bounds a graceful shutdown: resolves `grace` after `token` is cancelled.
pub async fn grace_elapsed(token: CancellationToken, grace: std::time::Duration) {
    token.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// Devo's last line, when the process ends after a signal.
pub fn log_exit() {
    if let Some(at) = SIGNALLED_AT.get() {
        info!(
            "[EXIT] Process \"MainProcess\" completely terminated (elapsed time since the system signal was received: {:.3}s)",
            at.elapsed().as_secs_f64()
        );
    }
}

/// SIGINT and SIGTERM, listened to from [`ShutdownSignals::install`] on.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                term: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
                int: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// The next shutdown signal's name and number.
    async fn next(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => ("SIGINT", 2),
                _ = self.term.recv() => ("SIGTERM", 15),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            ("SIGINT", 2)
        }
    }
}
