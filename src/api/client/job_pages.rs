//! The checks on one job's pages against an API that pages wrongly (issue 20 §2).
//!
//! **A page-token loop.** A job whose server hands back a `pageToken` it handed back before
//! would run forever: with empty pages it burns the customer's request quota, with full ones it
//! fills memory. So does a job that keeps sending pages long past what its `total` can fill. Such
//! a job is given up with [`FetchError::PageLoop`]; the puller tries the window again after its
//! failure backoff, with a new job. The bounds:
//! - a token seen before on this job;
//! - with a `total`: more than `2 × ⌈total / largest page⌉ + 10` pages, the largest page being
//!   the most events one page of this job held (the server's real page size, which may be below
//!   the one asked for), so a repeated page or two never trips it;
//! - with or without a `total`: more than [`MAX_EMPTY_PAGES_IN_A_ROW`] empty pages in a row,
//!   each with a next token.
//!
//! **A repeated page.** Whether the real API ever serves a page twice in one job is unknown
//! (isolation-api.md), and identical events are real (two clicks in one millisecond), so the
//! rule must not drop a genuine twin. A page is a *repeat* when its events, in order, have the
//! same keys as an earlier page's of the same job (a SHA-256 over the keys). Twins inside one
//! page, or spread over pages that are not wholly equal, are never touched. A repeat is then
//! settled by the job's `total`: it is held back until the job's last page, and handed on only
//! if the job still has room for its events within `total` (a genuine page that happens to
//! equal another one), else dropped. Without a `total`, a repeat of two events or more is
//! dropped at once (a run of identical events that fills two whole pages is not plausible), and
//! a repeat of a single event is kept (with a page size of 1, two identical events in a row do
//! occur). Each dropped page is logged and counted (`api_job_faults_total{kind="repeated_page"}`).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use tracing::warn;

use super::FetchError;
use crate::event::Page;

/// Empty pages in a row, each with a next token, after which a job counts as looping.
pub const MAX_EMPTY_PAGES_IN_A_ROW: usize = 10;

/// What [`JobPages::sort`] made of a page.
pub enum Sorted {
    /// A page to hand on.
    New(Page),
    /// A repeat held until the job's end.
    Held,
    /// A repeat dropped (the caller counts it).
    Dropped,
}

/// What a job's pages have shown so far.
pub struct JobPages {
    job_id: String,
    tokens: HashSet<String>,
    pages: usize,
    empty_in_a_row: usize,
    largest: usize,
    total: Option<u64>,
    /// The digest of each page handed on, and its number (1-based).
    digests: HashMap<[u8; 32], usize>,
    handed_on: u64,
    /// Repeats held until the job's last page: (its number, the number of the page it repeats).
    held: Vec<(usize, usize, Page)>,
}

impl JobPages {
    pub fn new(job_id: &str) -> JobPages {
        JobPages {
            job_id: job_id.to_owned(),
            tokens: HashSet::new(),
            pages: 0,
            empty_in_a_row: 0,
            largest: 0,
            total: None,
            digests: HashMap::new(),
            handed_on: 0,
            held: Vec::new(),
        }
    }

    /// Takes the next page's measure and the token it hands out; `Err` if the job loops.
    pub fn check(&mut self, page: &Page, token: Option<&str>) -> Result<(), FetchError> {
        self.pages += 1;
        self.largest = self.largest.max(page.events.len());
        self.total = self.total.or(page.total);
        let Some(token) = token else { return Ok(()) };
        if !self.tokens.insert(token.to_owned()) {
            return Err(self.looping(format!(
                "handed back the pageToken of an earlier page on page {}",
                self.pages
            )));
        }
        self.empty_in_a_row = if page.events.is_empty() {
            self.empty_in_a_row + 1
        } else {
            0
        };
        if self.empty_in_a_row > MAX_EMPTY_PAGES_IN_A_ROW {
            return Err(self.looping(format!(
                "sent {} empty pages in a row, each with a next pageToken",
                self.empty_in_a_row
            )));
        }
        if let Some(total) = self.total {
            let limit = 2 * total.div_ceil(self.largest.max(1) as u64) + 10;
            if self.pages as u64 > limit {
                return Err(self.looping(format!(
                    "sent {} pages, far more than its total of {total} event(s) in pages of up to {} can fill (at most {limit})",
                    self.pages, self.largest
                )));
            }
        }
        Ok(())
    }

    /// The pages received so far.
    pub fn count(&self) -> usize {
        self.pages
    }

    fn looping(&self, detail: String) -> FetchError {
        FetchError::PageLoop {
            job_id: self.job_id.clone(),
            detail,
        }
    }

    /// A new page is handed on; a repeat of an earlier page is held until the job's end (when
    /// the job has a `total`) or dropped (see the module doc).
    pub fn sort(&mut self, page: Page) -> Sorted {
        if page.events.is_empty() {
            return Sorted::New(page);
        }
        let digest = digest(&page);
        let number = self.pages;
        match self.digests.get(&digest) {
            None => {
                self.digests.insert(digest, number);
                self.handed_on += page.events.len() as u64;
                Sorted::New(page)
            }
            Some(&earlier) if self.total.is_some() => {
                self.held.push((number, earlier, page));
                Sorted::Held
            }
            Some(&earlier) if page.events.len() >= 2 => {
                self.dropped(number, earlier, &page);
                Sorted::Dropped
            }
            Some(_) => {
                self.handed_on += page.events.len() as u64;
                Sorted::New(page)
            }
        }
    }

    /// At the job's last page: the held repeats that the job's `total` has room for (genuine
    /// pages equal to another), in order; the others are dropped, and their number returned.
    pub fn finish(&mut self) -> (Vec<Page>, usize) {
        let total = self.total.unwrap_or(0);
        let (mut genuine, mut dropped) = (Vec::new(), 0);
        for (number, earlier, page) in std::mem::take(&mut self.held) {
            let len = page.events.len() as u64;
            if self.handed_on + len <= total {
                self.handed_on += len;
                genuine.push(page);
            } else {
                self.dropped(number, earlier, &page);
                dropped += 1;
            }
        }
        (genuine, dropped)
    }

    fn dropped(&self, number: usize, earlier: usize, page: &Page) {
        warn!(
            "Page {number} of job {} is a repeat of page {earlier} ({} event(s), the same in the same order{}); it is dropped.",
            self.job_id,
            page.events.len(),
            match self.total {
                Some(t) => format!(", and the job's total of {t} has no room for them"),
                None => String::new(),
            }
        );
    }
}

/// SHA-256 over the keys of a page's events, in order.
fn digest(page: &Page) -> [u8; 32] {
    let mut h = Sha256::new();
    for e in &page.events {
        h.update(e.key);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    /// A page of events whose keys are `keys`, with `total`.
    fn page(keys: &[u8], total: Option<u64>) -> Page {
        Page {
            job_id: "j".into(),
            status: "COMPLETED".into(),
            page_token: None,
            total,
            events: keys
                .iter()
                .map(|&k| Event {
                    date_ms: 0,
                    key: [k; 32],
                    json: bytes::Bytes::from(vec![k]),
                })
                .collect(),
            undated: 0,
            unreadable: Vec::new(),
        }
    }

    /// Runs pages (keys, token) through the checks as the client does; the keys handed on.
    fn run(pages: &[(&[u8], Option<&str>)], total: Option<u64>) -> Result<Vec<u8>, String> {
        let mut job = JobPages::new("j");
        let mut out = Vec::new();
        for (keys, token) in pages {
            let p = page(keys, total);
            job.check(&p, *token).map_err(|e| e.to_string())?;
            if let Sorted::New(p) = job.sort(p) {
                out.extend(p.events.iter().map(|e| e.key[0]));
            }
        }
        for p in job.finish().0 {
            out.extend(p.events.iter().map(|e| e.key[0]));
        }
        Ok(out)
    }

    #[test]
    fn a_token_seen_before_is_a_loop() {
        let err = run(&[(&[1, 2], Some("a")), (&[], Some("a"))], Some(4)).unwrap_err();
        assert!(
            err.contains("handed back the pageToken of an earlier page on page 2"),
            "{err}"
        );
    }

    #[test]
    fn pages_far_past_the_total_are_a_loop() {
        // Total 4 in pages of 2: 2 x 2 + 10 = 14 pages at most.
        let tokens: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let pages: Vec<(&[u8], Option<&str>)> = tokens
            .iter()
            .map(|t| (&[1u8, 2][..], Some(t.as_str())))
            .collect();
        let err = run(&pages, Some(4)).unwrap_err();
        assert!(
            err.contains("sent 15 pages, far more than its total of 4"),
            "{err}"
        );
        // Without a total, empty pages in a row.
        let pages: Vec<(&[u8], Option<&str>)> =
            tokens.iter().map(|t| (&[][..], Some(t.as_str()))).collect();
        let err = run(&pages, None).unwrap_err();
        assert!(err.contains("sent 11 empty pages in a row"), "{err}");
    }

    #[test]
    fn a_repeated_page_is_dropped_and_twins_are_kept() {
        // Page 2 repeats page 1: a total of 4 has no room for it.
        let pages: [(&[u8], Option<&str>); 3] =
            [(&[1, 1], Some("a")), (&[1, 1], Some("b")), (&[2, 3], None)];
        assert_eq!(run(&pages, Some(4)).unwrap(), [1, 1, 2, 3]);
        // The same pages with a total of 6: genuine, kept (after the rest of the job).
        assert_eq!(run(&pages, Some(6)).unwrap(), [1, 1, 2, 3, 1, 1]);
        // No total: a repeat of two events or more is dropped, of one event kept.
        assert_eq!(run(&pages, None).unwrap(), [1, 1, 2, 3]);
        let single: [(&[u8], Option<&str>); 3] =
            [(&[1], Some("a")), (&[1], Some("b")), (&[2], None)];
        assert_eq!(run(&single, None).unwrap(), [1, 1, 2]);
    }
}
