use std::sync::Arc;

use axum::http::StatusCode;

use super::readiness::ready_body;
use super::*;

#[test]
fn names_labels_and_lag() {
    let m = Arc::new(Metrics::new());
    let s = m.service("10001", Service::UrlIsolation);
    s.events_received(5);
    s.request(Outcome::RateLimited);
    s.delivery("local", "t.a", Ok(3));
    s.checkpoint(1_000);
    s.pull_succeeded(2_500);
    s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 2);
    s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 0);
    s.job_fault(JobFault::PageTokenLoop);
    s.dead_lettered("t.a", None, 3);
    s.dead_lettered("t.a", Some("hec"), 1);
    let text = m.encode(11_000);
    for line in [
        "isolation_collector_received_events_total{input=\"10001\",service=\"url_isolation\"} 5",
        "isolation_collector_api_requests_total{input=\"10001\",service=\"url_isolation\",outcome=\"rate_limited\"} 1",
        "isolation_collector_delivered_events_total{input=\"10001\",output=\"local\",table=\"t.a\"} 3",
        "isolation_collector_checkpoint_lag_seconds{input=\"10001\",service=\"url_isolation\"} 10.0",
        "isolation_collector_last_successful_pull_timestamp_seconds{input=\"10001\",service=\"url_isolation\"} 2.5",
        "isolation_collector_obfuscation_fallbacks_total{input=\"10001\",service=\"url_isolation\",rule=\"obfuscation_data[0] [userName]\"} 2",
        "isolation_collector_api_job_faults_total{input=\"10001\",service=\"url_isolation\",kind=\"page_token_loop\"} 1",
        "isolation_collector_events_dead_lettered_total{input=\"10001\",service=\"url_isolation\",table=\"t.a\",output=\"none\"} 3",
        "isolation_collector_events_dead_lettered_total{input=\"10001\",service=\"url_isolation\",table=\"t.a\",output=\"hec\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[test]
fn readiness_follows_setup_and_deliveries() {
    let m = Arc::new(Metrics::new());
    m.expect_service("10001", Service::UrlIsolation);
    assert_eq!(m.not_ready().len(), 1);
    let s = m.service("10001", Service::UrlIsolation);
    s.setup(Err("API Key 1a2b...9z is not valid.".into()));
    assert!(m.not_ready()[0].contains("url_isolation: setup has not passed: API Key"));
    s.setup(Ok(()));
    assert!(m.not_ready().is_empty());
    assert!(m.encode(0).contains(
        "isolation_collector_api_requests_total{input=\"10001\",service=\"url_isolation\",outcome=\"auth\"} 0\n"
    ));
    s.delivery("dev", "t", Err("refused".into()));
    assert!(m.not_ready()[0].starts_with("output dev (input 10001 service url_isolation)"));
    s.delivery("dev", "t", Ok(1));
    assert!(m.not_ready().is_empty());
    assert_eq!(ready_body(&m).1, serde_json::json!({"ready": true}));
    assert!(!m.encode(0).contains("lease"));
}

#[test]
fn leases_and_persistence_with_redis() {
    let m = Arc::new(Metrics::new().with_leases());
    m.expect_service("10001", Service::UrlIsolation);
    m.expect_service("10001", Service::BrowserAndEmailIsolation);
    let (url, browser) = (
        m.service("10001", Service::UrlIsolation),
        m.service("10001", Service::BrowserAndEmailIsolation),
    );
    url.setup(Ok(()));
    browser.setup(Ok(()));
    url.lease_held(true);
    let (status, body) = ready_body(&m);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "leases": {"held": ["10001/url_isolation"], "standby": ["10001/browser_and_email_isolation"]}})
    );
    url.lease_held(false);
    url.lease_lost();
    m.persistence(Err("Redis at 127.0.0.1:1 is unreachable".into()));
    let (status, body) = ready_body(&m);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["not_ready"],
        serde_json::json!(["persistence: Redis at 127.0.0.1:1 is unreachable"])
    );
    let text = m.encode(0);
    for line in [
        "isolation_collector_lease_held{input=\"10001\",service=\"url_isolation\"} 0",
        "isolation_collector_lease_lost_total{input=\"10001\",service=\"url_isolation\"} 1",
        "isolation_collector_lease_lost_total{input=\"10001\",service=\"browser_and_email_isolation\"} 0",
        "isolation_collector_persistence_up 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    m.persistence(Ok(()));
    assert!(m
        .encode(0)
        .contains("isolation_collector_persistence_up 1\n"));
    m.replicas(3, 9);
    assert_eq!(
        ready_body(&m).1["replicas"],
        serde_json::json!({"live": 3, "fair_share": 9})
    );
    let text = m.encode(0);
    for line in [
        "isolation_collector_replicas_live 3",
        "isolation_collector_fair_share 9",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[test]
fn a_forgotten_input_leaves_ready_and_the_exposition() {
    let m = Arc::new(Metrics::new().with_leases());
    for input in ["10001", "10002"] {
        m.expect_service(input, Service::UrlIsolation);
        let s = m.service(input, Service::UrlIsolation);
        s.delivery("local", "t", Err("refused".into()));
        s.checkpoint(1_000);
        s.obfuscation_fallbacks("obfuscation_data[0] [userName]", 1);
        s.job_fault(JobFault::RepeatedPage);
        s.dead_lettered("t", None, 1);
    }
    assert_eq!(m.not_ready().len(), 4);
    m.forget_input("10002");
    let problems = m.not_ready();
    assert_eq!(problems.len(), 2);
    assert!(problems.iter().all(|p| p.contains("10001")), "{problems:?}");
    let text = m.encode(2_000);
    assert!(!text.contains("10002"), "{text}");
    for family in [
        "received_events_total",
        "api_requests_total",
        "checkpoint_lag_seconds",
        "output_confirm_failures_total",
        "obfuscation_fallbacks_total",
        "api_job_faults_total",
        "events_dead_lettered_total",
        "lease_held",
    ] {
        assert!(
            text.contains(&format!("isolation_collector_{family}{{input=\"10001\"")),
            "{family}: {text}"
        );
    }
    assert_eq!(
        m.leases().unwrap().1,
        [("10001".to_owned(), Service::UrlIsolation)]
    );
}
