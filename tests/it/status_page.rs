//! The status page at `/` in a real headless browser: Debian's chromium driven by its
//! chromedriver (started by the test on a free port) through fantoccini, against a real daemon
//! with tenants on in-process simulators. A few tenants (one key refused, one output down): the
//! page loads, lists them, fails the failing ones first, reloads itself, and is the screenshot
//! of the README. Many tenants: paging and the filter form, clicked and submitted.
//!
//! chromium and chromedriver missing fail the test, naming the packages (`.ci/run` installs
//! them): a browser test that skips would pass without testing.

// Fixtures and checks in real time: the simulator (the vendor) runs on the real clock.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use isolation_sim::{Dataset, SimHandle};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::support::*;
use crate::tenants::write_tenants_config;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const URL: &str = "url_isolation";

/// A headless chromium session, its chromedriver and its throwaway profile; closed on
/// [`Browser::close`] (and the driver killed when dropped).
struct Browser {
    client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install Debian's {package} (`apt-get install chromium chromium-driver`, as .ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        wait_for("chromedriver listening", Duration::from_secs(20), || {
            listening(port)
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver opens a chromium session");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The table's rows as the browser rendered them, read in one script (atomic against the
    /// page's own reload).
    async fn rows(&self) -> Vec<Row> {
        let rows = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('#services tbody tr')).map(r => ({
                    class: r.className,
                    condition: r.querySelector('td.condition').textContent,
                    input: r.querySelector('td.input').textContent,
                    service: r.querySelector('td.service').textContent,
                    reason: r.querySelector('td.reason').textContent,
                    background: getComputedStyle(r).backgroundColor,
                }))",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(rows).unwrap()
    }

    async fn text(&self, id: &str) -> String {
        let e = self.client.find(Locator::Id(id)).await.unwrap();
        e.text().await.unwrap()
    }

    /// Clicks the link whose text is `text` (the page it leads to has loaded on return).
    async fn click_link(&self, text: &str) {
        let link = self.client.find(Locator::LinkText(text)).await.unwrap();
        self.navigating(link.click()).await;
    }

    /// Runs `act` (a click that leads to another page) and returns once that page has loaded:
    /// a click may return before the navigation it starts, and rows read then would be the old
    /// page's. The old page is marked (a property of its `window`), the new one is not.
    async fn navigating<T>(
        &self,
        act: impl std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    ) {
        self.client
            .execute("window.oldPage = true", vec![])
            .await
            .unwrap();
        act.await.unwrap();
        Wait::new("the next page loaded", Duration::from_secs(20))
            .every(Duration::from_millis(50))
            .until_async(async || {
                let script = "return window.oldPage !== true && document.readyState === 'complete'";
                match self.client.execute(script, vec![]).await {
                    Ok(Value::Bool(true)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
    }

    /// Types `q` into the filter form, picks `condition` (`""`: any) and submits it.
    async fn filter(&self, q: &str, condition: &str) {
        let field = self
            .client
            .find(Locator::Css("input[name=q]"))
            .await
            .unwrap();
        field.clear().await.unwrap();
        field.send_keys(q).await.unwrap();
        let select = self
            .client
            .find(Locator::Css("select[name=condition]"))
            .await
            .unwrap();
        select.select_by_value(condition).await.unwrap();
        let submit = self
            .client
            .find(Locator::Css("#filter button[type=submit]"))
            .await;
        self.navigating(submit.unwrap().click()).await;
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

#[derive(Debug, serde::Deserialize)]
struct Row {
    class: String,
    condition: String,
    input: String,
    service: String,
    reason: String,
    background: String,
}

/// One input block (a list element) with the url_isolation service on `sim`, holding `key`;
/// `extra` adds lines to the block (per-block outputs).
fn block(id: &str, sim: &SimHandle, key: &str, period: u32, extra: &str) -> String {
    format!(
        "    - id: \"{id}\"\n      credentials:\n        api_key: \"{key}\"\n{extra}      services:\n        {URL}:\n          override_base_url: {base}\n          request_period_in_seconds: {period}\n          job_poll_initial_interval_in_seconds: 0.01\n          job_poll_max_interval_in_seconds: 0.05\n          retry_initial_interval_in_seconds: 0.01\n          retry_max_interval_in_seconds: 0.1\n",
        base = sim.base_url(),
    )
}

/// `/status` until `done` holds for it (at most `limit`).
async fn status_until(
    base: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    Wait::new(what, limit)
        .every(Duration::from_millis(200))
        .until_async(async || match get(&format!("{base}/status")).await {
            Some((200, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap();
                match done(&v) {
                    true => Ok(v),
                    false => Err(body),
                }
            }
            other => Err(format!("{other:?}")),
        })
        .await
}

/// `/status`'s line of `input`.
fn status_line<'a>(report: &'a Value, input: &str) -> &'a Value {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["input"] == input)
        .unwrap_or_else(|| panic!("no line of {input} in {report}"))
}

const GOOD: &str = "aaaaaaaa-1111-4111-8111-aaaaaaaaaa01";
const REFUSED: &str = "bbbbbbbb-2222-4222-8222-bbbbbbbbbb02";

/// Where the screenshot goes: the README's image with `UPDATE_SCREENSHOTS=1`, else target/.
fn screenshot_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var("UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => root.join("docs/img/status-page.png"),
        _ => root.join("target/status-page.png"),
    }
}

/// Three tenants: 10001 collects, 10002's key is refused by its simulator, 10003 collects but
/// its own webhook output is down. The page lists the three, the failing ones first with the
/// class, the colour and the word, each line in the condition `/status` gives it, and reloads
/// by itself; a bad query answers 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_tenants_failing_first_in_a_real_browser() {
    let env = TestEnv::both(1, |_| {}).await;
    let sim = |seed| {
        let mut c = sim_config(Dataset::Url, 50, seed);
        c.api_key = GOOD.to_owned();
        SimHandle::start(c)
    };
    let (a, b, c) = (
        sim(1).await.unwrap(),
        sim(2).await.unwrap(),
        sim(3).await.unwrap(),
    );
    let down = format!(
        "      outputs:\n        hook:\n          type: http\n          config:\n            url: http://127.0.0.1:{}/\n            connect_timeout_in_seconds: 1\n",
        free_port()
    );
    write_tenants_config(
        &env,
        &[
            block("10001", &a, GOOD, 1, ""),
            block("10002", &b, REFUSED, 1, ""),
            block("10003", &c, GOOD, 1, &down),
        ],
    );
    let base = listen_on_free_port(&env);
    let (child, _) = env.spawn_logged(&["run"], "daemon.log");
    let report = status_until(
        &base,
        "10001 collecting, 10002 refused, 10003's output down",
        Duration::from_secs(60),
        |r| {
            r["services"].as_array().is_some_and(|s| s.len() == 3)
                && status_line(r, "10001")["condition"] == "collecting"
                && status_line(r, "10002")["reason"]
                    .as_str()
                    .is_some_and(|w| w.contains("not valid"))
                && status_line(r, "10003")["condition"] == "failing"
        },
    )
    .await;

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    let rows = browser.rows().await;
    let inputs: Vec<&str> = rows.iter().map(|r| r.input.as_str()).collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    // Failing first: every failing row above every other, 10001 (collecting) last.
    let first_other = rows.iter().position(|r| r.class != "failing").unwrap();
    assert!(
        rows[first_other..].iter().all(|r| r.class != "failing"),
        "{rows:#?}"
    );
    assert_eq!(inputs[2], "10001", "{rows:#?}");
    assert!(inputs[..2].contains(&"10002") && inputs[..2].contains(&"10003"));
    for row in &rows {
        assert_eq!(row.service, URL);
        // The page says what /status says, word and class.
        let condition = status_line(&report, &row.input)["condition"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            (row.condition.as_str(), row.class.as_str()),
            (condition.as_str(), condition.as_str())
        );
    }
    let failing = rows.iter().find(|r| r.input == "10003").unwrap();
    assert_eq!(failing.class, "failing");
    assert_eq!(failing.condition, "failing");
    assert!(failing.reason.contains("output hook"), "{failing:?}");
    // Red: the style sheet applied, inline (nothing else could have been loaded).
    assert_eq!(failing.background, "rgb(253, 226, 225)", "{failing:?}");
    let refused = rows.iter().find(|r| r.input == "10002").unwrap();
    assert_eq!(
        refused.condition, "failing",
        "a refused key fails: {refused:?}"
    );
    assert!(refused.reason.contains("not valid"), "{refused:?}");
    assert!(
        !refused.reason.contains(REFUSED),
        "the key in clear: {refused:?}"
    );
    let failing_count = rows.iter().filter(|r| r.class == "failing").count();
    assert_eq!(
        browser.text("count-failing").await,
        format!("{failing_count} failing")
    );
    assert_eq!(
        browser.text("replica").await,
        report["replica"].as_str().unwrap()
    );

    // It reloads by itself: the time it was generated at changes without a click.
    let generated = browser.text("generated-at").await;
    Wait::new("the page reloads itself", Duration::from_secs(20))
        .every(Duration::from_millis(500))
        .until_async(async || {
            // Read in a script: mid-reload the element may not exist yet.
            let script = "return document.getElementById('generated-at')?.textContent ?? ''";
            match browser.client.execute(script, vec![]).await {
                Ok(Value::String(now)) if !now.is_empty() && now != generated => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

    let png = browser.client.screenshot().await.unwrap();
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    browser.close().await;

    let (status, body) = get(&format!("{base}/?page=first&condition=broken"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("page=&quot;first&quot; is not a page number"),
        "{body}"
    );
    assert!(
        body.contains("condition=&quot;broken&quot; is not a condition"),
        "{body}"
    );
    sigterm_and_wait(child).await;
}

/// How many tenants the paging test runs: 300 by default (`STATUS_PAGE_TENANTS` changes it).
fn many() -> usize {
    std::env::var("STATUS_PAGE_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// Many tenants on one simulator (one refused): 100 lines a page, the pager's links clicked to
/// the next and the last page, and the filter form submitted with a substring and a condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_page_and_filter_in_a_real_browser() {
    let n = many();
    let env = TestEnv::both(1, |_| {}).await;
    let mut c = sim_config(Dataset::Url, 5, 7);
    c.api_key = GOOD.to_owned();
    let sim = SimHandle::start(c).await.unwrap();
    let mut blocks: Vec<String> = (0..n)
        .map(|i| block(&format!("{}", 20_000 + i), &sim, GOOD, 600, ""))
        .collect();
    blocks.push(block("29999", &sim, REFUSED, 600, ""));
    write_tenants_config(&env, &blocks);
    let base = listen_on_free_port(&env);
    let started = Instant::now();
    let (child, _) = env.spawn_logged(&["run"], "daemon.log");
    let report = status_until(
        &base,
        "every tenant listed",
        Duration::from_secs(120),
        |r| {
            r["services"].as_array().is_some_and(|s| s.len() == n + 1)
                && status_line(r, "29999")["reason"]
                    .as_str()
                    .is_some_and(|w| w.contains("not valid"))
                && r["collecting"] == n
        },
    )
    .await;
    println!(
        "{n} tenants collecting {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    let refused_condition = status_line(&report, "29999")["condition"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refused_condition, "failing", "a refused key fails");
    let lines = n + 1;
    let pages = lines.div_ceil(100);

    let browser = Browser::start().await;
    let load = Instant::now();
    browser.goto(&format!("{base}/?refresh=0")).await;
    let rows = browser.rows().await;
    println!(
        "first page of {lines} lines loaded and read in {:.2} s",
        load.elapsed().as_secs_f64()
    );
    assert_eq!(rows.len(), 100);
    assert_eq!(
        rows[0].input, "29999",
        "the refused tenant first: {:?}",
        rows[0]
    );
    assert_eq!(rows[0].condition, refused_condition);
    assert_eq!(browser.text("page-count").await, pages.to_string());
    assert_eq!(
        browser.text("shown").await.split(" · ").next().unwrap(),
        format!("Lines 1–100 of {lines}")
    );

    // The pager: next, then last; each shows its own lines, and the count of the header stays.
    browser.click_link("next ›").await;
    assert_eq!(browser.text("page-number").await, "2");
    let second = browser.rows().await;
    assert_eq!(second.len(), 100);
    assert!(
        second
            .iter()
            .all(|r| !rows.iter().any(|f| f.input == r.input)),
        "page 2 repeats page 1"
    );
    browser.click_link("last »").await;
    assert_eq!(browser.text("page-number").await, pages.to_string());
    let last = browser.rows().await;
    assert_eq!(last.len(), lines - (pages - 1) * 100);
    assert_eq!(
        browser.text(&format!("count-{refused_condition}")).await,
        format!("1 {refused_condition}")
    );
    let url = browser.client.current_url().await.unwrap();
    assert!(
        url.query().unwrap().contains("refresh=0"),
        "the pager keeps the query: {url}"
    );

    // The filter form: a substring of the input ids, then a condition too.
    browser.filter("2012", "").await;
    let found = browser.rows().await;
    let expected: Vec<String> = (20_120..20_130)
        .filter(|i| i - 20_000 < n)
        .map(|i| i.to_string())
        .collect();
    let mut inputs: Vec<String> = found.iter().map(|r| r.input.clone()).collect();
    inputs.sort();
    assert_eq!(inputs, expected, "?q=2012");
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.query(), Some("q=2012&condition=&refresh=0"), "{url}");

    browser.filter("999", &refused_condition).await;
    let found = browser.rows().await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].input.as_str(), found[0].condition.as_str()),
        ("29999", refused_condition.as_str())
    );
    browser.close().await;
    sigterm_and_wait(child).await;
}
