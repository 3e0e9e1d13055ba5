//! Health-aware sharding (issue 21 §1): a replica that is alive (it heartbeats) but cannot work
//! (its API is unreachable) must not keep the services from the replica that can.
//!
//! Two `run` processes with one real redis-server, as in `ha`, but each with its own config:
//! each reaches the simulators through its own [`Forwarder`] (a tiny TCP forwarder the test can
//! cut: the listener closes and open connections drop, so every connection is refused, as from a
//! host whose egress broke), or through a closed port from the start. The shared file output
//! must end exact, and a service that nobody pulls must show on `/ready` and in
//! `isolation_collector_service_unpulled` on every replica.

// Real time throughout: leases expire on Redis's clock, the simulator runs on the real one.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::ha::{ms, write_ha_config, Ha, Replica, SERVICES, URL, WEB};
use crate::support::*;

/// A TCP forwarder from a local port to `target`, which the test can cut and heal.
struct Forwarder {
    address: String,
    target: String,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Forwarder {
    async fn start(target: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut f = Forwarder {
            address: listener.local_addr().unwrap().to_string(),
            target: target.to_owned(),
            accept: None,
            connections: Arc::default(),
        };
        f.serve(listener);
        f
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, connections) = (self.target.clone(), self.connections.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(pipe.abort_handle());
            }
        }));
    }

    /// Closes the listener and drops every open connection: connections are refused from now.
    async fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port.
    async fn heal(&mut self) {
        let listener = Wait::new(
            format!("rebinding {}", self.address),
            Duration::from_secs(10),
        )
        .until_async(async || TcpListener::bind(&self.address).await)
        .await;
        self.serve(listener);
    }
}

/// The simulator's `host:port` behind `base` (`http://host:port`).
fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Writes a copy of the pair's config in which the two services' API base URLs are `web` and
/// `url` (each `host:port`), for replica `name`.
fn config_via(ha: &Ha, name: &str, web: &str, url: &str) -> PathBuf {
    let text = std::fs::read_to_string(ha.env.config_path()).unwrap();
    let (web_base, url_base) = (ha.env.web.base_url(), ha.env.url.base_url());
    assert!(
        text.contains(&web_base) && text.contains(&url_base),
        "{text}"
    );
    let text = text
        .replace(&web_base, &format!("http://{web}"))
        .replace(&url_base, &format!("http://{url}"));
    let path = ha.env.path(&format!("config-{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Replica `name` reaching the simulators through two new forwarders (web's, url's).
async fn behind_forwarders(ha: &Ha, name: &'static str) -> (Replica, [Forwarder; 2]) {
    let web = Forwarder::start(host_port(&ha.env.web.base_url())).await;
    let url = Forwarder::start(host_port(&ha.env.url.base_url())).await;
    let config = config_via(ha, name, &web.address, &url.address);
    (Replica::of(name, &config, ha.env.dir.path()), [web, url])
}

/// The pair: 8,000 events per service, pages of 250 every 60 ms, windows of 1,000 events (a
/// backfill of a few seconds), lease TTL 2 s.
async fn pair(persistence_extra: &str) -> Ha {
    let mut ha = Ha::new(
        8_000,
        |c| {
            c.shuffle = true;
            c.page_latency = ms(60);
        },
        "page_size: 250\nmax_events_per_window: 1000",
        2,
    )
    .await;
    if !persistence_extra.is_empty() {
        ha.env.persistence = Some(ha.redis.persistence_yaml(2, persistence_extra));
        write_ha_config(&ha.env);
    }
    ha
}

/// Waits (up to `limit`) until replica `r` holds both services' leases.
async fn holds_both(ha: &Ha, r: usize, limit: Duration) {
    Wait::new(format!("{} to hold both leases", ["a", "b"][r]), limit)
        .showing(|| format!("logs:\n{}", ha.logs()))
        .until_async(async || {
            let mut both = true;
            for s in SERVICES {
                both &= ha.replicas[r].holds(s).await;
            }
            match both {
                true => Ok(()),
                false => Err(ha.progress()),
            }
        })
        .await;
}

/// One replica's API address is a closed port from the start: its setup fails forever, but it
/// heartbeats. The healthy one must pull both services (it is the only replica able to), and
/// the file output is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_api_leaves_both_services_to_the_healthy_one() {
    let mut ha = pair("").await;
    let dead = format!("127.0.0.1:{}", free_port());
    let config = config_via(&ha, "b", &dead, &dead);
    ha.replicas[1] = Replica::of("b", &config, ha.env.dir.path());
    // The broken replica first, so that the healthy one finds it live from its first heartbeat.
    ha.replicas[1].start();
    ha.wait_for("b never failed its setup", Duration::from_secs(20), |ha| {
        ha.replicas[1].log().contains("Setup failed")
    })
    .await;
    let started = Instant::now();
    ha.replicas[0].start();
    holds_both(&ha, 0, Duration::from_secs(15)).await;
    let both_held = started.elapsed();
    ha.wait_until_complete(Duration::from_secs(30)).await;
    let complete = started.elapsed();
    ha.stop_all().await;
    ha.env.assert_exactly_once();
    eprintln!(
        "dead API on b: a held both leases {:.1} s after it started, the backfill was complete after {:.1} s",
        both_held.as_secs_f64(),
        complete.as_secs_f64()
    );
}

/// The holder of both services loses the API mid-backfill (its forwarders are cut; Redis still
/// answers it, so it keeps renewing). Its cycles fail; after three in a row it hands its leases
/// over to the healthy replica, which finishes the backfill; the file output is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_cut_from_the_api_mid_backfill_hands_its_leases_over() {
    let mut ha = pair("").await;
    let (a, mut a_api) = behind_forwarders(&ha, "a").await;
    let (b, _b_api) = behind_forwarders(&ha, "b").await;
    ha.replicas = [a, b];
    ha.replicas[0].start();
    holds_both(&ha, 0, Duration::from_secs(15)).await;
    ha.replicas[1].start();
    // b is live (it stands by for both) before a is cut.
    let started = Instant::now();
    ha.wait_for("b to stand by", Duration::from_secs(20), |ha| {
        ha.replicas[1].log().matches("; standing by.").count() >= 2
    })
    .await;
    // Mid-backfill: both services delivered some windows, not all (within the same 20 s).
    let left = Duration::from_secs(20).saturating_sub(started.elapsed());
    ha.wait_for("something delivered", left, |ha| {
        ha.delivered(WEB) > 0 && ha.delivered(URL) > 0
    })
    .await;
    assert!(
        !ha.complete(),
        "the backfill ended before the cut: make it longer"
    );
    let before_cut = (ha.delivered(WEB), ha.delivered(URL));
    for f in &mut a_api {
        f.cut().await;
    }
    let cut = Instant::now();
    holds_both(&ha, 1, Duration::from_secs(30)).await;
    let taken_over = cut.elapsed();
    ha.wait_until_complete(Duration::from_secs(30)).await;
    let complete = cut.elapsed();
    ha.stop_all().await;
    ha.env.assert_exactly_once();
    eprintln!(
        "holder cut from the API after {before_cut:?} events: b held both leases {:.1} s after the cut, the backfill was complete {:.1} s after it",
        taken_over.as_secs_f64(),
        complete.as_secs_f64()
    );
}

/// `/ready` of replica `r`, and its `service_unpulled` gauge for `service`.
/// Waits (at most 40 s) until each replica's `/ready` and url_isolation's `service_unpulled`
/// gauge satisfy `ok`.
async fn wait_for_url_isolation(
    ha: &Ha,
    what: &str,
    ok: impl Fn(Option<&(u16, String)>, Option<f64>) -> bool,
) {
    Wait::new(what, Duration::from_secs(40))
        .every(ms(100))
        .showing(|| format!("logs:\n{}", ha.logs()))
        .until_async(async || {
            let mut all = true;
            let mut said = Vec::new();
            for r in 0..2 {
                let (ready, gauge) = unpulled(ha, r, URL).await;
                all &= ok(ready.as_ref(), gauge);
                said.push(format!("{} says {:?}", ["a", "b"][r], (ready, gauge)));
            }
            if all {
                Ok(())
            } else {
                Err(said.join(", "))
            }
        })
        .await;
}

async fn unpulled(ha: &Ha, r: usize, service: &str) -> (Option<(u16, String)>, Option<f64>) {
    let series =
        format!("isolation_collector_service_unpulled{{input=\"10001\",service=\"{service}\"}}");
    let gauge = ha.replicas[r]
        .scrape()
        .await
        .and_then(|text| metric(&text, &series));
    (ha.replicas[r].ready().await, gauge)
}

/// Nobody can pull url_isolation (both replicas are cut from its API after a start): past
/// `unpulled_after_in_seconds` (3 s) every replica's `/ready` fails naming it, and its
/// `service_unpulled` gauge is 1 (0 for the other service). Healed, it is pulled again: `/ready`
/// 200, the gauge 0, and the file output exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_nobody_pulls_fails_ready_on_every_replica() {
    let mut ha = pair("      unpulled_after_in_seconds: 3\n").await;
    let (a, mut a_api) = behind_forwarders(&ha, "a").await;
    let (b, mut b_api) = behind_forwarders(&ha, "b").await;
    ha.replicas = [a, b];
    for r in &mut ha.replicas {
        r.start();
    }
    for s in SERVICES {
        ha.holder(s).await;
    }
    a_api[1].cut().await;
    b_api[1].cut().await;
    let cut = Instant::now();
    wait_for_url_isolation(
        &ha,
        "url_isolation unpulled on both, after both were cut from its API",
        |ready, gauge| {
            let named = ready.is_some_and(|(status, body)| {
                *status == 503 && body.contains("url_isolation") && body.contains("unpulled")
            });
            named && gauge == Some(1.0)
        },
    )
    .await;
    let flagged = cut.elapsed();
    for r in 0..2 {
        let (_, web) = unpulled(&ha, r, WEB).await;
        assert_eq!(web, Some(0.0), "web is pulled: {}", ha.logs());
    }
    a_api[1].heal().await;
    b_api[1].heal().await;
    let healed = Instant::now();
    wait_for_url_isolation(
        &ha,
        "url_isolation pulled again after the heal",
        |ready, gauge| ready.is_some_and(|(status, _)| *status == 200) && gauge == Some(0.0),
    )
    .await;
    let cleared = healed.elapsed();
    ha.wait_until_complete(Duration::from_secs(30)).await;
    ha.stop_all().await;
    ha.env.assert_exactly_once();
    eprintln!(
        "nobody pulls url_isolation: both replicas' /ready failed {:.1} s after the cut (bound 3 s), and cleared {:.1} s after the heal",
        flagged.as_secs_f64(),
        cleared.as_secs_f64()
    );
}
