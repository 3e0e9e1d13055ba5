//! The `http` (webhook) and `splunk_hec` outputs through the collector binary, into the
//! receivers of `http_receivers`: exactly the served multiset of events, through 5xx, 429 with
//! Retry-After, 413 splits, refused tokens and acknowledgements that come late or never.

use std::time::Duration;

use isolation_sim::Dataset;

use crate::http_receivers::{Receiver, Scripted};
use crate::support::*;

pub(crate) const HEC_TOKEN: &str = "5f0c8a2e-1b7d-4c3a-9e6f-2d4b8a1c7e90";
pub(crate) const HOOK_AUTH: &str = "Bearer hook-s3cret-value";

/// Every event the simulators serve, both services together.
pub(crate) fn served(env: &TestEnv) -> Vec<String> {
    let mut all = env.web.visible_events();
    all.extend(env.url.visible_events());
    all
}

pub(crate) fn webhook_output(hook: &Receiver, extra: &str) -> String {
    let mut s = format!(
        "  hook:\n    type: http\n    config:\n      url: {}\n      headers: {{Authorization: \"${{HOOK_AUTH}}\"}}\n",
        hook.url("/hook?token=query-s3cret")
    );
    for line in extra.lines() {
        s.push_str(&format!("      {line}\n"));
    }
    s
}

pub(crate) fn hec_output(hec: &Receiver, token: &str, extra: &str) -> String {
    let mut s = format!(
        "  splunk:\n    type: splunk_hec\n    config:\n      url: {}\n      token: \"{token}\"\n      index: proofpoint\n",
        hec.url("")
    );
    for line in extra.lines() {
        s.push_str(&format!("      {line}\n"));
    }
    s
}

async fn run_once(env: &TestEnv) -> std::process::Output {
    env.collector_with_env(&["run", "--once"], &[("HOOK_AUTH", HOOK_AUTH)])
        .await
}

pub(crate) fn assert_no_secret(log: &str) {
    for secret in [HEC_TOKEN, "hook-s3cret", "query-s3cret"] {
        assert!(!log.contains(secret), "{secret} in\n{log}");
    }
}

/// A 500, then a 429 with `Retry-After: 1`, and a receiver that refuses bodies over 200 KB
/// (413): the requests are retried and split, and the webhook holds every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_every_event_once_through_5xx_429_and_413() {
    // One service only: the two would interleave their requests.
    let mut env = TestEnv::start(
        sim_config(Dataset::Web, 2500, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let hook = Receiver::start("", false).await;
    hook.script([
        Scripted::Status(500, "boom", None),
        Scripted::Status(429, "slow down", Some(1)),
    ]);
    hook.set_max_body_bytes(Some(200_000));
    env.outputs_extra = webhook_output(&hook, "");
    env.write_config();
    let out = run_once(&env).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_multiset(&hook.hook_events(), &served(&env), "webhook");
    env.assert_exactly_once();

    // The deliveries: `run` checked the webhook first with an empty batch, which the script
    // does not answer.
    let seen = hook.deliveries();
    assert_eq!(hook.seen().len(), seen.len() + 1, "one check at start");
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    let not_413: Vec<u16> = statuses.iter().copied().filter(|s| *s != 413).collect();
    assert_eq!(not_413[..3], [500, 429, 200], "{statuses:?}");
    assert!(statuses.contains(&413), "{statuses:?}");
    // The request after the 429 waited its Retry-After.
    let after = statuses.iter().position(|s| *s == 429).unwrap();
    let waited = seen[after + 1].at - seen[after].at;
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    for s in &seen {
        assert_eq!(s.headers["authorization"], HOOK_AUTH);
        assert_eq!(s.headers["content-type"], "application/json");
    }
    let log = stderr(&out);
    assert!(
        log.contains("answered 500 Internal Server Error: boom"),
        "{log}"
    );
    assert!(log.contains("sending it in halves"), "{log}");
    assert_no_secret(&log);
}

/// ndjson bodies, gzipped, at most 100 events per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_takes_gzipped_ndjson_in_requests_of_the_configured_size() {
    let mut env = TestEnv::both(700, |_| {}).await;
    let hook = Receiver::start("", false).await;
    env.outputs_extra = webhook_output(
        &hook,
        "format: ndjson\ncompression: gzip\nmax_events_per_request: 100",
    );
    env.write_config();
    let out = run_once(&env).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_multiset(&hook.hook_events(), &served(&env), "webhook");
    let seen = hook.seen();
    assert!(seen.len() >= 14, "{} requests", seen.len());
    for s in &seen {
        assert!(s.events <= 100, "{} events in one request", s.events);
        assert_eq!(s.headers["content-encoding"], "gzip");
        assert_eq!(s.headers["content-type"], "application/x-ndjson");
    }
}

/// A 400 to a request of several events splits it, to find the event(s) refused: 400s that
/// end before any event is refused alone cost only the splits. The log names the status and
/// the body; every event arrives once, and nothing is set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_splits_the_request_and_nothing_is_lost_or_repeated() {
    let mut env = TestEnv::both(300, |_| {}).await;
    let hook = Receiver::start("", false).await;
    hook.script((0..8).map(|_| Scripted::Status(400, "field `user` is required", None)));
    env.outputs_extra = webhook_output(&hook, "");
    env.write_config();
    let out = run_once(&env).await;
    assert!(out.status.success(), "{}", describe(&out));
    let log = stderr(&out);
    assert!(
        log.contains("answered 400 Bad Request: field `user` is required"),
        "{log}"
    );
    assert!(log.contains("sending it in halves"), "{log}");
    assert!(!log.contains("set aside"), "{log}");
    assert_no_secret(&log);
    assert_eq!(hook.seen().iter().filter(|s| s.status == 400).count(), 8);
    assert_same_multiset(&hook.hook_events(), &served(&env), "webhook");
}

/// `validate` posts an empty batch with the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_the_webhook() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let hook = Receiver::start("", false).await;
    env.outputs_extra = webhook_output(&hook, "");
    env.write_config();
    let out = env
        .collector_with_env(&["validate"], &[("HOOK_AUTH", HOOK_AUTH)])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Output hook is usable."));
    assert_eq!(hook.seen().len(), 1);
    assert_eq!(hook.seen()[0].headers["authorization"], HOOK_AUTH);

    hook.script_checks([Scripted::Status(401, "who are you", None)]);
    let out = env
        .collector_with_env(&["validate"], &[("HOOK_AUTH", HOOK_AUTH)])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    assert!(
        log.contains(
            "refused the credentials (401 Unauthorized: who are you); check the `headers`"
        ),
        "{log}"
    );
    assert_no_secret(&log);
}

/// The date of a served event line, in epoch milliseconds (the collector's own parser).
fn date_ms(event: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    isolation_collector::timestamp::parse_event_date(v["date"].as_str().unwrap()).unwrap()
}

/// A busy HEC (503, code 9), then an acknowledgement that comes 1.5 s late: every event is
/// indexed once, with its date as `time` and the per-service sourcetype.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_indexes_every_event_once_through_busy_and_late_acks() {
    let mut env = TestEnv::both(1500, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    hec.script([
        Scripted::Status(503, r#"{"text":"Server is busy","code":9}"#, None),
        Scripted::AckLate(Duration::from_millis(1500)),
    ]);
    env.outputs_extra = hec_output(&hec, "${HEC_TOKEN}", "max_events_per_request: 500");
    env.write_config();
    let out = env
        .collector_with_env(&["run", "--once"], &[("HEC_TOKEN", HEC_TOKEN)])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    let indexed = hec.indexed();
    let events: Vec<String> = indexed
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    assert_same_multiset(&events, &served(&env), "HEC");
    let web: std::collections::BTreeSet<String> = env.web.visible_events().into_iter().collect();
    for (e, text) in indexed.iter().zip(&events) {
        let (table, sourcetype) = if web.contains(text) {
            (WEB_TABLE, "proofpoint:isolation:browser_and_email")
        } else {
            (URL_TABLE, "proofpoint:isolation:url_isolation")
        };
        assert_eq!(e.sourcetype.as_deref(), Some(sourcetype));
        assert_eq!(e.source.as_deref(), Some(table));
        assert_eq!(e.index.as_deref(), Some("proofpoint"));
        assert!(e.host.is_some());
        let time = e.time.as_ref().unwrap().get();
        let ms = date_ms(text);
        assert_eq!(
            time,
            format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
        );
    }
    // The deliveries: `run`'s check at start (health, an empty request, an empty ack query) is
    // another output instance, on its own channel.
    let seen = hec.deliveries();
    assert_eq!(seen[0].status, 503);
    assert!(seen.iter().any(|s| s.path.ends_with("/ack")));
    // One channel per output instance (one per service), a UUID, on every request.
    let channels: std::collections::BTreeSet<&str> = seen
        .iter()
        .map(|s| s.headers["x-splunk-request-channel"].to_str().unwrap())
        .collect();
    assert_eq!(channels.len(), 2, "{channels:?}");
    assert_no_secret(&stderr(&out));
}

/// An acknowledgement that never comes fails the window after ack_timeout_in_seconds; the
/// retry delivers. Events of the unacknowledged request that were lost are delivered once;
/// events that were indexed anyway appear twice, and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_never_comes_is_retried_without_loss() {
    for indexed_anyway in [false, true] {
        let mut env = TestEnv::both(800, |_| {}).await;
        let hec = Receiver::start(HEC_TOKEN, true).await;
        hec.script([Scripted::AckNever {
            indexed: indexed_anyway,
        }]);
        env.outputs_extra = hec_output(&hec, HEC_TOKEN, "ack_timeout_in_seconds: 1");
        env.write_config();
        let out = run_once(&env).await;
        assert!(out.status.success(), "{}", describe(&out));
        let log = stderr(&out);
        assert!(
            log.contains("Splunk did not acknowledge 1 request(s) (ackId 0) within 1 s"),
            "{log}"
        );
        let events: Vec<String> = hec
            .indexed()
            .iter()
            .map(|e| e.event.as_ref().unwrap().get().to_owned())
            .collect();
        // Compared with what the simulators served, not with what the receiver holds: every
        // served event indexed once, plus (indexed anyway) one more copy of each event of the
        // request whose acknowledgement never came, and nothing else.
        let want = served(&env);
        let extra_copies = if indexed_anyway {
            hec.seen()
                .iter()
                .find(|s| s.path.ends_with("/event") && s.status == 200)
                .unwrap()
                .events
        } else {
            0
        };
        let (got, served) = (multiset(&events), multiset(&want));
        let mut extra = 0;
        for (event, n) in &served {
            let copies = got.get(event).copied().unwrap_or(0);
            // A twin of the unacknowledged request is indexed once more per copy in it.
            let most = if indexed_anyway { 2 * n } else { *n };
            assert!(
                (*n..=most).contains(&copies),
                "indexed {copies} times, served {n} times (indexed anyway: {indexed_anyway}): \
                 {event}"
            );
            extra += copies - n;
        }
        assert!(
            got.keys().all(|e| served.contains_key(e)),
            "an event that was never served was indexed"
        );
        assert_eq!(
            extra, extra_copies,
            "extra copies, indexed anyway: {indexed_anyway}"
        );
        assert!(!indexed_anyway || extra > 0);
    }
}

/// A wrong token: `validate` says so and exits 1; `run` delivers nothing and names the cause.
/// The right token passes the health, token and acknowledgement checks; an unhealthy HEC fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_with_a_clear_error_and_validate_checks_hec() {
    let mut env = TestEnv::both(100, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    env.outputs_extra = hec_output(&hec, "0000-wrong-token-0000", "");
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let log = stderr(&out);
    assert!(
        log.contains(
            "Splunk refused the token (403 Forbidden: Invalid token (code 4)); check `token`"
        ),
        "{log}"
    );
    assert!(!log.contains("0000-wrong-token-0000"), "{log}");
    let out = env.collector(&["run", "--once"]).await;
    let log = stderr(&out);
    assert!(
        log.contains(
            "refused the credentials (403 Forbidden: Invalid token (code 4)); check `token`"
        ),
        "{log}"
    );
    assert!(!log.contains("0000-wrong-token-0000"), "{log}");
    assert!(hec.indexed().is_empty());

    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "");
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("Output splunk is usable."));
    hec.set_unhealthy(true);
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("HEC health check http://"),
        "{}",
        describe(&out)
    );
}

/// A token without indexer acknowledgement while use_ack is true: validate says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_ack_against_a_token_without_ack_is_explained() {
    let mut env = TestEnv::both(10, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, false).await;
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "");
    env.write_config();
    let out = env.collector(&["validate"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("ACK is disabled (code 14)); enable indexer acknowledgement on the token, or set use_ack: false"),
        "{}",
        describe(&out)
    );
    // use_ack: false works against it (a 200 confirms).
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "use_ack: false");
    env.write_config();
    let out = env.collector(&["run", "--once"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let events: Vec<String> = hec
        .indexed()
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    assert_same_multiset(&events, &served(&env), "HEC without ack");
}

/// HTTPS with mutual TLS: the receiver's CA as `ca_file` and our client certificate deliver;
/// without `ca_file` the server is not trusted, and without `cert`/`key` the receiver refuses
/// the handshake; both are named, and nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_and_its_failures_are_named() {
    let mut env = TestEnv::both(200, |_| {}).await;
    let pki = crate::rsyslog::Pki::new(env.dir.path());
    let hook = Receiver::start_tls("", false, &pki.server, Some(&pki.ca.pem)).await;
    let tls = format!(
        "ca_file: {}\ncert: {}\nkey: {}",
        pki.ca.pem.display(),
        pki.client.cert.display(),
        pki.client.key.display()
    );
    let no_client_cert = format!("ca_file: {}", pki.ca.pem.display());
    let cases = [
        ("", "the server certificate is not trusted (UnknownIssuer); give the CA that issued it as `ca_file`"),
        (no_client_cert.as_str(), "the receiver rejected our client certificate, or wants one (TLS alert CertificateRequired); check `cert` and `key`"),
    ];
    for (extra, error) in cases {
        env.outputs_extra = webhook_output(&hook, extra);
        env.write_config();
        let out = env
            .collector_with_env(&["validate"], &[("HOOK_AUTH", HOOK_AUTH)])
            .await;
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let log = stderr(&out);
        assert!(log.contains(error), "{error:?} in\n{log}");
        assert_no_secret(&log);
    }
    assert!(hook.hook_events().is_empty());
    env.outputs_extra = webhook_output(&hook, &tls);
    env.write_config();
    let out = run_once(&env).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_multiset(
        &hook.hook_events(),
        &served(&env),
        "webhook over mutual TLS",
    );
}

/// The HEC stand-in itself answers as Splunk documents (the outputs' tests rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hec_stand_in_answers_as_splunk_documents() {
    let hec = Receiver::start(HEC_TOKEN, true).await;
    let http = reqwest::Client::new();
    let channel = "0f3c1d2e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    let post = |path: &str, auth: Option<&str>, channel: Option<&str>, body: &'static str| {
        let mut r = http.post(hec.url(path)).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(c) = channel {
            r = r.header("x-splunk-request-channel", c);
        }
        async move {
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let token = format!("Splunk {HEC_TOKEN}");
    let ok = Some(token.as_str());
    let event = "/services/collector/event";
    // (what came back, what Splunk documents)
    type Case<'a> = ((u16, String), (u16, &'a str));
    let cases: Vec<Case> = vec![
        (
            post(event, None, Some(channel), "{\"event\":1}").await,
            (401, r#"{"text":"Token is required","code":2}"#),
        ),
        (
            post(event, Some("Bearer x"), Some(channel), "{\"event\":1}").await,
            (401, r#"{"text":"Invalid authorization","code":3}"#),
        ),
        (
            post(event, Some("Splunk nope"), Some(channel), "{\"event\":1}").await,
            (403, r#"{"text":"Invalid token","code":4}"#),
        ),
        (
            post(event, ok, Some(channel), " ").await,
            (400, r#"{"text":"No data","code":5}"#),
        ),
        (
            post(event, ok, Some(channel), "{\"event\":1}{\"time\":2}").await,
            (
                400,
                r#"{"text":"Event field is required","code":12,"invalid-event-number":1}"#,
            ),
        ),
        (
            post(event, ok, Some(channel), "{\"event\":").await,
            (
                400,
                r#"{"text":"Invalid data format","code":6,"invalid-event-number":0}"#,
            ),
        ),
        (
            post(event, ok, None, "{\"event\":1}").await,
            (400, r#"{"text":"Data channel is missing","code":10}"#),
        ),
        (
            post(event, ok, Some("not-a-guid"), "{\"event\":1}").await,
            (400, r#"{"text":"Invalid data channel","code":11}"#),
        ),
        (
            post(
                event,
                ok,
                Some(channel),
                "{\"event\":1}\n{\"event\":{\"a\":2}}",
            )
            .await,
            (200, r#"{"text":"Success","code":0,"ackId":0}"#),
        ),
        // Reported true once, then released.
        (
            post(
                "/services/collector/ack",
                ok,
                Some(channel),
                "{\"acks\":[0,5]}",
            )
            .await,
            (200, r#"{"acks":{"0":true,"5":false}}"#),
        ),
        (
            post(
                "/services/collector/ack",
                ok,
                Some(channel),
                "{\"acks\":[0]}",
            )
            .await,
            (200, r#"{"acks":{"0":false}}"#),
        ),
    ];
    for (got, (status, body)) in cases {
        assert_eq!(got, (status, body.to_owned()));
    }
    let events: Vec<String> = hec
        .indexed()
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    assert_eq!(events, ["1", "{\"a\":2}"], "refused requests index nothing");
    let health = http
        .get(hec.url("/services/collector/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.text().await.unwrap(),
        r#"{"text":"HEC is healthy","code":17}"#
    );
    let no_ack = Receiver::start(HEC_TOKEN, false).await;
    let resp = http
        .post(no_ack.url("/services/collector/ack"))
        .header("authorization", &token)
        .header("x-splunk-request-channel", channel)
        .body("{\"acks\":[0]}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.text().await.unwrap()),
        (400, r#"{"text":"ACK is disabled","code":14}"#.to_owned())
    );
}

/// The value of one sample line of the exposition (`name{labels} value`), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The HEC output counts in the families every output has: events confirmed per table (equal to
/// what Splunk indexed) and the delivery attempts it did not confirm (one missing ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hec_output_counts_in_the_same_metric_families() {
    let mut env = TestEnv::both(400, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    hec.script([Scripted::AckNever { indexed: false }]);
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "ack_timeout_in_seconds: 1");
    env.write_config();
    let base = listen_on_free_port(&env);
    let (mut child, log) = env.spawn_logged(&["run"], "daemon.log");
    let want = served(&env).len() as f64;
    let series = |name: &str, table: &str| {
        format!("isolation_collector_{name}{{input=\"10001\",output=\"splunk\",table=\"{table}\"}}")
    };
    let text = Wait::new("a full delivery", Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .showing_log(&log)
        .until_async(async || {
            let (_, text) = get(&format!("{base}/metrics")).await?;
            let delivered: f64 = [WEB_TABLE, URL_TABLE]
                .iter()
                .map(|t| sample(&text, &series("delivered_events_total", t)))
                .sum();
            (delivered >= want).then_some(text)
        })
        .await;
    kill_9(&mut child).await;
    assert_eq!(
        sample(&text, &series("delivered_events_total", WEB_TABLE)),
        env.web.visible_events().len() as f64
    );
    assert_eq!(
        sample(&text, &series("delivered_events_total", URL_TABLE)),
        env.url.visible_events().len() as f64
    );
    let failures: f64 = [WEB_TABLE, URL_TABLE]
        .iter()
        .map(|t| sample(&text, &series("output_confirm_failures_total", t)))
        .sum();
    assert_eq!(failures, 1.0, "{text}");
    let events: Vec<String> = hec
        .indexed()
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    assert_same_multiset(&events, &served(&env), "HEC");
}
