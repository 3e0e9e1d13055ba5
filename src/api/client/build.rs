//! Building a service's API client from its config (the shape of [`crate::component`]): the
//! client, with the input's pacing, and its health check, the setup check.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ApiClient, BuildError, ClientStats, FetchError};
use crate::api::limiter::input_quota::InputQuota;
use crate::api::limiter::{InputLimiter, SharedLimits};
use crate::clock::SharedClock;
use crate::component::Healthcheck;
use crate::config::{InputConfig, ServiceConfig};
use crate::devo::log_lines;
use crate::state::StateStore;

/// What a service's API client is built with besides its config.
pub struct ApiContext<'a> {
    /// The input's `requests_limits` limiter, shared by its services (one API key).
    pub limiter: &'a InputLimiter,
    /// Where the input's request quota is counted with Redis persistence (by every replica).
    pub store: &'a Arc<StateStore>,
    /// Ends the client's waits (the service's, then each tenure's).
    pub cancel: CancellationToken,
    /// Dates the setup check's request.
    pub clock: SharedClock,
}

/// Builds the API client of `svc` of `input`, and its health check: the setup check
/// ([`ApiClient::setup_check`]) on the client's connections and pacing. The puller runs the same
/// check itself, retried and counted in `/ready`, before it pulls (`Puller::setup`).
pub fn build(
    input: &InputConfig,
    svc: &ServiceConfig,
    cx: ApiContext<'_>,
) -> Result<(ApiClient, Healthcheck<FetchError>), BuildError> {
    let quota = InputQuota::new(cx.store, &input.id, &input.pacing.requests_limits);
    let client = ApiClient::new(
        svc,
        input.api_key.clone(),
        input.key_placement,
        input.request_interval(svc),
        cx.cancel,
    )?
    .with_limits(SharedLimits::for_service(cx.limiter, svc).counted_in(quota));
    let mut probe = client.probe();
    let clock = cx.clock;
    let health = Box::pin(async move { probe.setup_check(clock.now(), |_| {}).await });
    Ok((client, health))
}

impl ApiClient {
    /// The setup check ("Making sample request to test authentication."): one small job
    /// creation over the minute before `now`, between Devo's lines. `answered` hears the API's
    /// answer (a cancellation is none) before the success line is said.
    pub async fn setup_check(
        &mut self,
        now: DateTime<Utc>,
        answered: impl FnOnce(&Result<(), FetchError>),
    ) -> Result<(), FetchError> {
        log_lines::setup_started();
        let result = self.check_auth(now).await;
        if !matches!(result, Err(FetchError::Cancelled)) {
            answered(&result);
        }
        result?;
        log_lines::setup_succeeded();
        Ok(())
    }

    /// A client on the same connections, pacing and counters, with statistics of its own.
    fn probe(&self) -> ApiClient {
        ApiClient {
            http: self.http.clone(),
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            placement: self.placement,
            cfg: self.cfg.clone(),
            min_interval: self.min_interval,
            next_request: Instant::now(),
            limits: self.limits.clone(),
            stats: ClientStats::default(),
            job_wait: std::time::Duration::ZERO,
            job_latency: self.job_latency,
            cancel: self.cancel.clone(),
            metrics: self.metrics.clone(),
        }
    }
}
