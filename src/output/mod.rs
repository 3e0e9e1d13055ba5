//! Outputs: where delivered events go.
//!
//! Every event goes to every output (Devo's fan-out). An output *confirms* a batch by returning
//! `Ok` from [`Output::deliver`]; the puller advances its checkpoint only after every output has
//! confirmed, so a confirmation must mean the events are durable at the peer (fsynced file, a TLS
//! peer that provably read everything, RELP's `rsp 200` per record, a webhook's 2xx, Splunk's indexer acknowledgement), not
//! merely handed to the kernel.
//!
//! Outputs are an enum rather than trait objects: the set is closed, dispatch is a `match`, and
//! `async fn` works without boxing.
//!
//! Each service task builds its own instances from the configuration, so an output never
//! needs locking: a file output of the browser service only ever touches the browser table's file.
//!
//! ## Configuration, building, running
//! Three steps, as Vector's sinks take them. An output's configuration is plain data: its kind
//! ([`registry::OutputKind`]) reads its own `config` keys into its configuration type. Building
//! is [`builder::OutputBuilder`]: the configuration and an [`builder::OutputContext`] (the
//! clock) give the running [`Output`], or its health check, which `validate` and the check at
//! start run (`app::outputs`). Running is [`Outputs`], the fan-out of one service. The fan-out
//! knows nothing of leases: it asks a [`DeliveryGate`] before each output's turn, and HA
//! implements it ([`gate`]). The network plumbing the `syslog` and `relp` outputs share is
//! [`net`].
//!
//! ## Adding an output kind
//! 1. A folder `output/<kind>/`: its configuration type (plain data, `Clone + Debug`, secrets
//!    not shown) with a `parse(config, path, cx)` that reads `outputs.<name>.config` (see
//!    [`file::config`]); the output itself, with `name`, `deliver`, `check` and, if it retries
//!    on its own, `stop_retries_on`; and `impl OutputBuilder for` its configuration.
//! 2. In [`registry`], the one other file: a variant of `OutputKind`, and its `type` name(s) in
//!    `OutputKind::parse` and in `TYPES`; a variant of [`Output`] for `build` to return. The
//!    compiler then asks for the rest, there: the kind's arm in `OutputKind::builder` and the
//!    new variant's arm in each of [`Output`]'s matches (none has a catch-all arm).
//! 3. README: the kind's keys in the outputs section.
//!
//! [`Outputs`] delivers a batch to all of a service's outputs, retrying only the unconfirmed,
//! and remembers per output what it confirmed until the window commits ([`confirmed`]): an
//! output that confirmed an event is not given it again while another output is down, across
//! cycles. An output that confirmed a part of a batch before failing says which part
//! ([`OutputError::Partly`]), so that part is not sent again either.
//!
//! ## Positions
//! An output may return a [`Position`] with its confirmation (the file output returns the byte
//! length of the table file, and which file that is). The puller stores it in the state together
//! with the checkpoint, and hands it back to [`Output::resume`] after a restart. The file output
//! truncates anything written after the last committed position, so the batch that was written
//! but not checkpointed before a crash is not duplicated when it is delivered again:
//! exactly-once for files. A position taken from another file is never applied (see
//! [`file`]'s module doc).

pub mod builder;
pub mod confirmed;
pub mod console;
pub mod fanout;
pub mod file;
pub mod gate;
pub mod http;
pub mod net;
pub mod registry;
pub mod relp;
pub mod syslog;

pub use fanout::{FanOutError, Outputs};
pub use gate::DeliveryGate;
pub use registry::Output;

/// How far an output has written a table: stored with the checkpoint, handed back on resume.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The file output's committed byte length of the table's file.
    pub length: u64,
    /// The file that length is of. `None` in a state written before `@persistence_version` 3
    /// (and for outputs that keep no file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<file::FileIdentity>,
}

impl Position {
    /// A length that names no file.
    pub fn of_length(length: u64) -> Self {
        Position { length, file: None }
    }
}

/// An error from an output. Every variant means "not confirmed": the batch is delivered again.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Local I/O (file output, certificate files).
    #[error("output {output}: {action}: {source}")]
    Io {
        output: String,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A network peer failed, refused or did not confirm. `reason` is mostly a message of
    /// ours, quoting the peer's answer (redacted) where there is one; where it is a transport
    /// error's text, a typed `#[source]` is still to do (issue 22 §3), once the outputs' code has
    /// settled in its new modules.
    #[error("output {output}: {reason}")]
    Peer { output: String, reason: String },
    /// The peer refused each of `events` (index into the batch, and the peer's answer) sent
    /// alone, with an answer a retry does not change (a 400 or 413 for a request of one event):
    /// the fan-out sets such an event aside for this output after a few tries (see `fanout`).
    /// The batch's other events were sent.
    #[error("output {output}: {}", refused_reasons(events))]
    Refused {
        output: String,
        events: Vec<(usize, String)>,
    },
    /// `error` ended the batch after the peer confirmed the events at `confirmed` (indices into
    /// the batch, ascending): those are not given to this output again (see `confirmed`).
    #[error("{error}")]
    Partly {
        confirmed: Vec<usize>,
        error: Box<OutputError>,
    },
}

impl OutputError {
    /// This error, after the peer confirmed the events at `confirmed` (no change if none).
    pub fn after_confirming(self, confirmed: Vec<usize>) -> OutputError {
        if confirmed.is_empty() {
            return self;
        }
        OutputError::Partly {
            confirmed,
            error: Box::new(self),
        }
    }

    /// The events the peer refused alone for good (index into the batch, and why).
    pub fn refused(&self) -> &[(usize, String)] {
        match self {
            OutputError::Refused { events, .. } => events,
            OutputError::Partly { error, .. } => error.refused(),
            _ => &[],
        }
    }

    /// Indices of the batch's events the peer confirmed before the failure.
    pub fn confirmed(&self) -> &[usize] {
        match self {
            OutputError::Partly { confirmed, .. } => confirmed,
            _ => &[],
        }
    }
}

/// The first refusal's reason, and how many more there were.
fn refused_reasons(events: &[(usize, String)]) -> String {
    let first = events.first().map_or("", |(_, reason)| reason.as_str());
    match events.len() {
        0 | 1 => first.to_owned(),
        n => format!("{first} (and {} more event(s) refused alone)", n - 1),
    }
}
