//! The fenced write, ordered within a tenure.
//!
//! The lease's token fences out every other holder, but not this holder's own older writes: a
//! state write that timed out was given up on, yet its bytes may still be on their way (a
//! partition holds them; TCP retransmits them, backing off exponentially, after the path is
//! back). Meanwhile the holder has sent the window again and the next ones on a new connection.
//! When the old bytes arrive they carry the right token, and without more they would store the
//! older state over the newer ones: the checkpoint would go back, and whoever resumes next would
//! deliver the windows in between again.
//!
//! So every write carries a number that grows with each write of the process, and the commit
//! script (`super::dedup::COMMIT`) stores `<token> <number>` beside the state (`...:written`, in the service's hash slot). A
//! write of the same token with a number not above the stored one is superseded: it changes
//! nothing and answers as if it had been stored (nobody waits for it any more: the holder
//! writes a service's state one at a time, and gave this one up). A new tenure has a new
//! token, so its first write is never compared with an older tenure's numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// The number of the next write of this process: grows with every write, so it orders the
/// writes of each tenure (a tenure's token belongs to one process).
pub(super) fn next_write() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The key of a state's last write (`...{<key>}:written`), beside `...{<key>}:state`.
pub(super) fn written_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{{{key}}}:written")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_numbers_grow() {
        let first = next_write();
        assert!(next_write() > first);
    }

    #[test]
    fn the_written_key_shares_the_state_keys_hash_tag() {
        assert_eq!(
            written_key(
                "isolation-collector:",
                "proofpoint_isolation_1_url_isolation"
            ),
            "isolation-collector:{proofpoint_isolation_1_url_isolation}:written"
        );
    }
}
