//! Reading the HTTP outputs' `config`: `http` (webhook, iso2web's) and `splunk_hec`. The TLS
//! keys (`chain`, `ca_file`, `system_trust_store`, `cert`, `key`) mean what they mean for
//! `devo_platform`; without a root the built-in Mozilla roots verify the server.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::client::{
    Compression, HttpClientConfig, HttpTls, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS_PER_REQUEST,
};
use super::hec::{HecOutputConfig, DEFAULT_ACK_TIMEOUT};
use super::{BodyFormat, ConfiguredHeader, HttpOutputConfig};
use crate::yaml_walker::{join, resolve_cert, Cx, Obj};

impl HttpOutputConfig {
    /// Reads an `http` output's `config` (at `path`). `None` (the errors recorded) if missing
    /// or invalid.
    pub(crate) fn parse(config: Option<Obj<'_>>, path: &str, cx: &mut Cx) -> Option<Self> {
        http_output(required(config, path, cx)?, cx)
    }
}

impl HecOutputConfig {
    /// Reads a `splunk_hec` output's `config` (at `path`). `None` (the errors recorded) if
    /// missing or invalid.
    pub(crate) fn parse(config: Option<Obj<'_>>, path: &str, cx: &mut Cx) -> Option<Self> {
        hec_output(required(config, path, cx)?, cx)
    }
}

/// The `config` both need (`None`, the error recorded, when it is missing).
fn required<'a>(config: Option<Obj<'a>>, path: &str, cx: &mut Cx) -> Option<Obj<'a>> {
    if config.is_none() {
        cx.error(
            &join(path, "config"),
            "missing; needs at least `url`".into(),
        );
    }
    config
}

/// `{type: http, config: {url, ...}}`.
fn http_output(mut c: Obj<'_>, cx: &mut Cx) -> Option<HttpOutputConfig> {
    let client = client_config(&mut c, "e.g. https://hooks.example.com/isolation", cx);
    let format = match c.string("format", cx).as_deref() {
        None | Some("json") => BodyFormat::JsonArray,
        Some("ndjson") => BodyFormat::Ndjson,
        Some(other) => {
            cx.error(
                &c.path("format"),
                format!("`{other}` is not a body format; use json (iso2web's JSON array, the default) or ndjson"),
            );
            BodyFormat::JsonArray
        }
    };
    let headers = headers(&mut c, cx);
    c.finish(cx);
    Some(HttpOutputConfig {
        client: client?,
        format,
        headers,
    })
}

/// `{type: splunk_hec, config: {url, token, ...}}`.
fn hec_output(mut c: Obj<'_>, cx: &mut Cx) -> Option<HecOutputConfig> {
    let client = client_config(
        &mut c,
        "HEC's base URL, e.g. https://splunk.example.com:8088",
        cx,
    );
    let given = c.map.contains_key("token") || c.map.contains_key("token_file");
    let token = secret(&mut c, "token", "token_file", cx);
    if !given {
        cx.error(
            &c.path("token"),
            "missing; set `token` (e.g. \"${SPLUNK_HEC_TOKEN}\") or `token_file`".into(),
        );
    }
    let config = HecOutputConfig {
        client: client?,
        token: token.unwrap_or_default(),
        index: c.string("index", cx),
        sourcetype: c.string("sourcetype", cx),
        source: c.string("source", cx),
        host: c.string("host", cx),
        use_ack: c.boolean("use_ack", true, cx),
        ack_timeout: c.duration(
            "ack_timeout_in_seconds",
            1.0..=3600.0,
            DEFAULT_ACK_TIMEOUT,
            cx,
        ),
    };
    c.finish(cx);
    (!config.token.is_empty()).then_some(config)
}

/// The keys both share: `url`, limits, compression, timeouts and TLS.
fn client_config(c: &mut Obj<'_>, example: &str, cx: &mut Cx) -> Option<HttpClientConfig> {
    let url = match c.string("url", cx) {
        None => {
            cx.error(&c.path("url"), format!("missing; {example}"));
            None
        }
        Some(u) => match url::Url::parse(&u) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            // The value is not repeated: a webhook URL may hold a token.
            _ => {
                cx.error(
                    &c.path("url"),
                    format!("is not an http:// or https:// URL; {example}"),
                );
                None
            }
        },
    };
    let max_events = c
        .number("max_events_per_request", 1.0, 1_000_000.0, true, cx)
        .map_or(DEFAULT_MAX_EVENTS_PER_REQUEST, |n| n as usize);
    let max_body = c
        .number("max_body_bytes", 1024.0, 1024.0 * 1024.0 * 1024.0, true, cx)
        .map_or(DEFAULT_MAX_BODY_BYTES, |n| n as usize);
    let compression = match c.string("compression", cx).as_deref() {
        None | Some("none") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some(other) => {
            cx.error(
                &c.path("compression"),
                format!("`{other}` is not supported; use gzip or none"),
            );
            Compression::None
        }
    };
    let request_timeout = c.duration(
        "request_timeout_in_seconds",
        1.0..=600.0,
        Duration::from_secs(60),
        cx,
    );
    let connect_timeout = c.duration(
        "connect_timeout_in_seconds",
        0.1..=600.0,
        Duration::from_secs(10),
        cx,
    );
    let tls = tls(c, cx);
    Some(HttpClientConfig {
        url: url?,
        tls,
        request_timeout,
        connect_timeout,
        compression,
        max_events_per_request: max_events,
        max_body_bytes: max_body,
    })
}

fn tls(c: &mut Obj<'_>, cx: &mut Cx) -> HttpTls {
    let file = |c: &mut Obj<'_>, key: &str, cx: &mut Cx| {
        let name = c.string(key, cx)?;
        let p = resolve_cert(&cx.base_dir, &name);
        if !p.is_file() {
            cx.error(&c.path(key), format!("file {} does not exist", p.display()));
        }
        Some(p)
    };
    let chain = file(c, "chain", cx);
    let ca_file = file(c, "ca_file", cx);
    let cert = file(c, "cert", cx);
    let key = file(c, "key", cx);
    if cert.is_some() != key.is_some() {
        cx.error(
            &c.path("cert"),
            "a client certificate needs both `cert` and `key`".into(),
        );
    }
    HttpTls {
        chain,
        ca_file,
        system_trust_store: c.boolean("system_trust_store", false, cx),
        client: cert.zip(key),
    }
}

/// A secret inline (`key`, usually `"${VAR}"`) or in a file (`file_key`): one of them.
fn secret(c: &mut Obj<'_>, key: &str, file_key: &str, cx: &mut Cx) -> Option<String> {
    let inline = c.string(key, cx);
    let file = c.string(file_key, cx);
    match (inline, file) {
        (Some(_), Some(_)) => {
            cx.error(
                &c.path(file_key),
                format!("give either `{key}` or `{file_key}`, not both"),
            );
            None
        }
        (Some(v), None) => Some(v),
        (None, Some(f)) => {
            let bytes = cx.read_secret_file(&c.path(file_key), &f)?;
            match String::from_utf8(bytes) {
                Ok(s) => Some(s),
                Err(_) => {
                    cx.error(&c.path(file_key), "the file is not UTF-8 text".into());
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// `headers`: `Name: value` (values may be `"${VAR}"`), or `Name_file: path` to read the value
/// from a file. Values are secrets: errors name the header, never the value.
fn headers(c: &mut Obj<'_>, cx: &mut Cx) -> Vec<ConfiguredHeader> {
    let Some(mut h) = c.map("headers", cx) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in h.names() {
        let path = h.path(&key);
        let (name, value) = match key.strip_suffix("_file") {
            Some(name) => {
                let file = h.string(&key, cx);
                let value = file
                    .and_then(|f| cx.read_secret_file(&path, &f))
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                (name.to_owned(), value)
            }
            None => (key.clone(), h.string(&key, cx)),
        };
        let Ok(name) = HeaderName::try_from(name.as_str()) else {
            cx.error(&path, format!("`{name}` is not a valid header name"));
            continue;
        };
        let Some(value) = value else { continue };
        match HeaderValue::try_from(value.trim()) {
            Ok(value) => out.push(ConfiguredHeader { name, value }),
            Err(_) => cx.error(
                &path,
                "the value holds characters a header cannot carry (a line break?)".into(),
            ),
        }
    }
    h.finish(cx);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, OutputKind};

    fn parse(outputs: &str, dir: &Path) -> Result<Config, Vec<String>> {
        let text = format!(
            "globals: {{id: t, name: t, persistence: {{type: memory}}}}\noutputs:\n{outputs}inputs:\n  proofpoint_isolation:\n    id: 1\n    credentials: {{api_key: \"1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z\"}}\n"
        );
        let env = |name: &str| (name == "HOOK_TOKEN").then(|| "Bearer s3cret-hook".to_owned());
        let now = crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap();
        Config::parse(&text, dir, &env, now)
    }

    #[test]
    fn http_and_hec_outputs_are_read_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hec.token"), "0000-aaaa\n").unwrap();
        std::fs::write(dir.path().join("key.txt"), "k-from-file\n").unwrap();
        let c = parse(
            "  hook:\n    type: http\n    config:\n      url: https://hooks.example.com/in\n      format: ndjson\n      compression: gzip\n      headers: {Authorization: \"${HOOK_TOKEN}\", X-Api-Key_file: key.txt}\n  splunk:\n    type: splunk_hec\n    config: {url: \"https://splunk:8088\", token_file: hec.token, index: proofpoint}\n",
            dir.path(),
        )
        .unwrap();
        let OutputKind::Http(h) = &c.outputs[0].kind else {
            panic!("{:?}", c.outputs[0].kind)
        };
        assert_eq!(h.format, crate::output::http::BodyFormat::Ndjson);
        assert_eq!(h.client.max_events_per_request, 10_000);
        let headers: Vec<(String, String)> = h
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization".into(), "Bearer s3cret-hook".into()),
                ("x-api-key".into(), "k-from-file".into())
            ]
        );
        let OutputKind::SplunkHec(s) = &c.outputs[1].kind else {
            panic!("{:?}", c.outputs[1].kind)
        };
        assert_eq!(s.token, "0000-aaaa");
        assert_eq!((s.use_ack, s.ack_timeout.as_secs()), (true, 120));
        assert_eq!(s.index.as_deref(), Some("proofpoint"));
        assert!(!format!("{s:?}").contains("0000-aaaa"));
        let hook = parse(
            "  h: {type: http, config: {url: \"https://h.example/in?sig=s3cret\", headers: {A: \"${HOOK_TOKEN}\"}}}\n",
            dir.path(),
        )
        .unwrap();
        let shown = format!("{:?}", hook.outputs);
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn every_problem_is_listed_and_no_secret_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let errors = parse(
            "  a: {type: http, config: {url: \"ftp://x/?token=s3cret\", compression: zip, cert: c.pem}}\n  b: {type: splunk_hec, config: {url: \"https://s:8088\"}}\n  c: {type: http, config: {}}\n",
            dir.path(),
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "outputs.a.config.url: is not an http:// or https:// URL",
            "outputs.a.config.compression: `zip` is not supported",
            "outputs.a.config.cert: a client certificate needs both `cert` and `key`",
            "outputs.b.config.token: missing; set `token`",
            "outputs.c.config.url: missing",
        ] {
            assert!(all.contains(needle), "{needle:?} in\n{all}");
        }
        assert!(!all.contains("s3cret"), "{all}");
    }
}
