#!/usr/bin/env bash
# The receiver's own limit: the same local rsyslog as `backfill.sh N tls|relp` (same config,
# same certificates: scripts/lib/tls_receiver.sh), fed by the raw sender
# (examples/raw_tls_sender.rs) instead of the collector. The raw sender formats the simulator's
# N events as the collector's records in memory before its clock starts, then sends them on one
# connection (tls: 64 KiB writes, close_notify, the receiver's close awaited; relp: a session
# with a window of WINDOW commands, each acknowledged). The collector's TLS delivery is
# compared with this: its events/s over the raw sender's.
#
#   bash scripts/bench/raw_sender.sh [EVENTS] [tls|relp]       # defaults: 1000000 tls
#
# Prints `SETTINGS ...` and `RESULT ...` lines as backfill.sh does (mode raw_tls or raw_relp,
# label `raw sender, TLS|RELP`), which scripts/bench/summary.py reads like a backfill row: wall
# is the sending alone (first connect to the receiver's proof), cpu the sender's CPU over it,
# receiver_cpu rsyslog's CPU over the whole run (certificates aside). Knobs: SPAN_HOURS [480],
# WINDOW [4096, the relp output's default], PORT_TLS [18443], SKIP_BUILD [unset; 1: use the
# example as built], CARGO_TARGET_DIR [target].
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
MODE=${2:-tls}
SPAN_HOURS=${SPAN_HOURS:-480}
WINDOW=${WINDOW:-4096}
PORT_TLS=${PORT_TLS:-18443}
case "$MODE" in tls) label="raw sender, TLS" ;; relp) label="raw sender, RELP" ;;
  *) echo "mode must be tls or relp, not $MODE" >&2; exit 64 ;; esac
work=$(mktemp -d)
rsyslog_pid=
trap 'kill $rsyslog_pid 2>/dev/null && wait $rsyslog_pid 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --example raw_tls_sender
BIN=${CARGO_TARGET_DIR:-target}/release/examples/raw_tls_sender

. scripts/lib/tls_receiver.sh
start_receiver "$MODE" "$work" "$PORT_TLS"
rsyslog_ticks0=$(cpu_ticks "$rsyslog_pid")
echo "SETTINGS mode=raw_$MODE n=$N span_hours=$SPAN_HOURS window=$WINDOW"
"$BIN" "$MODE" "$N" "$SPAN_HOURS" "$PORT_TLS" "$c/ca.crt" "$c/client.crt" "$c/client.key" "$WINDOW" \
  >"$work/sender.log" 2>&1 || { cat "$work/sender.log"; exit 1; }
wait_settled "$work/received.log"
receiver_ticks=$(($(cpu_ticks "$rsyslog_pid") - rsyslog_ticks0))
events=$(wc -l <"$work/received.log")
python3 - "$MODE" "$N" "$events" "$receiver_ticks" "$label" "$(cat "$work/sender.log")" <<'PY'
import sys
mode, n, events, ticks, label, sender = sys.argv[1:]
kv = dict(f.split("=", 1) for f in sender.split())
events, wall, cpu, rcpu = int(events), float(kv["wall"]), float(kv["cpu"]), int(ticks) / 100
print(f"{label}: {events:,} of {int(n):,} events received")
print(f"wall time (sending)            : {wall:.2f} s")
print(f"throughput                     : {events / wall:,.0f} events/s")
print(f"sender CPU                     : {cpu:.2f} s  ({cpu / max(events, 1) * 1e6:.2f} us/event)")
print(f"receiver (rsyslog) CPU         : {rcpu:.2f} s  ({rcpu / max(events, 1) * 1e6:.2f} us/event)")
print(f"RESULT mode=raw_{mode} n={n} delivered={events} wall={wall:.3f} cpu={cpu:.3f} "
      f"receiver_cpu={rcpu:.2f} bytes={kv['bytes']}")
PY
