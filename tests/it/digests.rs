//! The sealed per-hour digests (`state::digests`) in a real redis-server: written only under
//! the service's lease, one entry per (hour, seal id) so that sealing twice counts once, read
//! back as the hour's digest with the pending one, and expiring after the retention.

use std::time::Duration;

use isolation_collector::pipeline::ledger::sketch::element_id;
use isolation_collector::pipeline::ledger::{AuditLedger, HOUR_MS};
use isolation_collector::state::redis::{RedisStore, KEEP_DIGESTS};
use isolation_collector::state::StateStore;

const KEY: &str = "proofpoint_isolation_1_url_isolation";
const T0: i64 = 1_780_000_000_000 / HOUR_MS * HOUR_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_sealed_digests_under_the_lease_once_per_seal() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = crate::redis_server::RedisServer::start(&tmp, "redis").await;
    let config = redis.config("t:", Duration::from_secs(30));
    let store = StateStore::Redis(Box::new(RedisStore::new(&config).unwrap()));
    let r = store.redis().unwrap();
    let holder = "host-a:1:01";
    assert!(r.take(KEY, holder).await.unwrap().done);

    let mut ledger = AuditLedger::tracking_from(T0);
    for i in 0..10u8 {
        ledger.record_copy(T0 + i64::from(i), &[i; 32], 1);
    }
    let sealed = ledger.pending_before(T0 + HOUR_MS);
    assert_eq!(sealed.len(), 1);

    // Another holder's token: refused, naming the holder; nothing written.
    let refused = store
        .seal_digests(KEY, &sealed, Some("host-b:2:02"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains(holder), "{refused}");
    assert!(store.sealed_digests(KEY, T0).await.unwrap().is_empty());

    // Under the lease; twice (a crash before the state dropped it): one entry.
    store
        .seal_digests(KEY, &sealed, Some(holder))
        .await
        .unwrap();
    store
        .seal_digests(KEY, &sealed, Some(holder))
        .await
        .unwrap();
    assert_eq!(store.sealed_digests(KEY, T0).await.unwrap().len(), 1);
    // The state still holding it pending (the crash) does not count it twice.
    let digest = store.delivered_digest(KEY, &ledger, T0).await.unwrap();
    assert_eq!(digest.elements(), 10);
    // Sealed, then a late copy: a new pending part, summed with the sealed one.
    ledger.sealed(T0, sealed[0].1.seal);
    ledger.record_copy(T0 + 99, &[1; 32], 2);
    let digest = store.delivered_digest(KEY, &ledger, T0).await.unwrap();
    assert_eq!(digest.elements(), 11);
    let mut only_late = digest.clone();
    only_late.subtract(&sealed[0].1.sketch);
    let found = only_late.decode().unwrap();
    assert_eq!(found.left_only, vec![element_id(T0 + 99, &[1; 32], 2)]);

    // The day's hash expires after the retention (and a day).
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", redis.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let day = r.digests_key(KEY, &isolation_collector::timestamp::format_iso(T0)[..10]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&day)
        .query_async(&mut c)
        .await
        .unwrap();
    let keep = KEEP_DIGESTS.as_millis() as i64;
    assert!(ttl > keep - 60_000 && ttl <= keep, "{ttl}");
    // What a day of 24 sealed hours costs in Redis (printed for the module doc's figures).
    let midnight = T0 - T0.rem_euclid(24 * HOUR_MS);
    let day_ledger = {
        let mut l = AuditLedger::tracking_from(midnight);
        for h in 0..24 {
            for i in 0..100u8 {
                l.record_copy(midnight + h * HOUR_MS + i64::from(i), &[i; 32], 1);
            }
        }
        l
    };
    let whole_day = day_ledger.pending_before(midnight + 24 * HOUR_MS);
    assert_eq!(whole_day.len(), 24);
    let other = "proofpoint_isolation_2_url_isolation";
    assert!(r.take(other, holder).await.unwrap().done);
    store
        .seal_digests(other, &whole_day, Some(holder))
        .await
        .unwrap();
    let day = r.digests_key(
        other,
        &isolation_collector::timestamp::format_iso(midnight)[..10],
    );
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&day)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    println!("Redis: a day of 24 sealed digests takes {bytes} bytes (MEMORY USAGE)");
    assert!(bytes > 24 * 944, "{bytes}");
}

/// The repair on a Redis state: refused while another process holds the service's lease
/// (naming it, saying to stop it); under its own lease, it delivers exactly the events the
/// hour's sealed digest lacks, once, and a second repair nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_on_redis_takes_the_lease_and_delivers_only_what_lacks() {
    use isolation_collector::audit::repair::{repair, HourToRepair, RepairError};
    use isolation_collector::clock::SharedClock;
    use isolation_collector::config::Config;
    use isolation_collector::event::Event;
    use isolation_collector::metrics::Metrics;
    use isolation_collector::output::Outputs;
    use isolation_collector::pipeline::ledger::hour_of;
    use isolation_collector::pipeline::window::Window;
    use isolation_collector::puller::checkpoint::Checkpoint;
    use isolation_collector::service::Service;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let redis = crate::redis_server::RedisServer::start(&tmp, "redis").await;
    let out = tmp.path().join("out");
    let text = format!(
        "globals:\n{}outputs: {{local: {{type: file, config: {{directory: {}}}}}}}\ninputs:\n  proofpoint_isolation:\n    id: \"10001\"\n    credentials: {{api_key: \"k3y\"}}\n    services:\n      url_isolation: {{}}\n",
        redis.persistence_yaml(30, ""),
        out.display()
    );
    let clock = SharedClock::system();
    let config = Config::parse(&text, tmp.path(), &|_| None, clock.now()).unwrap();
    let input = &config.inputs[0];
    let svc = &input.services[0];
    let hour = hour_of(clock.now_ms()) - 5 * HOUR_MS;
    let event = |i: i64| {
        let json = format!("{{\"date\":{},\"i\":{i}}}", hour + i * 1_000);
        Event {
            date_ms: hour + i * 1_000,
            key: Sha256::digest(json.as_bytes()).into(),
            json: json.into(),
        }
    };
    let api: Vec<Event> = (0..23).map(event).collect();

    // The collector delivered the first 20 under its lease, and its commit sealed the hour.
    let store = Arc::new(StateStore::from_config(&config.globals.persistence, false).unwrap());
    let r = store.redis().unwrap();
    let key = StateStore::key(&input.id, svc.service.name());
    let daemon = "daemon-host:7:01";
    assert!(r.take(&key, daemon).await.unwrap().done);
    let metrics = Arc::new(Metrics::new()).service(&input.id, svc.service);
    let mut checkpoint = Checkpoint::new(store.clone(), key.clone(), svc, metrics.clone());
    checkpoint.set_fence(Some(daemon.to_owned()));
    checkpoint.restore(svc, clock.now_ms()).await.unwrap();
    let built = isolation_collector::app::outputs::build_outputs(&input.outputs, &clock).unwrap();
    let mut outputs = Outputs::new(built, metrics, Default::default());
    let w = Window {
        from: checkpoint.state().cursors.checkpoint,
        to: hour + 2 * HOUR_MS,
    };
    let plan = checkpoint.state().dedup.plan(&api[..20], w.to);
    let positions = outputs.deliver(&svc.table, &api[..20]).await.unwrap();
    let committed = checkpoint.commit(w, w.to + 60_000, plan, positions, svc);
    committed.await.unwrap();
    assert_eq!(store.sealed_digests(&key, hour).await.unwrap().len(), 1);

    let run = || {
        let hours = vec![HourToRepair {
            hour,
            api_events: api.clone(),
        }];
        repair(&config, input, Service::UrlIsolation, hours, clock.clone())
    };
    // While the daemon holds the lease: refused, naming it.
    let e = run().await.unwrap_err();
    assert!(matches!(e, RepairError::Held(_)), "{e:?}");
    assert!(e.to_string().contains(daemon), "{e}");
    assert!(e.to_string().contains("stop the collector"), "{e}");
    assert!(r.release(&key, daemon).await.unwrap().done);

    let done = run().await.unwrap();
    assert_eq!((done[0].delivered, &done[0].refused), (3, &None));
    let again = run().await.unwrap();
    assert_eq!((again[0].delivered, &again[0].refused), (0, &None));
    let file = std::fs::read_to_string(out.join(format!("{}.jsonl", svc.table))).unwrap();
    let mut got: Vec<&str> = file.lines().collect();
    let mut want: Vec<String> = api
        .iter()
        .map(|e| String::from_utf8_lossy(&e.json).into_owned())
        .collect();
    got.sort_unstable();
    want.sort();
    assert_eq!(got, want, "each event once");
}
