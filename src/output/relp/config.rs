//! The `relp` output's configuration (`outputs.<name>.config`): the network keys of a syslog
//! output and the window. Plain data, read from the YAML.

use crate::output::net::config::network_keys;
use crate::output::net::NetworkOutputConfig;
use crate::yaml_walker::{join, Cx, Obj};

/// Default for [`RelpOutputConfig::window_size`].
///
/// Not librelp's default (128): with 128 records in flight, every read of rsyslog's answers freed
/// a few records and every write carried a few, a ping-pong of small TLS records that cost the
/// sender about 6 µs of CPU per record and rsyslog 15 µs (`scripts/bench/raw_sender.sh 100000
/// relp`; 1,024 still did). From 2,048 on, the sender writes and reads in bursts: 0.7 µs, and
/// rsyslog 10 µs. 4,096 keeps a margin over that edge; it bounds what a lost connection sends
/// twice (4,096 records, about 1.6 MB) and the answers in flight (about 90 KB, within the
/// socket buffers, so that neither side blocks writing while the other does).
pub const DEFAULT_WINDOW_SIZE: usize = 4096;

/// The `relp` output's configuration: the network keys of a syslog output (address, port, TLS
/// files, hostname, timeouts) and the window.
#[derive(Clone, Debug)]
pub struct RelpOutputConfig {
    /// `devo` is false: TLS is on by default but `tls: false` is allowed.
    pub network: NetworkOutputConfig,
    /// Records sent and not yet acknowledged, at most (`window_size`).
    pub window_size: usize,
}

impl RelpOutputConfig {
    /// Reads a `relp` output's `config` (at `path`). `None` (the errors recorded) if missing or
    /// invalid.
    pub(crate) fn parse(config: Option<Obj<'_>>, path: &str, cx: &mut Cx) -> Option<Self> {
        match config {
            Some(c) => parse_relp_output(c, cx),
            None => {
                cx.error(
                    &join(path, "config"),
                    "missing; needs at least `address`, `port`, and `chain`, `cert`, `key` (or tls: false)".into(),
                );
                None
            }
        }
    }
}

/// A `relp` output: the network keys with TLS on by default (`tls: false` for plain TCP), and
/// `window_size`.
fn parse_relp_output(mut c: Obj<'_>, cx: &mut Cx) -> Option<RelpOutputConfig> {
    let network = network_keys(&mut c, false, true, cx);
    if network.as_ref().is_some_and(|n| n.internal_messages) {
        cx.error(
            &c.path("internal_messages"),
            "is not supported by relp outputs (only devo_platform and syslog outputs carry the collector's own messages); remove it".into(),
        );
    }
    let window_size = c
        .number("window_size", 1.0, 100_000.0, true, cx)
        .map_or(DEFAULT_WINDOW_SIZE, |n| n as usize);
    c.finish(cx);
    Some(RelpOutputConfig {
        network: network?,
        window_size,
    })
}

#[cfg(test)]
mod relp_tests {
    use std::path::Path;

    use crate::config::{Config, OutputKind};
    use crate::output::relp::DEFAULT_WINDOW_SIZE;

    fn parse(outputs: &str, dir: &Path) -> Result<Config, Vec<String>> {
        let text = format!(
            "globals: {{id: t, name: t, persistence: {{type: memory}}}}\noutputs:\n{outputs}inputs:\n  proofpoint_isolation:\n    id: 1\n    credentials: {{api_key: \"1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c9z\"}}\n"
        );
        let now = crate::timestamp::parse_user_time("2026-01-01T00:00:00Z").unwrap();
        Config::parse(&text, dir, &|_: &str| None, now)
    }

    #[test]
    fn relp_outputs_take_the_devo_tls_keys_and_a_window() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        for f in ["chain.crt", "c.crt", "c.key"] {
            std::fs::write(dir.path().join("certs").join(f), "x").unwrap();
        }
        let c = parse(
            "  r:\n    type: relp\n    config: {address: relay.example, port: 2514, chain: chain.crt, cert: c.crt, key: c.key}\n  p:\n    type: relp\n    config: {address: 10.0.0.1, port: 20514, tls: false, window_size: 16}\n",
            dir.path(),
        )
        .unwrap();
        let OutputKind::Relp(r) = &c.outputs[0].kind else {
            panic!("{:?}", c.outputs[0].kind)
        };
        assert_eq!(r.window_size, DEFAULT_WINDOW_SIZE);
        let tls = r.network.tls.as_ref().unwrap();
        assert_eq!(tls.cert, dir.path().join("certs/c.crt"));
        assert!(tls.check_hostname);
        let OutputKind::Relp(p) = &c.outputs[1].kind else {
            panic!("{:?}", c.outputs[1].kind)
        };
        assert_eq!((p.window_size, p.network.port), (16, 20514));
        assert!(p.network.tls.is_none());
    }

    #[test]
    fn relp_without_tls_files_says_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let errors = parse(
            "  r: {type: relp, config: {address: a, port: 2514, window_size: 0}}\n  s: {type: relp}\n  t: {type: relp, config: {address: a, port: 1, tls: false, internal_messages: true}}\n",
            dir.path(),
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "outputs.r.config.chain: TLS needs `cert` and `key`",
            "outputs.r.config.window_size:",
            "outputs.s.config: missing; needs at least `address`",
            "outputs.t.config.internal_messages: is not supported by relp",
        ] {
            assert!(all.contains(needle), "{needle:?} in\n{all}");
        }
    }
}
