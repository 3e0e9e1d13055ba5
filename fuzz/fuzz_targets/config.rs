//! Any text as `config.yaml`: a config or a non-empty list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fixed "now" (2026-01-01T00:00:00Z) keeps every input reproducible.
    let now = isolation_collector::timestamp::from_millis(1_767_225_600_000);
    let env = |name: &str| (name == "KEY").then(|| "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c9z".to_owned());
    if let Err(problems) =
        isolation_collector::config::Config::parse(text, std::path::Path::new("/nonexistent"), &env, now)
    {
        assert!(!problems.is_empty(), "an error without a problem");
        assert!(problems.iter().all(|p| !p.trim().is_empty()), "an empty problem");
    }
});
