//! `validate`: the outputs, the state store and each service's API key, each checked once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

use super::service_task::log_connection;
use super::store::warn_about_durability;
use crate::api::client::{self, ApiContext};
use crate::api::limiter::input_limiter;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::logging;
use crate::state::StateStore;

/// `validate`: the outputs each valid input uses reachable, the state store, then each enabled
/// service's authentication: the health check of each part (see [`crate::component`]), none of
/// the parts run. With several inputs, each line names the input(s) it is about.
pub async fn validate(config: &Config, clock: &SharedClock) -> bool {
    let mut ok = crate::app::outputs::validate(config, clock).await;
    ok &= validate_persistence(config).await;
    ok &= validate_api(config, clock).await;
    ok
}

/// `validate`: each enabled service's setup check (the API accepts its key through its route).
async fn validate_api(config: &Config, clock: &SharedClock) -> bool {
    let mut ok = true;
    // The few requests of the checks count against a quota of their own, not the live one.
    let store = Arc::new(StateStore::memory());
    let mut limiters = std::collections::HashMap::new();
    for (input, svc) in config.services() {
        let limiter = limiters
            .entry(input.id.clone())
            .or_insert_with(|| input_limiter(&input.pacing.requests_limits));
        let span = logging::setup_span(&input.name, &input.id, svc.service);
        span.in_scope(|| log_connection(svc));
        let cx = ApiContext {
            limiter,
            store: &store,
            cancel: CancellationToken::new(),
            clock: clock.clone(),
        };
        let result = match client::build(input, svc, cx) {
            Ok((_client, setup_check)) => setup_check
                .instrument(span.clone())
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        if let Err(e) = result {
            span.in_scope(|| error!("Input {}, service {}: {e:#}", input.id, svc.service));
            ok = false;
        }
    }
    ok
}

/// `validate`: with Redis persistence, that it answers and accepts the credentials (the store's
/// health check), and how it can lose the states.
async fn validate_persistence(config: &Config) -> bool {
    let checked = match crate::state::build(&config.globals.persistence, false) {
        Ok((store, health)) => health.await.map(|()| store),
        Err(e) => Err(e),
    };
    let store = match checked {
        Ok(store) => store,
        Err(e) => {
            error!("Persistence: {e}");
            return false;
        }
    };
    if let Some(redis) = store.redis() {
        match redis.master() {
            Some(master) => info!(
                "Redis at {} answers: the sentinels name {master} as the master.",
                redis.address()
            ),
            None => info!("Redis at {} answers.", redis.address()),
        }
        warn_about_durability(redis).await;
    }
    true
}
