//! `run`'s check of the outputs at start (issue 20 §1): each output is checked once, as
//! `validate` checks it (directory writable, receiver reachable, TLS and credentials accepted,
//! with an empty request that carries no event), and a failing one is named, with its problem
//! and the fix, before anything is fetched or sent.
//!
//! A failed check does not stop the daemon: a receiver that is down at start may be up a minute
//! later, and deliveries are retried as always (the other outputs are not held up by it). With
//! `--strict` a failed check refuses to start, whatever its cause.
//!
//! The checks run concurrently, each bounded by its output's own timeouts (connect, confirm,
//! request) and by [`START_CHECK_BOUND`], so hanging receivers delay the start by at most that
//! bound: a receiver that accepts a connection and never answers (its confirm timeout may be
//! minutes) is named as such, and the daemon starts. Outputs shared by several inputs are
//! checked once ([`distinct_outputs`], as `validate` does).

use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::app::outputs::{distinct_outputs, healthchecks, whose};
use crate::clock::SharedClock;
use crate::config::Config;

/// The longest the checks may delay the start.
pub const START_CHECK_BOUND: Duration = Duration::from_secs(5);

/// Checks every output of `config` at once and logs one line per output. Returns the names of
/// the outputs that failed (empty when all passed), or `None` when `cancel` fired first.
pub(super) async fn check_outputs(
    config: &Config,
    clock: &SharedClock,
    cancel: &CancellationToken,
) -> Option<Vec<String>> {
    let mut checks = Vec::new();
    let mut failed = Vec::new();
    for (outputs, ids) in distinct_outputs(config) {
        let whose = whose(config, &ids);
        match healthchecks(outputs, clock) {
            Ok(built) => checks.extend(built.into_iter().map(|(name, check)| {
                let whose = whose.clone();
                async move {
                    let checked = tokio::time::timeout(START_CHECK_BOUND, check).await;
                    (checked, name, whose)
                }
            })),
            Err(e) => {
                error!("{e}{whose}; found by the check at start.");
                failed.push(
                    outputs
                        .iter()
                        .map(|o| o.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
    }
    let results = tokio::select! {
        results = join_all(checks) => results,
        _ = cancel.cancelled() => return None,
    };
    for (result, name, whose) in results {
        match result {
            Ok(Ok(())) => info!("Output {name} is usable{whose}."),
            Err(_) => {
                error!(
                    "Output {name} did not answer its check within {} seconds{whose}; found by the check at start: deliveries to it are tried as usual, with its own timeouts.",
                    START_CHECK_BOUND.as_secs()
                );
                failed.push(name);
            }
            Ok(Err(e)) => {
                error!("{e}{whose}; found by the check at start: deliveries to it are tried as usual and fail until this is fixed.");
                failed.push(name);
            }
        }
    }
    Some(failed)
}
