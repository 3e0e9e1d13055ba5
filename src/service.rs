//! The domain's services: the two data sources of the Proofpoint Isolation input, with their
//! Devo tables and vendor hosts, and the API facts every service shares. Config, metrics, the
//! puller and the commands all speak of a [`Service`]; none of them needs the config for it.

use std::fmt;
use std::time::Duration;

/// The two services of the Proofpoint Isolation input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    BrowserAndEmailIsolation,
    UrlIsolation,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::BrowserAndEmailIsolation, Service::UrlIsolation];

    /// The service name in the config and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "browser_and_email_isolation",
            Service::UrlIsolation => "url_isolation",
        }
    }

    /// The Devo table its events go to: [`BASE_TAG`] and the service's [`Service::tag_suffix`].
    pub fn table(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "tap.proofpoint.isolation.browser_and_email",
            Service::UrlIsolation => "tap.proofpoint.isolation.url_isolation",
        }
    }

    /// What the service appends to the base tag (`override_base_tag` replaces the base only).
    pub fn tag_suffix(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "browser_and_email",
            Service::UrlIsolation => "url_isolation",
        }
    }

    /// The vendor's host for the service.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Service::BrowserAndEmailIsolation => "https://proofpointisolation.com",
            Service::UrlIsolation => "https://urlisolation.com",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The base tag of the definitions; each service appends its suffix (`override_base_tag`).
pub const BASE_TAG: &str = "tap.proofpoint.isolation";

/// The API path the collector appends to a service's base URL.
pub const API_PATH: &str = "/api/v2/reporting/usage-data";

/// How long the vendor keeps data (isolation-api.md §3).
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
