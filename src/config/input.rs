//! The `inputs.proofpoint_isolation` block: id, credentials, request limits, the connection keys
//! (proxy and trust, resolved per service) and the list of services.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::outputs::{parse_outputs, OutputConfig, OutputKind};
use super::pacing::{request_pacing, RequestPacing};
use super::services::{parse_service, ServiceConfig};
use crate::config::connection::{self, ApiConnection};
use crate::secret::ApiKey;
use crate::service::Service;
use crate::trust::{ApiTrust, TrustError};
use crate::yaml_walker::resolve_cert;
use crate::yaml_walker::{join, show, Cx, Obj};

/// Where the API key travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPlacement {
    /// `Authorization: Bearer <key>` (Proofpoint's own tools; keeps the key out of URLs).
    BearerHeader,
    /// `?key=<key>` (older clients). The key is still never logged.
    QueryParameter,
}

#[derive(Clone, Debug)]
pub struct InputConfig {
    /// `inputs.<name>`: always `proofpoint_isolation`.
    pub name: String,
    pub id: String,
    pub enabled: bool,
    pub api_key: ApiKey,
    pub key_placement: KeyPlacement,
    /// The input's `requests_per_second` and `requests_limits`, for all its services; a
    /// service's own `requests_per_second` wins (see [`InputConfig::request_interval`]).
    pub pacing: RequestPacing,
    /// `environment`: added to every delivered event as `"@devo_environment"`.
    pub environment: Option<String>,
    pub services: Vec<ServiceConfig>,
    /// The outputs this input delivers to: the block's own `outputs`, or the global ones; with
    /// several tenants, file outputs write under `<directory>/<id>/`.
    pub outputs: Vec<OutputConfig>,
}

impl InputConfig {
    /// A service's request spacing: the narrowest level that sets `requests_per_second` wins.
    pub fn request_interval(&self, svc: &ServiceConfig) -> Option<Duration> {
        svc.pacing
            .min_request_interval
            .or(self.pacing.min_request_interval)
    }
}

/// One `proofpoint_isolation` block, key by key (paths relative to the block: see
/// `tenants`). The connection keys are read before the services and applied after them: a
/// service's base URL decides its route. `global_outputs` are the outputs unless the block has
/// its own `outputs`; with `multi_tenant`, its file outputs write under `<directory>/<id>/`.
pub(super) fn parse_input(
    mut i: Obj<'_>,
    global_outputs: &[OutputConfig],
    multi_tenant: bool,
    cx: &mut Cx,
) -> Option<InputConfig> {
    i.ignored = &["autoconfig"];
    let id = input_id(&mut i, cx);
    let enabled = i.boolean("enabled", true, cx);
    if !enabled {
        cx.warn(
            &i.path("enabled"),
            "The \"input\" configuration entry for proofpoint_isolation is not enabled".into(),
        );
    }
    let pacing = request_pacing(&mut i, cx);
    let environment = i.string("environment", cx);
    let (api_key, key_placement) = credentials(&mut i, cx);
    let connection = parse_api_connection(&mut i, cx);
    let mut services = parse_services(&mut i, cx);
    if let Some(connection) = connection {
        connect_services(&i, connection, &mut services, cx);
    }
    let mut outputs = match i.map("outputs", cx) {
        Some(own) => parse_outputs(own, cx),
        None => global_outputs.to_vec(),
    };
    if let (true, Some(id)) = (multi_tenant, &id) {
        per_tenant_directories(&mut outputs, id);
    }
    check_shared_tables(&outputs, &services, cx);
    i.finish(cx);
    Some(InputConfig {
        name: "proofpoint_isolation".into(),
        id: id?,
        enabled,
        api_key: api_key?,
        key_placement,
        pacing,
        environment,
        services,
        outputs,
    })
}

/// With several tenants, each one's file outputs write under `<directory>/<id>/`: two tenants
/// have the same tables, and each service keeps the committed length of its own file.
fn per_tenant_directories(outputs: &mut [OutputConfig], id: &str) {
    for o in outputs {
        if let Some(directory) = o.kind.directory_mut() {
            *directory = directory.join(id);
        }
    }
}

/// Each service keeps its own committed length of its table's file; two services writing one
/// file would cut each other's lines when rewinding after a crash.
fn check_shared_tables(outputs: &[OutputConfig], services: &[ServiceConfig], cx: &mut Cx) {
    let has_file = outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::File(_)));
    for (i, a) in services.iter().enumerate() {
        if let Some(b) = services[i + 1..].iter().find(|b| b.table == a.table) {
            if has_file {
                cx.error(
                    &format!("services.{}.override_tag", b.service),
                    format!("`{}` is also the table of {}; with a file output both would write one file; give each service its own table", b.table, a.service),
                );
            }
        }
    }
}

/// The input's `id` (it names the state files).
fn input_id(i: &mut Obj<'_>, cx: &mut Cx) -> Option<String> {
    let id = i.string("id", cx);
    match &id {
        None => cx.error(&i.path("id"), "missing; a unique number of at least 5 digits such as \"10001\" (it names the state files)".into()),
        Some(id) if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            cx.error(&i.path("id"), format!("`{id}` may only hold letters, digits, `-` and `_` (Devo uses 5+ digits)"))
        }
        _ => {}
    }
    id
}

/// `credentials`: the API key (inline or from `api_key_file`) and where it travels.
fn credentials(i: &mut Obj<'_>, cx: &mut Cx) -> (Option<ApiKey>, KeyPlacement) {
    let Some(mut c) = i.map("credentials", cx) else {
        cx.error(&i.path("credentials"), "missing; add `credentials: {api_key: ...}` (Isolation console: Product Settings > Reporting API)".into());
        return (None, KeyPlacement::BearerHeader);
    };
    let key = api_key(&mut c, cx);
    let placement = match c.string("send_key_as", cx).as_deref() {
        None | Some("bearer_header") => KeyPlacement::BearerHeader,
        Some("query_parameter") => KeyPlacement::QueryParameter,
        Some(other) => {
            cx.error(
                &c.path("send_key_as"),
                format!(
                    "`{other}` is not valid; use `bearer_header` (default) or `query_parameter`"
                ),
            );
            KeyPlacement::BearerHeader
        }
    };
    c.finish(cx);
    (key, placement)
}

/// `api_key` or `api_key_file` (one of them), trimmed; never shown in an error.
fn api_key(c: &mut Obj<'_>, cx: &mut Cx) -> Option<ApiKey> {
    let inline = c.string("api_key", cx);
    let file = c.string("api_key_file", cx);
    let key = match (inline, file) {
        (Some(_), Some(_)) => {
            cx.error(
                &c.path("api_key"),
                "give either `api_key` or `api_key_file`, not both".into(),
            );
            None
        }
        (Some(k), None) => Some(k),
        (None, Some(f)) => cx
            .read_secret_file(&c.path("api_key_file"), &f)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        (None, None) => {
            cx.error(
                &c.path("api_key"),
                "missing; set `api_key` (e.g. \"${ISOLATION_API_KEY}\") or `api_key_file`".into(),
            );
            None
        }
    };
    key.and_then(|k| {
        let k = k.trim().to_owned();
        if k.is_empty() || k.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
            cx.error(&c.path("api_key"), "is empty or holds spaces or control characters; paste the key from the Isolation console".into());
            None
        } else {
            Some(ApiKey::new(k))
        }
    })
}

/// `services`: each listed service with its settings (absent: both, with their defaults).
fn parse_services(i: &mut Obj<'_>, cx: &mut Cx) -> Vec<ServiceConfig> {
    let mut services = Vec::new();
    match i.get("services") {
        None => {
            services = Service::ALL
                .iter()
                .map(|s| ServiceConfig::defaults(*s))
                .collect()
        }
        Some(Value::Mapping(m)) => {
            let path = i.path("services");
            for (k, v) in m {
                let name = k.as_str().map(str::to_owned).unwrap_or_else(|| show(k));
                if let Some(s) = listed_service(&join(&path, &name), &name, v, cx) {
                    services.push(s);
                }
            }
            if m.is_empty() {
                cx.error(
                    &path,
                    "no service listed; add browser_and_email_isolation and/or url_isolation"
                        .into(),
                );
            }
        }
        Some(_) => cx.error(
            &i.path("services"),
            "must be a mapping of service names to settings".into(),
        ),
    }
    services
}

/// One entry of `services`: a known service name and its settings (or nothing: its defaults).
fn listed_service(spath: &str, name: &str, v: &Value, cx: &mut Cx) -> Option<ServiceConfig> {
    let Some(service) = Service::from_name(name) else {
        cx.error(
            spath,
            "unknown service; use browser_and_email_isolation or url_isolation".into(),
        );
        return None;
    };
    let empty = Mapping::new();
    let map = match v {
        Value::Null => &empty,
        Value::Mapping(m) => m,
        _ => {
            cx.error(
                spath,
                "must be a mapping of service settings (or empty)".into(),
            );
            return None;
        }
    };
    parse_service(service, Obj::new(spath, map), cx)
}

/// The input's connection keys, read before the services (whose base URLs decide the route).
struct ConnectionKeys {
    proxy_url: Option<url::Url>,
    roots: ApiTrust,
    trust: String,
}

/// `proxy_url`, `ca_file`, `ca_file_only`, `system_trust_store` of the input block. `None` if
/// any is invalid (the errors are recorded). The roots are checked (the files read, the system
/// store looked at), not kept: the API client builds them.
fn parse_api_connection(i: &mut Obj<'_>, cx: &mut Cx) -> Option<ConnectionKeys> {
    let proxy_url = match i.string("proxy_url", cx) {
        None => Ok(None),
        Some(text) => connection::parse_proxy_url(&text).map(Some).map_err(|e| {
            cx.error(&i.path("proxy_url"), e);
        }),
    };
    let roots = ApiTrust {
        ca_file: i
            .string("ca_file", cx)
            .map(|f| resolve_cert(&cx.base_dir, &f)),
        ca_file_only: i.boolean("ca_file_only", false, cx),
        system_trust_store: i.boolean("system_trust_store", false, cx),
    };
    let (ca_file, ca_file_only, system) =
        (&roots.ca_file, roots.ca_file_only, roots.system_trust_store);
    if ca_file_only && ca_file.is_none() {
        cx.error(
            &i.path("ca_file_only"),
            "is true but `ca_file` is not set; set ca_file to your CA bundle (PEM), or remove ca_file_only".into(),
        );
        return None;
    }
    if ca_file_only && system {
        cx.error(&i.path("ca_file_only"), "trusts `ca_file` alone, which contradicts system_trust_store: true; remove one of them".into());
        return None;
    }
    let usable = roots.check().map_err(|e| {
        let key = match e {
            TrustError::SystemStoreEmpty { .. } => "system_trust_store",
            _ => "ca_file",
        };
        cx.error(&i.path(key), e.to_string());
    });
    let mut trust: Vec<String> = Vec::new();
    if !ca_file_only {
        trust.push("the built-in roots".into());
    }
    if system {
        trust.push("the system trust store".into());
    }
    if let Some(f) = ca_file {
        trust.push(format!("ca_file {}", f.display()));
    }
    let trust = trust.join(" + ");
    usable.ok()?;
    Some(ConnectionKeys {
        proxy_url: proxy_url.ok()?,
        roots,
        trust,
    })
}

/// Gives every service the input's trust and the route to its own base URL.
fn connect_services(
    i: &Obj<'_>,
    keys: ConnectionKeys,
    services: &mut [ServiceConfig],
    cx: &mut Cx,
) {
    let mut reported = BTreeSet::new();
    for s in services {
        match connection::resolve(keys.proxy_url.clone(), &s.base_url, cx.env) {
            Ok(proxy) => {
                s.connection = ApiConnection {
                    proxy,
                    roots: keys.roots.clone(),
                    trust: keys.trust.clone(),
                }
            }
            // Both services usually read the same variable: say it once.
            Err(e) if reported.insert(e.clone()) => cx.error(
                &i.path("proxy_url"),
                format!("not set, and {e}; fix the variable or set proxy_url"),
            ),
            Err(_) => {}
        }
    }
}
