//! How the API client connects: its trusted roots (see [`crate::trust`]) and its route.
//!
//! The route of the API requests: through the input's `proxy_url`, else through the proxy the
//! environment names (`HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`, minus `NO_PROXY`), else direct.
//!
//! The route is decided once per service while the config is read, from the same environment
//! lookup as `${VAR}` substitution, and the client is built with exactly that proxy and with
//! reqwest's own environment lookup turned off. So what `validate` reports is what the client
//! does, and a unit test can decide the route without touching the process environment.
//!
//! Proxy credentials live only in the URL given to reqwest (which percent-decodes them and
//! sends `Proxy-Authorization: Basic`). Everything printable shows the proxy as
//! `scheme://host:port` ([`ProxyRoute::masked`]); `Debug` does too.

use std::fmt;

use crate::trust::ApiTrust;

/// How one service's API client connects, decided while the config is read (plain data: the
/// client builds its TLS configuration from `roots` with [`crate::trust::api_tls`]).
#[derive(Clone)]
pub struct ApiConnection {
    /// `None`: direct.
    pub proxy: Option<ProxyRoute>,
    /// The roots: `ca_file`, `ca_file_only` and `system_trust_store`.
    pub roots: ApiTrust,
    /// What the roots are, for the certificate error ("the built-in roots").
    pub trust: String,
}

/// The route and what is trusted, as the start-up log and `validate` say them.
impl fmt::Debug for ApiConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConnection")
            .field("proxy", &self.proxy)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Default for ApiConnection {
    /// Direct, trusting the built-in Mozilla roots.
    fn default() -> Self {
        ApiConnection {
            proxy: None,
            roots: ApiTrust::default(),
            trust: "the built-in roots".to_owned(),
        }
    }
}

/// Where the proxy came from, for `validate` and the start-up log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// The input's `proxy_url`.
    ProxyUrl,
    /// An environment variable, by the name that was set (`HTTPS_PROXY`, `https_proxy`...).
    Env(&'static str),
}

/// A proxy the API requests go through.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    /// With credentials, if any: given only to reqwest.
    url: url::Url,
    pub source: ProxySource,
}

impl ProxyRoute {
    /// `scheme://host:port`: no credentials, no path. The only form that is ever printed.
    pub fn masked(&self) -> String {
        let host = self.url.host_str().unwrap_or("?");
        let port = self.url.port_or_known_default().unwrap_or(0);
        format!("{}://{host}:{port}", self.url.scheme())
    }

    /// The credentials' secret parts as they may appear in text (raw and percent-decoded), so
    /// the client can scrub them from error messages it did not write.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.url.password().filter(|p| !p.is_empty()) {
            out.push(p.to_owned());
            let decoded = percent_decode(p);
            if decoded != p {
                out.push(decoded);
            }
        }
        out
    }

    /// The reqwest proxy for all API requests.
    pub fn to_reqwest(&self) -> reqwest::Result<reqwest::Proxy> {
        reqwest::Proxy::all(self.url.clone())
    }

    /// "via proxy http://host:port (from proxy_url)", for `validate` and the start-up log.
    pub fn describe(route: Option<&ProxyRoute>) -> String {
        match route {
            None => "direct (no proxy_url, and no proxy variable applies)".to_owned(),
            Some(r) => {
                let from = match r.source {
                    ProxySource::ProxyUrl => "proxy_url",
                    ProxySource::Env(name) => name,
                };
                format!("via proxy {} (from {from})", r.masked())
            }
        }
    }
}

impl fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyRoute({}, {:?})", self.masked(), self.source)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses `proxy_url`. The error never repeats the value (it may hold a password).
pub fn parse_proxy_url(text: &str) -> Result<url::Url, String> {
    let hint = "give http://host:port or https://host:port, with credentials as http://${PROXY_USER}:${PROXY_PASSWORD}@host:port (percent-encode @ : / in them)";
    let url =
        url::Url::parse(text.trim()).map_err(|e| format!("is not a valid URL ({e}); {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has the scheme `{}`; only http and https proxies are supported; {hint}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host; {hint}"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!("must not have a path or query; {hint}"));
    }
    Ok(url)
}

/// The route for requests to `target`: `proxy_url` if given, else the environment's proxy for
/// the target's scheme unless `NO_PROXY` exempts the target's host. `Err` names the variable
/// whose value is not a usable proxy URL (without repeating it).
pub fn resolve(
    proxy_url: Option<url::Url>,
    target: &url::Url,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyRoute>, String> {
    if let Some(url) = proxy_url {
        return Ok(Some(ProxyRoute {
            url,
            source: ProxySource::ProxyUrl,
        }));
    }
    // curl's and reqwest's order: the scheme's own variable, then ALL_PROXY; upper case first.
    let names: &[&'static str] = if target.scheme() == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    let Some((name, value)) = names
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
    else {
        return Ok(None);
    };
    if exempt_by_no_proxy(target, env) {
        return Ok(None);
    }
    // Like curl: a value without a scheme is an http proxy.
    let value = value.trim();
    let text = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let url = parse_proxy_url(&text).map_err(|e| format!("the environment variable {name} {e}"))?;
    Ok(Some(ProxyRoute {
        url,
        source: ProxySource::Env(name),
    }))
}

/// Whether `NO_PROXY`/`no_proxy` exempts the target's host. The matching (domains and their
/// subdomains, IP addresses, CIDR ranges, `*`) is hyper-util's, the one reqwest applies to the
/// environment, rather than a copy of its rules.
fn exempt_by_no_proxy(target: &url::Url, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let Some(no) = env("NO_PROXY").or_else(|| env("no_proxy")) else {
        return false;
    };
    let Ok(uri) = target.as_str().parse::<http::Uri>() else {
        return false;
    };
    let matcher = hyper_util::client::proxy::matcher::Matcher::builder()
        .all("http://proxy.invalid:3128".to_owned())
        .no(no)
        .build();
    matcher.intercept(&uri).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn api() -> url::Url {
        url::Url::parse("https://urlisolation.com").unwrap()
    }

    #[test]
    fn proxy_url_wins_over_the_environment_and_is_shown_masked() {
        let env = env_of(&[("HTTPS_PROXY", "http://envproxy:8080")]);
        let url = parse_proxy_url("http://alice:s%40cret@proxy.corp:3128").unwrap();
        let route = resolve(Some(url), &api(), &env).unwrap().unwrap();
        assert_eq!(route.source, ProxySource::ProxyUrl);
        assert_eq!(route.masked(), "http://proxy.corp:3128");
        assert_eq!(
            ProxyRoute::describe(Some(&route)),
            "via proxy http://proxy.corp:3128 (from proxy_url)"
        );
        assert_eq!(
            format!("{route:?}"),
            "ProxyRoute(http://proxy.corp:3128, ProxyUrl)"
        );
        assert_eq!(
            route.secrets(),
            vec!["s%40cret".to_owned(), "s@cret".to_owned()]
        );
    }

    #[test]
    fn the_environment_is_read_per_scheme_and_no_proxy_exempts_hosts() {
        let env = env_of(&[
            ("https_proxy", "proxy.corp:3128"),
            ("HTTP_PROXY", "http://plain:80"),
            ("NO_PROXY", "localhost, .internal.corp, 10.0.0.0/8"),
        ]);
        let route = resolve(None, &api(), &env).unwrap().unwrap();
        assert_eq!(route.source, ProxySource::Env("https_proxy"));
        assert_eq!(route.masked(), "http://proxy.corp:3128");
        let plain = url::Url::parse("http://api.example").unwrap();
        let route = resolve(None, &plain, &env).unwrap().unwrap();
        assert_eq!(route.source, ProxySource::Env("HTTP_PROXY"));
        for exempt in [
            "https://api.internal.corp",
            "http://localhost:8080",
            "https://10.1.2.3:8443",
        ] {
            let target = url::Url::parse(exempt).unwrap();
            assert_eq!(resolve(None, &target, &env).unwrap(), None, "{exempt}");
        }
        assert_eq!(resolve(None, &api(), &env_of(&[])).unwrap(), None);
        assert_eq!(
            ProxyRoute::describe(None),
            "direct (no proxy_url, and no proxy variable applies)"
        );
    }

    #[test]
    fn bad_proxy_urls_are_named_without_their_value() {
        for bad in [
            "socks5://u:pw-secret@h:1080",
            "http://u:pw-secret@h:3128/path",
            "not a url pw-secret",
        ] {
            let err = parse_proxy_url(bad).unwrap_err();
            assert!(!err.contains("pw-secret"), "{err}");
            assert!(err.contains("http://host:port"), "{err}");
        }
        let env = env_of(&[("HTTPS_PROXY", "ftp://u:pw-secret@h")]);
        let err = resolve(None, &api(), &env).unwrap_err();
        assert!(
            err.starts_with("the environment variable HTTPS_PROXY has the scheme `ftp`"),
            "{err}"
        );
        assert!(!err.contains("pw-secret"), "{err}");
    }
}
