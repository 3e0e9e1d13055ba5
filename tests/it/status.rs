//! `isolation-collector status` against a real daemon: two tenants against their simulators,
//! one whose key is refused; `--json`, the table, `--watch`, and a listener nobody runs; with
//! Redis, the lease holder as each replica sees it, and Redis gone.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use isolation_sim::{Dataset, Fault, FaultTarget};

use crate::ha::{ms, Ha, Replica, SERVICES};
use crate::support::*;
use crate::tenants::{write_tenants_config, Tenant, KEYS};

/// `status <args> --config <config>`, to completion.
async fn status(env: &TestEnv, args: &[&str]) -> std::process::Output {
    collector_command(&[&["status"], args].concat(), &env.config_path())
        .output()
        .await
        .unwrap()
}

/// The line of `input` in a `/status` document.
fn line<'a>(doc: &'a serde_json::Value, input: &str) -> &'a serde_json::Value {
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["input"] == input)
        .unwrap_or_else(|| panic!("no line for {input}: {doc}"))
}

/// A good tenant (10001) and one whose simulator refuses the key its block holds (10002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_refused_tenant_first_masked_and_the_good_one_collecting() {
    let env = TestEnv::both(1, |_| {}).await;
    let good = Tenant::start("10001", Dataset::Web, KEYS[0], KEYS[0]).await;
    // Its simulator accepts KEYS[1]; its block holds KEYS[2].
    let refused = Tenant::start("10002", Dataset::Url, KEYS[1], KEYS[2]).await;
    write_tenants_config(&env, &[good.block(), refused.block()]);
    listen_on_free_port(&env);
    let (daemon, log) = env.spawn_logged(&["run"], "daemon.log");

    // Within the minute the good tenant's events were delivered in.
    let (out, doc) = Wait::new("status to show both tenants", Duration::from_secs(60))
        .every(Duration::from_millis(300))
        .showing_log(&log)
        .until_async(async || {
            let out = status(&env, &["--json"]).await;
            let doc: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                Ok(doc) => doc,
                Err(_) => return Err(describe(&out)),
            };
            let g = line(&doc, "10001");
            let all_in =
                g["delivered_last_hour"].as_u64() == Some(good.sim.visible_events().len() as u64);
            let refused_seen = line(&doc, "10002")["condition"] == "failing";
            match all_in && refused_seen && g["delivered_last_minute"].as_u64() > Some(0) {
                true => Ok((out, doc)),
                false => Err(doc.to_string()),
            }
        })
        .await;
    assert_eq!(out.status.code(), Some(2), "a failing line: exit 2");
    let text = String::from_utf8_lossy(&out.stdout);
    for key in KEYS {
        assert!(!text.contains(key), "a key in clear: {text}");
    }
    let services = doc["services"].as_array().unwrap();
    assert_eq!(services[0]["input"], "10002", "failing first: {doc}");
    let reason = services[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cccc...03") && reason.contains("not valid"),
        "{reason}"
    );
    assert_eq!(doc["failing"], 1, "{doc}");
    let g = line(&doc, "10001");
    assert_eq!(g["condition"], "collecting", "{doc}");
    assert!(g["lag_seconds"].as_f64().unwrap() > 0.0, "{doc}");
    assert!(g["reason"].is_null(), "{doc}");

    // The table: the header's counts, the failing line first with its masked reason.
    let out = status(&env, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("1 failing, 0 starting, 0 standing by, 1 collecting"),
        "{table}"
    );
    let rows: Vec<&str> = lines.skip(1).collect();
    assert!(
        rows[0].starts_with("failing") && rows[0].contains("10002"),
        "{table}"
    );
    assert!(rows[0].contains("cccc...03"), "{table}");
    assert!(
        rows[1].starts_with("collecting") && rows[1].contains("10001"),
        "{table}"
    );
    for key in KEYS {
        assert!(!table.contains(key), "a key in clear: {table}");
    }

    // An API that keeps failing fails the good tenant's line too, with the cycle's error,
    // until a cycle succeeds again.
    good.sim
        .push_fault(FaultTarget::Any, Fault::Status(503), 60);
    let condition_of_10001 = async |want: &str, because: &str| {
        Wait::new(format!("10001 {want}"), Duration::from_secs(60))
            .every(ms(100))
            .showing_log(&log)
            .until_async(async || {
                let out = status(&env, &["--json"]).await;
                let doc: serde_json::Value =
                    serde_json::from_slice(&out.stdout).map_err(|_| describe(&out))?;
                let g = line(&doc, "10001");
                let reason = g["reason"].as_str().unwrap_or_default();
                match g["condition"] == want && reason.contains(because) {
                    true => Ok(()),
                    false => Err(g.to_string()),
                }
            })
            .await
    };
    condition_of_10001("failing", "the API kept failing").await;
    condition_of_10001("collecting", "").await;

    // --watch redraws until stopped: two frames at least.
    let frames = env.path("watch.txt");
    let mut watch = collector_command(&["status", "--watch", "1"], &env.config_path())
        .stdout(std::fs::File::create(&frames).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Wait::new("two frames of --watch", Duration::from_secs(20))
        .showing(|| read_log(&frames))
        .until(|| count_in(&frames, " standing by, ") >= 2)
        .await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "--watch ended by itself"
    );
    kill_9(&mut watch).await;
    sigterm_and_wait(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_listener_nobody_runs_exits_1_saying_where_it_asked() {
    let address = format!("127.0.0.1:{}", free_port());
    let out = collector(&["status", "--address", &address])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("http://{address}/status")), "{err}");
    assert!(err.contains("Is the daemon running"), "{err}");
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    // Bad usage: neither --config nor --address.
    let out = collector(&["status"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}

/// `status --json --address` of `replica`: the exit code and the document (`None` while it does
/// not answer).
async fn status_of(replica: &Replica) -> (Option<i32>, Option<serde_json::Value>) {
    let out = collector(&["status", "--json", "--address", replica.metrics_address()])
        .output()
        .await
        .unwrap();
    (out.status.code(), serde_json::from_slice(&out.stdout).ok())
}

/// Whether every line of `doc` is `condition` with a lease holder that `holder` accepts.
fn every_line(
    doc: &serde_json::Value,
    condition: &str,
    holder: impl Fn(&serde_json::Value) -> bool,
) -> bool {
    let lines = doc["services"].as_array().cloned().unwrap_or_default();
    lines.len() == SERVICES.len()
        && lines
            .iter()
            .all(|l| l["condition"] == condition && holder(&l["lease_holder"]))
}

/// Two replicas on Redis: the holder's lines are collecting under its own name, the standby's
/// are standing by (not failing: exit 0) under the holder's name; with Redis killed, every line
/// of both is failing, saying the state store is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_the_standby_names_the_holder_and_a_dead_redis_fails_every_line() {
    let mut ha = Ha::new(300, |_| {}, "", 3).await;
    ha.replicas[0].start();
    for s in SERVICES {
        assert_eq!(ha.holder(s).await, 0);
    }
    ha.replicas[1].start();
    let a_name = format!(":{}", ha.replicas[0].pid());
    let is_a = |h: &serde_json::Value| h.as_str().is_some_and(|h| h.ends_with(&a_name));
    let (code, doc) = Wait::new("b standing by, naming a", Duration::from_secs(30))
        .every(ms(200))
        .showing(|| ha.logs())
        .until_async(async || match status_of(&ha.replicas[1]).await {
            (code, Some(doc)) if every_line(&doc, "standby", is_a) => Ok((code, doc)),
            seen => Err(format!("{seen:?}")),
        })
        .await;
    assert_eq!(code, Some(0), "standing by is not failing: {doc}");
    assert_eq!(doc["standby"], 2, "{doc}");
    let (code, doc) = status_of(&ha.replicas[0]).await;
    let doc = doc.expect("a answers");
    let a_replica = doc["replica"].clone();
    assert!(every_line(&doc, "collecting", |h| *h == a_replica), "{doc}");
    assert_eq!(code, Some(0), "{doc}");

    ha.redis.kill();
    for replica in &ha.replicas {
        let doc = Wait::new("every line failing for Redis", Duration::from_secs(30))
            .every(ms(200))
            .showing(|| ha.logs())
            .until_async(async || match status_of(replica).await {
                (Some(2), Some(doc)) if every_line(&doc, "failing", |_| true) => Ok(doc),
                seen => Err(format!("{seen:?}")),
            })
            .await;
        for line in doc["services"].as_array().unwrap() {
            let reason = line["reason"].as_str().unwrap();
            assert!(
                reason.starts_with("state store: Redis at") && reason.contains("unreachable"),
                "{doc}"
            );
        }
        assert!(doc["persistence_problem"].is_string(), "{doc}");
    }
    ha.redis.restart().await;
    ha.stop_all().await;
}
