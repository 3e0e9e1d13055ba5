//! What ships in `deploy/` for operators: the Prometheus alert rules pass `promtool check rules`
//! and their unit tests (`deploy/prometheus/alerts.test.yaml`), the Grafana dashboard's queries
//! parse as PromQL, and every `isolation_collector_*` metric the rules and the dashboard read is
//! a family of a real `/metrics` scrape of a daemon on Redis (so the HA families are there): a
//! renamed metric fails here, not in an operator's silent panel. promtool is Debian's
//! `prometheus` package (`.ci/run` installs it); a machine without it fails, never skips.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::redis::use_redis;
use crate::redis_server::RedisServer;
use crate::support::*;

const RULES: &str = "deploy/prometheus/alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "deploy/grafana/isolation-collector.json";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool args`; fails the test if it is missing or fails, with what it printed.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).output().unwrap_or_else(|e| {
        panic!("promtool could not run ({e}): install Debian's `prometheus` package (`.ci/run` does)")
    });
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{printed}");
    printed
}

/// Every alert's `expr` in the rules file.
fn rule_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo(RULES)).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let groups = doc["groups"].as_sequence().expect("groups");
    let exprs: Vec<String> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            r["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_owned()
        })
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs
}

/// Every query of the dashboard (panels' targets and template variables), with Grafana's
/// variables replaced by values PromQL accepts.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo(DASHBOARD)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for variable in doc["templating"]["list"].as_array().expect("variables") {
        if let Some(query) = variable["definition"].as_str() {
            // label_values(SELECTOR, label): the selector is the PromQL part.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _)| selector.to_owned())
                .unwrap_or_else(|| panic!("a variable's query is not label_values(): {query}"));
            exprs.push(inner);
        }
    }
    assert!(exprs.len() >= 20, "{exprs:?}");
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "5m")
                .replace("$input", ".*")
                .replace("$service", ".*")
        })
        .collect()
}

/// The metric names in `exprs`, histogram suffixes stripped.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bisolation_collector_[a-z0-9_]+").unwrap();
    exprs
        .iter()
        .flat_map(|e| name.find_iter(e).map(|m| m.as_str().to_owned()))
        .map(|n| {
            let stripped = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s));
            stripped.map_or(n.clone(), str::to_owned)
        })
        .collect()
}

/// The names a scrape lists (`# TYPE` lines, series or not), counters also with `_total`.
fn scraped_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        names.insert(name.to_owned());
        if kind == "counter" {
            names.insert(format!("{name}_total"));
        }
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", repo(RULES).to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", repo(RULE_TESTS).to_str().unwrap()]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// promtool parses the dashboard's queries as recording rules (it has no other offline parser).
#[test]
fn the_dashboard_queries_parse_as_promql() {
    let rules: Vec<serde_json::Value> = dashboard_expressions()
        .iter()
        .enumerate()
        .map(
            |(i, expr)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}),
        )
        .collect();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-queries.yaml");
    // JSON is YAML: promtool reads it as written.
    std::fs::write(&file, doc.to_string()).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_in_a_real_scrape() {
    let used = metric_names(&[rule_expressions(), dashboard_expressions()].concat());
    // Not vacuous: the families of each part of the issue are read.
    for family in [
        "isolation_collector_checkpoint_lag_seconds",
        "isolation_collector_output_up",
        "isolation_collector_missing_events",
        "isolation_collector_service_unpulled",
        "isolation_collector_resident_memory_bytes",
    ] {
        assert!(used.contains(family), "{family} not in {used:?}");
    }
    let env = TestEnv::both(50, |_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&tmp, "redis").await;
    use_redis(&env, &redis, 3);
    let base = listen_on_free_port(&env);
    let (mut child, log_path) = env.spawn_logged(&["run"], "daemon.log");
    // Running for real: it holds a lease (the HA families are fed) and answers the scrape.
    let exposition = Wait::new("a lease held, in a scrape", Duration::from_secs(30))
        .every(Duration::from_millis(200))
        .showing_log(&log_path)
        .until_async(async || -> Result<String, String> {
            let (_, text) = get(&format!("{base}/metrics")).await.ok_or("no answer")?;
            let held = text
                .lines()
                .any(|l| l.starts_with("isolation_collector_lease_held{") && l.ends_with(" 1"));
            if held {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .await;
    let status = terminate(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    // The memory gauges the memory alerts divide are fed by the daemon, not left at 0.
    let budget = metric(
        &exposition,
        "isolation_collector_window_memory_budget_bytes",
    );
    assert_eq!(budget, Some(16.0 * 1024.0 * 1024.0), "the default budget");
    let resident = metric(&exposition, "isolation_collector_resident_memory_bytes");
    assert!(
        resident.is_some_and(|r| r > 1024.0 * 1024.0),
        "{resident:?}"
    );
    let listed = scraped_names(&exposition);
    let missing: Vec<&String> = used.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "used by {RULES} or {DASHBOARD} but not in a scrape: {missing:?}\n(listed: {listed:?})"
    );
}
