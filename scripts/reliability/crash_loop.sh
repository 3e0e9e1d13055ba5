#!/usr/bin/env bash
# Crash loop (not in CI): ITERATIONS backfills of both services into a file output, a
# mutual-TLS rsyslog (the devo_platform output) and a second rsyslog with imrelp over mutual TLS
# (the relp output). In each iteration the collector is `kill -9`ed
# at random moments and restarted until a run completes; then the file output and what rsyslog
# stored are compared with the simulator's full event set (`isolation-sim --dump-events` with
# the same seed and a pinned --anchor), counting missing and duplicated events per output.
#
#   bash scripts/reliability/crash_loop.sh [ITERATIONS] [EVENTS_PER_DATASET]   # defaults: 50 20000
#
# Env: PROFILE=debug|release (default debug), CARGO_TARGET_DIR, KEEP=1 keeps the work dir,
# KILL_MAX_MS (default 1500): kills land uniformly in 30..KILL_MAX_MS ms after a start.
# Exit status 1 when any event was missing from any output, or duplicated in the file output.
set -euo pipefail
cd "$(dirname "$0")/../.."
ITER=${1:-50}
N=${2:-20000}
PROFILE=${PROFILE:-debug}
KILL_MAX_MS=${KILL_MAX_MS:-1500}
PORT_WEB=${PORT_WEB:-18280}
PORT_URL=${PORT_URL:-18281}
PORT_TLS=${PORT_TLS:-18543}
PORT_RELP=${PORT_RELP:-18544}
WINDOW=1500   # max_events_per_window: the bound on one unconfirmed batch
work=$(mktemp -d)
sim_pid=; rsyslog_pid=; relp_pid=; coll_pid=
cleanup() {
  for p in $coll_pid $sim_pid $rsyslog_pid $relp_pid; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin isolation-collector --bin isolation-sim
else
  cargo build --quiet --bin isolation-collector --bin isolation-sim
fi
bin="${CARGO_TARGET_DIR:-target}/$PROFILE"

# Certificates: a CA, a server and a client certificate (as scripts/bench/backfill.sh tls).
c="$work/certs"
. scripts/lib/tls_receiver.sh
. scripts/lib/collector_config.sh
make_pki "$c"

rand_ms() { python3 -c "import random; print(random.randint(30, $KILL_MAX_MS))"; }

total_kills=0; total_file_missing=0; total_file_dup=0; total_tls_missing=0; total_tls_dup=0
max_tls_dup=0; iters_with_tls_dup=0; failed=0; total_relp_missing=0; total_relp_dup=0; max_relp_dup=0
printf '%-5s %-6s %-8s %-13s %-13s %-13s %-13s %-13s %-13s\n' iter kills events file_missing file_dup tls_missing tls_dup relp_missing relp_dup
for i in $(seq 1 "$ITER"); do
  it="$work/it$i"; mkdir -p "$it/rsyslog"
  anchor=$(date -u -d '-2 min' +%Y-%m-%dT%H:%M:%SZ)
  sim_args=(--events "$N" --seed "$i" --anchor "$anchor" --span-hours 48 --shuffle
            --page-size-cap 700 --identical-fraction 0.02 --burst-fraction 0.1)
  "$bin/isolation-sim" "${sim_args[@]}" --dump-events >"$it/expected"
  "$bin/isolation-sim" "${sim_args[@]}" --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL \
    >"$it/sim.log" 2>&1 &
  sim_pid=$!
  start_rsyslog_relp "$it/relp" "$c" "$PORT_RELP"
  relp_pid=$rsyslog_pid
  start_rsyslog "$it" "$c" "$PORT_TLS"
  for _ in $(seq 1 100); do grep -q '^url:' "$it/sim.log" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  outputs="  local: {type: file, config: {directory: $it/out}}
$(devo_output_yaml "$c" "$PORT_TLS")
$(relp_output_yaml "$c" "$PORT_RELP")"
  cat >"$it/config.yaml" <<YAML
$(config_head_yaml crash "$it" "$outputs")
      browser_and_email_isolation:
        override_base_url: http://127.0.0.1:$PORT_WEB
        job_poll_initial_interval_in_seconds: 0.02
        page_size: 500
        max_events_per_window: $WINDOW
      url_isolation:
        override_base_url: http://127.0.0.1:$PORT_URL
        job_poll_initial_interval_in_seconds: 0.02
        page_size: 500
        max_events_per_window: $WINDOW
YAML
  kills=0; done_ok=
  for _ in $(seq 1 300); do
    "$bin/isolation-collector" run --once --config "$it/config.yaml" >/dev/null 2>>"$it/run.log" &
    coll_pid=$!
    ms=$(rand_ms); sleep "$(awk "BEGIN{print $ms/1000}")"
    if kill -0 "$coll_pid" 2>/dev/null && kill -9 "$coll_pid" 2>/dev/null; then
      wait "$coll_pid" 2>/dev/null || true
      kills=$((kills + 1))
    else
      if wait "$coll_pid"; then done_ok=1; coll_pid=; break; fi
      echo "iteration $i: a run that was not killed failed; see $it/run.log" >&2
      coll_pid=
      break
    fi
    coll_pid=
  done
  if [ -z "$done_ok" ]; then
    # Let one run finish undisturbed (the kill window may be shorter than a whole backfill).
    "$bin/isolation-collector" run --once --config "$it/config.yaml" >/dev/null 2>>"$it/run.log" || {
      echo "iteration $i: the final run failed; see $it/run.log" >&2; failed=1; }
  fi
  # rsyslog writes asynchronously: wait until the count settles.
  prev=-1; while :; do cur=$(cat "$it/received.log" "$it/relp/received.log" 2>/dev/null | wc -l); [ "$cur" = "$prev" ] && break; prev=$cur; sleep 0.5; done
  read -r events fm fd tm td rm rd < <(python3 - "$it" <<'PY'
import collections, sys
it = sys.argv[1]
tables = {"web": "tap.proofpoint.isolation.browser_and_email", "url": "tap.proofpoint.isolation.url_isolation"}
want = collections.Counter()
for line in open(f"{it}/expected"):
    ds, ev = line.rstrip("\n").split(" ", 1)
    want[(tables[ds], ev)] += 1
def diff(got):
    missing = sum(max(0, n - got[k]) for k, n in want.items())
    extra = sum(max(0, n - want[k]) for k, n in got.items())
    return missing, extra
f = collections.Counter()
for t in tables.values():
    try:
        for line in open(f"{it}/out/{t}.jsonl"):
            f[(t, line.rstrip("\n"))] += 1
    except FileNotFoundError:
        pass
def received(path):
    s = collections.Counter()
    try:
        for line in open(path):
            # <14>YYYY-MM-DD HH:MM:SS.mmm HOST TABLE: JSON
            parts = line.rstrip("\n").split(" ", 4)
            s[(parts[3].rstrip(":"), parts[4])] += 1
    except FileNotFoundError:
        pass
    return s
print(sum(want.values()), *diff(f), *diff(received(f"{it}/received.log")),
      *diff(received(f"{it}/relp/received.log")))
PY
)
  printf '%-5s %-6s %-8s %-13s %-13s %-13s %-13s %-13s %-13s\n' "$i" "$kills" "$events" "$fm" "$fd" "$tm" "$td" "$rm" "$rd"
  total_relp_missing=$((total_relp_missing + rm)); total_relp_dup=$((total_relp_dup + rd))
  [ "$rd" -gt "$max_relp_dup" ] && max_relp_dup=$rd
  [ "$rm" -ne 0 ] && failed=1
  if [ "$rd" -gt $((kills * WINDOW * 2)) ]; then echo "iteration $i: RELP duplicates above the bound" >&2; failed=1; fi
  total_kills=$((total_kills + kills)); total_file_missing=$((total_file_missing + fm))
  total_file_dup=$((total_file_dup + fd)); total_tls_missing=$((total_tls_missing + tm))
  total_tls_dup=$((total_tls_dup + td)); [ "$td" -gt "$max_tls_dup" ] && max_tls_dup=$td
  [ "$td" -gt 0 ] && iters_with_tls_dup=$((iters_with_tls_dup + 1))
  if [ "$fm" -ne 0 ] || [ "$fd" -ne 0 ] || [ "$tm" -ne 0 ]; then failed=1; fi
  # The bound: at most one unconfirmed window (max_events_per_window) per kill, per service.
  if [ "$td" -gt $((kills * WINDOW * 2)) ]; then echo "iteration $i: TLS duplicates above the bound" >&2; failed=1; fi
  kill -9 "$sim_pid" "$rsyslog_pid" "$relp_pid" 2>/dev/null || true
  wait "$sim_pid" "$rsyslog_pid" "$relp_pid" 2>/dev/null || true
  sim_pid=; rsyslog_pid=; relp_pid=
  [ -n "${KEEP:-}" ] || rm -rf "$it/out" "$it/received.log" "$it/relp/received.log" "$it/expected"
done
echo "summary: iterations=$ITER events_per_iteration=$((N * 2)) kill9=$total_kills" \
  "file: missing=$total_file_missing duplicated=$total_file_dup" \
  "tls: missing=$total_tls_missing duplicated=$total_tls_dup (max $max_tls_dup in one iteration, $iters_with_tls_dup iteration(s) with any)" \
  "relp: missing=$total_relp_missing duplicated=$total_relp_dup (max $max_relp_dup in one iteration)"
exit $failed
