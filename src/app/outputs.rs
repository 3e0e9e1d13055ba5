//! The outputs of a configuration, built or checked: [`build_outputs`] gives a service its
//! running outputs; [`validate`] (the `validate` command) and [`healthchecks`] (`run`'s check at
//! start) run their health checks. Outputs shared by several inputs are checked once
//! ([`distinct_outputs`]).

use tracing::{error, info};

use crate::clock::SharedClock;
use crate::config::{Config, OutputConfig};
use crate::output::builder::{Healthcheck, OutputBuilder, OutputContext};
use crate::output::{Output, OutputError};

/// Builds one instance of each of `outputs`; `clock` stamps their records.
///
/// # Errors
/// The first output that cannot be built (see [`OutputBuilder::build`]).
pub fn build_outputs(
    outputs: &[OutputConfig],
    clock: &SharedClock,
) -> Result<Vec<Output>, OutputError> {
    let cx = OutputContext {
        clock: clock.clone(),
    };
    outputs.iter().map(|o| o.kind.build(&o.name, &cx)).collect()
}

/// The health check of each of `outputs`, with its name.
///
/// # Errors
/// The first output that cannot be built (see [`OutputBuilder::healthcheck`]).
pub fn healthchecks(
    outputs: &[OutputConfig],
    clock: &SharedClock,
) -> Result<Vec<(String, Healthcheck)>, OutputError> {
    let cx = OutputContext {
        clock: clock.clone(),
    };
    outputs
        .iter()
        .map(|o| Ok((o.name.clone(), o.kind.healthcheck(&o.name, &cx)?)))
        .collect()
}

/// Each distinct set of outputs of the valid inputs, with the ids of the inputs that use it (the
/// global outputs are checked once, not once per tenant).
pub fn distinct_outputs(config: &Config) -> Vec<(&[OutputConfig], Vec<&str>)> {
    let mut sets: Vec<(&[OutputConfig], String, Vec<&str>)> = Vec::new();
    for input in &config.inputs {
        // Per-tenant file directories aside, a set is the same when it reads the same.
        let mut same = input.outputs.clone();
        for o in &mut same {
            if let (Some(directory), true) = (o.kind.directory_mut(), config.multi_tenant) {
                directory.pop();
            }
        }
        let key = format!("{same:?}");
        match sets.iter_mut().find(|(_, k, _)| *k == key) {
            Some((_, _, ids)) => ids.push(&input.id),
            None => sets.push((&input.outputs, key, vec![&input.id])),
        }
    }
    sets.into_iter().map(|(o, _, ids)| (o, ids)).collect()
}

/// The words that name the inputs using a set of outputs, with several inputs (` (input a, b)`).
pub fn whose(config: &Config, ids: &[&str]) -> String {
    match config.multi_tenant {
        true => format!(" (input {})", ids.join(", ")),
        false => String::new(),
    }
}

/// `validate`: that each output the valid inputs use is usable, one line per output.
pub async fn validate(config: &Config, clock: &SharedClock) -> bool {
    let mut ok = true;
    for (outputs, ids) in distinct_outputs(config) {
        ok &= validate_set(outputs, &whose(config, &ids), clock).await;
    }
    ok
}

/// `validate`: that each of `outputs` is usable; `whose` names the inputs using them.
async fn validate_set(outputs: &[OutputConfig], whose: &str, clock: &SharedClock) -> bool {
    let checks = match healthchecks(outputs, clock) {
        Ok(checks) => checks,
        Err(e) => {
            error!("{e}{whose}");
            return false;
        }
    };
    let mut ok = true;
    for (name, check) in checks {
        match check.await {
            Ok(()) => info!("Output {name} is usable{whose}."),
            Err(e) => {
                error!("{e}{whose}");
                ok = false;
            }
        }
    }
    ok
}
