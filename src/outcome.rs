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
    /// the graceful shutdown cut short, an audit that could not ask the API): exit 1.
    Failed,
    /// It ran, and what it found needs an operator: `audit` found hours that miss events,
    /// `status` a failing service (exit 2).
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

    /// Succeeded only if both did; a failure wins over a result that needs attention.
    pub fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            (Outcome::NeedsAttention, _) | (_, Outcome::NeedsAttention) => Outcome::NeedsAttention,
            _ => Outcome::Succeeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::*;

    #[test]
    fn a_failure_wins_then_one_that_needs_attention() {
        assert_eq!(Succeeded.and(Succeeded), Succeeded);
        assert_eq!(Succeeded.and(NeedsAttention), NeedsAttention);
        assert_eq!(NeedsAttention.and(Failed), Failed);
        assert_eq!(Failed.and(Succeeded), Failed);
    }
}
