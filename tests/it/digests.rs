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
