//! An input's `requests_limits` is one API key's quota: with Redis persistence every replica
//! counts its requests in Redis (`src/state/redis/quota.rs`), so the replicas together stay
//! within it. Measured where it matters: at the simulators, which log every request's arrival.

// Real time throughout: the quota is counted on Redis's clock, the simulator logs the real one.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::devo_keys::busiest;
use crate::ha::{redis_key, write_ha_config, Replica, URL, WEB};
use crate::redis_server::RedisServer;
use crate::support::*;

/// The input's quota in the test: `QUOTA` requests per `PERIOD`.
const QUOTA: usize = 8;
const PERIOD: Duration = Duration::from_secs(2);

/// Every request that arrived at either simulator (both services use the input's one key).
fn arrivals(env: &TestEnv) -> Vec<DateTime<Utc>> {
    let mut all: Vec<_> = (env.web.request_log().into_iter())
        .chain(env.url.request_log())
        .map(|r| r.at)
        .collect();
    all.sort();
    all
}

/// Two replicas, each pulling one service of one input whose `requests_limits` is 8 per 2 s,
/// both backfilling (far more requests wanted than the quota allows): the two simulators
/// together must never see more than 8 requests in 2 s. Each replica counting alone let each
/// service have 8, so 16 in all.
///
/// Each replica must hold one lease, not one both (a replica that started first keeps both:
/// within its fair share): the test holds url_isolation's lease under a foreign token until the
/// first replica holds the other service and counts the second one live (able to pull: its setup
/// passed), then frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_together_keep_the_inputs_requests_limits() {
    let started = Instant::now();
    let mut env = TestEnv::both(20_000, |_| {}).await;
    let redis = RedisServer::start(&env.dir, "redis").await;
    env.service_extra = "page_size: 100\nmax_events_per_window: 500".into();
    env.input_extra = format!(
        "    requests_limits:\n      - period: {}s\n        number_of_requests: {QUOTA}\n",
        PERIOD.as_secs()
    );
    env.persistence = Some(redis.persistence_yaml(2, ""));
    write_ha_config(&env);
    let url_lease = redis_key(URL, "lease");
    redis.cli(&["SET", &url_lease, "elsewhere:1:0", "PX", "60000"]);
    let mut a = Replica::of("a", &env.config_path(), env.dir.path());
    let mut b = Replica::of("b", &env.config_path(), env.dir.path());
    a.start();
    Wait::new(
        "a holds browser_and_email_isolation",
        Duration::from_secs(20),
    )
    .until_async(async || a.holds(WEB).await)
    .await;
    b.start();
    // b counts as live for the shares once it is able to pull (its setup passed: it stands by
    // for url_isolation), which the quota itself delays.
    let standing_by = "The lease of url_isolation is held by elsewhere:1:0";
    wait_for("b passes its setup", Duration::from_secs(20), || {
        b.log().contains(standing_by)
    })
    .await;
    let live = "isolation_collector_replicas_live";
    Wait::new("a counts b live", Duration::from_secs(20))
        .until_async(async || a.scrape().await.and_then(|m| metric(&m, live)) == Some(2.0))
        .await;
    redis.cli(&["DEL", &url_lease]);
    Wait::new("b holds url_isolation", Duration::from_secs(20))
        .until_async(async || b.holds(URL).await)
        .await;
    let both_pulling = Utc::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.stop().await;
    b.stop().await;
    let all = arrivals(&env);
    let shared = all.iter().filter(|&&t| t >= both_pulling).count();
    let most = busiest(&all, PERIOD, Duration::from_millis(30));
    eprintln!(
        "quota test: {} requests in all, {shared} while both replicas pulled; at most {most} in {PERIOD:?} (quota {QUOTA}); {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        shared >= 2 * QUOTA,
        "too few requests ({shared}) while both pulled to test the quota"
    );
    assert!(
        most <= QUOTA,
        "the simulators saw {most} requests within {PERIOD:?}, over the input's quota of {QUOTA} (one replica's log:\n{})",
        a.log()
    );
    // The waits Redis asks for are logged as the process's own were, byte for byte.
    let line = format!("Request limit reached ({QUOTA} request(s) per 2s, inputs.proofpoint_isolation requests_limits); waiting ");
    assert!(
        a.log().contains(&line) && b.log().contains(&line),
        "no `{line}` in a replica's log"
    );
}

/// The script's arithmetic, on a pinned clock, against a real Redis: it counts a request only
/// when every limit has room, answers the wait of the limit that is full longest, keeps
/// requests a bucket's span apart in one bucket, expires its keys, and shares one count among
/// stores (replicas) and keeps inputs apart.
#[tokio::test]
async fn the_quota_script_counts_in_every_limit_or_in_none() {
    use isolation_collector::state::redis::{QuotaLimit, QuotaReply, RedisStore};
    let tmp = tempfile::tempdir().unwrap();
    let server = RedisServer::start(&tmp, "redis").await;
    let config = server.config("t:", Duration::from_secs(2));
    let (a, b) = (
        RedisStore::new(&config).unwrap(),
        RedisStore::new(&config).unwrap(),
    );
    const LIMITS: [QuotaLimit; 2] = [
        QuotaLimit {
            period: Duration::from_millis(1_000),
            max: 3,
        },
        QuotaLimit {
            period: Duration::from_millis(10_000),
            max: 5,
        },
    ];
    async fn take(store: &RedisStore, at: i64) -> QuotaReply {
        store.take_quota_at("10001", &LIMITS, at).await.unwrap()
    }
    let limits = LIMITS;
    let ms = Duration::from_millis;
    // Three in the first second, from two replicas: the fourth waits for the oldest to leave.
    assert_eq!(take(&a, 0).await, QuotaReply::Counted);
    assert_eq!(take(&b, 5).await, QuotaReply::Counted);
    assert_eq!(take(&a, 200).await, QuotaReply::Counted);
    assert_eq!(take(&b, 300).await, QuotaReply::Wait(ms(700), 0));
    // Requests 0 and 5 ms apart share the 10 s limit's bucket (its span is 10 ms).
    let (log_1s, count_1s) = a.quota_keys("10001", ms(1_000));
    let (log_10s, _) = a.quota_keys("10001", ms(10_000));
    assert_eq!(
        server.cli(&["ZRANGE", &log_10s, "0", "-1"]),
        "1) \"0:2\"\n2) \"200:1\""
    );
    assert_eq!(server.cli(&["ZCARD", &log_1s]), "(integer) 3");
    // A second later the 1 s limit has room again; the 10 s one fills at 5.
    assert_eq!(take(&b, 1_005).await, QuotaReply::Counted);
    assert_eq!(take(&a, 1_100).await, QuotaReply::Counted);
    // Full in the 10 s limit: its oldest bucket (2 requests) leaves at 10,005 ms.
    assert_eq!(take(&a, 2_200).await, QuotaReply::Wait(ms(7_805), 1));
    // A refusal counts in no limit: the 1 s log, emptied by then, stays empty.
    assert_eq!(server.cli(&["ZCARD", &log_1s]), "(integer) 0");
    assert_eq!(server.cli(&["GET", &count_1s]), "\"0\"");
    assert_eq!(take(&b, 10_005).await, QuotaReply::Counted);
    // Another input has its own quota.
    let other = a.take_quota_at("10002", &limits, 2_200).await.unwrap();
    assert_eq!(other, QuotaReply::Counted);
    // The keys expire by themselves: a period after the last request.
    let ttl: i64 = server
        .cli(&["PTTL", &log_10s])
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 10_000, "{ttl}");
    // Redis's own clock when unpinned (another input: the pinned times are far in the past).
    assert_eq!(
        a.take_quota("10003", &limits).await.unwrap(),
        QuotaReply::Counted
    );
    // A key of another type under the quota's name is a refusal, not an outage.
    server.cli(&["SET", &a.quota_keys("10004", ms(1_000)).0, "x"]);
    let refused = a.take_quota("10004", &limits).await.unwrap();
    assert!(
        matches!(&refused, QuotaReply::Refused(r) if r.contains("WRONGTYPE")),
        "{refused:?}"
    );
}

/// The limiter on a quota in Redis: two replicas' limiters share it; when Redis refuses to count
/// (a key of another type under the name) the replica holds the quota alone; when Redis does
/// not answer, requests wait for it instead of spending quota the others may be spending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limiter_shares_the_quota_holds_it_alone_on_refusal_and_waits_out_an_outage() {
    use isolation_collector::api::limiter::input_quota::InputQuota;
    use isolation_collector::api::limiter::{Limit, RequestLimits, SharedLimits};
    use isolation_collector::state::redis::RedisStore;
    use isolation_collector::state::StateStore;
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let mut server = RedisServer::start(&tmp, "redis").await;
    let store = Arc::new(StateStore::Redis(Box::new(
        RedisStore::new(&server.config("t:", Duration::from_secs(2))).unwrap(),
    )));
    let limit = Limit {
        period: Duration::from_secs(60),
        max_requests: Some(2),
        text: "1m".into(),
    };
    // One replica's limiter of input `id`: its own local level, the quota in Redis.
    let replica = |id: &str| {
        let local = Arc::new(Mutex::new(RequestLimits::new(std::slice::from_ref(&limit))));
        SharedLimits::default()
            .with_input(local)
            .counted_in(InputQuota::new(&store, id, std::slice::from_ref(&limit)))
    };
    let granted = |l: &SharedLimits, within: u64| {
        let l = l.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(within), l.acquire())
                .await
                .is_ok()
        }
    };
    let (a, b) = (replica("10001"), replica("10001"));
    assert!(granted(&a, 1_000).await && granted(&b, 1_000).await);
    assert!(
        !granted(&a, 300).await,
        "a third request within the quota of 2"
    );
    assert!(!granted(&b, 300).await, "b counted alone");
    // Refused: each replica holds the quota alone.
    let (log, _) = store.redis().unwrap().quota_keys("10002", limit.period);
    server.cli(&["SET", &log, "not a sorted set"]);
    let c = replica("10002");
    assert!(granted(&c, 1_000).await && granted(&c, 1_000).await);
    assert!(!granted(&c, 300).await, "a refusal let the quota overrun");
    // Redis down: the request waits, and goes once Redis answers again.
    let d = replica("10003");
    server.kill();
    let waiting = tokio::spawn(granted(&d, 10_000));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !waiting.is_finished(),
        "a request went while Redis was down"
    );
    server.restart().await;
    assert!(waiting.await.unwrap(), "no request after Redis came back");
}
