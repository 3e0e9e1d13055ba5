//! Event generation and serialisation.
//!
//! An event is stored as a 24-byte [`EventRec`] (date, ingest time and a content seed); its JSON
//! is produced on demand from the seed and a few pools of pre-escaped strings. Keeping a
//! `serde_json::Value` or even the serialised `String` per event would cost 300-800 bytes each,
//! which does not fit 1,000,000 events per dataset in the 300 MB budget; the seed form costs
//! 24 MB, and serialising is a handful of `push_str` calls per event.
//!
//! Invariants: the base events (`generate_base`) are sorted by date, so a job's snapshot can
//! binary-search its window; the same seed (and anchor) gives the same events byte for byte.
//! All randomness here comes from [`Mix`] (SplitMix64), not `rand`, so that the output cannot
//! change with a `rand` upgrade.

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::config::{CategoriesMode, Dataset, SimConfig};

/// One event in compact form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventRec {
    /// `date`, milliseconds since the epoch.
    pub date_ms: i64,
    /// When the event becomes visible to new jobs, milliseconds since the epoch.
    pub ingest_ms: i64,
    /// Seed of every other field. Identical copies share it (and the date).
    pub content: u64,
}

/// SplitMix64: small, fast, and stable forever (unlike `StdRng`, whose algorithm may change).
#[derive(Clone, Debug)]
pub(crate) struct Mix(pub u64);

impl Mix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What kind of extra fields an event carries (§6: only download, upload and iframe
/// dispositions have them).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    File,
    Iframe,
}

/// (classification, disposition, extra fields, weight). Pairings from §6.1.
type Combo = (&'static str, &'static str, Extra, u64);

const WEB_COMBOS: &[Combo] = &[
    ("USER", "EXIT_ISOLATION", Extra::None, 25),
    ("USER", "ALLOW", Extra::None, 30),
    ("PHISH", "BLOCK", Extra::None, 8),
    ("MALWARE", "BLOCK", Extra::None, 5),
    ("CONTENT_FILTERING", "BLOCK", Extra::None, 10),
    ("DLP", "BLOCK_UPLOAD", Extra::File, 3),
    ("DLP", "ALLOW_UPLOAD", Extra::File, 3),
    ("USER", "ALLOW_DOWNLOAD", Extra::File, 6),
    ("MALWARE", "BLOCK_DOWNLOAD", Extra::File, 3),
    ("USER", "ALLOW_IFRAME", Extra::Iframe, 4),
    ("CONTENT_FILTERING", "BLOCK_IFRAME", Extra::Iframe, 3),
];

// URL Isolation events carried only the nine basic fields in 2022 (S5), so no file/iframe
// dispositions here.
const URL_COMBOS: &[Combo] = &[
    ("USER", "EXIT_ISOLATION", Extra::None, 25),
    ("USER", "ALLOW", Extra::None, 35),
    ("PHISH", "BLOCK", Extra::None, 10),
    ("MALWARE", "BLOCK", Extra::None, 5),
    ("CONTENT_FILTERING", "BLOCK", Extra::None, 10),
    ("BLOCKED_BY_POLICY", "BLOCK", Extra::None, 15),
];

const REGIONS: &[(&str, &str)] = &[
    ("US", "CENTRAL"),
    ("US", "EAST"),
    ("US", "WEST"),
    ("EU", "WEST"),
    ("EU", "CENTRAL"),
    ("ASIA", "EAST"),
];

const CATEGORIES: &[&str] = &[
    "Search Engines and Portals",
    "Social Networking",
    "News",
    "Business and Economy",
    "Online Storage and Backup",
    "Web Hosting",
    "Phishing and Other Frauds",
    "Malware Sites",
    "Newly Registered Domain",
    "Shopping",
    "Information Technology",
    "Streaming Media",
];

const FIRST: &[&str] = &[
    "a.rivera",
    "m.chen",
    "p.okafor",
    "j.doe",
    "s.kumar",
    "l.martin",
    "k.nakamura",
    "r.silva",
    "t.nguyen",
    "e.novak",
    "d.smith",
    "h.berg",
    "c.rossi",
    "n.ivanova",
    "o.haddad",
    "b.jones",
];

// Occasional non-ASCII local parts so that UTF-8 in strings gets exercised.
const FIRST_NON_ASCII: &[&str] = &["josé.garcía", "zoë.müller", "björn.åström", "françois.dœuf"];

const DOMAINS: &[&str] = &["example.org", "example.com", "corp.example.net"];

const HOSTS: &[&str] = &[
    "news.example.com",
    "docs-share.example.net",
    "login-example.test",
    "files.example.io",
    "search.example.com",
    "social.example.org",
    "shop.example.com",
    "cdn.example-hosting.net",
    "mail.example.io",
    "wiki.example.org",
];

const PATHS: &[&str] = &[
    "/",
    "/verify",
    "/view?id=",
    "/article/",
    "/dl/report_",
    "/inbox",
    "/search?q=isolation&page=",
    "/login?next=%2Fhome&session=",
];

// URLs that need JSON escapes (quote, backslash) or carry non-ASCII text.
const SPECIAL_URLS: &[&str] = &[
    "https://search.example.com/?q=\"isolation api\"",
    "https://files.example.io/share\\folder\\report.txt",
    "https://wiki.example.org/wiki/Zürich_Café",
    "https://例え.テスト/パス?q=値",
    "https://news.example.com/emoji/🎉",
];

const FILES: &[(&str, &str, &str)] = &[
    ("invoice_", "pdf", "application/pdf"),
    (
        "report_",
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("setup_", "exe", "application/x-msdownload"),
    ("photo_", "jpg", "image/jpeg"),
    ("archive_", "zip", "application/zip"),
    ("notes_", "txt", "text/plain"),
];

/// Query parameters that lengthen a URL the way marketing and session tracking do.
const TRACKING_PARAMS: &[&str] = &[
    "utm_source=newsletter",
    "utm_medium=email",
    "utm_campaign=security-awareness-q4",
    "utm_content=cta-button-primary",
    "utm_term=isolation+browser",
    "ref=homepage-banner",
    "lang=en-US",
];

/// `url` (a JSON string literal, with quotes) `pad` bytes longer: tracking parameters, then
/// a session token of hex digits to the exact length. ASCII without escapes, so the JSON
/// grows by exactly `pad` bytes.
fn padded_url(url: &str, pad: usize, mix: &mut Mix) -> String {
    if pad == 0 {
        return url.to_string();
    }
    let body = &url[..url.len() - 1];
    let mut tail = String::with_capacity(pad);
    tail.push(if body.contains('?') { '&' } else { '?' });
    for param in TRACKING_PARAMS {
        // Leave room for "&sid=" and at least 8 digits of the token.
        if tail.len() + param.len() + 1 + 5 + 8 <= pad {
            tail.push_str(param);
            tail.push('&');
        }
    }
    tail.push_str("sid=");
    while tail.len() < pad {
        tail.push_str(&format!("{:016x}", mix.next_u64()));
    }
    tail.truncate(pad);
    format!("{body}{tail}\"")
}

/// Appends `s` as a JSON string literal (with quotes).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

fn push_padded(out: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = n;
    for i in (0..width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for b in &buf[..width] {
        out.push(*b as char);
    }
}

/// Appends the event date form `2025-03-04T10:15:27.412+0000` (no quotes).
pub(crate) fn push_date(out: &mut String, ms: i64) {
    let dt = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    push_padded(out, dt.year().clamp(0, 9999) as u32, 4);
    out.push('-');
    push_padded(out, dt.month(), 2);
    out.push('-');
    push_padded(out, dt.day(), 2);
    out.push('T');
    push_padded(out, dt.hour(), 2);
    out.push(':');
    push_padded(out, dt.minute(), 2);
    out.push(':');
    push_padded(out, dt.second(), 2);
    out.push('.');
    push_padded(out, dt.timestamp_subsec_millis(), 3);
    out.push_str("+0000");
}

/// Writes one JSON object, compact or with spaces and newlines.
struct ObjWriter<'a> {
    out: &'a mut String,
    pretty: bool,
    first: bool,
}

impl<'a> ObjWriter<'a> {
    fn new(out: &'a mut String, pretty: bool) -> Self {
        out.push('{');
        ObjWriter {
            out,
            pretty,
            first: true,
        }
    }

    /// Starts a member; the caller appends the value.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        if self.pretty {
            self.out.push_str("\n  ");
        }
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str(if self.pretty { "\": " } else { "\":" });
        self.out
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key).push_str(value);
    }

    fn finish(self) {
        if self.pretty {
            self.out.push('\n');
        }
        self.out.push('}');
    }
}

/// Pre-escaped strings that events are assembled from.
#[derive(Debug)]
pub(crate) struct Generator {
    dataset: Dataset,
    categories_mode: CategoriesMode,
    /// (userId, userName), both already JSON string literals.
    users: Vec<(String, String)>,
    /// URL JSON string literals.
    urls: Vec<String>,
    categories: Vec<String>,
    salt: u64,
}

impl Generator {
    pub fn new(cfg: &SimConfig) -> Self {
        let salt = cfg.seed ^ dataset_salt(cfg.dataset);
        let mut mix = Mix(salt ^ 0x005E_ED0F_0001);
        let mut users: Vec<(String, String)> = (0..300)
            .map(|_| {
                let id = format!(
                    "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                    mix.next_u64() as u32,
                    mix.next_u64() as u16,
                    mix.next_u64() & 0xfff,
                    (mix.next_u64() as u16 & 0x3fff) | 0x8000,
                    mix.next_u64() & 0xffff_ffff_ffff
                );
                let local = if mix.chance(0.03) {
                    mix.pick(FIRST_NON_ASCII)
                } else {
                    mix.pick(FIRST)
                };
                let name = format!("{local}{}@{}", mix.below(100), mix.pick(DOMAINS));
                (json_str(&id), json_str(&name))
            })
            .collect();
        for (_, name) in users.iter_mut().take(cfg.unreadable_user_names) {
            *name = format!("\"\\ud800{}", &name[1..]);
        }
        let mut urls: Vec<String> = (0..2000)
            .map(|_| {
                let path = mix.pick(PATHS);
                let tail = if path.ends_with('=') || path.ends_with('_') || path.ends_with('/') {
                    mix.below(100_000).to_string()
                } else {
                    String::new()
                };
                json_str(&format!("https://{}{}{}", mix.pick(HOSTS), path, tail))
            })
            .collect();
        // About 1 URL in 50 needs an escape or carries non-ASCII text (8 copies of each of the
        // 5 specials among 2000).
        for (i, u) in SPECIAL_URLS.iter().enumerate() {
            for k in 0..8 {
                urls[i * 8 + k] = json_str(u);
            }
        }
        mix.shuffle(&mut urls);
        let mut generator = Generator {
            dataset: cfg.dataset,
            categories_mode: cfg.categories_mode,
            users,
            urls,
            categories: CATEGORIES.iter().map(|c| json_str(c)).collect(),
            salt,
        };
        if cfg.event_size_factor > 1.0 {
            generator.lengthen_urls(cfg.event_size_factor, &mut mix);
        }
        generator
    }

    /// Lengthens every URL of the pool by the same number of bytes, so that the mean event
    /// grows `factor` times. How many bytes that takes depends on how many URL fields an event
    /// carries on average (`parentPageURL` too, on some), so it is measured on a sample: the
    /// mean event without padding, and how much it grows per padded byte.
    fn lengthen_urls(&mut self, factor: f64, mix: &mut Mix) {
        const PROBE: usize = 1000;
        let sample: Vec<EventRec> = (0..2000)
            .map(|_| EventRec {
                date_ms: 1_741_083_327_412,
                ingest_ms: 0,
                content: mix.next_u64(),
            })
            .collect();
        let mean = |g: &Generator| {
            let bytes: usize = sample.iter().map(|r| g.event_json(r).len()).sum();
            bytes as f64 / sample.len() as f64
        };
        let plain_urls = self.urls.clone();
        let plain = mean(self);
        self.urls = plain_urls
            .iter()
            .map(|u| padded_url(u, PROBE, mix))
            .collect();
        let per_byte = (mean(self) - plain) / PROBE as f64;
        let pad = ((factor - 1.0) * plain / per_byte).round() as usize;
        self.urls = plain_urls.iter().map(|u| padded_url(u, pad, mix)).collect();
    }

    /// Appends the event's JSON (compact, or with whitespace when `pretty`).
    pub fn write_event(&self, out: &mut String, rec: &EventRec, pretty: bool) {
        let mut mix = Mix(rec.content ^ self.salt);
        let (user_id, user_name) = &self.users[mix.below(self.users.len() as u64) as usize];
        let url = &self.urls[mix.below(self.urls.len() as u64) as usize];
        let combos = match self.dataset {
            Dataset::Web => WEB_COMBOS,
            Dataset::Url => URL_COMBOS,
        };
        let total: u64 = combos.iter().map(|c| c.3).sum();
        let mut roll = mix.below(total);
        let mut combo = &combos[0];
        for c in combos {
            if roll < c.3 {
                combo = c;
                break;
            }
            roll -= c.3;
        }
        let (region, zone) = REGIONS[mix.below(REGIONS.len() as u64) as usize];

        let mut w = ObjWriter::new(out, pretty);
        w.raw("userId", user_id);
        w.raw("userName", user_name);
        w.raw("url", url);
        let o = w.key("date");
        o.push('"');
        push_date(o, rec.date_ms);
        o.push('"');
        // The enum words need no escaping; skipping `json_str` saves four allocations per
        // event on the page-serving path.
        for (key, word) in [
            ("region", region),
            ("zone", zone),
            ("classification", combo.0),
            ("disposition", combo.1),
        ] {
            let o = w.key(key);
            o.push('"');
            o.push_str(word);
            o.push('"');
        }
        match self.categories_mode {
            CategoriesMode::Absent => {}
            CategoriesMode::Empty => w.raw("categories", "[]"),
            CategoriesMode::Present => {
                let n = 1 + mix.below(2) as usize;
                let sep = if pretty { ", " } else { "," };
                let o = w.key("categories");
                o.push('[');
                let first = mix.below(self.categories.len() as u64) as usize;
                for k in 0..n {
                    if k > 0 {
                        o.push_str(sep);
                    }
                    o.push_str(&self.categories[(first + k * 5) % self.categories.len()]);
                }
                o.push(']');
            }
        }
        match combo.2 {
            Extra::None => {}
            Extra::File => {
                let (stem, ext, mime) = FILES[mix.below(FILES.len() as u64) as usize];
                let name = format!("{stem}{:04}.{ext}", mix.below(10_000));
                w.key("fileName").push_str(&json_str(&name));
                w.raw("fileSize", &(1 + mix.below(50_000_000)).to_string());
                w.key("fileMimeType").push_str(&json_str(mime));
                let parent = &self.urls[mix.below(self.urls.len() as u64) as usize];
                w.raw("parentPageURL", parent);
                w.raw("isiFrame", "\"false\"");
            }
            Extra::Iframe => {
                let parent = &self.urls[mix.below(self.urls.len() as u64) as usize];
                w.raw("parentPageURL", parent);
                w.raw("isiFrame", "\"true\"");
            }
        }
        w.finish();
    }

    /// The event as compact JSON.
    pub fn event_json(&self, rec: &EventRec) -> String {
        let mut s = String::with_capacity(400);
        self.write_event(&mut s, rec, false);
        s
    }
}

fn dataset_salt(d: Dataset) -> u64 {
    match d {
        Dataset::Web => 0x57E8_0000_0000_0001,
        Dataset::Url => 0x0081_0000_0000_0002,
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Computes ingest times from the late-arrival knobs.
#[derive(Clone, Debug)]
pub(crate) struct Lateness {
    max_delay_ms: i64,
    batch_ms: Option<i64>,
}

impl Lateness {
    pub fn new(cfg: &SimConfig) -> Self {
        Lateness {
            max_delay_ms: ms(cfg.late_max_delay),
            batch_ms: cfg.late_batch_interval.map(ms).filter(|b| *b > 0),
        }
    }

    fn ingest(&self, date_ms: i64, mix: &mut Mix) -> i64 {
        let mut t = date_ms;
        if self.max_delay_ms > 0 {
            t += mix.below(self.max_delay_ms as u64 + 1) as i64;
        }
        if let Some(b) = self.batch_ms {
            t = t.div_euclid(b) * b + if t.rem_euclid(b) == 0 { 0 } else { b };
        }
        t
    }
}

/// Generates the start-up events of one key (`seed`: the host's in single-key mode), sorted by
/// date, ending at `end_ms`.
pub(crate) fn generate_base(cfg: &SimConfig, seed: u64, end_ms: i64) -> Vec<EventRec> {
    let lateness = Lateness::new(cfg);
    let mut mix = Mix(seed ^ dataset_salt(cfg.dataset));
    let span = ms(cfg.span).max(0);
    let start = end_ms - span;
    let mut dates: Vec<i64> = (0..cfg.events)
        .map(|_| {
            let d = start + mix.below(span as u64 + 1) as i64;
            if mix.chance(cfg.whole_second_fraction) {
                d - d.rem_euclid(1000)
            } else {
                d
            }
        })
        .collect();
    dates.sort_unstable();
    let mut recs: Vec<EventRec> = Vec::with_capacity(cfg.events);
    for (i, date) in dates.into_iter().enumerate() {
        let prev = if i > 0 { recs.last().copied() } else { None };
        let rec = match prev {
            Some(p) if mix.chance(cfg.identical_fraction) => p,
            Some(p) if mix.chance(cfg.burst_fraction) => EventRec {
                date_ms: p.date_ms,
                ingest_ms: lateness.ingest(p.date_ms, &mut mix),
                content: mix.next_u64(),
            },
            _ => EventRec {
                date_ms: date,
                ingest_ms: lateness.ingest(date, &mut mix),
                content: mix.next_u64(),
            },
        };
        recs.push(rec);
    }
    recs
}

/// Generates `count` late events with dates in `[from_ms, to_ms]`, visible from `now_ms`.
pub(crate) fn generate_injected(
    count: usize,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
    mix: &mut Mix,
) -> Vec<EventRec> {
    let span = (to_ms - from_ms).max(0) as u64;
    (0..count)
        .map(|_| EventRec {
            date_ms: from_ms + mix.below(span + 1) as i64,
            ingest_ms: now_ms,
            content: mix.next_u64(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_format() {
        let mut s = String::new();
        // 2025-03-04T10:15:27.412Z
        push_date(&mut s, 1_741_083_327_412);
        assert_eq!(s, "2025-03-04T10:15:27.412+0000");
    }

    /// Mean bytes of compact JSON per event, over `cfg.events` events.
    fn mean_event_bytes(cfg: &SimConfig) -> f64 {
        let g = Generator::new(cfg);
        let recs = generate_base(cfg, cfg.seed, 1_741_083_327_412);
        let total: usize = recs.iter().map(|r| g.event_json(r).len()).sum();
        total as f64 / recs.len() as f64
    }

    #[test]
    fn event_size_factor_doubles_the_mean_event_size_with_valid_events() {
        for dataset in [Dataset::Web, Dataset::Url] {
            let mut cfg = SimConfig::new(dataset);
            cfg.events = 5000;
            let plain = mean_event_bytes(&cfg);
            cfg.event_size_factor = 2.0;
            let doubled = mean_event_bytes(&cfg);
            let ratio = doubled / plain;
            assert!(
                (1.95..=2.05).contains(&ratio),
                "{dataset:?}: mean {plain:.0} -> {doubled:.0} bytes, x{ratio:.3}"
            );
            // Still valid events, the growth in the URLs alone.
            let g = Generator::new(&cfg);
            for r in generate_base(&cfg, cfg.seed, 1_741_083_327_412)
                .iter()
                .take(500)
            {
                let v: serde_json::Value = serde_json::from_str(&g.event_json(r)).expect("json");
                assert!(v["url"].as_str().expect("url").starts_with("https://"));
            }
        }
    }

    #[test]
    fn events_are_valid_json_with_expected_fields() {
        for dataset in [Dataset::Web, Dataset::Url] {
            let mut cfg = SimConfig::new(dataset);
            cfg.events = 3000;
            let g = Generator::new(&cfg);
            let recs = generate_base(&cfg, cfg.seed, 1_741_083_327_412);
            assert!(recs.windows(2).all(|w| w[0].date_ms <= w[1].date_ms));
            let mut saw_policy = false;
            for r in &recs {
                let compact = g.event_json(r);
                let v: serde_json::Value = serde_json::from_str(&compact).expect("valid json");
                // Compact: no whitespace outside strings (serde_json would sort the keys, so
                // re-serialising is no reference).
                assert!(!compact.contains('\n') && !compact.contains("\": "));
                let mut pretty = String::new();
                g.write_event(&mut pretty, r, true);
                let p: serde_json::Value = serde_json::from_str(&pretty).expect("valid json");
                assert_eq!(p, v);
                let disp = v["disposition"].as_str().expect("disposition");
                let has_file = v.get("fileName").is_some();
                assert_eq!(
                    has_file,
                    disp.ends_with("_DOWNLOAD") || disp.ends_with("_UPLOAD")
                );
                let extra = has_file || disp.ends_with("_IFRAME");
                assert_eq!(v.get("isiFrame").is_some(), extra);
                assert_eq!(v.get("parentPageURL").is_some(), extra);
                saw_policy |= v["classification"] == "BLOCKED_BY_POLICY";
            }
            assert_eq!(saw_policy, dataset == Dataset::Url);
            let all: String = recs.iter().map(|r| g.event_json(r)).collect();
            assert!(all.contains("\\\""), "an escaped quote");
            assert!(all.contains("\\\\"), "an escaped backslash");
            assert!(all.contains("josé") || all.contains("zoë") || all.contains("björn"));
        }
    }
}
