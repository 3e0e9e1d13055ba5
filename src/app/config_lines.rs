//! What the daemon says about its configuration, at start and after each reload: the config's
//! warnings, and each invalid input with its problems (the other inputs run).

use tracing::{error, warn};

use crate::config::Config;

/// Logs the config's warnings once logging is up.
pub fn log_warnings(config: &Config) {
    for w in &config.warnings {
        warn!("Configuration: {w}");
    }
}

/// Logs each invalid input's problems (errors, with its id): `run` starts the other inputs.
pub fn log_invalid_inputs(config: &Config) {
    for bad in &config.invalid_inputs {
        let id = bad.id.as_deref().unwrap_or("without a valid id");
        error!(
            "Input {id} ({}) is not started: {} problem(s) in its configuration block; the other inputs run",
            bad.source,
            bad.problems.len()
        );
        for p in &bad.problems {
            error!("Configuration of input {id}: {p}");
        }
    }
}
