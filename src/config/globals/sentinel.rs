//! `persistence.config.sentinels` (`type: redis`): the Redis master is the one Redis Sentinel
//! names, found again after a failover, instead of one server named by `host` and `port`.
//!
//! The keys: `sentinels` (a list of `host:port`), `master_name` (the name the sentinels monitor,
//! their `sentinel monitor <name> ...`), and the sentinels' own credentials,
//! `sentinel_password` (or `sentinel_password_file`) and `sentinel_username`, which are not the
//! master's (`password`, `username`). `host` and `port` name one server: given with
//! `sentinels`, they are an error rather than silently unused. `tls` and `ca` apply to the
//! sentinels and to the master alike.

use super::{secret, Cx, Obj, Secret};
use serde_yaml_ng::Value;

/// The sentinels and the master they are asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// Each sentinel's host and port, in the config's order (they are asked in that order).
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels know the master by.
    pub master_name: String,
    /// `sentinel_password` or the contents of `sentinel_password_file`; shown only as `****`.
    pub password: Option<Secret>,
    /// A Redis 6 ACL user on the sentinels.
    pub username: Option<String>,
}

impl SentinelConfig {
    /// `<master_name> via sentinels <host:port>,...`: how logs and errors name the Redis.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| host_port(h, *p))
            .collect();
        format!("{} via sentinels {}", self.master_name, list.join(","))
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

const EXAMPLE: &str =
    "e.g. `sentinels: [\"10.0.0.1:26379\", \"10.0.0.2:26379\", \"10.0.0.3:26379\"]`";

/// The sentinel keys of `c` (`None` without `sentinels`; an error for each bad or missing value,
/// and for a sentinel key or `host`/`port` that does not go with what is set).
pub(super) fn parse(c: &mut Obj<'_>, cx: &mut Cx) -> Option<SentinelConfig> {
    let list = c.get("sentinels");
    let master_name = c.string("master_name", cx);
    let password = secret(c, ["sentinel_password", "sentinel_password_file"], cx);
    let username = c.string("sentinel_username", cx).filter(|u| !u.is_empty());
    let Some(list) = list else {
        for key in [
            "master_name",
            "sentinel_password",
            "sentinel_password_file",
            "sentinel_username",
        ] {
            if c.map.get(key).is_some_and(|v| !v.is_null()) {
                cx.error(
                    &c.path(key),
                    "is only used with `sentinels`; list the sentinels or remove it".into(),
                );
            }
        }
        return None;
    };
    for key in ["host", "port"] {
        if c.map.get(key).is_some_and(|v| !v.is_null()) {
            cx.error(
                &c.path(key),
                "names one Redis server, but `sentinels` are set and name the master; remove `host` and `port` (or `sentinels`)".into(),
            );
        }
    }
    let sentinels = sentinel_list(&c.path("sentinels"), list, cx);
    let master_name = match master_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => name,
        None => {
            cx.error(
                &c.path("master_name"),
                "missing; `sentinels` need the name of the master they monitor (their `sentinel monitor <name> ...`), e.g. `master_name: mymaster`".into(),
            );
            String::new()
        }
    };
    Some(SentinelConfig {
        sentinels,
        master_name,
        password,
        username,
    })
}

/// The `host:port` entries of `sentinels`; each bad one is its own error.
fn sentinel_list(path: &str, list: &Value, cx: &mut Cx) -> Vec<(String, u16)> {
    let Value::Sequence(items) = list else {
        cx.error(
            path,
            format!("must be a list of `host:port` strings, {EXAMPLE}"),
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(
            path,
            format!("is empty; list the sentinels that monitor the master, {EXAMPLE}"),
        );
    }
    let mut sentinels = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let text = item.as_str().unwrap_or_default();
        match parse_host_port(text) {
            Some(hp) => sentinels.push(hp),
            None => cx.error(
                &format!("{path}[{i}]"),
                format!(
                    "`{}` is not `host:port`; write a sentinel's name or IP and its port, e.g. `10.0.0.1:26379` or `[fd00::1]:26379`",
                    crate::yaml_walker::show(item)
                ),
            ),
        }
    }
    sentinels
}

/// `host:port` or `[ipv6]:port`, with a port in 1..=65535 and a host without spaces.
fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::parse_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("10.0.0.1:26379"),
            Some(("10.0.0.1".into(), 26379))
        );
        assert_eq!(
            parse_host_port("[fd00::1]:26379"),
            Some(("fd00::1".into(), 26379))
        );
        assert_eq!(
            parse_host_port("sentinel-a:1"),
            Some(("sentinel-a".into(), 1))
        );
        for bad in [
            "",
            "host",
            "host:",
            ":26379",
            "host:0",
            "host:65536",
            "fd00::1:26379",
            "a b:1",
            "[::1:2",
        ] {
            assert_eq!(parse_host_port(bad), None, "{bad}");
        }
    }
}
