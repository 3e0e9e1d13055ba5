//! Partial failures of the outputs (issue 20 §1): one output down beside healthy ones, one
//! request of a split batch refused, HEC with acknowledgement off for its token. Each healthy
//! output gets every event exactly once; the failing one gets each at most once until it
//! recovers, then exactly once.

use std::time::Duration;

use isolation_sim::Dataset;

use crate::devo_e2e::{devo_output, parse_records, start_receiver as devo_receiver};
use crate::http_outputs::{hec_output, served, webhook_output, HEC_TOKEN, HOOK_AUTH};
use crate::http_receivers::{Receiver, Scripted};
use crate::relp::{duplicates, relp_output, start_receiver};
use crate::support::*;

/// A webhook output without headers (for a daemon started without extra environment).
fn plain_webhook(hook: &Receiver, extra: &str) -> String {
    let mut s = format!(
        "  hook:\n    type: http\n    config:\n      url: {}\n",
        hook.url("/hook")
    );
    for line in extra.lines() {
        s.push_str(&format!("      {line}\n"));
    }
    s
}

/// The webhook answers 503 for 25 s, longer than one cycle's tries, beside a RELP output into
/// a real rsyslog and the file output: the window fails and is fetched again in later cycles,
/// yet rsyslog and the file get each event once, and the webhook each event once when it is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_output_down_does_not_repeat_events_at_the_others() {
    let mut env = TestEnv::both(1500, |_| {}).await;
    let (pki, rs) = start_receiver(&env).await;
    let hook = Receiver::start("", false).await;
    hook.set_down_for(Duration::from_secs(25));
    env.outputs_extra = relp_output(&pki, rs.port, &pki.client) + &plain_webhook(&hook, "");
    env.write_config();
    let (mut child, log) = env.spawn_logged(&["run"], "run.log");
    let want = served(&env).len();
    wait_for(
        "the webhook got every event",
        Duration::from_secs(150),
        || hook.hook_events().len() >= want,
    )
    .await;
    // The last window commits after the webhook confirmed it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().await.unwrap();

    let log = read_log(&log);
    assert!(
        log.contains("the window will be delivered again"),
        "the webhook's outage did not fail a window:\n{log}"
    );
    let extra = duplicates(&env, parse_records(&rs.received()));
    assert_eq!(extra, [0, 0], "extra copies at rsyslog (web, url)");
    assert_same_multiset(&hook.hook_events(), &served(&env), "webhook");
    env.assert_exactly_once();
}

/// A batch split into requests of 100 events, the third refused once: the two requests
/// confirmed before it are not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_confirmed_before_a_refused_one_are_not_sent_again() {
    let mut env = TestEnv::start(
        sim_config(Dataset::Web, 1000, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let hook = Receiver::start("", false).await;
    hook.script([
        Scripted::Normal,
        Scripted::Normal,
        Scripted::Status(400, "not now", None),
    ]);
    env.outputs_extra = plain_webhook(&hook, "max_events_per_request: 100");
    env.write_config();
    let out = env.collector(&["run", "--once"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_multiset(&hook.hook_events(), &served(&env), "webhook");
    env.assert_exactly_once();
}

/// `use_ack: true` against a token with acknowledgement off: the first request is indexed, the
/// answer has no ackId, and the output stops: nothing is indexed twice, the error says what to
/// change, once per output instance (one per service), and the service does not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_with_acknowledgement_off_for_the_token_stops_without_duplicates() {
    let mut env = TestEnv::both(600, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, false).await;
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "max_events_per_request: 100");
    env.write_config();
    let out = env.collector(&["run", "--once"]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let events: Vec<String> = hec
        .indexed()
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    let served = served(&env);
    let (got, want) = (multiset(&events), multiset(&served));
    for (event, n) in &got {
        assert!(
            *n <= want.get(event).copied().unwrap_or(0),
            "indexed {n} times: {event}"
        );
    }
    let log = stderr(&out);
    let fix =
        "set use_ack: false for outputs.splunk, or turn indexer acknowledgement on for the token";
    // Once per output instance (one per service), with the fix; the refusals after it are not
    // logged as failed tries (each failed cycle still names its cause).
    let stopped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Output splunk stopped:"))
        .collect();
    assert_eq!(stopped.len(), 2, "{log}");
    assert!(stopped.iter().all(|l| l.contains(fix)), "{log}");
    assert!(!log.contains("Output splunk did not confirm"), "{log}");
}

/// A receiver that echoes its credentials in a 500's body, once whole and once straddling the
/// excerpt's cut (200 bytes): the log shows neither, nor any start of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_echoed_in_error_bodies_are_redacted_before_the_cut() {
    let mut env = TestEnv::start(
        sim_config(Dataset::Web, 200, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let echo = |secret: &str| -> &'static str {
        let head = format!("echo: {secret} ");
        let pad = "x".repeat(195 - head.len());
        format!("{head}{pad}{secret} and more").leak()
    };
    let hec = Receiver::start(HEC_TOKEN, true).await;
    hec.script([Scripted::Status(500, echo(HEC_TOKEN), None)]);
    let hook = Receiver::start("", false).await;
    hook.script([Scripted::Status(500, echo("hook-s3cret-value"), None)]);
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "") + &webhook_output(&hook, "");
    env.write_config();
    let out = env
        .collector_with_env(&["run", "--once"], &[("HOOK_AUTH", HOOK_AUTH)])
        .await;
    assert!(out.status.success(), "{}", describe(&out));
    let log = stderr(&out);
    assert!(log.contains("answered 500"), "{log}");
    for start in [&HEC_TOKEN[..5], "hook-"] {
        assert!(!log.contains(start), "{start} in\n{log}");
    }
}

/// SIGTERM one second into a slow HEC acknowledgement (3 s), then a restart: the started ack
/// wait finishes within the grace period and the window commits, so the restart sends nothing
/// Splunk already indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_ack_wait_lets_it_finish_and_nothing_is_indexed_twice() {
    let mut env = TestEnv::start(
        sim_config(Dataset::Web, 2000, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    hec.script([Scripted::AckLate(Duration::from_secs(3))]);
    env.outputs_extra = hec_output(&hec, HEC_TOKEN, "");
    env.write_config();
    let (mut child, log) = env.spawn_logged(&["run"], "run.log");
    wait_for("HEC got the first request", Duration::from_secs(30), || {
        hec.deliveries().iter().any(|s| s.path.ends_with("/event"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = terminate(&mut child, Duration::from_secs(20)).await;
    assert!(status.success(), "{}", read_log(&log));

    env.run_once_ok().await;
    // Splunk indexes the first request when its acknowledgement is due, whoever waits for it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events: Vec<String> = hec
        .indexed()
        .iter()
        .map(|e| e.event.as_ref().unwrap().get().to_owned())
        .collect();
    assert_same_multiset(&events, &served(&env), "HEC after SIGTERM and a restart");
}

/// `run` checks every output once at start, as `validate` does, and names each bad one before it
/// fetches anything: a HEC whose token is refused and a Devo receiver (a real rsyslog) that
/// rejects our client certificate, beside the file output. Each check's line (the output, the
/// problem and the fix) comes before the first "Fetching all" line, and the file output still
/// gets every event. With `--strict` a failed check refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_names_a_refused_output_before_it_fetches_and_the_others_go_on() {
    let mut env = TestEnv::both(200, |_| {}).await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    let (pki, rs) = devo_receiver(&env).await;
    env.outputs_extra = devo_output(&pki, rs.port, &pki.foreign_client)
        + &hec_output(&hec, "0000-wrong-token-0000", "");
    env.write_config();
    let refused = [
        "output splunk: Splunk refused the token (403 Forbidden: Invalid token (code 4)); check `token`",
        "output devo: ",
    ];
    let named = |log: &str| -> Vec<Option<usize>> {
        let lines: Vec<&str> = log.lines().collect();
        let at = |what: &str, also: &str| {
            lines
                .iter()
                .position(|l| l.contains(what) && l.contains(also))
        };
        vec![
            at(refused[0], "found by the check at start"),
            at(refused[1], "rejected our client certificate"),
            at("Fetching all", ""),
        ]
    };

    let out = env.collector(&["run", "--once", "--strict"]).await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let found = named(&log);
    assert!(
        found[0].is_some() && found[1].is_some(),
        "the refused outputs are not named: {found:?}\n{log}"
    );
    assert!(found[2].is_none(), "run --strict went on:\n{log}");
    assert!(env.delivered(URL_TABLE).is_empty());

    let out = env.collector(&["run", "--once"]).await;
    let log = stderr(&out);
    let found = named(&log);
    assert!(
        matches!(found[..], [Some(hec), Some(devo), Some(fetch)] if hec < fetch && devo < fetch),
        "the refused outputs (lines {:?}) are not named before the first fetch (line {:?}):\n{log}",
        &found[..2],
        found[2]
    );
    assert!(!log.contains("0000-wrong-token-0000"), "{log}");
    assert!(hec.indexed().is_empty());
    assert!(
        rs.received().is_empty(),
        "records arrived with a rejected certificate"
    );
    env.assert_exactly_once();
}

/// Every dead letter in the state directory (all services), as JSON.
fn dead_letters(env: &TestEnv) -> Vec<serde_json::Value> {
    let mut letters = Vec::new();
    for entry in std::fs::read_dir(env.path("state")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".dead_letters.jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| !l.is_empty()) {
                letters.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    letters
}

/// A run (`--once`, web events only) in which `output` refuses every request holding one
/// event (chosen here, returned with the run and the events `output` got): it must end, and
/// set that event aside for `output` alone.
async fn run_with_one_event_refused(
    mut env: TestEnv,
    receiver: &Receiver,
    output: &str,
    got: impl Fn() -> Vec<String>,
) -> (TestEnv, String, std::process::Output) {
    let served = served(&env);
    let refused = served[500].clone();
    receiver.refuse_requests_containing(&refused);
    env.outputs_extra = output.to_owned();
    env.write_config();
    let run = env.collector(&["run", "--once"]);
    let out = tokio::time::timeout(Duration::from_secs(120), run).await;
    let refusals = receiver.seen().iter().filter(|s| s.status == 400).count();
    let Ok(out) = out else {
        panic!(
            "run --once still running after 120 s; the receiver got {} of {} events and \
             refused {refusals} requests",
            got().len(),
            served.len()
        );
    };
    assert!(out.status.success(), "{}", describe(&out));
    let refused_at: Vec<_> = (receiver.seen().into_iter())
        .filter(|s| s.status == 400)
        .map(|s| s.at)
        .collect();
    let span = *refused_at.last().unwrap() - refused_at[0];
    // The failure matrix's figures: requests refused, and how long the event held the window.
    eprintln!("the receiver refused {refusals} requests over {span:?}");
    let others: Vec<String> = served.iter().filter(|e| **e != refused).cloned().collect();
    assert_same_multiset(&got(), &others, "the refusing receiver");
    // The file output was not spared the event: only the refusing output set it aside.
    env.assert_exactly_once();
    (env, refused, out)
}

/// Asserts that the only dead letter is `refused`, set aside for `output` with `reason`, and
/// that it was logged once.
fn assert_set_aside_once(env: &TestEnv, refused: &str, output: &str, reason: &str, log: &str) {
    let letters = dead_letters(env);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["output"], output);
    let raw = hex::decode(letters[0]["raw_hex"].as_str().unwrap()).unwrap();
    assert_eq!(raw, refused.as_bytes());
    let shown = letters[0]["reason"].as_str().unwrap();
    assert!(shown.contains(reason), "{shown}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("set aside")).collect();
    assert_eq!(lines.len(), 1, "logged once:\n{log}");
    assert!(lines[0].contains("WARNING"), "{}", lines[0]);
    assert!(lines[0].contains(letters[0]["id"].as_str().unwrap()));
}

/// The webhook refuses (400) every request that holds one particular event, beside the file
/// output. The batch is split until that event is alone; after its tries it is set aside for
/// the webhook only: the run ends, every other event reaches the webhook once, the file gets
/// every event (that one too), and the dead-letter store has its exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_webhook_always_refuses_is_set_aside_for_it_alone_and_replayed_once_fixed() {
    let env = TestEnv::start(
        sim_config(Dataset::Web, 1000, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let hook = Receiver::start("", false).await;
    let output = plain_webhook(&hook, "max_events_per_request: 100");
    let (env, refused, out) =
        run_with_one_event_refused(env, &hook, &output, || hook.hook_events()).await;
    let reason = "too long for our index";
    assert_set_aside_once(&env, &refused, "hook", reason, &stderr(&out));

    // The receiver is fixed: `state replay` delivers the letter to the webhook alone, once, and
    // discards it; a second replay finds nothing to do.
    hook.refuse_requests_containing("\u{0}nothing refused any more");
    let replay = [
        "state",
        "replay",
        "--service",
        "browser_and_email_isolation",
        "--all",
    ];
    let out = env.collector(&replay).await;
    assert!(out.status.success(), "{}", describe(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("delivered to hook and discarded"),
        "{}",
        describe(&out)
    );
    assert_same_multiset(
        &hook.hook_events(),
        &served(&env),
        "the webhook after the replay",
    );
    assert!(dead_letters(&env).is_empty(), "{:?}", dead_letters(&env));
    env.assert_exactly_once();
    let out = env.collector(&replay).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_same_multiset(
        &hook.hook_events(),
        &served(&env),
        "the webhook after a second replay",
    );
}

/// The same with Splunk HEC (acknowledgement on), which answers "Invalid data format" (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_hec_always_refuses_is_set_aside_for_it_alone() {
    let env = TestEnv::start(
        sim_config(Dataset::Web, 1000, 1),
        sim_config(Dataset::Url, 0, 2),
    )
    .await;
    let hec = Receiver::start(HEC_TOKEN, true).await;
    let output = hec_output(&hec, HEC_TOKEN, "max_events_per_request: 100");
    let indexed = || {
        (hec.indexed().iter())
            .map(|e| e.event.as_ref().unwrap().get().to_owned())
            .collect()
    };
    let (env, refused, out) = run_with_one_event_refused(env, &hec, &output, indexed).await;
    let log = stderr(&out);
    assert_set_aside_once(&env, &refused, "splunk", "Invalid data format", &log);
    assert!(!log.contains(HEC_TOKEN), "{log}");
}
