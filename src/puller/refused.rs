//! Events an output refuses for good, set aside for it before their window commits.
//!
//! The fan-out gives up on an event one output refuses sent alone, after a few tries, and
//! counts it as confirmed for that output (see `output::fanout`). Before the window commits,
//! the puller writes those events to the dead-letter store ([`set_aside_refused`]): a crash
//! between the two loses nothing (the window is fetched again, and the letter, keyed by what it
//! holds, is stored once). Each new letter is counted and logged once, saying what to do.
//! `audit --repair` sets aside what outputs refuse of a repaired hour the same way.

use tracing::warn;

use crate::metrics::ServiceMetrics;
use crate::output::fanout::REFUSALS_BEFORE_SET_ASIDE;
use crate::output::Outputs;
use crate::pipeline::window::Window;
use crate::puller::checkpoint::Checkpoint;
use crate::state::dead_letter::DeadLetter;
use crate::state::StateError;
use crate::timestamp::{format_iso, Millis};

/// Writes the events `outputs` gave up on to the dead-letter store, each for the output that
/// refused it; counts and logs the new ones.
///
/// # Errors
/// The store's, after the outputs forgot what they confirmed: the window is delivered again
/// (the refused events are tried again, and set aside after their refusals).
pub async fn set_aside_refused(
    outputs: &mut Outputs,
    checkpoint: &Checkpoint,
    metrics: &ServiceMetrics,
    table: &str,
    window: Window,
    now: Millis,
) -> Result<(), StateError> {
    let refused = outputs.take_set_aside();
    if refused.is_empty() {
        return Ok(());
    }
    let letters = refused
        .iter()
        .map(|r| {
            let position = format!(
                "event dated {} in the window {} to {}",
                format_iso(r.event.date_ms),
                format_iso(window.from),
                format_iso(window.to)
            );
            let output = Some(r.output.as_str());
            DeadLetter::new(
                table,
                output,
                r.reason.clone(),
                position,
                &r.event.json,
                now,
            )
        })
        .collect();
    let new = match checkpoint.set_aside(letters).await {
        Ok(new) => new,
        Err(e) => {
            outputs.forget_all();
            return Err(e);
        }
    };
    for letter in &new {
        let output = letter.output.as_deref().unwrap_or_default();
        metrics.dead_lettered(table, Some(output), 1);
        warn!(
            "Output {output} refused an event sent alone {REFUSALS_BEFORE_SET_ASIDE} times ({}): \
             it was set aside for {output} only, as dead letter {} ({}); every other output has \
             it. List it with `state dead-letters`; once the receiver takes it, `state replay \
             --id {}` delivers it to {output} alone and drops the letter (`state discard` drops \
             it unsent).",
            letter.reason, letter.id, letter.position, letter.id
        );
    }
    Ok(())
}
