//! Building the outputs of a config, and `validate`'s check of each distinct set of them.

use tracing::{error, info};

use crate::clock::SharedClock;
use crate::config::{Config, OutputConfig, OutputKind};
use crate::output::http::{hec::SplunkHecOutput, HttpOutput};
use crate::output::syslog::SyslogOutput;
use crate::output::{console::ConsoleOutput, file::FileOutput, Output, OutputError};

/// Builds one instance of each of `outputs`; `clock` stamps their records.
pub fn build_outputs(
    outputs: &[OutputConfig],
    clock: &SharedClock,
) -> Result<Vec<Output>, OutputError> {
    outputs.iter().map(|o| build_output(o, clock)).collect()
}

/// Each output builds itself from its configuration.
pub(super) fn build_output(o: &OutputConfig, clock: &SharedClock) -> Result<Output, OutputError> {
    let name = o.name.clone();
    Ok(match &o.kind {
        OutputKind::File { directory, mode } => {
            Output::File(FileOutput::new(name, directory.clone(), *mode))
        }
        OutputKind::Console => Output::Console(ConsoleOutput::new(name, clock.clone())),
        OutputKind::Network(n) => {
            Output::Syslog(SyslogOutput::from_config(name, n, clock.clone())?)
        }
        OutputKind::Http(h) => Output::Http(Box::new(HttpOutput::from_config(name, h)?)),
        OutputKind::SplunkHec(h) => {
            Output::SplunkHec(Box::new(SplunkHecOutput::from_config(name, h)?))
        }
        OutputKind::Relp(r) => Output::Relp(Box::new(
            crate::output::relp::RelpOutput::from_config(name, r, clock.clone())?,
        )),
    })
}

/// Each distinct set of outputs of the valid inputs, with the ids of the inputs that use it (the
/// global outputs are checked once, not once per tenant).
pub(super) fn distinct_outputs(config: &Config) -> Vec<(&[OutputConfig], Vec<&str>)> {
    let mut sets: Vec<(&[OutputConfig], String, Vec<&str>)> = Vec::new();
    for input in &config.inputs {
        // Per-tenant file directories aside, a set is the same when it reads the same.
        let mut same = input.outputs.clone();
        for o in &mut same {
            if let (OutputKind::File { directory, .. }, true) = (&mut o.kind, config.multi_tenant) {
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

/// `validate`: that each of `outputs` is usable; `whose` names the inputs using them.
pub(super) async fn validate_outputs(
    outputs: &[OutputConfig],
    whose: &str,
    clock: &SharedClock,
) -> bool {
    let mut outputs = match build_outputs(outputs, clock) {
        Ok(outputs) => outputs,
        Err(e) => {
            error!("{e}{whose}");
            return false;
        }
    };
    let mut ok = true;
    for o in &mut outputs {
        match o.check().await {
            Ok(()) => info!("Output {} is usable{whose}.", o.name()),
            Err(e) => {
                error!("{e}{whose}");
                ok = false;
            }
        }
    }
    ok
}
