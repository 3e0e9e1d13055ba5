//! The values and label sets of the metric families: what a series is told apart by.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::service::Service;

/// The result of one API request attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a valid body.
    Ok,
    /// 401/403.
    Auth,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// The request or the body timed out, or the server answered 408.
    Timeout,
    /// Connection failures, resets, bodies cut off.
    Transport,
    /// 2xx whose body is not a valid page, or a body over the size limit.
    Malformed,
    /// Any other status (4xx): not retried.
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Auth,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Transport,
        Outcome::Malformed,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Auth => "auth",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Transport => "transport",
            Outcome::Malformed => "malformed",
            Outcome::Rejected => "rejected",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// What was wrong with an API job, or with a window, that made the collector give it up.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JobFault {
    /// The job handed back a `pageToken` it had handed back before, or far more pages than
    /// its `total` can fill.
    PageTokenLoop,
    /// A page equal to an earlier page of the same job, dropped (the job goes on).
    RepeatedPage,
    /// A window at its narrowest span held more than the service's share of the window memory
    /// budget.
    WindowOverBudget,
}

impl JobFault {
    pub const ALL: [JobFault; 3] = [
        JobFault::PageTokenLoop,
        JobFault::RepeatedPage,
        JobFault::WindowOverBudget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobFault::PageTokenLoop => "page_token_loop",
            JobFault::RepeatedPage => "repeated_page",
            JobFault::WindowOverBudget => "window_over_budget",
        }
    }
}

impl EncodeLabelValue for JobFault {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Service {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ServiceLabels {
    /// The input id (the tenant).
    pub(super) input: String,
    pub(super) service: Service,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) input: String,
    pub(super) service: Service,
    pub(super) outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobFaultLabels {
    pub(super) input: String,
    pub(super) service: Service,
    pub(super) kind: JobFault,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RuleLabels {
    pub(super) input: String,
    pub(super) service: Service,
    /// `obfuscation_data[i] [path]`: bounded by the config.
    pub(super) rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeadLetterLabels {
    pub(super) input: String,
    pub(super) service: Service,
    pub(super) table: String,
    /// The output that refused the event, or `none` for an event that could not be read.
    pub(super) output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutputLabels {
    pub(super) input: String,
    pub(super) output: String,
    pub(super) table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutputUpLabels {
    pub(super) input: String,
    pub(super) service: Service,
    pub(super) output: String,
}
