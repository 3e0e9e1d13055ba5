//! Criterion micro-benchmarks of the collector's hot path, on one 10,000-event page of the
//! simulator's Browser & Email Isolation dataset (the bytes `isolation-sim` serves).
//!
//! ```sh
//! cargo bench --bench hot_path            # or: bash scripts/bench/run.sh (everything, with a summary)
//! ```
//!
//! Every benchmark processes the whole page and reports throughput in events, so the time per
//! event is the reported time divided by 10,000. Two baselines give the floor the pipeline is
//! compared with: serde_json parsing the page into borrowed `RawValue`s (validation only), and
//! serde_json parsing every event into a `serde_json::Value` map (a full parse). Beside
//! `parse_page` (the one-pass scanner), `parse_page_reference_serde` is the serde_json parser it
//! falls back to for bodies it does not accept (two passes, an allocation per event). At the end
//! the bench prints each benchmark it ran in µs per event (Criterion's median).

use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use isolation_collector::event::{parse_page, parse_page_reference, Event};
use isolation_collector::output::net::format::RecordFormatter;
use isolation_collector::pipeline::dedup::DedupMemory;
use isolation_collector::pipeline::ledger::AuditLedger;
use isolation_collector::pipeline::obfuscate::{
    Action, HmacKey, ObfuscationRule, Obfuscator, PathSegment, MASK,
};
use isolation_sim::{Dataset, SimConfig, SimHandle};
use serde_json::value::RawValue;
use sha2::Digest as _;

const PAGE_EVENTS: usize = 10_000;

/// The events of one page, exactly as the simulator serves them, and the page body around them.
fn page() -> (Vec<String>, Bytes) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let events = rt.block_on(async {
        let mut cfg = SimConfig::new(Dataset::Web);
        cfg.events = PAGE_EVENTS;
        let sim = SimHandle::start(cfg).await.expect("simulator");
        let events = sim.visible_events();
        sim.shutdown().await;
        events
    });
    assert_eq!(events.len(), PAGE_EVENTS);
    let mut body = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 100);
    body.push_str(r#"{"jobId":"bench-job","status":"COMPLETED","total":10000,"data":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push_str("]}");
    (events, Bytes::from(body))
}

/// Syslog records as the TLS output formats them, into one reused buffer.
struct Records {
    formatter: RecordFormatter,
    out: Vec<u8>,
    now: i64,
}

impl Records {
    fn new(capacity: usize) -> Records {
        Records {
            formatter: RecordFormatter::new(
                "bench-host",
                "tap.proofpoint.isolation.browser_and_email",
            ),
            out: Vec::with_capacity(capacity),
            now: isolation_collector::clock::SharedClock::system().now_ms(),
        }
    }

    /// Formats `events` into the buffer (emptied first); returns the bytes written.
    fn format<'e>(&mut self, events: impl IntoIterator<Item = &'e Event>) -> usize {
        self.out.clear();
        for e in events {
            self.formatter.write_at(&mut self.out, self.now, &e.json);
        }
        self.out.len()
    }
}

#[derive(serde::Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct ValuePage {
    data: Vec<serde_json::Value>,
}

fn rules() -> Vec<ObfuscationRule> {
    let key = |k: &str| vec![PathSegment::Key(k.to_owned())];
    vec![
        ObfuscationRule {
            path: key("userId"),
            action: Action::Mask { value: None },
        },
        ObfuscationRule {
            path: key("userName"),
            action: Action::Hmac {
                key: HmacKey::new(b"0123456789abcdef0123456789abcdef"),
            },
        },
        ObfuscationRule {
            path: key("url"),
            action: Action::Patterns {
                regexes: vec![regex::Regex::new("https?://[^/]+").expect("regex")],
                replacement: MASK.to_owned(),
            },
        },
    ]
}

/// The page every benchmark processes, in the forms the benchmarks start from.
struct Page {
    /// Each event's JSON text, as the simulator serves it.
    event_texts: Vec<String>,
    /// The page body around them.
    body: Bytes,
    /// The body as text, for the serde_json baselines.
    text: String,
    /// The page parsed by the collector.
    events: Vec<Event>,
    /// A window end past every event (the expiry of events without a date).
    window_end: i64,
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

fn hot_path(c: &mut Criterion) {
    let (event_texts, body) = page();
    let text = std::str::from_utf8(&body).expect("utf-8").to_owned();
    let events = parse_page(body.clone()).expect("page").events;
    let window_end = events.iter().map(|e| e.date_ms).max().unwrap_or(0) + 1;
    eprintln!(
        "page: {} events, {} bytes ({} bytes/event)",
        events.len(),
        body.len(),
        body.len() / events.len()
    );
    let page = Page {
        event_texts,
        body,
        text,
        events,
        window_end,
    };

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(PAGE_EVENTS as u64));
    g.sample_size(30);
    baselines(&mut g, &page);
    parse_and_dedup(&mut g, &page);
    format_and_obfuscate(&mut g, &page);
    whole_pipeline(&mut g, &page);
    audit_ledger(&mut g, &page);
    g.finish();
}

/// Baselines: the cost of parsing the JSON alone.
fn baselines(g: &mut Group<'_>, page: &Page) {
    let text = &page.text;
    g.bench_function("baseline_serde_rawvalue_page", |b| {
        b.iter(|| {
            let p: RawPage<'_> = serde_json::from_str(black_box(text)).expect("json");
            black_box(p.data.len())
        })
    });
    g.bench_function("baseline_serde_value_per_event", |b| {
        b.iter(|| {
            let p: ValuePage = serde_json::from_str(black_box(text)).expect("json");
            black_box(p.data.len())
        })
    });
    g.bench_function("baseline_sha256_event_bytes", |b| {
        b.iter(|| {
            for e in &page.event_texts {
                black_box(sha2::Sha256::digest(e.as_bytes()));
            }
        })
    });
    // The same hash over each event's canonical form (members sorted by name, each name and
    // value length-prefixed: the dedup key's input, built here outside the timing). Beside the
    // line above, it prices the canonical order's extra bytes; `parse_page` builds this form.
    let canonical: Vec<Vec<u8>> = page.event_texts.iter().map(|e| canonical_form(e)).collect();
    for (c, e) in canonical.iter().zip(&page.events) {
        assert_eq!(
            <[u8; 32]>::from(sha2::Sha256::digest(c)),
            e.key,
            "the key's input"
        );
    }
    g.bench_function("baseline_sha256_canonical_form", |b| {
        b.iter(|| {
            for c in &canonical {
                black_box(sha2::Sha256::digest(c));
            }
        })
    });
}

/// An event's canonical form as the dedup key hashes it (see `canonical_key` in src/event.rs).
fn canonical_form(event: &str) -> Vec<u8> {
    let members: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_str(event).expect("event");
    let mut out = Vec::new();
    for (name, value) in members {
        for part in [name.as_bytes(), value.get().as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The collector's steps on the way in: parsing, hashing, the dedup plan.
fn parse_and_dedup(g: &mut Group<'_>, page: &Page) {
    let (events, window_end) = (&page.events, page.window_end);
    g.bench_function("parse_page", |b| {
        b.iter(|| black_box(parse_page(black_box(page.body.clone())).expect("page")))
    });
    g.bench_function("parse_page_reference_serde", |b| {
        b.iter(|| black_box(parse_page_reference(black_box(page.body.clone())).expect("page")))
    });
    let singles: Vec<Bytes> = page
        .event_texts
        .iter()
        .map(|e| Bytes::from(e.clone()))
        .collect();
    g.bench_function("event_from_json_canonical_hash", |b| {
        b.iter(|| {
            for e in &singles {
                black_box(Event::from_json(e.clone()).expect("event"));
            }
        })
    });
    g.bench_function("dedup_plan_new_events", |b| {
        let memory = DedupMemory::new();
        b.iter(|| black_box(memory.plan(black_box(events), window_end)))
    });
    g.bench_function("dedup_plan_apply_new_events", |b| {
        b.iter_batched(
            DedupMemory::new,
            |mut memory| {
                let plan = memory.plan(events, window_end);
                memory.apply(plan);
                memory
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("dedup_plan_requery_all_seen", |b| {
        let mut memory = DedupMemory::new();
        memory.apply(memory.plan(events, window_end));
        b.iter(|| {
            let plan = memory.plan(black_box(events), window_end);
            assert_eq!(plan.deliver.len(), 0);
            black_box(plan)
        })
    });
}

/// What a commit adds per event for the audit (issue 24): the ledger's hourly count alone, and
/// the count with the hour's digest (`pipeline::ledger::sketch`, 6 cells an event). The
/// difference is the digest's cost per committed event.
fn audit_ledger(g: &mut Group<'_>, page: &Page) {
    let events = &page.events;
    let from = events.iter().map(|e| e.date_ms).min().unwrap_or(0);
    g.bench_function("ledger_count_only", |b| {
        b.iter_batched(
            || AuditLedger::tracking_from(from),
            |mut ledger| {
                for e in events {
                    ledger.record(e.date_ms);
                }
                ledger
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("ledger_count_and_digest", |b| {
        b.iter_batched(
            || AuditLedger::tracking_from(from),
            |mut ledger| {
                for e in events {
                    ledger.record_copy(e.date_ms, &e.key, 1);
                }
                ledger
            },
            BatchSize::SmallInput,
        )
    });
}

/// The collector's steps on the way out: the syslog record, obfuscation.
fn format_and_obfuscate(g: &mut Group<'_>, page: &Page) {
    let events = &page.events;
    g.bench_function("format_syslog_record", |b| {
        let mut records = Records::new(page.body.len() * 2);
        b.iter(|| black_box(records.format(events)))
    });
    // The three rules (mask, HMAC, pattern); then the masking + HMAC rule set alone (issue 23's
    // target), and the same with a nested path (`[nested, "*"]`, which this page does not hold:
    // the price of a rule that looks and finds nothing).
    let mut mask_hmac = rules();
    mask_hmac.truncate(2);
    let mut with_nested = mask_hmac.clone();
    with_nested.push(ObfuscationRule {
        path: vec![PathSegment::Key("nested".to_owned()), PathSegment::Any],
        action: Action::Mask { value: None },
    });
    for (name, rules) in [
        ("obfuscate_mask_hmac_pattern", rules()),
        ("obfuscate_mask_hmac", mask_hmac),
        ("obfuscate_mask_hmac_absent_nested", with_nested),
    ] {
        let obfuscator = Obfuscator::new(rules);
        g.bench_function(name, |b| {
            b.iter_batched(
                || events.clone(),
                |mut batch| {
                    let report = obfuscator.apply_batch(&mut batch);
                    black_box((batch, report))
                },
                BatchSize::LargeInput,
            )
        });
    }
}

/// Everything an event goes through in process: parse + hash, dedup, obfuscation-free record
/// formatting (what the TLS output writes).
fn whole_pipeline(g: &mut Group<'_>, page: &Page) {
    g.bench_function("pipeline_parse_dedup_format", |b| {
        let mut records = Records::new(page.body.len() * 2);
        b.iter(|| {
            let parsed = parse_page(page.body.clone()).expect("page");
            let mut memory = DedupMemory::new();
            let plan = memory.plan(&parsed.events, page.window_end);
            let len = records.format(plan.deliver.iter().map(|&i| &parsed.events[i]));
            memory.apply(plan);
            black_box(len)
        })
    });
}

/// The directory where Criterion keeps this group's results.
fn results_dir() -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    std::path::Path::new(&target).join("criterion/hot_path")
}

/// Each benchmark's results file and when it was last written.
fn result_files() -> Vec<(String, Option<std::time::SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(results_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let written = std::fs::metadata(e.path().join("new/estimates.json"))
                .and_then(|m| m.modified())
                .ok();
            (name, written)
        })
        .collect()
}

/// The results files as they were before this process ran a benchmark.
static BEFORE: std::sync::OnceLock<Vec<(String, Option<std::time::SystemTime>)>> =
    std::sync::OnceLock::new();

fn note_previous_results(_: &mut Criterion) {
    BEFORE.get_or_init(result_files);
}

/// Prints, for every benchmark this process ran (its results file changed), Criterion's median
/// in µs per event (Criterion itself reports the time per page and a throughput).
fn per_event_summary(_: &mut Criterion) {
    let before = BEFORE.get_or_init(Vec::new);
    let mut rows: Vec<(String, f64)> = result_files()
        .into_iter()
        .filter(|file| file.1.is_some() && !before.contains(file))
        .filter_map(|(name, _)| {
            let bytes = std::fs::read(results_dir().join(&name).join("new/estimates.json"));
            let v: serde_json::Value = serde_json::from_slice(&bytes.ok()?).ok()?;
            let ns = v["median"]["point_estimate"].as_f64()?;
            Some((name, ns / 1_000.0 / PAGE_EVENTS as f64))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, us) in rows {
        eprintln!("hot_path/{name:<36} {us:8.3} µs/event");
    }
}

criterion_group!(benches, note_previous_results, hot_path, per_event_summary);
criterion_main!(benches);
