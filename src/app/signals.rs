//! The shutdown signals, the grace period's bound, and Devo's `[EXIT]` line.

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// When the first shutdown signal arrived, for the `[EXIT]` line.
static SIGNALLED_AT: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Waits for SIGINT or SIGTERM, cancels `token` (Devo's wording), and exits the process at once
/// on a second signal.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let (name, code) = wait_for_signal().await;
    let _ = SIGNALLED_AT.set(std::time::Instant::now());
    warn!("Received the \"{name}\" system signal (code: {code}), all the processes will be gracefully stopped (a second signal stops at once)");
    token.cancel();
    let (name, _) = wait_for_signal().await;
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

async fn wait_for_signal() -> (&'static str, i32) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = int.recv() => ("SIGINT", 2),
            _ = term.recv() => ("SIGTERM", 15),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ("SIGINT", 2)
    }
}
