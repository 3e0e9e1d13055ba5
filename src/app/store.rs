//! Where `run` keeps its state: the store a config names ([`crate::state::build`]), said and
//! checked at start.

use std::sync::Arc;

use tracing::{info, warn};

use crate::component::Healthcheck;
use crate::metrics::Metrics;
use crate::state::redis::RedisStore;
use crate::state::{StateError, StateStore};

/// Says where the state lives, then runs the store's health check: a refusal (credentials,
/// database) is fatal; an outage is not (logged once by the store; pulling waits for it).
pub(super) async fn open_store(
    store: &StateStore,
    health: Healthcheck<StateError>,
    metrics: &Arc<Metrics>,
) -> Result<(), StateError> {
    match store {
        StateStore::Filesystem { directory } => {
            info!("Persistence: filesystem, directory {}", directory.display());
            if let Some(w) = crate::state::directory_mode_warning(directory) {
                warn!("{w}");
            }
        }
        StateStore::Memory(_) => warn!("Persistence: memory only; nothing survives a restart."),
        StateStore::Redis(r) => {
            info!(
                "Persistence: Redis at {}, lease_ttl_in_seconds {}",
                r.address(),
                r.ttl().as_secs_f64()
            );
            r.report_to(metrics.clone());
        }
    }
    match health.await {
        Err(e) if !e.is_unavailable() => return Err(e),
        Err(_) => {}
        Ok(()) => {
            if let Some(r) = store.redis() {
                warn_about_durability(r).await;
                // Seen from the start: a wipe later on is then recognised as one.
                let _ = r.check_generation().await;
            }
        }
    }
    Ok(())
}

/// Says how Redis can lose the states (no persistence, an evicting policy), if it can.
pub(super) async fn warn_about_durability(store: &RedisStore) {
    // An outage here was said already (or is said by the next operation).
    for w in store.durability_warnings().await.unwrap_or_default() {
        warn!("{w}");
    }
}
