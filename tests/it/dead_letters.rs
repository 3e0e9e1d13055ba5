//! Events that cannot be read (issue 20 §3). One event with a byte that is not UTF-8 used to
//! refuse its whole page, every time: the service stalled until the API's retention deleted
//! the data. Now that event is set aside in the dead-letter store with its exact bytes, and
//! every other event of the page is delivered, once.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;

const WEB: &str = "browser_and_email_isolation";
const URL: &str = "url_isolation";
const DEAD_LETTERED: &str = "isolation_collector_events_dead_lettered_total";

/// Every letter of the state directory, by table: (id, raw bytes, output, position).
fn letters(env: &TestEnv) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_table: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(env.path("state")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".dead_letters.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if line.is_empty() {
                continue;
            }
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            let table = letter["table"].as_str().unwrap().to_owned();
            by_table.entry(table).or_default().push(letter);
        }
    }
    by_table
}

/// The raw bytes of `letters`, sorted.
fn raw_bytes(letters: &[serde_json::Value]) -> Vec<Vec<u8>> {
    let mut raw: Vec<Vec<u8>> = letters
        .iter()
        .map(|l| hex::decode(l["raw_hex"].as_str().unwrap()).unwrap())
        .collect();
    raw.sort();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_a_stray_byte_are_set_aside_and_every_other_event_is_delivered_once() {
    let env = TestEnv::both(4000, |c| {
        c.non_utf8_events = 3;
        // Valid JSON deeper than serde_json builds values: an event like any other.
        c.deep_events = 2;
        c.page_size_cap = Some(500);
    })
    .await;
    let base = listen_on_free_port(&env);
    let (child, log) = env.spawn_logged(&["run", "--log-format", "json"], "daemon.log");
    let want = env.web.visible_events().len() + env.url.visible_events().len();
    assert_eq!(want, 2 * (4000 - 3));
    let started = Instant::now();
    let got = wait_for(
        "every readable event delivered",
        Duration::from_secs(90),
        || {
            let got = env.delivered(WEB_TABLE).len() + env.delivered(URL_TABLE).len();
            match got >= want {
                true => Ok(got),
                false => Err(format!("{got} of {want}")),
            }
        },
    )
    .await;
    eprintln!(
        "{got} events delivered {:?} after the start",
        started.elapsed()
    );
    scrape_until(&base, "3 events dead-lettered per service", |s| {
        [(WEB, WEB_TABLE), (URL, URL_TABLE)]
            .iter()
            .all(|(svc, table)| {
                let labels = [
                    ("input", INPUT_ID),
                    ("service", *svc),
                    ("table", *table),
                    ("output", "none"),
                ];
                sample(s, DEAD_LETTERED, &labels) == Some(3.0)
            })
    })
    .await;
    sigterm_and_wait(child).await;
    env.assert_exactly_once();

    // The store holds the three of each service, with the bytes the vendor sent.
    let stored = letters(&env);
    for (table, sim) in [(WEB_TABLE, &env.web), (URL_TABLE, &env.url)] {
        let kept = &stored[table];
        assert_eq!(raw_bytes(kept), {
            let mut want = sim.unreadable_events();
            want.sort();
            want
        });
        assert_eq!(kept.len(), 3);
        for letter in kept {
            assert!(letter["output"].is_null(), "{letter}");
            let position = letter["position"].as_str().unwrap();
            assert!(position.starts_with("job ") && position.contains(" page "));
        }
    }
    // Each logged once, with its id and position.
    let text = std::fs::read_to_string(&log).unwrap();
    for letter in stored.values().flatten() {
        let id = letter["id"].as_str().unwrap();
        assert_eq!(text.matches(id).count(), 1, "{id} in\n{text}");
    }

    // The checkpoint advanced: a second run delivers nothing again and sets nothing new aside.
    env.run_once_ok().await;
    env.assert_exactly_once();
    assert_eq!(letters(&env), stored);

    the_commands_list_export_and_discard_them(&env, &stored).await;
}

/// `state show` and `state dead-letters` list the letters, `--export` writes their exact
/// bytes, `state discard` removes the ones named, then all.
async fn the_commands_list_export_and_discard_them(
    env: &TestEnv,
    stored: &BTreeMap<String, Vec<serde_json::Value>>,
) {
    let ok = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", describe(out));
        String::from_utf8(out.stdout.clone()).unwrap()
    };
    let shown = ok(&env.collector(&["state", "show"]).await);
    for letter in stored.values().flatten() {
        let id = letter["id"].as_str().unwrap();
        let line = shown.lines().find(|l| l.contains(id)).expect(id);
        assert!(
            line.contains(letter["position"].as_str().unwrap()),
            "{line}"
        );
        assert!(line.contains("output none (unreadable)"), "{line}");
    }
    assert_eq!(shown.matches("3 event(s) set aside").count(), 2, "{shown}");

    let export = env.path("url-letters.bin");
    let listed = ok(&env
        .collector(&[
            "state",
            "dead-letters",
            "--service",
            URL,
            "--json",
            "--export",
            export.to_str().unwrap(),
        ])
        .await);
    let listed: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let url_letters = &stored[URL_TABLE];
    let listed_letters: Vec<serde_json::Value> =
        listed.iter().map(|l| l["letter"].clone()).collect();
    assert_eq!(raw_bytes(&listed_letters), raw_bytes(url_letters));
    let mut exported: Vec<Vec<u8>> = std::fs::read(&export)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    exported.sort();
    assert_eq!(exported, raw_bytes(url_letters));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let first = url_letters[0]["id"].as_str().unwrap();
    let out = env
        .collector(&["state", "discard", "--service", URL, "--id", first])
        .await;
    assert!(ok(&out).contains("1 dead letter(s) discarded"));
    let left = letters(env);
    assert_eq!(left[URL_TABLE].len(), 2);
    assert!(left[URL_TABLE].iter().all(|l| l["id"] != first));
    assert_eq!(left[WEB_TABLE], stored[WEB_TABLE]);
    // An id that is not there is an error, not a silent success.
    let out = env
        .collector(&["state", "discard", "--service", URL, "--id", first])
        .await;
    assert!(!out.status.success(), "{}", describe(&out));
    let out = env
        .collector(&["state", "discard", "--service", WEB, "--all"])
        .await;
    assert!(ok(&out).contains("3 dead letter(s) discarded"));
    assert!(!letters(env).contains_key(WEB_TABLE));
}

/// The Redis side of the store, against a real redis-server: a letter is stored once by id,
/// only under the service's lease; listed; discarded by id or all, under the lease too
/// (`state discard` takes it, refused while a collector holds it, naming the holder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_letters_once_under_the_lease() {
    use isolation_collector::state::dead_letter::DeadLetter;
    use isolation_collector::state::redis::RedisStore;
    use isolation_collector::state::StateStore;
    let tmp = tempfile::tempdir().unwrap();
    let redis = crate::redis_server::RedisServer::start(&tmp, "redis").await;
    let config = redis.config("t:", Duration::from_secs(30));
    let store = StateStore::Redis(Box::new(RedisStore::new(&config).unwrap()));
    let r = store.redis().unwrap();
    let k = "proofpoint_isolation_1_url_isolation";
    let letter = |raw: &[u8]| {
        DeadLetter::new(
            URL_TABLE,
            None,
            "cannot be read: not UTF-8 text".into(),
            "job j page 1 event 2".into(),
            raw,
            1_000,
        )
    };
    let (a, b) = (letter(b"{\"u\":\"\xff\"}"), letter(b"{\"v\":\"\xfe\"}"));
    let holder = "host-a:1:01";
    assert!(r.take(k, holder).await.unwrap().done);

    // Without the lease, or with another token: refused, nothing stored.
    let refused = store
        .set_aside(k, std::slice::from_ref(&a), Some("host-b:2:02"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains(holder), "{refused}");
    assert!(store
        .set_aside(k, std::slice::from_ref(&a), None)
        .await
        .is_err());
    assert_eq!(store.dead_letters(k).await.unwrap(), vec![]);

    // Under the lease: stored once by id, listed with their bytes.
    let lease = Some(holder);
    assert_eq!(
        store
            .set_aside(k, std::slice::from_ref(&a), lease)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .set_aside(k, &[a.clone(), b.clone()], lease)
            .await
            .unwrap(),
        1
    );
    let kept = store.dead_letters(k).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept.contains(&a) && kept.contains(&b));
    assert_eq!(
        kept.iter().find(|l| l.id == a.id).unwrap().raw(),
        b"{\"u\":\"\xff\"}"
    );

    // Discarding without the lease is refused; `state discard`'s way is refused while the
    // holder runs, naming it.
    assert!(store.discard_dead_letters(k, None, None).await.is_err());
    let refused = store.discard_dead_letters_now(k, None).await.unwrap_err();
    assert!(refused.to_string().contains(holder), "{refused}");
    assert_eq!(store.dead_letters(k).await.unwrap().len(), 2);
    let ids = [a.id.clone()];
    assert_eq!(
        store
            .discard_dead_letters(k, Some(&ids), lease)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.dead_letters(k).await.unwrap(), vec![b.clone()]);
    assert!(r.release(k, holder).await.unwrap().done);
    assert_eq!(store.discard_dead_letters_now(k, None).await.unwrap(), 1);
    assert_eq!(store.dead_letters(k).await.unwrap(), vec![]);
    // The command released the lease it took.
    assert!(r.take(k, holder).await.unwrap().done);
}

/// No event vanishes: each one received in a cycle is delivered, set aside, or dropped as a
/// known copy (the cycle's statistics line: received = sent + duplicates + set aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_received_is_delivered_set_aside_or_a_known_copy() {
    let env = TestEnv::both(1000, |c| {
        c.non_utf8_events = 3;
        c.page_size_cap = Some(300);
    })
    .await;
    let out = env.run_once_ok().await;
    let log = stderr(&out);
    for (svc, sim) in [(WEB, &env.web), (URL, &env.url)] {
        let s = the_pull_stats(&log, svc);
        assert_eq!(s.received, sim.stats().events_served, "{svc}: {s:?}");
        assert_eq!(s.received, s.sent + s.duplicates + 3, "{svc}: {s:?}");
        assert_eq!(s.sent, 997, "{svc}: {s:?}");
    }
    env.assert_exactly_once();
}
