//! Redis persistence against a real redis-server: exactly-once collection with the state in
//! Redis, `state show|reset|copy` (the migration from a state directory), `validate` against a
//! Redis that is down or refuses the password, and a holder whose lease another token took.

use std::process::Stdio;
use std::time::Duration;

use crate::redis_server::RedisServer;
use crate::support::*;

const SERVICES: [&str; 2] = ["browser_and_email_isolation", "url_isolation"];

/// Points the env's config at `redis` (lease TTL `ttl`) instead of its state directory.
pub(crate) fn use_redis(env: &TestEnv, redis: &RedisServer, ttl: u32) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let filesystem = format!(
        "  persistence:\n    type: filesystem\n    config:\n      directory_name: {}\n",
        env.path("state").display()
    );
    assert!(text.contains(&filesystem), "{text}");
    let text = text.replace(&filesystem, &redis.persistence_yaml(ttl, ""));
    std::fs::write(env.config_path(), text).unwrap();
}

/// The Redis key of a service's state or lease (`kind`), with the default prefix.
fn key(service: &str, kind: &str) -> String {
    format!("isolation-collector:{{proofpoint_isolation_10001_{service}}}:{kind}")
}

/// The state of `service` in Redis as the version-3 document of a state file: the version-4
/// document with the dedup memory's buckets put back in.
fn redis_state_as_file(redis: &RedisServer, service: &str) -> serde_json::Value {
    let mut doc: serde_json::Value =
        serde_json::from_str(&redis.cli(&["--raw", "GET", &key(service, "state")])).unwrap();
    assert_eq!(doc["@persistence_version"], 4, "{doc}");
    let buckets = redis.cli(&["--raw", "HGETALL", &key(service, "dedup")]);
    let lines: Vec<&str> = buckets.lines().collect();
    let mut records: Vec<serde_json::Value> = lines
        .chunks(2)
        .filter(|pair| pair[0] != "@revision")
        .flat_map(|pair| serde_json::from_str::<Vec<serde_json::Value>>(pair[1]).unwrap())
        .collect();
    records.sort_by_key(|r| (r[0].as_i64(), r[1].as_str().map(str::to_owned)));
    let object = doc.as_object_mut().unwrap();
    object.insert("@persistence_version".into(), 3.into());
    object.insert("dedup".into(), records.into());
    doc
}

/// Everything a command printed.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn one_process_on_redis_collects_both_services_exactly_once() {
    let env = TestEnv::both(1500, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 3);
    let out = env.run_once_ok().await;
    env.assert_exactly_once();
    let log = stderr(&out);
    for service in SERVICES {
        assert!(
            log.contains(&format!("Holding the lease of {service} as ")),
            "{log}"
        );
        assert!(
            log.contains(&format!("Released the lease of {service}.")),
            "{log}"
        );
        // The state is the document of a state file without its dedup memory, which is in a
        // hash beside it (version 4); the lease was released.
        let state = redis.cli(&["--raw", "GET", &key(service, "state")]);
        assert!(state.contains("\"@persistence_version\": 4"), "{state}");
        assert!(!state.contains("\"dedup\""), "{state}");
        assert_eq!(
            redis.cli(&["EXISTS", &key(service, "dedup")]),
            "(integer) 1"
        );
        assert_eq!(
            redis.cli(&["EXISTS", &key(service, "lease")]),
            "(integer) 0"
        );
    }
    assert!(!env.path("state").exists(), "nothing on disk");
    // A second run delivers nothing new: the files still hold each event once.
    let (web, url) = (
        env.delivered(WEB_TABLE).len(),
        env.delivered(URL_TABLE).len(),
    );
    env.run_once_ok().await;
    assert_eq!(
        (
            env.delivered(WEB_TABLE).len(),
            env.delivered(URL_TABLE).len()
        ),
        (web, url)
    );
    env.assert_exactly_once();
}

#[tokio::test]
async fn state_copy_moves_a_filesystem_deployment_to_redis_without_redelivery() {
    let env = TestEnv::both(800, |_| {}).await;
    env.run_once_ok().await;
    env.assert_exactly_once();
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 3);
    let state_dir = env.path("state");
    let dir = state_dir.to_str().unwrap();
    let copy = [
        "state",
        "copy",
        "--from",
        "filesystem",
        "--to",
        "redis",
        "--directory",
        dir,
    ];
    // Refused, naming the holder, while a collector holds a lease.
    redis.cli(&[
        "SET",
        &key("url_isolation", "lease"),
        "other-host:42:beef",
        "PX",
        "60000",
    ]);
    let out = env.collector(&copy).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        printed(&out).contains("the lease is held by other-host:42:beef"),
        "{}",
        printed(&out)
    );
    redis.cli(&["DEL", &key("url_isolation", "lease")]);
    // The other service was copied; the first copy of url_isolation goes through now, and a
    // second copy refuses to overwrite without --force.
    let out = env.collector(&copy).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = printed(&out);
    assert!(text.contains("url_isolation: copied "), "{text}");
    assert!(
        text.contains("already holds a state; add --force"),
        "{text}"
    );
    let out = env.collector(&[&copy[..], &["--force"]].concat()).await;
    assert!(out.status.success(), "{}", describe(&out));
    for service in SERVICES {
        assert_eq!(
            redis.cli(&["EXISTS", &key(service, "lease")]),
            "(integer) 0"
        );
    }
    let out = env.collector(&["state", "show"]).await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", describe(&out));
    for service in SERVICES {
        assert!(
            shown.contains(&format!(
                "{service} (Redis {} key {}): {{",
                redis.address(),
                key(service, "state")
            )),
            "{shown}"
        );
    }
    // The migrated deployment delivers nothing again: dedup memory and positions travelled.
    std::fs::remove_dir_all(&state_dir).unwrap();
    env.run_once_ok().await;
    env.assert_exactly_once();
    assert!(!state_dir.exists());
    // And back: redis -> filesystem, into a new directory.
    let back = env.path("back");
    let out = env
        .collector(&[
            "state",
            "copy",
            "--from",
            "redis",
            "--to",
            "filesystem",
            "--directory",
            back.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    for service in SERVICES {
        let file = back.join(format!("proofpoint_isolation_10001_{service}.json"));
        let on_disk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(on_disk, redis_state_as_file(&redis, service));
    }
    // Reset deletes the Redis state.
    let out = env
        .collector(&["state", "reset", "--service", "url_isolation"])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    for kind in ["state", "dedup"] {
        assert_eq!(
            redis.cli(&["EXISTS", &key("url_isolation", kind)]),
            "(integer) 0"
        );
    }
    assert_eq!(
        redis.cli(&["EXISTS", &key("browser_and_email_isolation", "state")]),
        "(integer) 1"
    );
}

#[tokio::test]
async fn validate_and_run_name_the_address_and_the_key_never_the_password() {
    let env = TestEnv::both(10, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let password = "s3cret-Redis-pw-4711";
    let mut redis = RedisServer::start_with_password(&tmp, "redis", Some(password)).await;
    use_redis(&env, &redis, 3);
    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(printed(&out).contains(&format!("Redis at {} answers.", redis.address())));
    // A wrong password: validate fails, and run stops at start.
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let wrong = "wrong-pw-0815-xyz";
    std::fs::write(env.config_path(), good.replace(password, wrong)).unwrap();
    for args in [&["validate"][..], &["run", "--once"], &["run"]] {
        let out = env.collector(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let text = printed(&out);
        assert!(
            text.contains(&format!("Redis at {} refused", redis.address())),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("check globals.persistence.config.password"),
            "{args:?}: {text}"
        );
        assert!(
            !text.contains(wrong) && !text.contains(password),
            "{args:?}: {text}"
        );
    }
    // Down: validate fails naming the address and the keys to check.
    std::fs::write(env.config_path(), &good).unwrap();
    redis.kill();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = printed(&out);
    assert!(
        text.contains(&format!("Redis at {} is unreachable", redis.address())),
        "{text}"
    );
    assert!(
        text.contains("globals.persistence.config.host and port"),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");
}

/// Another token takes the lease while a daemon pulls: its renewal is refused, it logs the loss,
/// stops and stands by, and the state in Redis is not written by it any more. When the lease is
/// free again it takes it back; SIGTERM releases it at once.
#[tokio::test]
async fn a_holder_whose_lease_was_taken_stops_writing_and_stands_by() {
    let env = TestEnv::both(300, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 2);
    let (mut child, log_path) = env.spawn_logged(&["run"], "daemon.log");
    let lease = key("url_isolation", "lease");
    let state = key("url_isolation", "state");
    wait_for("every url event delivered", Duration::from_secs(60), || {
        env.delivered(URL_TABLE).len() == env.url.visible_events().len()
    })
    .await;
    wait_for("the state in Redis", Duration::from_secs(60), || {
        redis.cli(&["EXISTS", &state]) == "(integer) 1"
    })
    .await;
    let ours = redis.cli(&["--raw", "GET", &lease]);
    assert!(ours.contains(':'), "{ours}");
    // The intruder: a token that is not the daemon's, on the key the daemon renews.
    redis.cli(&["SET", &lease, "intruder:1:ffff", "PX", "60000"]);
    let frozen = redis.cli(&["--raw", "GET", &state]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        redis.cli(&["--raw", "GET", &state]),
        frozen,
        "the state moved under the intruder's lease"
    );
    assert_eq!(redis.cli(&["--raw", "GET", &lease]), "intruder:1:ffff");
    // Free again: the daemon takes it back within its standby retry.
    redis.cli(&["DEL", &lease]);
    wait_for("the lease taken back", Duration::from_secs(60), || {
        let now = redis.cli(&["--raw", "GET", &lease]);
        !now.is_empty() && now != ours
    })
    .await;
    let status = terminate(&mut child, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    // Refused at its renewal, its gate's renewal or its fenced write, whichever came first.
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Lost the lease of "))
        .collect();
    assert_eq!(lost.len(), 1, "{log}");
    assert!(
        lost[0].contains("Lost the lease of url_isolation: ")
            && lost[0].ends_with(
                "the lease is held by intruder:1:ffff; stopped pulling it and standing by."
            ),
        "{log}"
    );
    assert_eq!(
        log.matches("The lease of url_isolation is held by intruder:1:ffff; standing by.")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("Holding the lease of url_isolation as ")
            .count(),
        2,
        "{log}"
    );
    for service in SERVICES {
        assert!(
            log.contains(&format!("Released the lease of {service}.")),
            "{log}"
        );
        assert_eq!(
            redis.cli(&["EXISTS", &key(service, "lease")]),
            "(integer) 0"
        );
    }
    env.assert_exactly_once();
}

/// `run --once` waits for a held lease at most its TTL and 5 s, then fails naming the holder.
#[tokio::test]
async fn run_once_gives_up_on_a_held_lease_naming_the_holder() {
    let env = TestEnv::both(10, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 1);
    redis.cli(&[
        "SET",
        &key("url_isolation", "lease"),
        "other-host:7:cafe",
        "PX",
        "60000",
    ]);
    let started = std::time::Instant::now();
    let out = env.collector(&["run", "--once"]).await;
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    assert!(
        log.contains("The lease of url_isolation is still held by other-host:7:cafe after 6 s"),
        "{log}"
    );
    assert!(waited >= Duration::from_secs(6), "{waited:?}");
    // The other service ran, and released its lease.
    assert!(
        log.contains("Released the lease of browser_and_email_isolation."),
        "{log}"
    );
    assert_eq!(env.delivered(URL_TABLE).len(), 0);
    assert_eq!(
        env.delivered(WEB_TABLE).len(),
        env.web.visible_events().len()
    );
}

/// Polls `url` until its answer satisfies `done`; returns it.
async fn wait_for_answer(url: &str, done: impl Fn(u16, &str) -> bool) -> String {
    Wait::new(
        format!("{url} to answer as expected"),
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(100))
    .until_async(async || match get(url).await {
        Some((status, body)) if done(status, &body) => Ok(body),
        answer => Err(format!("{answer:?}")),
    })
    .await
}

/// Redis goes away while a daemon runs: the outage is logged once (not per retry) and its end
/// once, `/ready` is 503 naming it and `persistence_up` is 0 meanwhile; afterwards the leases are
/// held again and nothing was lost or delivered twice.
#[tokio::test]
async fn a_redis_outage_is_logged_once_and_shown_in_ready_and_metrics() {
    let env = TestEnv::both(300, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 2);
    let base = listen_on_free_port(&env);
    let (mut child, log_path) = env.spawn_logged(&["run"], "daemon.log");
    let both_held = |status: u16, body: &str| {
        status == 200
            && body
                .contains(r#""held":["10001/browser_and_email_isolation","10001/url_isolation"]"#)
    };
    let ready = wait_for_answer(&format!("{base}/ready"), both_held).await;
    assert!(ready.contains(r#""standby":[]"#), "{ready}");
    wait_for("every url event delivered", Duration::from_secs(60), || {
        env.delivered(URL_TABLE).len() == env.url.visible_events().len()
    })
    .await;
    redis.kill();
    let unreachable = format!("persistence: Redis at {} is unreachable", redis.address());
    wait_for_answer(&format!("{base}/ready"), |status, body| {
        status == 503 && body.contains(&unreachable)
    })
    .await;
    let metrics = wait_for_answer(&format!("{base}/metrics"), |_, _| true).await;
    assert!(
        metrics.contains("\nisolation_collector_persistence_up 0\n"),
        "{metrics}"
    );
    // Longer than the TTL: many retries, one line.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart().await;
    wait_for_answer(&format!("{base}/ready"), both_held).await;
    let metrics = wait_for_answer(&format!("{base}/metrics"), |_, _| true).await;
    assert!(
        metrics.contains("\nisolation_collector_persistence_up 1\n"),
        "{metrics}"
    );
    let status = terminate(&mut child, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    let address = redis.address();
    assert_eq!(
        log.matches(&format!("Redis at {address} is unreachable: "))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("; pulling is paused until it answers."),
        "{log}"
    );
    assert_eq!(
        log.matches(&format!("Redis at {address} answers again after "))
            .count(),
        1,
        "{log}"
    );
    env.assert_exactly_once();
}

/// The lease scripts and the fenced write, on the store itself: one holder at a time, renewal
/// and release only by the holder, writes only under one's own lease, expiry after the TTL, and
/// `state reset` refused under a held lease.
#[tokio::test]
async fn the_lease_scripts_let_only_the_holder_write() {
    use isolation_collector::state::redis::{LeaseReply, RedisStore};
    use isolation_collector::state::{ServiceState, StateError};
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    let config = redis.config("t:", Duration::from_secs(2));
    let store = RedisStore::new(&config).unwrap();
    let k = "proofpoint_isolation_1_url_isolation";
    let reply = |done: bool, holder: &str| LeaseReply {
        done,
        holder: holder.into(),
    };
    let (a, b) = ("host-a:1:01", "host-b:2:02");
    assert_eq!(store.take(k, a).await.unwrap(), reply(true, a));
    assert_eq!(store.take(k, b).await.unwrap(), reply(false, a));
    assert_eq!(
        store.take(k, a).await.unwrap(),
        reply(true, a),
        "taking one's own lease renews it"
    );
    assert_eq!(store.renew(k, b).await.unwrap(), reply(false, a));
    assert_eq!(store.renew(k, a).await.unwrap(), reply(true, a));
    let pttl: i64 = redis
        .cli(&[
            "--raw",
            "PTTL",
            "t:{proofpoint_isolation_1_url_isolation}:lease",
        ])
        .parse()
        .unwrap();
    assert!((1000..=2000).contains(&pttl), "{pttl}");
    let mut first = ServiceState::new(None, 1_000);
    first.cursors.checkpoint = 5_000;
    let second = ServiceState::new(None, 9_000);
    store.save(k, &first, Some(a)).await.unwrap();
    let refused = store.save(k, &second, Some(b)).await.unwrap_err();
    assert!(
        matches!(&refused, StateError::LeaseLost { holder } if holder == a),
        "{refused:?}"
    );
    assert!(store
        .save(k, &second, None)
        .await
        .unwrap_err()
        .is_lease_lost());
    assert_eq!(store.load(k).await.unwrap().unwrap().0, first);
    assert_eq!(store.release(k, b).await.unwrap(), reply(false, a));
    assert_eq!(store.release(k, a).await.unwrap(), reply(true, a));
    assert_eq!(store.take(k, b).await.unwrap(), reply(true, b));
    // A former holder woken after the takeover: its write is refused, naming the new holder.
    let refused = store.save(k, &second, Some(a)).await.unwrap_err();
    assert_eq!(refused.to_string(), format!("the lease is held by {b}"));
    // Unrenewed, the lease expires after its TTL; renewing it then is refused.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(store.renew(k, b).await.unwrap(), reply(false, ""));
    // `state reset` takes the lease: refused while another holds it.
    store.take(k, a).await.unwrap();
    assert!(store.reset(k).await.unwrap_err().to_string().contains(a));
    store.release(k, a).await.unwrap();
    assert!(store.reset(k).await.unwrap());
    assert!(!store.reset(k).await.unwrap());
    assert!(store.load(k).await.unwrap().is_none());
}

/// A redis-server listening only with TLS (`server`'s certificate); killed when dropped.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl TlsRedis {
    async fn start(
        dir: &std::path::Path,
        server: &crate::rsyslog::CertFiles,
        ca: &std::path::Path,
    ) -> TlsRedis {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(&server.cert)
            .arg("--tls-key-file")
            .arg(&server.key)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        // Owned at once: dropped (killed and reaped) on every path below.
        let mut redis = TlsRedis { port, child };
        wait_until_listening(
            "redis-server with TLS",
            &mut redis.child,
            port,
            Duration::from_secs(10),
            String::new,
        )
        .await;
        redis
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill_server(&mut self.child);
    }
}

/// `tls: true` with `ca`: the server's certificate is verified against that CA only; a Redis
/// whose certificate another CA signed is refused.
#[tokio::test]
async fn tls_with_a_private_ca() {
    let env = TestEnv::both(200, |_| {}).await;
    let pki = crate::rsyslog::Pki::new(env.dir.path());
    let redis = TlsRedis::start(env.dir.path(), &pki.server, &pki.ca.pem).await;
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let filesystem = format!(
        "  persistence:\n    type: filesystem\n    config:\n      directory_name: {}\n",
        env.path("state").display()
    );
    let tls = |ca: &std::path::Path| {
        format!(
            "  persistence:\n    type: redis\n    config:\n      host: 127.0.0.1\n      port: {}\n      tls: true\n      ca: {}\n      lease_ttl_in_seconds: 3\n",
            redis.port,
            ca.display()
        )
    };
    std::fs::write(
        env.config_path(),
        text.replace(&filesystem, &tls(&pki.ca.pem)),
    )
    .unwrap();
    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    env.run_once_ok().await;
    env.assert_exactly_once();
    env.run_once_ok().await;
    env.assert_exactly_once();
    // Another CA: the certificate is not trusted.
    std::fs::write(
        env.config_path(),
        text.replace(&filesystem, &tls(&pki.foreign_ca.pem)),
    )
    .unwrap();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        printed(&out).contains(&format!(
            "Redis at 127.0.0.1:{} refused the connection: invalid peer certificate: UnknownIssuer; check globals.persistence.config.tls and ca",
            redis.port
        )),
        "{}",
        printed(&out)
    );
}

/// The length of `table`'s file that the output `local` committed, per the url_isolation state in
/// Redis (0 before the first commit).
fn committed_length(redis: &RedisServer, table: &str) -> u64 {
    redis
        .get(&key("url_isolation", "state"))
        .and_then(|doc| serde_json::from_str::<serde_json::Value>(&doc).ok())
        .and_then(|v| v["output_positions"]["local"][table]["length"].as_u64())
        .unwrap_or(0)
}

/// A former holder's remains in the shared file output after the holder's lines (its copy of
/// two lines and a partial one, as a holder woken mid-batch after a takeover leaves them),
/// appended while the holder runs. The holder does not write its next batch after them and
/// does not cut them there: the batch fails naming the problem, and the holder's resume cuts
/// the file to its committed length (exactly those bytes), then delivers: every event once.
#[tokio::test]
async fn a_former_holders_bytes_in_the_shared_file_are_cut_by_the_holders_resume() {
    let env = TestEnv::both(300, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 3);
    let (mut child, log_path) = env.spawn_logged(&["run"], "daemon.log");
    wait_for("every url event delivered", Duration::from_secs(60), || {
        env.delivered(URL_TABLE).len() == env.url.visible_events().len()
    })
    .await;
    let path = env.path("out").join(format!("{URL_TABLE}.jsonl"));
    // The former holder's bytes come after the holder's last *committed* window: wait until the
    // state in Redis holds the file's whole length (lines on disk are not yet committed).
    wait_for("the whole file committed", Duration::from_secs(60), || {
        committed_length(&redis, URL_TABLE) == std::fs::metadata(&path).unwrap().len()
    })
    .await;
    let delivered = env.delivered(URL_TABLE);
    let stale = format!("{}\n{}\n{{\"partial", delivered[0], delivered[1]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, stale.as_bytes()).unwrap();
    // The simulator dates its events by the wall clock: so do the injected ones.
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    let (from, to) = (
        now - chrono::Duration::seconds(30),
        now - chrono::Duration::seconds(1),
    );
    assert_eq!(env.url.inject(20, from, to), 20);
    wait_for("every url event delivered", Duration::from_secs(60), || {
        env.delivered(URL_TABLE).len() == env.url.visible_events().len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = terminate(&mut child, Duration::from_secs(30)).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    env.assert_exactly_once();
    let refused = format!(
        "another process appended to {} while this one wrote; not cutting anything",
        path.display()
    );
    assert!(log.contains(&refused), "{log}");
    let cut = format!(
        "Removing {} byte(s) written after the last checkpoint",
        stale.len()
    );
    assert_eq!(log.matches(&cut).count(), 1, "{log}");
}
