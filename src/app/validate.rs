//! `validate`: the outputs, the state store and each service's API key, each checked once.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

use super::outputs::{distinct_outputs, validate_outputs};
use super::service_task::log_connection;
use super::store::warn_about_durability;
use crate::clock::SharedClock;
use crate::config::{Config, Persistence};
use crate::isolation::limiter::input_limiter;
use crate::isolation::puller::Puller;
use crate::state::redis::RedisStore;
use crate::state::StateStore;
use crate::telemetry;

/// `validate`: the outputs each valid input uses reachable, then each enabled service's
/// authentication. With several inputs, each line names the input(s) it is about.
pub async fn validate(config: &Config, clock: &SharedClock) -> bool {
    let mut ok = true;
    for (outputs, ids) in distinct_outputs(config) {
        let whose = match config.multi_tenant {
            true => format!(" (input {})", ids.join(", ")),
            false => String::new(),
        };
        ok &= validate_outputs(outputs, &whose, clock).await;
    }
    ok &= validate_persistence(config).await;
    let store = Arc::new(StateStore::memory());
    let mut limiters = std::collections::HashMap::new();
    for (input, svc) in config.services() {
        let input_limiter = limiters
            .entry(input.id.clone())
            .or_insert_with(|| input_limiter(&input.pacing.requests_limits))
            .clone();
        let span = telemetry::setup_span(&input.name, &input.id, svc.service);
        span.in_scope(|| log_connection(svc));
        let result = async {
            let mut puller = Puller::new(
                input,
                &input_limiter,
                svc.clone(),
                Vec::new(),
                store.clone(),
                CancellationToken::new(),
                clock.clone(),
            )?;
            puller.setup().await.map_err(anyhow::Error::from)
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = result {
            span.in_scope(|| error!("Input {}, service {}: {e:#}", input.id, svc.service));
            ok = false;
        }
    }
    ok
}

/// `validate`: with Redis persistence, that it answers and accepts the credentials (connect,
/// `AUTH`, `SELECT` the database, `PING`).
async fn validate_persistence(config: &Config) -> bool {
    let Persistence::Redis(r) = &config.globals.persistence else {
        return true;
    };
    match RedisStore::new(r) {
        Ok(store) => match store.check().await {
            Ok(()) => {
                match store.master() {
                    Some(master) => info!(
                        "Redis at {} answers: the sentinels name {master} as the master.",
                        store.address()
                    ),
                    None => info!("Redis at {} answers.", store.address()),
                }
                warn_about_durability(&store).await;
                true
            }
            Err(e) => {
                error!("Persistence: {e}");
                false
            }
        },
        Err(e) => {
            error!("Persistence: {e}");
            false
        }
    }
}
