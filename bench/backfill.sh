#!/usr/bin/env bash
# End-to-end backfill benchmark: isolation-sim serves N events (Browser & Email Isolation,
# spread over 20 days) and `isolation-collector run --once` collects them all to the file
# output. Prints events/s, CPU seconds, peak RSS, API requests and bytes per event.
#
#   bash bench/backfill.sh [EVENTS]        # default 1000000
#
# Not part of CI: it takes about a minute and wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PORT_WEB=${PORT_WEB:-18180}
PORT_URL=${PORT_URL:-18181}
work=$(mktemp -d)
trap 'kill $sim_pid 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

cargo build --release --quiet --bin isolation-collector --bin isolation-sim

./target/release/isolation-sim --events "$N" --span-hours 480 --pending-polls 1 \
  --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do grep -q '^url:' "$work/sim.log" 2>/dev/null && break; sleep 0.1; done

cat >"$work/config.yaml" <<YAML
globals:
  id: bench
  name: bench
  persistence: {type: filesystem, config: {directory_name: $work/state}}
outputs:
  local: {type: file, config: {directory: $work/out}}
inputs:
  proofpoint_isolation:
    id: "10001"
    credentials: {api_key: "00000000-0000-0000-0000-000000000000"}
    services:
      browser_and_email_isolation:
        override_base_url: http://127.0.0.1:$PORT_WEB
        job_poll_initial_interval_in_seconds: 0.05
YAML

/usr/bin/time -v ./target/release/isolation-collector run --once --config "$work/config.yaml" \
  2>"$work/run.log" || { tail -20 "$work/run.log"; exit 1; }

echo "sim CPU (user+sys ticks): $(awk '{print $14+$15}' /proc/$sim_pid/stat)"
events=$(wc -l <"$work/out/tap.proofpoint.isolation.browser_and_email.jsonl")
wall=$(grep 'Elapsed (wall clock)' "$work/run.log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
user=$(grep 'User time' "$work/run.log" | awk '{print $NF}')
sys=$(grep 'System time' "$work/run.log" | awk '{print $NF}')
rss_kb=$(grep 'Maximum resident set size' "$work/run.log" | awk '{print $NF}')
stats=$(grep ' -> Statistics for this pull cycle' "$work/run.log" | tail -1)
requests=$(sed -E 's/.*Number of requests made: ([0-9]+);.*/\1/' <<<"$stats")
bytes=$(stat -c %s "$work/out/tap.proofpoint.isolation.browser_and_email.jsonl")
python3 - "$N" "$events" "$wall" "$user" "$sys" "$rss_kb" "$requests" "$bytes" <<'PY'
import sys
n, events, wall, user, sys_, rss, req, size = sys.argv[1:]
events, wall, cpu = int(events), float(wall), float(user) + float(sys_)
print(f"events served by the simulator : {int(n):,}")
print(f"events delivered (file output) : {events:,}")
print(f"wall time                      : {wall:.2f} s")
print(f"throughput                     : {events / wall:,.0f} events/s")
print(f"CPU time (user+sys)            : {cpu:.2f} s  ({cpu / events * 1e6:.2f} us/event)")
print(f"peak RSS                       : {int(rss) / 1024:.1f} MiB")
print(f"API requests                   : {req}")
print(f"bytes written per event        : {int(size) / max(events, 1):.0f}")
PY
