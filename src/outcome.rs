//! How a command that ran ended. `main` turns it (or a [`crate::commands::BadUsage`], when
//! nothing ran) into the process's exit code, in one place.

/// How a command that ran ended: everything it was asked to do succeeded, or something did not
/// (already logged or printed where it happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Every window delivered (`run --once`, `backfill`, `demo`), the daemon stopped cleanly
    /// on request, or every step of a `state` command succeeded: exit 0.
    Succeeded,
    /// Something failed (a window not delivered, a state not shown, a letter not replayed,
    /// the graceful shutdown cut short): exit 1.
    Failed,
    /// It ran, and what it reports needs an operator (`status`: a failing service): exit 2.
    NeedsAttention,
}

impl Outcome {
    /// [`Outcome::Succeeded`] if `ok`.
    pub fn succeeded_if(ok: bool) -> Outcome {
        match ok {
            true => Outcome::Succeeded,
            false => Outcome::Failed,
        }
    }

    /// Succeeded only if both did.
    pub fn and(self, other: Outcome) -> Outcome {
        Outcome::succeeded_if(self == Outcome::Succeeded && other == Outcome::Succeeded)
    }
}
