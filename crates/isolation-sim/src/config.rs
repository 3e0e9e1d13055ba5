//! The simulator's knobs: one [`SimConfig`] per listener (one dataset each).
//!
//! Every behaviour that isolation-api.md marks unknown [U] is a knob here, so that the collector
//! can be tested against each plausible reading of the vendor API. The defaults are the most
//! likely reading (isolation-api.md §10) with no faults and no late arrival.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Which vendor host the simulator plays. The two products share one protocol (§1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Browser & Email Isolation (`proofpointisolation.com`): may carry the `file*`,
    /// `parentPageURL` and `isiFrame` fields on download/upload/iframe events.
    Web,
    /// URL Isolation (`urlisolation.com`): the nine basic fields only, and the only dataset that
    /// produces `BLOCKED_BY_POLICY`.
    Url,
}

impl Dataset {
    /// Short lowercase name (`web` / `url`), used in logs and to derive per-dataset seeds.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Web => "web",
            Dataset::Url => "url",
        }
    }
}

/// How `total` appears in COMPLETED responses (§5: a number, maybe a numeric string, maybe absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    /// `"total": 123`.
    Number,
    /// `"total": "123"`.
    String,
    /// No `total` key at all.
    Absent,
}

/// How the `categories` field appears in events (§6: array; some schemas disagree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CategoriesMode {
    /// One or two category names.
    Present,
    /// The key is left out.
    Absent,
    /// `"categories": []`.
    Empty,
}

/// What a job caught in a page-token loop ([`SimConfig::token_loop_jobs`]) serves on every
/// page after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenLoop {
    /// `"data": []`: the job runs forever and holds nothing.
    EmptyPages,
    /// The second page again and again: the job runs forever and fills the client's memory.
    SamePage,
}

/// The answer to a wrong or missing API key (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailureMode {
    /// `403`, `text/plain`, `API Key <key> is not valid.` (the Devo seed document).
    Forbidden403Text,
    /// `401` with a JSON body `{"error":"unauthorized","message":"API Key <key> is not valid."}`.
    Unauthorized401Json,
}

/// What happens to a `from` older than the retention window (§3 [U]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetentionMode {
    /// Silently move `from` to `now - retention`.
    Clamp,
    /// Answer 400 naming `from`.
    Reject,
}

/// The keys of multi-key mode: `{prefix}0001` to `{prefix}{count}`, the number zero-padded to
/// four digits (or to the width of `count` when it has more), so `tenant-0001` .. `tenant-1000`.
///
/// Each key is one tenant: its dataset has [`SimConfig::events`] events drawn with its own seed
/// ([`KeySet::seed_of`]: the host's seed mixed with the key's bytes), so two keys never serve the
/// same events and a key serves the same events in every run with the same seed and anchor. A
/// key's dataset is generated on its first authenticated request (a thousand tenants cost only
/// what they use); a job belongs to the key that created it (another key gets 404 for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySet {
    /// Text before the number.
    pub prefix: String,
    /// How many keys (at least 1).
    pub count: u32,
}

impl KeySet {
    /// Digits of the number part.
    fn width(&self) -> usize {
        self.count.to_string().len().max(4)
    }

    /// The key of tenant `index` (0-based): `index` 0 is `{prefix}0001`.
    pub fn key(&self, index: u32) -> String {
        format!("{}{:0width$}", self.prefix, index + 1, width = self.width())
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.count).map(|i| self.key(i))
    }

    /// The tenant index of `key`, or `None` when it is not one of the set (wrong prefix, wrong
    /// width, out of range).
    pub fn index_of(&self, key: &str) -> Option<u32> {
        let digits = key.strip_prefix(self.prefix.as_str())?;
        if digits.len() != self.width() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        (1..=self.count).contains(&n).then(|| n - 1)
    }

    /// The dataset seed of `key` under the host's `seed`: FNV-1a of the key's bytes, mixed
    /// with the seed (so `--seed` still varies every tenant's events).
    pub fn seed_of(seed: u64, key: &str) -> u64 {
        let fnv = key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        seed ^ fnv.rotate_left(17)
    }
}

/// All knobs of one simulated host. Build with [`SimConfig::new`] (or `Default`, which is the
/// [`Dataset::Web`] host) and change fields directly.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Which host this is.
    pub dataset: Dataset,
    /// The one accepted API key (`Authorization: Bearer` or `?key=`); ignored when
    /// [`SimConfig::keys`] is set.
    pub api_key: String,
    /// Multi-key mode: the host accepts every key of this set instead of `api_key`, each with a
    /// dataset and jobs of its own (one tenant per key). `None` = single-key mode.
    pub keys: Option<KeySet>,
    /// Number of events generated at start (in multi-key mode: per key, when the key is first
    /// used).
    pub events: usize,
    /// Seed for every random choice in the dataset (dates, contents, shuffles). Same seed, same
    /// events.
    pub seed: u64,
    /// The newest generated event is this long before the start time.
    pub end_offset: Duration,
    /// Events are spread over `[end - span, end]`, where `end` is `anchor` or, when `anchor` is
    /// `None`, the start time minus `end_offset`.
    pub span: Duration,
    /// A fixed end of the generated date range. Set it to get byte-identical datasets from two
    /// runs with the same seed (dates are otherwise relative to the start time).
    pub anchor: Option<DateTime<Utc>>,
    /// Fraction (0..=1) of events whose date equals the previous event's date (bursts of events
    /// that share one timestamp).
    pub burst_fraction: f64,
    /// Fraction (0..=1) of events that are byte-identical copies (same content, same date) of the
    /// previous event: distinct events that look the same. A collector must deliver every copy.
    pub identical_fraction: f64,
    /// Fraction (0..=1) of events whose milliseconds are `.000`; the others have random millis.
    pub whole_second_fraction: f64,
    /// Serve events with insignificant whitespace (spaces and newlines) instead of compact JSON.
    pub whitespace: bool,
    /// Mean size of an event's compact JSON, as a multiple of the default's (1.0): at 2.0 the
    /// events are twice as large, as a tenant whose users visit long URLs sees them. The URLs
    /// (`url`, `parentPageURL`) grow by a realistic tracking query string (`utm_*` parameters,
    /// a session token); every other field stays as it is. Values below 1.0 count as 1.0.
    pub event_size_factor: f64,
    /// How `categories` is written.
    pub categories_mode: CategoriesMode,
    /// The `userName` of this many of the 300 users starts with a lone UTF-16
    /// surrogate escape (`"\ud800..."`): valid JSON syntax that decodes to no text, which
    /// obfuscation rules must survive without dropping the event or leaking the value.
    pub unreadable_user_names: usize,
    /// This many events of the day (spread evenly over it) are served with a stray byte that
    /// is not UTF-8 (0xFF) at the start of their `userId` value: one unreadable event in an
    /// otherwise valid page. [`SimHandle::unreadable_events`] gives their exact bytes, and
    /// [`SimHandle::visible_events`] leaves them out.
    ///
    /// [`SimHandle::unreadable_events`]: crate::SimHandle::unreadable_events
    /// [`SimHandle::visible_events`]: crate::SimHandle::visible_events
    pub non_utf8_events: usize,
    /// This many events (spread evenly, next to those of `non_utf8_events`) carry one more
    /// member, `"nested"`, an array nested [`DEEP_NESTING`](crate::DEEP_NESTING) deep: valid
    /// JSON, deeper than serde_json's recursion limit (128) for the values it builds.
    pub deep_events: usize,
    /// Late arrival: each event's ingest time is its date plus a uniform random delay in
    /// `[0, late_max_delay]`. A job sees only events ingested by its creation. Zero = no delay.
    pub late_max_delay: Duration,
    /// Late arrival in batches: when set, ingest times are rounded up to the next multiple of
    /// this interval (after `late_max_delay`), like "Reporting data is updated every 30 minutes".
    pub late_batch_interval: Option<Duration>,
    /// Number of PENDING answers to polls after the PENDING create response, before the poll that
    /// answers COMPLETED with the first page. 0 = the first poll completes.
    pub pending_polls: u32,
    /// A job is ready this long after its creation (plus [`SimConfig::job_latency_per_10k`]);
    /// polls before then answer PENDING, as the vendor's jobs take seconds. Applies on top of
    /// `pending_polls` (both must be used up). Zero = ready at once.
    pub job_latency: Duration,
    /// Added to [`SimConfig::job_latency`] per 10,000 events in the job's snapshot (larger data
    /// sets answer more slowly, isolation-api.md §4), pro rata.
    pub job_latency_per_10k: Duration,
    /// Every page request (with `pageToken`, or the completing poll) is answered this much later.
    pub page_latency: Duration,
    /// The create request itself answers COMPLETED with the first page (the one-shot variant, §4).
    pub complete_on_create: bool,
    /// Status word for a job that is not done yet.
    pub pending_status: String,
    /// Status word for a job that failed ([`super::Fault::JobError`]).
    pub error_status: String,
    /// A job is forgotten this long after its creation; later requests get `unknown_job_status`.
    pub job_ttl: Duration,
    /// HTTP status for an unknown or expired `jobId` (404 or 400).
    pub unknown_job_status: u16,
    /// `to` is inclusive (`date <= to`); when false, `date < to`.
    pub to_inclusive: bool,
    /// How `total` is written.
    pub total_mode: TotalMode,
    /// Page size used when the request has no `pageSize`.
    pub default_page_size: usize,
    /// The server sends at most this many events per page, whatever the client asked for.
    pub page_size_cap: Option<usize>,
    /// `pageSize` outside 1..=10000 is clamped into range instead of answering 400.
    pub clamp_page_size: bool,
    /// Events are served in a seed-determined random order within and across pages instead of by
    /// date.
    pub shuffle: bool,
    /// Each page after the first starts with the last `repeat_across_pages` events of the page
    /// before it (duplicates within one job, §10).
    pub repeat_across_pages: usize,
    /// Page `k` (0-based) of every job with more than `k` pages is served twice: page `k`'s
    /// token leads to a copy of it (same events, a token of its own), whose token leads to
    /// page `k + 1`. `None` = never.
    pub repeat_page: Option<usize>,
    /// The first this many jobs created are caught in a page-token loop: every page after the
    /// first hands back the very token that asked for it (what it serves: [`Self::token_loop`]).
    /// Later jobs page normally. 0 = none.
    pub token_loop_jobs: u32,
    /// What a looping job serves.
    pub token_loop: TokenLoop,
    /// How far back `from` may go.
    pub retention: Duration,
    /// What to do with a `from` older than `retention`.
    pub retention_mode: RetentionMode,
    /// The answer to a bad key.
    pub auth_failure: AuthFailureMode,
}

impl SimConfig {
    /// The default knobs for `dataset`: 1000 events over the 24 h ending 5 minutes ago, one
    /// PENDING poll, no faults, no late arrival, ordered pages, numeric `total`.
    pub fn new(dataset: Dataset) -> Self {
        SimConfig {
            dataset,
            api_key: "00000000-0000-0000-0000-000000000000".to_string(),
            keys: None,
            events: 1000,
            seed: 1,
            end_offset: Duration::from_secs(5 * 60),
            span: Duration::from_secs(24 * 3600),
            anchor: None,
            burst_fraction: 0.02,
            identical_fraction: 0.01,
            whole_second_fraction: 0.1,
            whitespace: false,
            event_size_factor: 1.0,
            categories_mode: CategoriesMode::Present,
            unreadable_user_names: 0,
            non_utf8_events: 0,
            deep_events: 0,
            late_max_delay: Duration::ZERO,
            late_batch_interval: None,
            pending_polls: 1,
            job_latency: Duration::ZERO,
            job_latency_per_10k: Duration::ZERO,
            page_latency: Duration::ZERO,
            complete_on_create: false,
            pending_status: "PENDING".to_string(),
            error_status: "ERROR".to_string(),
            job_ttl: Duration::from_secs(3600),
            unknown_job_status: 404,
            to_inclusive: true,
            total_mode: TotalMode::Number,
            default_page_size: 10_000,
            page_size_cap: None,
            clamp_page_size: false,
            shuffle: false,
            repeat_across_pages: 0,
            repeat_page: None,
            token_loop_jobs: 0,
            token_loop: TokenLoop::EmptyPages,
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_mode: RetentionMode::Clamp,
            auth_failure: AuthFailureMode::Forbidden403Text,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(Dataset::Web)
    }
}
