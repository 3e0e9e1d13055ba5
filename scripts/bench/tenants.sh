#!/usr/bin/env bash
# Many tenants in one process (issue 12), one command on a fresh machine (not part of CI):
#
#   bash scripts/bench/tenants.sh              # alone, about 6 minutes; run.sh runs it as its part `tenants`
#   WRITE_DOC=1 bash scripts/bench/tenants.sh  # the same, and its section of docs/performance.md rewritten
#
# It builds hook-free release binaries (as run.sh does), starts `isolation-sim` in multi-key
# mode (`--keys TENANTS --key-prefix tenant-`: every key a tenant with its own TENANT_EVENTS
# events per dataset, 24 hours of them ending 5 minutes before the start), writes a config of
# TENANTS inputs x 2 services on it (each input its key, every other setting the collector's
# default, the file output) and runs the collector daemon (`run`). scripts/bench/tenants.py
# measures the peak RSS, the time until every tenant is up to date, the CPU per idle pull cycle
# per service over IDLE_SECS, and compares every tenant's files with its events (exact: nothing
# missing, nothing twice). Its RESULT lines go to OUT/tenants.log, its summary to
# OUT/tenants-summary.txt; scripts/bench/report.py renders the "1,000 tenants" section of
# docs/performance.md from them (`report.py --splice docs/performance.md OUT` replaces that
# section alone, which WRITE_DOC=1 does here).
#
# Knobs (environment, defaults in brackets): TENANTS [1000], TENANT_EVENTS [100: per tenant and
# service], TENANTS_FORM [dir: `inputs_dir`, one file per tenant; list: one list of blocks],
# IDLE_SECS [180: three of the default 60 s request periods], CATCHUP_LIMIT [900 s],
# OUT [a new /tmp/isolation-bench-tenants.*], TENANTS_PORT_BASE [18480: simulator web, +1 url],
# SKIP_BUILD [unset; 1: run.sh built the binaries], WRITE_DOC [unset].
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export BIN=$CARGO_TARGET_DIR/release
TENANTS=${TENANTS:-1000}
TENANT_EVENTS=${TENANT_EVENTS:-100}
TENANTS_FORM=${TENANTS_FORM:-dir}
IDLE_SECS=${IDLE_SECS:-180}
OUT=${OUT:-$(mktemp -d /tmp/isolation-bench-tenants.XXXXXX)}
mkdir -p "$OUT"
P=${TENANTS_PORT_BASE:-18480}
PORT_WEB=$P PORT_URL=$((P + 1))
# Two thousand services hold their outputs' files and their API connections open.
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  # A binary that `cargo bench` or `cargo test --release` left holds the test hooks: rebuild, and
  # refuse to measure one that still does (see run.sh's build_release).
  cargo build --release --quiet --bin isolation-collector --bin isolation-sim
fi
if grep -qa ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME "$BIN/isolation-collector"; then
  echo "tenants.sh: $BIN/isolation-collector holds the test hooks; not measuring it" >&2
  exit 1
fi

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "tree: $(git describe --always --dirty 2>/dev/null || echo unknown); binary: built $(date -u -r "$BIN/isolation-collector" +%Y-%m-%dT%H:%MZ), sha256 $(sha256sum "$BIN/isolation-collector" | cut -c1-12); date: $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$OUT/tenants-machine.txt"

w="$OUT/work"
rm -rf "$w"; mkdir -p "$w"
anchor=$(date -u -d '-5 min' +%Y-%m-%dT%H:%M:%SZ)
sim=("$BIN"/isolation-sim --keys "$TENANTS" --key-prefix tenant- --events "$TENANT_EVENTS" --anchor "$anchor"
  --span-hours 24 --pending-polls 0)
"${sim[@]}" --dump-events >"$w/expected"
"${sim[@]}" --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL >"$w/sim.log" 2>&1 &
sim_pid=$!; pids+=("$sim_pid")
for _ in $(seq 1 300); do grep -q '^keys:' "$w/sim.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^keys:' "$w/sim.log" || { cat "$w/sim.log"; exit 1; }
python3 scripts/bench/tenants.py config "$w" "$TENANTS" "$TENANTS_FORM" "$PORT_WEB" "$PORT_URL"
"$BIN"/isolation-collector validate --config "$w/config.yaml" >"$w/validate.log" 2>&1 || { tail -20 "$w/validate.log"; exit 1; }

echo "SETTINGS part=tenants tenants=$TENANTS events=$TENANT_EVENTS form=$TENANTS_FORM idle_secs=$IDLE_SECS" \
  "period=60 poll_initial=2 output=file sim_pending_polls=0" | tee "$OUT/tenants.log"
python3 scripts/bench/tenants.py run "$w" "$TENANTS" "$IDLE_SECS" | tee -a "$OUT/tenants.log"
kill -TERM "$sim_pid"; wait "$sim_pid" || true
# The simulator's request statistics, both listeners (it prints them as it stops).
grep -E '^(web|url) stats:' "$w/sim.log" | sed -E 's/^(web|url) stats: /RESULT part=sim dataset=\1 /' \
  | tee -a "$OUT/tenants.log"
python3 scripts/bench/tenants.py summary "$OUT" | tee "$OUT/tenants-summary.txt"
if [ -n "${WRITE_DOC:-}" ]; then
  python3 scripts/bench/report.py --splice docs/performance.md "$OUT"
fi
rm -f "$w/expected"  # tens of MB; the simulator dumps it again from the same flags
echo "raw results: $OUT"
