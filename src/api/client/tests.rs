//! The client against the in-process simulator (the vendor's jobs on the real clock).

// Fixtures in real time: the simulator judges a job's latency on the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use chrono::Utc;
use isolation_sim::{Dataset, FaultTarget, RequestRecord, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

use super::ApiClient;
use crate::config::{KeyPlacement, ServiceConfig};
use crate::metrics::Metrics;
use crate::secret::ApiKey;
use crate::service::Service;

/// A client of `sim` with the default job polling (2 s first poll, 30 s longest gap).
fn client_of(sim: &SimHandle) -> ApiClient {
    let mut cfg = ServiceConfig::defaults(Service::BrowserAndEmailIsolation);
    cfg.base_url = url::Url::parse(&sim.base_url()).unwrap();
    let key = ApiKey::new(SimConfig::new(Dataset::Web).api_key);
    ApiClient::new(
        &cfg,
        key,
        KeyPlacement::BearerHeader,
        None,
        CancellationToken::new(),
    )
    .unwrap()
}

/// One job over the simulator's last day, created, polled and paged; returns its events.
async fn one_job(client: &mut ApiClient) -> usize {
    let to = Utc::now();
    let from = to - chrono::Duration::days(1);
    let job = client.create_job(from, to).await.unwrap();
    let mut events = 0;
    client
        .finish_job(job, |page| {
            events += page.events.len();
            true
        })
        .await
        .unwrap();
    events
}

/// The requests of the last job in `log`: from its creation on.
fn last_job(log: &[RequestRecord]) -> &[RequestRecord] {
    let created = log
        .iter()
        .rposition(|r| r.kind == Some(FaultTarget::Create))
        .expect("a job was created");
    &log[created..]
}

/// With jobs that take 3 s, the service learns that from its first job, and polls its second
/// one around the 3 s: the completing poll comes well within 1 s of the job being ready, with
/// few polls. (The fixed schedule polled at 2 s and 6 s: 3 s late.) The estimate is a gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_job_is_picked_up_soon_after_the_latency_learnt_from_the_first() {
    const LATENCY: Duration = Duration::from_secs(3);
    let mut sim_cfg = SimConfig::new(Dataset::Web);
    sim_cfg.events = 50;
    sim_cfg.pending_polls = 0;
    sim_cfg.job_latency = LATENCY;
    let sim = SimHandle::start(sim_cfg).await.unwrap();
    let mut client = client_of(&sim);
    let metrics = std::sync::Arc::new(Metrics::new());
    client.set_metrics(metrics.service("in", Service::BrowserAndEmailIsolation));
    assert_eq!(one_job(&mut client).await, 50);
    assert_eq!(one_job(&mut client).await, 50);

    let log = sim.request_log();
    let job = last_job(&log);
    let ready = job[0].at + chrono::Duration::from_std(LATENCY).unwrap();
    let polls = job
        .iter()
        .filter(|r| r.kind == Some(FaultTarget::Poll))
        .count();
    let picked_up = job
        .iter()
        .find(|r| r.kind == Some(FaultTarget::Page))
        .expect("the completing poll")
        .at;
    let late = (picked_up - ready).to_std().unwrap_or_default();
    assert!(
        late < Duration::from_secs(1),
        "picked up {late:?} after it was ready, after {polls} pending polls: {job:?}"
    );
    assert!(polls <= 4, "{polls} pending polls: {job:?}");

    let exposition = metrics.encode(0);
    let series = "isolation_collector_api_job_latency_estimate_seconds{input=\"in\",service=\"browser_and_email_isolation\"} ";
    let estimate: f64 = exposition
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("no estimate in:\n{exposition}"))
        .parse()
        .unwrap();
    assert!((2.5..=3.5).contains(&estimate), "{estimate}");
}
