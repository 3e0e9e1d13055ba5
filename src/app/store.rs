//! Where `run` keeps its state: the store a config names, said and checked at start.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::{Config, Persistence};
use crate::metrics::Metrics;
use crate::state::redis::RedisStore;
use crate::state::{StateError, StateStore};

/// Builds the state store of a config (it connects to Redis at its first operation).
pub fn store_for(config: &Config, no_save_state: bool) -> Result<StateStore, StateError> {
    Ok(match (&config.globals.persistence, no_save_state) {
        (Persistence::Filesystem { directory }, false) => StateStore::filesystem(directory.clone()),
        (Persistence::Redis(r), false) => StateStore::Redis(Box::new(RedisStore::new(r)?)),
        _ => StateStore::memory(),
    })
}

/// Says where the state lives. With Redis, checks it answers: a refusal (credentials, database)
/// is fatal; an outage is not (logged once by the store; pulling waits for it).
pub(super) async fn open_store(store: &StateStore, metrics: &Arc<Metrics>) -> Result<(), StateError> {
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
            match r.check().await {
                Err(e) if !e.is_unavailable() => return Err(e),
                Err(_) => {}
                Ok(()) => {
                    warn_about_durability(r).await;
                    // Seen from the start: a wipe later on is then recognised as one.
                    let _ = r.check_generation().await;
                }
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
