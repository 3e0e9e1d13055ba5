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
    /// It ran and found what the operator must act on: `audit` found hours that miss events
    /// (exit 2).
    Incomplete,
}

impl Outcome {
    /// [`Outcome::Succeeded`] if `ok`.
    pub fn succeeded_if(ok: bool) -> Outcome {
        match ok {
            true => Outcome::Succeeded,
            false => Outcome::Failed,
        }
    }

    /// Succeeded only if both did; a failure wins over an incomplete result.
    pub fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            (Outcome::Incomplete, _) | (_, Outcome::Incomplete) => Outcome::Incomplete,
            _ => Outcome::Succeeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome::*;

    #[test]
    fn a_failure_wins_then_an_incomplete_result() {
        assert_eq!(Succeeded.and(Succeeded), Succeeded);
        assert_eq!(Succeeded.and(Incomplete), Incomplete);
        assert_eq!(Incomplete.and(Failed), Failed);
        assert_eq!(Failed.and(Succeeded), Failed);
    }
}
