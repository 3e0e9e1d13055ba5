//! Waiting for a condition with a deadline: the one poll loop of the integration tests.
//!
//! `wait_for(what, limit, || check)` looks at `check` until it holds and panics after `limit`
//! naming `what` and what was last observed. A check returns a `bool`, an `Option` (the value
//! awaited) or a `Result` (the value, or what was seen instead: that text is the "last observed"
//! of the panic). [`Wait`] is the same loop with its settings spelled out: how often to look,
//! what to show on failure (a daemon's log), an async check (a scrape), or a wait that gives up
//! without failing where the test asserts something else afterwards.

use std::fmt::Display;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{count_in, read_log};

/// What a check observed: done (with the value awaited), or not yet (with what it saw).
pub trait Observed {
    type Value;
    /// `Ok(value)` when done; `Err(what was seen)` otherwise (empty: nothing worth showing).
    fn done(self) -> Result<Self::Value, String>;
}

impl Observed for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Observed for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Observed for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Polls `check` (every 50 ms) until it is done and returns its value; panics after `limit`
/// naming `what` and the last observation.
pub async fn wait_for<O: Observed>(
    what: impl Into<String>,
    limit: Duration,
    check: impl FnMut() -> O,
) -> O::Value {
    Wait::new(what, limit).until(check).await
}

/// Waits (at most `limit`) until `needle` occurs `times` times in the log file `log`.
pub async fn wait_for_log(log: &Path, needle: &str, times: usize, limit: Duration) {
    Wait::new(format!("{needle:?} {times} time(s) in the log"), limit)
        .showing_log(log)
        .until(|| count_in(log, needle) >= times)
        .await;
}

/// A wait with its settings: see the module doc.
pub struct Wait<'a> {
    what: String,
    limit: Duration,
    every: Duration,
    context: Option<Box<dyn Fn() -> String + 'a>>,
}

impl<'a> Wait<'a> {
    pub fn new(what: impl Into<String>, limit: Duration) -> Wait<'a> {
        Wait {
            what: what.into(),
            limit,
            every: Duration::from_millis(50),
            context: None,
        }
    }

    /// Looks every `every` instead of every 50 ms (short to catch a moment, long for a costly
    /// check).
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Shows `context()` (a log, say) after the panic message; read only on failure.
    pub fn showing(mut self, context: impl Fn() -> String + 'a) -> Self {
        self.context = Some(Box::new(context));
        self
    }

    /// Shows the log file `log` after the panic message.
    pub fn showing_log(self, log: &'a Path) -> Self {
        self.showing(|| format!("log:\n{}", read_log(log)))
    }

    /// Like [`wait_for`].
    pub async fn until<O: Observed>(self, mut check: impl FnMut() -> O) -> O::Value {
        self.until_async(async || check()).await
    }

    /// Like [`Wait::until`], with a check that awaits (an HTTP request, a Redis command).
    pub async fn until_async<O: Observed>(self, check: impl AsyncFnMut() -> O) -> O::Value {
        match self.poll(check).await {
            Ok(value) => value,
            Err(last) => self.give_up(&last),
        }
    }

    /// Waits at most the limit without failing: `None` when the check never held (the test
    /// goes on and asserts what it needs).
    pub async fn try_until<O: Observed>(self, mut check: impl FnMut() -> O) -> Option<O::Value> {
        self.poll(async || check()).await.ok()
    }

    /// The loop: the value, or the last observation when the limit passed.
    async fn poll<O: Observed>(
        &self,
        mut check: impl AsyncFnMut() -> O,
    ) -> Result<O::Value, String> {
        let deadline = Instant::now() + self.limit;
        loop {
            let last = match check().await.done() {
                Ok(value) => return Ok(value),
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(self.every).await;
        }
    }

    fn give_up(&self, last: &str) -> ! {
        let mut message = format!("{}: not reached within {:?}", self.what, self.limit);
        if !last.is_empty() {
            message.push_str(&format!("; last observed: {last}"));
        }
        if let Some(context) = &self.context {
            message.push_str(&format!("\n{}", context()));
        }
        panic!("{message}")
    }
}

#[tokio::test]
#[should_panic(expected = "the answer: not reached within 50ms; last observed: 41")]
async fn a_wait_that_times_out_names_what_and_the_last_observation() {
    wait_for("the answer", Duration::from_millis(50), || Err::<(), _>(41)).await;
}

#[tokio::test]
#[should_panic(expected = "the log line: not reached within 10ms\nlog: started")]
async fn a_wait_that_times_out_shows_its_context() {
    Wait::new("the log line", Duration::from_millis(10))
        .showing(|| "log: started".to_owned())
        .until(|| false)
        .await;
}

#[tokio::test]
async fn a_wait_returns_the_value_awaited_and_try_until_gives_up_quietly() {
    let mut polls = 0;
    let value = Wait::new("three polls", Duration::from_secs(5))
        .every(Duration::from_millis(1))
        .until(|| {
            polls += 1;
            (polls >= 3).then_some(polls)
        })
        .await;
    assert_eq!(value, 3);
    let never = Wait::new("never", Duration::from_millis(20))
        .try_until(|| false)
        .await;
    assert_eq!(never, None);
}
