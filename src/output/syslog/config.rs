//! Reading the `devo_platform` and `syslog` outputs' configuration (and Devo's other names for
//! them) into the keys the network outputs share ([`NetworkOutputConfig`]).

use crate::output::net::config::network_keys;
use crate::output::net::NetworkOutputConfig;
use crate::yaml_walker::{join, Cx, Obj};

/// Reads the `config` of an output of type `kind` (`devo_platform`, `relay`, `syslog`,
/// `in_house_relay`, `sidecar`) at `path`. `None` (the errors recorded) if missing or invalid.
pub(crate) fn parse_config(
    kind: &str,
    config: Option<Obj<'_>>,
    path: &str,
    cx: &mut Cx,
) -> Option<NetworkOutputConfig> {
    let devo = matches!(kind, "devo_platform" | "relay");
    match config {
        Some(c) => parse_network_output(c, devo, cx),
        None => {
            cx.error(
                &join(path, "config"),
                "missing; needs at least `address` and `port`".into(),
            );
            None
        }
    }
}

/// Keys of Devo's sender that have no meaning here: accepted, and ignored.
const DEVO_SENDER_IGNORED: &[&str] = &[
    "type",
    "connecting_retries",
    "connecting_initial_wait_in_seconds",
    "connecting_max_wait_in_seconds",
    "sending_timeout",
    "sending_retries",
    "sending_initial_wait_in_seconds",
    "sending_max_wait_in_seconds",
    "concurrent_connections",
    "period_sender_stats_in_seconds",
    "activate_final_queue",
    "threshold_for_using_gzip_in_transport_layer",
    "compression_level",
    "compression_buffer_in_bytes",
    "generate_metrics",
];

fn parse_network_output(mut c: Obj<'_>, devo: bool, cx: &mut Cx) -> Option<NetworkOutputConfig> {
    c.ignored = DEVO_SENDER_IGNORED;
    let network = network_keys(&mut c, devo, devo, cx);
    c.finish(cx);
    network
}
