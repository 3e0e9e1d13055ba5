//! The registry of output kinds: the one place that lists them. Each kind lives in its own
//! folder under `output/` (its configuration, parsed from `outputs.<name>.config`, the output,
//! and its [`OutputBuilder`]); here it has its variant of [`OutputKind`] (its configuration)
//! and of [`Output`] (the running output), the `type` names that select it, and its arm in the
//! matches below, which the compiler asks for.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::console::ConsoleConfig;
use super::file::FileConfig;
use super::http::hec::HecOutputConfig;
use super::http::HttpOutputConfig;
use super::net::NetworkOutputConfig;
use super::relp::RelpOutputConfig;
use super::{console, file, http, net, relp, syslog};
use super::{OutputError, Position};
use crate::event::Event;
use crate::yaml_walker::{join, Cx, Obj};

/// The `type`s an output may have, as the errors list them.
pub const TYPES: &str = "devo_platform, syslog, relp, http, splunk_hec, file or console";

/// An output's kind, with its configuration (plain data).
#[derive(Clone, Debug)]
pub enum OutputKind {
    /// `file`: JSON Lines per table.
    File(FileConfig),
    /// `console` (or `stdout`).
    Console(ConsoleConfig),
    /// `devo_platform` (TLS mandatory) or `syslog` (TLS optional), and Devo's other names.
    Network(NetworkOutputConfig),
    /// `http`: a webhook (iso2web's body by default). Boxed: the variants stay small.
    Http(Box<HttpOutputConfig>),
    /// `splunk_hec`: Splunk's HTTP Event Collector with indexer acknowledgement.
    SplunkHec(Box<HecOutputConfig>),
    /// `relp`: rsyslog's imrelp, every record acknowledged.
    Relp(Box<RelpOutputConfig>),
}

impl OutputKind {
    /// Reads the `config` of an output of type `kind` (at `path`, `outputs.<name>`). `None`
    /// (the errors recorded) for an unknown or missing type, or an invalid `config`.
    pub(crate) fn parse(
        kind: Option<&str>,
        config: Option<Obj<'_>>,
        path: &str,
        cx: &mut Cx,
    ) -> Option<OutputKind> {
        match kind {
            Some("file") => FileConfig::parse(config, path, cx).map(OutputKind::File),
            Some("console" | "stdout") => {
                Some(OutputKind::Console(ConsoleConfig::parse(config, cx)))
            }
            Some(t @ ("devo_platform" | "relay" | "syslog" | "in_house_relay" | "sidecar")) => {
                super::syslog::parse_config(t, config, path, cx).map(OutputKind::Network)
            }
            Some("relp") => {
                RelpOutputConfig::parse(config, path, cx).map(|r| OutputKind::Relp(Box::new(r)))
            }
            Some("http") => {
                HttpOutputConfig::parse(config, path, cx).map(|h| OutputKind::Http(Box::new(h)))
            }
            Some("splunk_hec") => {
                HecOutputConfig::parse(config, path, cx).map(|h| OutputKind::SplunkHec(Box::new(h)))
            }
            Some(other) => {
                cx.error(
                    &join(path, "type"),
                    format!("`{other}` is not an output type; use {TYPES}"),
                );
                None
            }
            None => {
                cx.error(&join(path, "type"), format!("missing; use {TYPES}"));
                None
            }
        }
    }

    /// The directory a file output writes into (`None` for the other kinds).
    pub fn directory_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            OutputKind::File(c) => Some(&mut c.directory),
            _ => None,
        }
    }

    /// Whether the output also carries the collector's own warnings and errors
    /// (`internal_messages`, the `devo_platform` and `syslog` outputs only).
    pub fn internal_messages(&self) -> bool {
        matches!(self, OutputKind::Network(n) if n.internal_messages)
    }
}

impl OutputBuilder for OutputKind {
    type Output = Output;

    fn build(&self, name: &str, cx: &OutputContext) -> Result<Output, OutputError> {
        Ok(match self {
            OutputKind::File(c) => Output::File(c.build(name, cx)?),
            OutputKind::Console(c) => Output::Console(c.build(name, cx)?),
            OutputKind::Network(c) => Output::Syslog(c.build(name, cx)?),
            OutputKind::Http(c) => Output::Http(Box::new(c.build(name, cx)?)),
            OutputKind::SplunkHec(c) => Output::SplunkHec(Box::new(c.build(name, cx)?)),
            OutputKind::Relp(c) => Output::Relp(Box::new(c.build(name, cx)?)),
        })
    }

    fn healthcheck(&self, name: &str, cx: &OutputContext) -> Result<Healthcheck, OutputError> {
        match self {
            OutputKind::File(c) => c.healthcheck(name, cx),
            OutputKind::Console(c) => c.healthcheck(name, cx),
            OutputKind::Network(c) => c.healthcheck(name, cx),
            OutputKind::Http(c) => c.healthcheck(name, cx),
            OutputKind::SplunkHec(c) => c.healthcheck(name, cx),
            OutputKind::Relp(c) => c.healthcheck(name, cx),
        }
    }
}

/// One configured output instance.
pub enum Output {
    File(file::FileOutput),
    Console(console::ConsoleOutput),
    Syslog(syslog::SyslogOutput),
    /// Boxed, as the syslog output's sender is: `Output` stays small.
    Http(Box<http::HttpOutput>),
    SplunkHec(Box<http::hec::SplunkHecOutput>),
    Relp(Box<relp::RelpOutput>),
}

impl Output {
    /// The output's name from the configuration (`outputs.<name>`).
    pub fn name(&self) -> &str {
        match self {
            Output::File(o) => o.name(),
            Output::Console(o) => o.name(),
            Output::Syslog(o) => o.name(),
            Output::Http(o) => o.name(),
            Output::SplunkHec(o) => o.name(),
            Output::Relp(o) => o.name(),
        }
    }

    /// Called once per table before the first batch after a start, with the position stored
    /// with the last checkpoint (if any). Returns the position to record if none was stored.
    pub async fn resume(
        &mut self,
        table: &str,
        committed: Option<Position>,
    ) -> Result<Option<Position>, OutputError> {
        match self {
            Output::File(o) => o.resume(table, committed).await,
            Output::Console(_) => Ok(None),
            Output::Syslog(_) | Output::Http(_) | Output::SplunkHec(_) | Output::Relp(_) => {
                Ok(None)
            }
        }
    }

    /// Delivers a batch of events (sorted by date) for one table. `Ok` means confirmed; the
    /// returned position, if any, is stored with the checkpoint.
    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<Position>, OutputError> {
        let length = match self {
            Output::File(o) => return o.deliver(table, events).await,
            Output::Console(o) => o.deliver(table, events).await,
            Output::Syslog(o) => o.deliver(table, events).await,
            Output::Http(o) => o.deliver(table, events).await,
            Output::SplunkHec(o) => o.deliver(table, events).await,
            Output::Relp(o) => o.deliver(table, events).await,
        };
        length.map(|l| l.map(Position::of_length))
    }

    /// The configuration error that stopped the output, if one did (it then refuses every
    /// delivery without sending; logged once, where it was found).
    pub fn stopped(&self) -> Option<&str> {
        match self {
            Output::SplunkHec(o) => o.stopped(),
            Output::File(_)
            | Output::Console(_)
            | Output::Syslog(_)
            | Output::Http(_)
            | Output::Relp(_) => None,
        }
    }

    /// Whether [`Output::resume`] rewinds the output to its committed position, erasing what it
    /// confirmed of an uncommitted window (the file output).
    pub fn keeps_positions(&self) -> bool {
        match self {
            Output::File(_) => true,
            Output::Console(_)
            | Output::Syslog(_)
            | Output::Http(_)
            | Output::SplunkHec(_)
            | Output::Relp(_) => false,
        }
    }

    /// The counters of Devo's sender statistics, for the outputs that keep them (`syslog`,
    /// `devo_platform`, `relp`): the sender monitor logs them.
    pub fn sender_stats(&self) -> Option<net::stats::StatsHandle> {
        match self {
            Output::Syslog(o) => Some(o.stats_handle()),
            Output::Relp(o) => Some(o.stats_handle()),
            Output::File(_) | Output::Console(_) | Output::Http(_) | Output::SplunkHec(_) => None,
        }
    }

    /// Waits between an output's own tries end when `cancel` fires (only network outputs
    /// retry on their own).
    pub fn stop_retries_on(&mut self, cancel: CancellationToken) {
        match self {
            Output::Syslog(o) => o.stop_retries_on(cancel),
            Output::Http(o) => o.stop_retries_on(cancel),
            Output::SplunkHec(o) => o.stop_retries_on(cancel),
            Output::Relp(o) => o.stop_retries_on(cancel),
            Output::File(_) | Output::Console(_) => {}
        }
    }

    /// Checks that the output is usable (what each kind's health check runs): directory
    /// writable, peer reachable.
    pub async fn check(&mut self) -> Result<(), OutputError> {
        match self {
            Output::File(o) => o.check().await,
            Output::Console(_) => Ok(()),
            Output::Syslog(o) => o.check().await,
            Output::Http(o) => o.check().await,
            Output::SplunkHec(o) => o.check().await,
            Output::Relp(o) => o.check().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Each `type` the errors offer is one the registry reads.
    #[test]
    fn every_type_the_errors_offer_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap();
        let types: Vec<&str> = super::TYPES
            .split(", ")
            .flat_map(|t| t.split(" or "))
            .collect();
        assert_eq!(types.len(), 7, "{types:?}");
        for t in types {
            let text = format!(
                "globals: {{id: t, name: t, persistence: {{type: memory}}}}\noutputs:\n  o: {{type: {t}}}\ninputs:\n  proofpoint_isolation:\n    id: 1\n    credentials: {{api_key: \"1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z\"}}\n"
            );
            let errors = Config::parse(&text, dir.path(), &|_: &str| None, now).err();
            let errors = errors.unwrap_or_default();
            assert!(
                !errors.iter().any(|e| e.contains("is not an output type")),
                "{t}: {errors:?}"
            );
        }
    }
}
