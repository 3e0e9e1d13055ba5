//! The measurement behind the per-hour digests' size (`pipeline::ledger::sketch`: `CELLS`,
//! `CAPACITY`): for differences of 8 to 40 events between the API's and the delivered sets,
//! how many of 100,000 random ones the digest decodes. A failed decode refuses the hour's repair
//! (never a wrong set), so this is the share of hours a repair would refuse.
//!
//! `cargo run --release --example sketch_decode_rate [TRIALS]`

use isolation_collector::pipeline::ledger::sketch::{element_id, Sketch, CELLS};
use sha2::{Digest, Sha256};

fn main() {
    let trials: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    for size in [8usize, 12, 16, 24, 32, 40] {
        let decoded = (0..trials)
            .filter(|&trial| difference(size, trial).decode().is_ok())
            .count();
        println!("{CELLS} cells, {size} differences: {decoded} of {trials} decoded");
    }
}

/// A digest of `size` distinct delivered copies, as a subtraction leaves it (dedup keys are
/// SHA-256 digests, so random keys are what the digest sees).
fn difference(size: usize, trial: u64) -> Sketch {
    let mut sketch = Sketch::new();
    for i in 0..size as u64 {
        let key: [u8; 32] = Sha256::digest([trial.to_le_bytes(), i.to_le_bytes()].concat()).into();
        sketch.insert(element_id(
            1_700_000_000_000 + i as i64,
            &key,
            1 + (i % 3) as u32,
        ));
    }
    sketch
}
