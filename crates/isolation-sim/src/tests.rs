//! Tests of the simulator through its HTTP API (reqwest against a started [`SimHandle`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::*;

const KEY: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "jobId")]
    job_id: String,
    status: String,
    total: Option<serde_json::Value>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    data: Option<Vec<Box<RawValue>>>,
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

/// Everything one job served.
#[derive(Debug, Default)]
struct Fetched {
    events: Vec<String>,
    pages: Vec<Page>,
    pending_answers: usize,
}

fn cfg(events: usize) -> SimConfig {
    let mut c = SimConfig::new(Dataset::Web);
    c.events = events;
    c
}

fn date(dt: DateTime<Utc>) -> String {
    format_param_date(dt)
}

fn all_window() -> (String, String) {
    let now = Utc::now();
    (date(now - chrono::Duration::days(2)), date(now))
}

/// A client that ignores proxy variables: the simulator is on 127.0.0.1, and a proxy set in
/// the CI environment must not route these requests.
fn direct_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

impl Client {
    fn new(sim: &SimHandle) -> Client {
        Client::with_key(sim, KEY)
    }

    /// A client that presents `key` (multi-key mode).
    fn with_key(sim: &SimHandle, key: &str) -> Client {
        Client {
            http: direct_client(),
            url: sim.usage_url(),
            key: key.to_string(),
        }
    }

    async fn get(&self, query: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(&self.url)
            .bearer_auth(&self.key)
            .query(query)
            .send()
            .await
            .expect("request")
    }

    async fn page(&self, query: &[(&str, &str)]) -> Page {
        let resp = self.get(query).await;
        assert_eq!(resp.status(), 200);
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json page")
    }

    /// Runs one job over `[from, to]` to the end, as iso2web does (resending the window).
    async fn fetch(&self, from: &str, to: &str, page_size: usize) -> Fetched {
        let ps = page_size.to_string();
        let base = [("from", from), ("to", to), ("pageSize", ps.as_str())];
        let mut out = Fetched::default();
        let mut page = self.page(&base).await;
        let job = page.job_id.clone();
        while page.status != "COMPLETED" {
            assert_eq!(page.status, "PENDING");
            assert!(page.data.is_none());
            out.pending_answers += 1;
            assert!(out.pending_answers < 20, "job never completed");
            let mut q = base.to_vec();
            q.push(("jobId", &job));
            page = self.page(&q).await;
        }
        loop {
            assert_eq!(page.job_id, job);
            for e in page.data.as_deref().unwrap_or_default() {
                out.events.push(e.get().to_string());
            }
            let Some(token) = page.page_token.clone() else {
                out.pages.push(page);
                break;
            };
            out.pages.push(page);
            let mut q = base.to_vec();
            q.push(("jobId", &job));
            q.push(("pageToken", &token));
            page = self.page(&q).await;
        }
        out
    }
}

#[tokio::test]
async fn job_protocol_pages_every_event_once() {
    let sim = SimHandle::start(cfg(2500)).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let got = c.fetch(&from, &to, 1000).await;
    assert_eq!(got.pending_answers, 2, "create + pending_polls=1");
    assert_eq!(got.pages.len(), 3);
    assert!(got.pages[..2].iter().all(|p| p.page_token.is_some()));
    assert!(got.pages[2].page_token.is_none());
    for p in &got.pages {
        assert_eq!(p.total, Some(serde_json::json!(2500)));
    }
    assert_eq!(got.events, sim.visible_events());
    let stats = sim.stats();
    assert_eq!(stats.job_creates, 1);
    assert_eq!(stats.polls, 1);
    assert_eq!(stats.page_requests, 3);
    assert_eq!(stats.events_served, 2500);
    sim.shutdown().await;
}

#[tokio::test]
async fn window_counts_match_visible_events_between() {
    let sim = SimHandle::start(cfg(3000)).await.expect("start");
    let c = Client::new(&sim);
    let now = Utc::now();
    let (from, to) = (
        now - chrono::Duration::hours(10),
        now - chrono::Duration::hours(3),
    );
    let got = c.fetch(&date(from), &date(to), 10_000).await;
    let want = sim.visible_events_between(from, to);
    assert!(!want.is_empty() && want.len() < 3000);
    assert_eq!(got.events, want);
    // The job's own window wins over the resent parameters.
    let empty = c.fetch(&date(now), &date(now), 10).await;
    assert!(empty.events.is_empty());
    assert!(empty.pages[0].page_token.is_none());
}

#[tokio::test]
async fn auth_styles_and_failures() {
    let sim = SimHandle::start(cfg(10)).await.expect("start");
    let http = direct_client();
    let (from, to) = all_window();
    let q = [("from", from.as_str()), ("to", to.as_str())];
    let ok = http
        .get(sim.usage_url())
        .bearer_auth(KEY)
        .query(&q)
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), 200);
    let ok = http
        .get(format!("{}/", sim.usage_url()))
        .query(&q)
        .query(&[("key", KEY)])
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), 200);
    let legacy = format!("{}/api/reporting/usage-data", sim.base_url());
    let ok = http
        .get(legacy)
        .bearer_auth(KEY)
        .query(&q)
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), 200);

    let bad = http
        .get(sim.usage_url())
        .bearer_auth("wrong")
        .query(&q)
        .send()
        .await
        .expect("r");
    assert_eq!(bad.status(), 403);
    assert!(bad.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/plain"));
    assert_eq!(
        bad.text().await.expect("body"),
        "API Key wrong is not valid."
    );
    let missing = http.get(sim.usage_url()).query(&q).send().await.expect("r");
    assert_eq!(missing.status(), 403);
    assert_eq!(sim.stats().auth_failures, 2);

    let mut c = cfg(10);
    c.auth_failure = AuthFailureMode::Unauthorized401Json;
    let sim2 = SimHandle::start(c).await.expect("start");
    let bad = http
        .get(sim2.usage_url())
        .query(&[("key", "k1")])
        .send()
        .await
        .expect("r");
    assert_eq!(bad.status(), 401);
    let v: serde_json::Value =
        serde_json::from_slice(&bad.bytes().await.expect("body")).expect("json");
    assert_eq!(v["message"], "API Key k1 is not valid.");
}

#[tokio::test]
async fn bad_requests_are_400_naming_the_parameter() {
    let mut c = cfg(10);
    c.retention_mode = RetentionMode::Reject;
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("from", &from), ("to", &to), ("pageSize", "0")],
            "pageSize",
        ),
        (
            vec![("from", &from), ("to", &to), ("pageSize", "10001")],
            "pageSize",
        ),
        (
            vec![("from", &from), ("to", &to), ("pageSize", "ten")],
            "pageSize",
        ),
        (vec![("from", "yesterday"), ("to", &to)], "from"),
        (vec![("from", &from), ("to", "2025-02-30")], "to"),
        (vec![("from", &to), ("to", &from)], "from"),
        (vec![("from", "2020-01-01"), ("to", &to)], "from"),
    ];
    for (q, param) in cases {
        let resp = c.get(&q).await;
        assert_eq!(resp.status(), 400, "{q:?}");
        let body = resp.text().await.expect("body");
        assert!(body.contains(&format!("'{param}'")), "{body}");
    }
    assert_eq!(sim.stats().bad_requests, 7);

    let resp = c
        .get(&[("from", &from), ("to", &to), ("jobId", "nope")])
        .await;
    assert_eq!(resp.status(), 404);
    let page = c
        .page(&[("from", &from), ("to", &to), ("pageSize", "2")])
        .await;
    let q = [("jobId", page.job_id.as_str()), ("pageToken", "forged")];
    assert_eq!(c.get(&q).await.status(), 400);
}

#[tokio::test]
async fn clamping_knobs() {
    let mut c = cfg(50);
    c.clamp_page_size = true;
    c.complete_on_create = true;
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let to = date(Utc::now());
    // Retention clamps by default; pageSize 20000 is clamped to 10000.
    let got = c.fetch("2020-01-01", &to, 20_000).await;
    assert_eq!(got.pending_answers, 0, "complete_on_create");
    assert_eq!(got.events.len(), 50);
}

#[tokio::test]
async fn to_exclusive_versus_inclusive() {
    let anchor = Utc::now() - chrono::Duration::minutes(10);
    let mut inclusive = cfg(500);
    inclusive.anchor = Some(anchor);
    inclusive.burst_fraction = 0.3;
    let mut exclusive = inclusive.clone();
    exclusive.to_inclusive = false;
    let a = SimHandle::start(inclusive).await.expect("start");
    let b = SimHandle::start(exclusive).await.expect("start");
    assert_eq!(a.visible_events(), b.visible_events());
    // `to` = the date of an event in the middle that shares its timestamp with others.
    let events = a.visible_events();
    let dates: Vec<String> = events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).expect("json");
            v["date"].as_str().expect("date").to_string()
        })
        .collect();
    let i = (250..499)
        .find(|&i| dates[i] == dates[i + 1])
        .expect("a burst");
    let to = DateTime::parse_from_str(&dates[i], "%Y-%m-%dT%H:%M:%S%.3f%z")
        .expect("date")
        .with_timezone(&Utc);
    let at_to = dates.iter().filter(|d| **d == dates[i]).count();
    assert!(at_to >= 2);
    let from = date(anchor - chrono::Duration::days(2));
    let got_a = Client::new(&a).fetch(&from, &date(to), 10_000).await;
    let got_b = Client::new(&b).fetch(&from, &date(to), 10_000).await;
    assert_eq!(got_a.events.len(), got_b.events.len() + at_to);
    assert_eq!(got_b.events[..], got_a.events[..got_b.events.len()]);
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn shuffle_keeps_the_multiset_and_copies_are_served() {
    let mut c = cfg(1000);
    c.shuffle = true;
    c.identical_fraction = 0.2;
    let sim = SimHandle::start(c).await.expect("start");
    let visible = sim.visible_events();
    let distinct: std::collections::HashSet<&String> = visible.iter().collect();
    assert!(distinct.len() < 900, "identical copies exist");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 300).await;
    assert_eq!(got.pages.len(), 4);
    assert_ne!(got.events, visible, "unordered");
    assert_eq!(sorted(got.events), sorted(visible));
}

#[tokio::test]
async fn page_size_cap_limits_pages() {
    let mut c = cfg(450);
    c.page_size_cap = Some(100);
    c.pending_polls = 0;
    c.total_mode = TotalMode::String;
    let sim = SimHandle::start(c).await.expect("start");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 10_000).await;
    assert_eq!(got.pending_answers, 1);
    let sizes: Vec<usize> = got
        .pages
        .iter()
        .map(|p| p.data.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 100, 100, 100, 50]);
    assert_eq!(got.pages[0].total, Some(serde_json::json!("450")));
    assert_eq!(got.events, sim.visible_events());
}

#[tokio::test]
async fn status_and_rate_limit_faults() {
    let sim = SimHandle::start(cfg(20)).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let q = [("from", from.as_str()), ("to", to.as_str())];
    sim.push_fault(FaultTarget::Create, Fault::Status(503), 1);
    sim.push_fault(
        FaultTarget::Any,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
        1,
    );
    assert_eq!(c.get(&q).await.status(), 503);
    let limited = c.get(&q).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(c.get(&q).await.status(), 200);
    assert_eq!(sim.stats().errors_injected, 2);
    assert_eq!(sim.stats().job_creates, 1);
}

#[tokio::test]
async fn truncate_malformed_and_delay_faults_hit_pages() {
    let mut c = cfg(300);
    c.pending_polls = 0;
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let first = c
        .page(&[("from", &from), ("to", &to), ("pageSize", "100")])
        .await;
    let job = first.job_id;
    sim.push_fault(FaultTarget::Page, Fault::Truncate, 1);
    sim.push_fault(FaultTarget::Page, Fault::Malformed, 1);
    sim.push_fault(
        FaultTarget::Page,
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let q = [("jobId", job.as_str())];
    // Truncated: headers promise more than arrives.
    let resp = c.get(&q).await;
    assert_eq!(resp.status(), 200);
    let len = resp.content_length().expect("content-length");
    assert!(len > 1000);
    assert!(resp.bytes().await.is_err(), "body must be cut off");
    // Malformed.
    let resp = c.get(&q).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
    // Delayed, then normal.
    let t0 = tokio::time::Instant::now();
    let page = c.page(&q).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(page.data.map(|d| d.len()), Some(100));
    assert!(page.page_token.is_some());
    assert_eq!(sim.stats().errors_injected, 3);
}

#[tokio::test]
async fn job_error_and_stuck_jobs() {
    let sim = SimHandle::start(cfg(20)).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let base = [("from", from.as_str()), ("to", to.as_str())];

    sim.push_fault(FaultTarget::Poll, Fault::JobError, 1);
    let job = c.page(&base).await.job_id;
    let q = [("jobId", job.as_str())];
    assert_eq!(c.page(&q).await.status, "ERROR");
    assert_eq!(
        c.page(&q).await.status,
        "ERROR",
        "a failed job stays failed"
    );

    sim.stick_next_jobs(1);
    let stuck = c.page(&base).await.job_id;
    for _ in 0..5 {
        let p = c.page(&[("jobId", stuck.as_str())]).await;
        assert_eq!(p.status, "PENDING");
    }
    let got = c.fetch(&from, &to, 100).await;
    assert_eq!(got.events.len(), 20, "the next job is not stuck");
}

#[tokio::test]
async fn inject_is_seen_by_new_jobs_only() {
    let mut c = cfg(200);
    c.pending_polls = 0;
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let now = Utc::now();
    let (from, to) = (date(now - chrono::Duration::days(2)), date(now));
    let old = c
        .page(&[("from", &from), ("to", &to), ("pageSize", "1000")])
        .await;
    let from_i = now - chrono::Duration::hours(5);
    let before = sim.visible_events_between(from_i, from_i + chrono::Duration::hours(1));
    assert_eq!(
        sim.inject(10, from_i, from_i + chrono::Duration::hours(1)),
        10
    );
    let old_page = c.page(&[("jobId", old.job_id.as_str())]).await;
    assert_eq!(old_page.data.map(|d| d.len()), Some(200));
    let new = c.fetch(&from, &to, 1000).await;
    assert_eq!(new.events.len(), 210);
    assert_eq!(sorted(new.events), sorted(sim.visible_events()));
    let after = sim.visible_events_between(from_i, from_i + chrono::Duration::hours(1));
    assert_eq!(after.len(), before.len() + 10);
}

#[tokio::test]
async fn same_seed_same_events() {
    let anchor = Utc::now() - chrono::Duration::hours(1);
    let mut a = cfg(500);
    a.anchor = Some(anchor);
    a.seed = 42;
    let mut b = a.clone();
    let sa = SimHandle::start(a.clone()).await.expect("start");
    let sb = SimHandle::start(b.clone()).await.expect("start");
    assert_eq!(sa.visible_events(), sb.visible_events());
    b.seed = 43;
    let sc = SimHandle::start(b).await.expect("start");
    assert_ne!(sa.visible_events(), sc.visible_events());
    a.dataset = Dataset::Url;
    let su = SimHandle::start(a).await.expect("start");
    let url = su.visible_events().join("\n");
    assert!(url.contains("BLOCKED_BY_POLICY"));
    assert!(!sa.visible_events().join("\n").contains("BLOCKED_BY_POLICY"));
}

#[tokio::test]
async fn whitespace_and_categories_knobs() {
    let mut c = cfg(100);
    c.whitespace = true;
    c.categories_mode = CategoriesMode::Empty;
    c.total_mode = TotalMode::Absent;
    let sim = SimHandle::start(c).await.expect("start");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 1000).await;
    assert!(got.pages[0].total.is_none());
    assert!(got
        .events
        .iter()
        .all(|e| e.contains('\n') && e.contains("\": ")));
    let compact: Vec<String> = got
        .events
        .iter()
        .map(|e| {
            // serde_json sorts keys; compare parsed values instead.
            serde_json::from_str::<serde_json::Value>(e).expect("json")
        })
        .map(|v| {
            assert_eq!(v["categories"], serde_json::json!([]));
            v.to_string()
        })
        .collect();
    let want: Vec<String> = sim
        .visible_events()
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(e)
                .expect("json")
                .to_string()
        })
        .collect();
    assert_eq!(compact, want);
}

#[tokio::test]
async fn late_arrival_hides_recent_events() {
    let mut c = cfg(2000);
    c.end_offset = Duration::ZERO;
    c.span = Duration::from_secs(3600);
    c.late_max_delay = Duration::from_secs(35 * 60);
    let sim = SimHandle::start(c).await.expect("start");
    let visible = sim.visible_events().len();
    assert!(visible < 2000 && visible > 500, "{visible}");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 10_000).await;
    assert_eq!(got.events.len(), visible);
}

/// Scale: a 1,000,000-event dataset starts and serves full 10,000-event pages. (Timings are
/// printed, not asserted: they depend on the build profile; the benchmark measures them.)
#[tokio::test]
async fn million_events() {
    let t0 = tokio::time::Instant::now();
    let mut c = cfg(1_000_000);
    c.complete_on_create = true;
    let sim = SimHandle::start(c).await.expect("start");
    eprintln!("start: {:?}", t0.elapsed());
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let t1 = tokio::time::Instant::now();
    let first = c
        .page(&[("from", &from), ("to", &to), ("pageSize", "10000")])
        .await;
    eprintln!("create + first page: {:?}", t1.elapsed());
    let t2 = tokio::time::Instant::now();
    let token = first.page_token.expect("token");
    let p = c
        .page(&[("jobId", &first.job_id), ("pageToken", &token)])
        .await;
    eprintln!("page: {:?}", t2.elapsed());
    assert_eq!(p.data.map(|d| d.len()), Some(10_000));
}

#[tokio::test]
async fn repeat_across_pages_duplicates_page_edges() {
    let mut c = cfg(250);
    c.repeat_across_pages = 5;
    c.pending_polls = 0;
    let sim = SimHandle::start(c).await.expect("start");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 100).await;
    let sizes: Vec<usize> = got
        .pages
        .iter()
        .map(|p| p.data.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 105, 55]);
    let visible = sim.visible_events();
    assert_eq!(got.events[100..105], visible[95..100]);
    assert_eq!(got.pages[0].total, Some(serde_json::json!(250)));
}

#[tokio::test]
async fn repeat_page_serves_one_page_twice() {
    let mut c = cfg(250);
    c.repeat_page = Some(1);
    c.pending_polls = 0;
    let sim = SimHandle::start(c).await.expect("start");
    let (from, to) = all_window();
    let got = Client::new(&sim).fetch(&from, &to, 100).await;
    let sizes: Vec<usize> = got
        .pages
        .iter()
        .map(|p| p.data.as_ref().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 100, 100, 50]);
    assert_eq!(got.events[100..200], got.events[200..300]);
    let mut once = got.events.clone();
    once.drain(200..300);
    assert_eq!(once, sim.visible_events());
}

#[tokio::test]
async fn the_first_jobs_loop_on_one_token_and_later_ones_page_normally() {
    for mode in [TokenLoop::EmptyPages, TokenLoop::SamePage] {
        let mut c = cfg(250);
        c.token_loop_jobs = 1;
        c.token_loop = mode;
        c.pending_polls = 0;
        let sim = SimHandle::start(c).await.expect("start");
        let client = Client::new(&sim);
        let (from, to) = all_window();
        let base = [
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("pageSize", "100"),
        ];
        let created = client.page(&base).await;
        let mut q = base.to_vec();
        q.push(("jobId", &created.job_id));
        let first = client.page(&q).await;
        let token = first.page_token.clone().expect("a second page");
        q.push(("pageToken", &token));
        for _ in 0..3 {
            let again = client.page(&q).await;
            assert_eq!(again.page_token.as_ref(), Some(&token), "{mode:?}");
            let expected = if mode == TokenLoop::EmptyPages {
                0
            } else {
                100
            };
            assert_eq!(again.data.map_or(0, |d| d.len()), expected, "{mode:?}");
        }
        let got = client.fetch(&from, &to, 100).await;
        assert_eq!(got.events, sim.visible_events(), "{mode:?}");
    }
}

#[tokio::test]
async fn expired_and_unknown_jobs() {
    let mut c = cfg(10);
    c.job_ttl = Duration::from_millis(200);
    c.unknown_job_status = 400;
    c.pending_status = "RUNNING".to_string();
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let first = c.page(&[("from", &from), ("to", &to)]).await;
    assert_eq!(first.status, "RUNNING");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = c.get(&[("jobId", first.job_id.as_str())]).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.expect("body").contains(&first.job_id));
    assert_eq!(sim.stats().not_found, 1);
}

#[tokio::test]
async fn job_error_on_create_and_delay_on_poll() {
    let mut c = cfg(10);
    c.pending_polls = 2;
    let sim = SimHandle::start(c).await.expect("start");
    let c = Client::new(&sim);
    let (from, to) = all_window();
    let base = [("from", from.as_str()), ("to", to.as_str())];
    sim.push_fault(FaultTarget::Create, Fault::JobError, 1);
    let failed = c.page(&base).await;
    assert_eq!(failed.status, "ERROR");
    assert!(!failed.job_id.is_empty());
    // Page-targeted faults wait for the completing poll; Poll-targeted ones hit pending polls.
    sim.push_fault(FaultTarget::Page, Fault::Status(502), 1);
    sim.push_fault(
        FaultTarget::Poll,
        Fault::Delay(Duration::from_millis(200)),
        1,
    );
    let job = c.page(&base).await.job_id;
    let q = [("jobId", job.as_str())];
    let t0 = tokio::time::Instant::now();
    assert_eq!(c.page(&q).await.status, "PENDING");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(c.page(&q).await.status, "PENDING");
    assert_eq!(c.get(&q).await.status(), 502);
    let done = c.page(&q).await;
    assert_eq!(done.status, "COMPLETED");
    assert_eq!(done.data.map(|d| d.len()), Some(10));
}

#[tokio::test]
async fn batched_late_arrival() {
    let mut c = cfg(1000);
    c.end_offset = Duration::ZERO;
    c.span = Duration::from_secs(6 * 3600);
    c.late_batch_interval = Some(Duration::from_secs(30 * 60));
    let sim = SimHandle::start(c).await.expect("start");
    let visible = sim.visible_events();
    let slot = 30 * 60 * 1000;
    let published_until = Utc::now().timestamp_millis().div_euclid(slot) * slot;
    // Events of the current 30-minute slot are not published yet.
    assert!(visible.len() > 700, "{}", visible.len());
    for e in &visible {
        let v: serde_json::Value = serde_json::from_str(e).expect("json");
        let d =
            DateTime::parse_from_str(v["date"].as_str().expect("date"), "%Y-%m-%dT%H:%M:%S%.3f%z")
                .expect("date");
        assert!(d.timestamp_millis() <= published_until);
    }
}

#[tokio::test]
async fn job_latency_counts_from_creation_and_grows_with_the_job() {
    let mut c = cfg(2000);
    c.pending_polls = 0;
    c.job_latency = Duration::from_millis(400);
    // 2,000 events: a fifth of 1,000 ms more, so the job is ready 600 ms after its creation.
    c.job_latency_per_10k = Duration::from_millis(1000);
    c.page_latency = Duration::from_millis(150);
    let sim = SimHandle::start(c).await.expect("start");
    let client = Client::new(&sim);
    let (from, to) = all_window();
    let base = [("from", from.as_str()), ("to", to.as_str())];
    let created = tokio::time::Instant::now();
    let first = client.page(&base).await;
    assert_eq!(first.status, "PENDING");
    // Two more jobs while the first runs: three run at once.
    for _ in 0..2 {
        assert_eq!(client.page(&base).await.status, "PENDING");
    }
    assert_eq!(sim.stats().max_running_jobs, 3);
    let mut poll = base.to_vec();
    poll.push(("jobId", &first.job_id));
    let pending_until = created + Duration::from_millis(450);
    let mut pending = 0;
    while tokio::time::Instant::now() < pending_until {
        assert_eq!(client.page(&poll).await.status, "PENDING");
        pending += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pending >= 3, "{pending} polls before 450 ms");
    tokio::time::sleep_until(created + Duration::from_millis(650)).await;
    let asked = tokio::time::Instant::now();
    let done = client.page(&poll).await;
    assert_eq!(done.status, "COMPLETED");
    assert_eq!(done.data.as_deref().map(<[_]>::len), Some(2000));
    // The completing poll is a page: it took the page latency.
    assert!(asked.elapsed() >= Duration::from_millis(150));
    assert_eq!(sim.stats().max_running_jobs, 3);
}

#[tokio::test]
async fn jobs_without_latency_are_never_counted_running() {
    let sim = SimHandle::start(cfg(100)).await.expect("start");
    let client = Client::new(&sim);
    let (from, to) = all_window();
    client.fetch(&from, &to, 50).await;
    client.fetch(&from, &to, 50).await;
    assert_eq!(sim.stats().job_creates, 2);
    assert_eq!(sim.stats().max_running_jobs, 0);
}

fn keyed_cfg(dataset: Dataset, prefix: &str, count: u32, events: usize) -> SimConfig {
    let mut c = SimConfig::new(dataset);
    c.keys = Some(KeySet {
        prefix: prefix.to_string(),
        count,
    });
    c.events = events;
    c
}

#[test]
fn key_set_names_and_parses_its_keys() {
    let keys = KeySet {
        prefix: "t-".into(),
        count: 1000,
    };
    assert_eq!(keys.key(0), "t-0001");
    assert_eq!(keys.key(999), "t-1000");
    assert_eq!(keys.keys().count(), 1000);
    assert_eq!(keys.index_of("t-0001"), Some(0));
    assert_eq!(keys.index_of("t-1000"), Some(999));
    for wrong in [
        "t-0000", "t-1001", "t-001", "t-00001", "u-0001", "t-+001", "t-", "",
    ] {
        assert_eq!(keys.index_of(wrong), None, "{wrong}");
    }
    let wide = KeySet {
        prefix: String::new(),
        count: 12_345,
    };
    assert_eq!(wide.key(0), "00001");
    assert_eq!(wide.index_of("12345"), Some(12_344));
    assert_eq!(wide.index_of("0001"), None);
    let seeds: std::collections::HashSet<u64> =
        keys.keys().map(|k| KeySet::seed_of(1, &k)).collect();
    assert_eq!(seeds.len(), 1000, "every key has a seed of its own");
    assert_ne!(KeySet::seed_of(1, "t-0001"), KeySet::seed_of(2, "t-0001"));
}

#[tokio::test]
async fn multi_key_mode_serves_each_key_its_own_dataset() {
    let sim = SimHandle::start(keyed_cfg(Dataset::Web, "t-", 3, 40))
        .await
        .expect("start");
    let (from, to) = all_window();
    let mut seen = std::collections::HashSet::new();
    for key in ["t-0001", "t-0002", "t-0003"] {
        let got = Client::with_key(&sim, key).fetch(&from, &to, 15).await;
        assert_eq!(got.events.len(), 40, "{key}");
        let want = sim
            .events_of_key_visible_at(key, Utc::now())
            .expect("an accepted key");
        assert_eq!(got.events, want, "{key}");
        // Identical copies (identical_fraction) repeat within a key, never across keys.
        let own: std::collections::HashSet<String> = got.events.into_iter().collect();
        assert!(
            own.is_disjoint(&seen),
            "{key} shares events with another key"
        );
        seen.extend(own);
    }
    let stats = sim.stats();
    assert_eq!((stats.job_creates, stats.events_served), (3, 120));
    assert_eq!(stats.auth_failures, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn multi_key_mode_refuses_other_keys() {
    let sim = SimHandle::start(keyed_cfg(Dataset::Url, "t-", 3, 10))
        .await
        .expect("start");
    let (from, to) = all_window();
    for key in [KEY, "t-0004", "t-0000", "t-1", "T-0001"] {
        let resp = Client::with_key(&sim, key)
            .get(&[("from", &from), ("to", &to)])
            .await;
        assert_eq!(resp.status(), 403, "{key}");
        let body = resp.text().await.expect("body");
        assert_eq!(body, format!("API Key {key} is not valid."));
    }
    assert_eq!(sim.stats().auth_failures, 5);
    assert!(sim.events_of_key_visible_at(KEY, Utc::now()).is_none());
    assert_eq!(
        sim.shared.tenants_generated(),
        0,
        "refused keys generate nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_job_belongs_to_the_key_that_created_it() {
    let sim = SimHandle::start(keyed_cfg(Dataset::Web, "t-", 2, 10))
        .await
        .expect("start");
    let (from, to) = all_window();
    let owner = Client::with_key(&sim, "t-0001");
    let created = owner.page(&[("from", &from), ("to", &to)]).await;
    let other = Client::with_key(&sim, "t-0002");
    let resp = other.get(&[("jobId", &created.job_id)]).await;
    assert_eq!(resp.status(), 404);
    let polled = owner.page(&[("jobId", &created.job_id)]).await;
    assert_eq!(polled.status, "PENDING", "the owner's job is intact");
    sim.shutdown().await;
}

#[tokio::test]
async fn multi_key_datasets_are_generated_on_first_use_and_reproducible() {
    let anchor = Utc::now() - chrono::Duration::hours(1);
    let mut c = keyed_cfg(Dataset::Web, "k", 1000, 200);
    c.anchor = Some(anchor);
    let sim = SimHandle::start(c.clone()).await.expect("start");
    assert_eq!(sim.shared.tenants_generated(), 0);
    let (from, to) = all_window();
    Client::with_key(&sim, "k0500")
        .fetch(&from, &to, 10_000)
        .await;
    assert_eq!(sim.shared.tenants_generated(), 1);
    // The same seed and anchor give each key the same events in another run, whichever key
    // is used first; another seed gives others.
    let again = SimHandle::start(c.clone()).await.expect("start");
    let first = |s: &SimHandle, key: &str| s.events_of_key_visible_at(key, Utc::now()).unwrap();
    assert_eq!(first(&again, "k0001"), first(&sim, "k0001"));
    assert_eq!(first(&again, "k0500"), first(&sim, "k0500"));
    c.seed = 2;
    let other_seed = SimHandle::start(c).await.expect("start");
    assert_ne!(first(&other_seed, "k0500"), first(&sim, "k0500"));
}

#[tokio::test]
async fn single_key_mode_names_its_key_too() {
    let sim = SimHandle::start(cfg(30)).await.expect("start");
    let events = sim.events_of_key_visible_at(KEY, Utc::now());
    assert_eq!(events, Some(sim.visible_events()));
    assert!(sim
        .events_of_key_visible_at("key-0001", Utc::now())
        .is_none());
}

/// `non_utf8_events` serves that many events with a stray 0xFF byte (exactly the bytes
/// `unreadable_events` gives, left out of `visible_events`); `deep_events` that many with a
/// member nested `DEEP_NESTING` deep (valid JSON, in `visible_events` as served).
#[tokio::test]
async fn spoiled_events_are_served_as_their_knobs_say() {
    let mut c = cfg(200);
    c.non_utf8_events = 3;
    c.deep_events = 2;
    c.complete_on_create = true;
    let sim = SimHandle::start(c).await.unwrap();
    let (from, to) = all_window();
    let resp = Client::new(&sim)
        .get(&[("from", &from), ("to", &to), ("pageSize", "10000")])
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap().to_vec();
    assert!(std::str::from_utf8(&body).is_err());
    assert_eq!(body.iter().filter(|&&b| b == 0xFF).count(), 3);
    let unreadable = sim.unreadable_events();
    assert_eq!(unreadable.len(), 3);
    for raw in &unreadable {
        assert!(body.windows(raw.len()).any(|w| w == raw.as_slice()));
        assert!(std::str::from_utf8(raw).is_err());
    }
    let visible = sim.visible_events();
    assert_eq!(visible.len(), 197);
    let nested = format!("\"nested\":{}", "[".repeat(DEEP_NESTING));
    let deep: Vec<&String> = visible.iter().filter(|e| e.contains(&nested)).collect();
    assert_eq!(deep.len(), 2);
    for e in deep {
        assert!(body.windows(e.len()).any(|w| w == e.as_bytes()));
    }
    sim.shutdown().await;
}
