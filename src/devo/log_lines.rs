//! Devo's log wording for the puller: the lines Devo's collector writes around setup, `pre_pull`
//! and the pull loop (devo-platform.md §3.2–3.4).
//!
//! These lines are a contract, not prose: dashboards, alerts and runbooks written for Devo's
//! collector match them byte for byte. So they live here, one function per moment, where they can
//! be read against the spec, pinned by a test, and changed only on purpose. The code that logs
//! says what happened (`devo_log::pull_started()`); this file says how Devo spells it.
//!
//! Devo's per-pull statistics line has its own module ([`crate::devo::statistics`]). Lines of our own
//! (corrections, a window split, obfuscation failures) stay beside the logic they describe.

use std::fmt::Display;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::{InputConfig, ServiceConfig};

/// Devo's thread name of a service's puller (§3.1), which some of Devo's lines repeat in the
/// message ([`crate::logging::DevoThread`] names the threads of all lines).
pub fn puller_thread(input: &InputConfig, svc: &ServiceConfig) -> String {
    crate::logging::DevoThread::Puller {
        input: input.name.clone(),
        input_id: input.id.clone(),
        service: svc.service.to_string(),
    }
    .name()
}

/// The setup check starts (§3.2).
pub fn setup_started() {
    warn!("The token/header/authentication has not been created yet");
    info!("Making sample request to test authentication.");
}

/// The setup check passed (§3.2).
pub fn setup_succeeded() {
    info!("Authentication successful.");
    info!("Setup for module <IsolationPuller> has been successfully executed");
}

/// `pre_pull` starts. Devo's lines name the puller inside the message too.
pub fn pre_pull_started(thread: &str) {
    info!("{thread} Starting the execution of pre_pull()");
}

/// `pre_pull` ends.
pub fn pre_pull_finished(thread: &str) {
    info!("{thread} Finalizing the execution of pre_pull()");
}

/// `pre_pull` reads the state (§3.3).
pub fn reading_persisted_data() {
    info!("Reading persisted data");
}

/// No state was stored: a fresh one is written.
pub fn persistence_empty() {
    info!("Persistence will be overridden due to the retrieved state is empty");
}

/// A state was loaded; `summary` is [`crate::state::ServiceState::summary`].
pub fn persistence_retrieved(summary: &str) {
    info!("Data retrieved from the persistence: {summary}");
}

/// The upgrade step (an older state format is brought to the current one).
pub fn upgrade_steps() {
    info!("Running the persistence upgrade steps");
}

/// The corrections step.
pub fn corrections_steps() {
    info!("Running the persistence corrections steps");
}

/// The reset step: Devo prints the corrections line again for it (§3.3).
pub fn reset_steps() {
    corrections_steps();
}

/// The state changed in `pre_pull` and is about to be written.
pub fn persistence_changed(previous: &str, new: &str) {
    warn!(
        "Some changes have been detected and the persistence needs to be updated. Previous content: {previous} New content: {new}"
    );
}

/// The changed state was written.
pub fn persistence_updated() {
    info!("Persistence has been updated successfully");
}

/// `pre_pull` found nothing to change.
pub fn persistence_unchanged() {
    info!("No changes were detected in the persistence");
}

/// The daemon loop starts (§3.2).
pub fn collection_started(period: Duration) {
    info!(
        "Starting data collection every {} seconds",
        period.as_secs()
    );
}

/// A cycle ended; the next starts at the next time slot (`use_time_slots_for_retrievals`).
pub fn waiting_for_slot(elapsed: Duration, wait: Duration) {
    info!(
        "Data collection completed. Elapsed time: {:.3} seconds. Waiting for {:.3} second(s) until the next time slot",
        elapsed.as_secs_f64(),
        wait.as_secs_f64()
    );
}

/// A cycle ended; the next starts when the period is over (§3.2).
pub fn waiting_for_period(elapsed: Duration, wait: Duration) {
    info!(
        "Data collection completed. Elapsed time: {:.3} seconds. Waiting for {:.3} second(s) until the next one",
        elapsed.as_secs_f64(),
        wait.as_secs_f64()
    );
}

/// A cycle took longer than the period: the next starts at once (§3.2).
pub fn no_wait() {
    info!("Last retrieval took too much time, no wait will be applied in this loop");
}

/// A cycle failed; this is retry `attempt` and the loop sleeps `wait` first (§3.2).
pub fn pull_failed(error: &dyn Display, attempt: u32, wait: Duration) {
    error!(
        "Pull failed: {error}. Retrying collector puller: {attempt}/∞. Sleeping {:.3} seconds before next retry",
        wait.as_secs_f64()
    );
}

/// The daemon loop stopped on a shutdown request (§3.4).
pub fn loop_interrupted() {
    info!("Retrieving loop has been interrupted due to a controlled stopping action has been activated");
}

/// A cycle starts (§3.4).
pub fn pull_started() {
    info!("Pull Started");
}

/// A cycle caught up (§3.4).
pub fn up_to_date() {
    info!("The data is up to date!");
}

/// A delivered window is about to be committed.
pub fn updating_persistence() {
    info!("Updating the persistence");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    /// Records each event's level and message.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<(Level, String)>>>);

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl<S: Subscriber> Layer<S> for Lines {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            let level = *event.metadata().level();
            self.0.lock().unwrap().push((level, message.0));
        }
    }

    fn logged(f: impl FnOnce()) -> Vec<(Level, String)> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(lines.clone());
        tracing::subscriber::with_default(subscriber, f);
        let out = lines.0.lock().unwrap().clone();
        out
    }

    /// Every line, byte for byte as Devo's collector writes it (and as this collector wrote it
    /// before the wording moved here).
    #[test]
    fn the_lines_are_devos_text() {
        let secs = Duration::from_millis;
        let lines = logged(|| {
            setup_started();
            setup_succeeded();
            pre_pull_started("T(a,1)");
            reading_persisted_data();
            persistence_empty();
            persistence_retrieved("{\"a\":1}");
            upgrade_steps();
            corrections_steps();
            reset_steps();
            persistence_changed("{}", "{\"b\":2}");
            persistence_updated();
            persistence_unchanged();
            pre_pull_finished("T(a,1)");
            collection_started(Duration::from_secs(60));
            waiting_for_slot(secs(1_500), secs(58_250));
            waiting_for_period(secs(2_000), secs(58_000));
            no_wait();
            pull_failed(&"HTTP 503", 3, secs(2_500));
            loop_interrupted();
            pull_started();
            up_to_date();
            updating_persistence();
        });
        let (i, w, e) = (Level::INFO, Level::WARN, Level::ERROR);
        let expected = [
            (w, "The token/header/authentication has not been created yet"),
            (i, "Making sample request to test authentication."),
            (i, "Authentication successful."),
            (i, "Setup for module <IsolationPuller> has been successfully executed"),
            (i, "T(a,1) Starting the execution of pre_pull()"),
            (i, "Reading persisted data"),
            (i, "Persistence will be overridden due to the retrieved state is empty"),
            (i, "Data retrieved from the persistence: {\"a\":1}"),
            (i, "Running the persistence upgrade steps"),
            (i, "Running the persistence corrections steps"),
            (i, "Running the persistence corrections steps"),
            (w, "Some changes have been detected and the persistence needs to be updated. Previous content: {} New content: {\"b\":2}"),
            (i, "Persistence has been updated successfully"),
            (i, "No changes were detected in the persistence"),
            (i, "T(a,1) Finalizing the execution of pre_pull()"),
            (i, "Starting data collection every 60 seconds"),
            (i, "Data collection completed. Elapsed time: 1.500 seconds. Waiting for 58.250 second(s) until the next time slot"),
            (i, "Data collection completed. Elapsed time: 2.000 seconds. Waiting for 58.000 second(s) until the next one"),
            (i, "Last retrieval took too much time, no wait will be applied in this loop"),
            (e, "Pull failed: HTTP 503. Retrying collector puller: 3/∞. Sleeping 2.500 seconds before next retry"),
            (i, "Retrieving loop has been interrupted due to a controlled stopping action has been activated"),
            (i, "Pull Started"),
            (i, "The data is up to date!"),
            (i, "Updating the persistence"),
        ];
        let expected: Vec<(Level, String)> = expected
            .iter()
            .map(|(l, m)| (*l, (*m).to_owned()))
            .collect();
        assert_eq!(lines, expected);
    }
}
