//! The metrics listener (`globals.metrics_listen`) against the truth (the simulators' counts and
//! the delivered files), `/health` and `/ready`, and `--log-format json`.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use isolation_sim::{Dataset, Fault, FaultTarget};

use crate::support::*;

const WEB: &str = "browser_and_email_isolation";
const URL: &str = "url_isolation";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_truth_and_health_and_ready_answer() {
    let env = TestEnv::both(700, |c| c.page_size_cap = Some(200)).await;
    let base = listen_on_free_port(&env);
    let (child, log) = env.spawn_logged(&["run", "--log-format", "json"], "daemon.log");

    // Everything delivered, and the counters caught up with the truth.
    wait_for("every event delivered", Duration::from_secs(60), || {
        env.delivered(WEB_TABLE).len() >= env.web.visible_events().len()
            && env.delivered(URL_TABLE).len() >= env.url.visible_events().len()
    })
    .await;
    env.assert_exactly_once();
    let received = "isolation_collector_received_events_total";
    let delivered = "isolation_collector_delivered_events_total";
    let samples = scrape_until(&base, "counters equal the truth", |s| {
        sample(s, received, &[("input", INPUT_ID), ("service", WEB)])
            == Some(env.web.stats().events_served as f64)
            && sample(s, received, &[("input", INPUT_ID), ("service", URL)])
                == Some(env.url.stats().events_served as f64)
            && sample(
                s,
                delivered,
                &[
                    ("input", INPUT_ID),
                    ("output", "local"),
                    ("table", WEB_TABLE),
                ],
            ) == Some(env.delivered(WEB_TABLE).len() as f64)
            && sample(
                s,
                delivered,
                &[
                    ("input", INPUT_ID),
                    ("output", "local"),
                    ("table", URL_TABLE),
                ],
            ) == Some(env.delivered(URL_TABLE).len() as f64)
    })
    .await;
    assert!(env.web.stats().events_served >= 700);
    let requests = "isolation_collector_api_requests_total";
    for svc in [WEB, URL] {
        assert!(
            value(
                &samples,
                requests,
                &[("input", INPUT_ID), ("service", svc), ("outcome", "ok")]
            ) > 0.0
        );
        let lag = value(
            &samples,
            "isolation_collector_checkpoint_lag_seconds",
            &[("input", INPUT_ID), ("service", svc)],
        );
        assert!(lag > 0.0 && lag < 30.0, "{svc}: lag {lag}");
        let last = value(
            &samples,
            "isolation_collector_last_successful_pull_timestamp_seconds",
            &[("input", INPUT_ID), ("service", svc)],
        );
        let now = chrono::Utc::now().timestamp() as f64;
        assert!(
            last > now - 30.0 && last <= now + 1.0,
            "{svc}: last pull {last}"
        );
    }
    for svc in [WEB, URL] {
        assert_eq!(
            value(
                &samples,
                "isolation_collector_state_write_failures_total",
                &[("input", INPUT_ID), ("service", svc)]
            ),
            0.0
        );
    }
    assert_eq!(
        get(&format!("{base}/health")).await,
        Some((200, "ok".to_owned()))
    );
    let (status, body) = get(&format!("{base}/ready")).await.unwrap();
    assert_eq!(status, 200, "{body}");

    // A 503 is counted as a server error and retried.
    let errors_before = value(
        &samples,
        requests,
        &[
            ("input", INPUT_ID),
            ("service", WEB),
            ("outcome", "server_error"),
        ],
    );
    let retries = "isolation_collector_api_retries_total";
    let retries_before = value(&samples, retries, &[("input", INPUT_ID), ("service", WEB)]);
    env.web.push_fault(FaultTarget::Any, Fault::Status(503), 1);
    scrape_until(&base, "the 503 is counted", |s| {
        value(
            s,
            requests,
            &[
                ("input", INPUT_ID),
                ("service", WEB),
                ("outcome", "server_error"),
            ],
        ) == errors_before + 1.0
            && value(s, retries, &[("input", INPUT_ID), ("service", WEB)]) == retries_before + 1.0
    })
    .await;
    let (status, body) = get(&format!("{base}/ready")).await.unwrap();
    assert_eq!(
        status, 200,
        "a retried request leaves the service ready: {body}"
    );

    sigterm_and_wait(child).await;
    // --log-format json: every line is an object with the fields, Devo's thread names kept.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut threads = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["time", "level", "process", "thread", "message"] {
            assert!(v[field].is_string(), "no {field} in {line}");
        }
        threads.push(v["thread"].as_str().unwrap().to_owned());
    }
    assert!(text.lines().count() > 10, "{text}");
    assert!(threads.iter().any(|t| t == "MainThread"));
    assert!(threads
        .iter()
        .any(|t| t == "IsolationPuller(proofpoint_isolation,10001,url_isolation,predefined)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_names_the_service_whose_key_is_refused() {
    let web = sim_config(Dataset::Web, 100, 1);
    let mut url = sim_config(Dataset::Url, 100, 2);
    url.api_key = "ffffffff-0000-4000-8000-000000000000".into();
    let env = TestEnv::start(web, url).await;
    let base = listen_on_free_port(&env);
    let (child, _) = env.spawn_logged(&["run", "--log-format", "json"], "daemon.log");
    let body = Wait::new(format!("/ready naming only {URL}"), Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .until_async(async || match get(&format!("{base}/ready")).await {
            // Until the web service's setup passed, it is named too.
            Some((503, body))
                if body.contains(URL) && body.contains("not valid") && !body.contains(WEB) =>
            {
                Ok(body)
            }
            answer => Err(format!("{answer:?}")),
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "{body}");
    assert!(!body.contains(KEY), "the key leaked: {body}");
    assert_eq!(
        get(&format!("{base}/health")).await,
        Some((200, "ok".to_owned()))
    );
    let samples = scrape(&base).await;
    assert!(
        value(
            &samples,
            "isolation_collector_api_requests_total",
            &[("input", INPUT_ID), ("service", URL), ("outcome", "auth")]
        ) >= 1.0
    );
    sigterm_and_wait(child).await;
}
