//! Reading what the collector wrote and comparing it: an output file's lines as a multiset
//! against the simulator's events, a log's lines, the statistics lines of a pull cycle.

use std::collections::BTreeMap;
use std::path::Path;

/// The file's lines. Tests poll files the collector is still writing, so the last character may
/// be cut in half: a lossy read keeps the poll going, and a line that is really corrupt still
/// differs from every expected event in the final multiset comparison.
pub fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

pub fn multiset(lines: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_str()).or_insert(0) += 1;
    }
    m
}

/// Asserts equal multisets and says what is missing and what is extra.
pub fn assert_same_multiset(got: &[String], want: &[String], what: &str) {
    let (g, w) = (multiset(got), multiset(want));
    if g == w {
        return;
    }
    let mut missing = 0;
    let mut extra = 0;
    let mut examples = Vec::new();
    for (k, n) in &w {
        let have = g.get(k).copied().unwrap_or(0);
        if have < *n {
            missing += n - have;
            if examples.len() < 3 {
                examples.push(format!("missing: {k}"));
            }
        }
    }
    for (k, n) in &g {
        let want_n = w.get(k).copied().unwrap_or(0);
        if *n > want_n {
            extra += n - want_n;
            if examples.len() < 6 {
                examples.push(format!("extra x{}: {k}", n - want_n));
            }
        }
    }
    panic!(
        "{what}: delivered {} events, expected {}: {missing} missing, {extra} extra\n{}",
        got.len(),
        want.len(),
        examples.join("\n")
    );
}

/// The counts of one "Statistics for this pull cycle" line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    pub requests: u64,
    pub received: u64,
    pub duplicates: u64,
    pub sent: u64,
}

/// The final (not `(Partial)`) statistics line of each of `service`'s cycles in `log`, in order.
/// Tests assert these numbers: the line's wording alone is in every cycle's log.
pub fn pull_stats(log: &str, service: &str) -> Vec<PullStats> {
    let thread = format!(",{service},");
    log.lines()
        .filter(|l| l.contains(&thread) && l.contains("Statistics for this pull cycle"))
        .filter(|l| !l.contains("(Partial) "))
        .map(|l| PullStats {
            requests: count_after(l, "Number of requests made: "),
            received: count_after(l, "Number of events received: "),
            duplicates: count_after(l, "Number of duplicated events filtered out: "),
            sent: count_after(l, "Number of events generated and sent: "),
        })
        .collect()
}

/// The whole number that follows `label` in `line`; panics (showing the line) if there is none.
fn count_after(line: &str, label: &str) -> u64 {
    line.split_once(label)
        .and_then(|(_, rest)| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no number after {label:?} in {line}"))
}

/// The one final statistics line of `service` in a `run --once` log.
pub fn the_pull_stats(log: &str, service: &str) -> PullStats {
    match pull_stats(log, service)[..] {
        [one] => one,
        ref other => panic!(
            "{service}: {} statistics lines, expected 1:\n{log}",
            other.len()
        ),
    }
}

/// A log file's text so far (empty before the process created it).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How many times `needle` occurs in the log file `log` so far.
pub fn count_in(log: &Path, needle: &str) -> usize {
    read_log(log).matches(needle).count()
}

/// How many lines of `log` contain `needle`.
pub fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
