#!/usr/bin/env bash
# The whole benchmark, one command (not part of CI; wants a quiet machine, takes ~30 minutes):
#
#   bash scripts/bench/run.sh
#
# 1. Criterion micro-benchmarks of the hot path (benches/hot_path.rs).
# 2. End-to-end backfills (scripts/bench/backfill.sh): isolation-sim with N events, then
#    `isolation-collector run --once` to the file output and to a local mutual-TLS rsyslog.
# 3. The same backfill with iso2web (Proofpoint's community collector, PyPI, in a throwaway
#    virtualenv) posting to a local webhook receiver (scripts/bench/iso2web_wrapper.py).
# 4. Steady state: the collector as a daemon against a live simulator feed with late arrivals,
#    with iso2web run every period against the same feed.
# Each end-to-end measurement runs $REPS times; the summary shows medians and is saved with
# the raw results in $OUT (printed at the end).
#
# Knobs (environment): REPS (3), SIZES ("100000 1000000"), ISO_SIZES (same), STEADY_SECS (180),
# SKIP_MICRO=1, SKIP_STEADY=1, ISO_VENV (/tmp/isoenv), CARGO_TARGET_DIR (target).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$CARGO_TARGET_DIR/release
REPS=${REPS:-3}
SIZES=${SIZES-"100000 1000000"}
ISO_SIZES=${ISO_SIZES-$SIZES}
STEADY_SECS=${STEADY_SECS:-180}
ISO_VENV=${ISO_VENV:-/tmp/isoenv}
OUT=${OUT:-$(mktemp -d /tmp/isolation-bench.XXXXXX)}
mkdir -p "$OUT"
PORT_WEB=18180 PORT_URL=18181 PORT_RECV=18190
KEY=00000000-0000-0000-0000-000000000000
. scripts/lib/collector_config.sh
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --quiet --bin isolation-collector --bin isolation-sim
if [ ! -x "$ISO_VENV/bin/iso2web" ]; then
  python3 -m venv "$ISO_VENV" && "$ISO_VENV/bin/pip" install --quiet iso2web
fi

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM"
  echo "rustc: $(rustc --version); python: $("$ISO_VENV/bin/python" --version); iso2web $("$ISO_VENV/bin/pip" show iso2web | awk '/^Version/ {print $2}')"
} | tee "$OUT/machine.txt"

# 1. Micro-benchmarks.
if [ -z "${SKIP_MICRO:-}" ]; then
  cargo bench --quiet --bench hot_path 2>&1 | tee "$OUT/criterion.txt"
fi

# 2. Our backfills.
for n in $SIZES; do
  for mode in file tls; do
    for r in $(seq 1 "$REPS"); do
      echo "== collector backfill n=$n mode=$mode run $r/$REPS"
      PORT_WEB=$PORT_WEB PORT_URL=$PORT_URL bash scripts/bench/backfill.sh "$n" "$mode" | tee -a "$OUT/ours.log"
    done
  done
done

wait_for() { for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
start_sim() {  # start_sim LOG ARGS...: the simulator on the bench ports, waits until it listens
  local log=$1; shift
  "$BIN"/isolation-sim --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL "$@" >"$log" 2>&1 &
  sim_pid=$!; pids+=("$sim_pid")
  wait_for "$log" '^url:'
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
start_receiver() {  # start_receiver COUNT_FILE
  python3 scripts/bench/iso2web_wrapper.py receive $PORT_RECV "$1" &
  recv_pid=$!; pids+=("$recv_pid")
  wait_for "$1" '^0 0'
}

# 3. iso2web's backfills: same simulator settings as scripts/bench/backfill.sh.
wrapper=$PWD/scripts/bench/iso2web_wrapper.py
for n in $ISO_SIZES; do
  for r in $(seq 1 "$REPS"); do
    echo "== iso2web backfill n=$n run $r/$REPS"
    w=$(mktemp -d)
    start_sim "$w/sim.log" --events "$n" --span-hours 480 --pending-polls 1
    start_receiver "$w/count"
    (cd "$w" && /usr/bin/time -v "$ISO_VENV/bin/python" "$wrapper" run "http://127.0.0.1:$PORT_WEB" \
      "http://127.0.0.1:$PORT_RECV/" "$KEY" >"$w/iso2web.out" 2>"$w/time.log") || tail "$w/time.log"
    stop "$sim_pid"; stop "$recv_pid"
    python3 - "$n" "$w" <<'PY' | tee -a "$OUT/iso2web.log"
import re, sys
n, w = sys.argv[1:]
t = open(f"{w}/time.log").read()
get = lambda k: re.search(re.escape(k) + r".*?: (\S+)$", t, re.M).group(1)
p = get("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(p)))
cpu = float(get("User time (seconds)")) + float(get("System time (seconds)"))
rss = int(get("Maximum resident set size (kbytes)"))
delivered = int(open(f"{w}/count").read().split()[0])
s = re.search(r"^web stats: requests=(\d+).* events_served=(\d+) bytes_served=(\d+)", open(f"{w}/sim.log").read(), re.M)
print(f"iso2web n={n}: delivered {delivered:,} in {wall:.1f} s ({delivered / wall:,.0f} events/s), "
      f"CPU {cpu:.1f} s, peak RSS {rss / 1024:.0f} MiB, {s.group(1)} requests")
print(f"RESULT mode=iso2web n={n} delivered={delivered} wall={wall:.3f} cpu={cpu:.3f} rss_kb={rss} "
      f"requests={s.group(1)} sim_requests={s.group(1)} bytes_downloaded={s.group(3)} events_downloaded={s.group(2)}")
PY
    rm -rf "$w"
  done
done

# 4. Steady state: a live feed (20 events/s per dataset, 30% of them up to 90 s late) and the
# collector as a daemon with the late-arrival defaults scaled down (lookback 2 min, sweep every
# 0.5 min, period 5 s); iso2web runs every 5 s against the same feed, as cron would run it.
if [ -z "${SKIP_STEADY:-}" ]; then
  echo "== steady state, $STEADY_SECS s"
  w=$(mktemp -d)
  start_sim "$w/sim.log" --events 1000 --span-hours 1 --end-offset-minutes 0 --pending-polls 1 \
    --live-rate 20 --live-late-fraction 0.3 --live-late-minutes 1.5
  start_receiver "$w/count"
  cat >"$w/config.yaml" <<YAML
$(config_head_yaml bench "$w" "  local: {type: file, config: {directory: $w/out}}")
      browser_and_email_isolation:
        override_base_url: http://127.0.0.1:$PORT_WEB
        start_time_in_utc: "$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)"
        request_period_in_seconds: 5
        late_arrival_lookback_in_minutes: 2
        late_arrival_sweep_interval_in_minutes: 0.5
        job_poll_initial_interval_in_seconds: 0.01
YAML
  "$BIN"/isolation-collector run --config "$w/config.yaml" 2>"$w/run.log" &
  col_pid=$!; pids+=("$col_pid")
  mkdir -p "$w/iso"
  iso_runs=0
  end=$((SECONDS + STEADY_SECS))
  while [ $SECONDS -lt $end ]; do
    (cd "$w/iso" && "$ISO_VENV/bin/python" "$wrapper" run "http://127.0.0.1:$PORT_WEB" \
      "http://127.0.0.1:$PORT_RECV/" "$KEY" >>"$w/iso/out.log" 2>&1) || true
    iso_runs=$((iso_runs + 1))
    sleep 5
  done
  sleep 6  # let the collector finish its cycle
  stop "$col_pid"; stop "$sim_pid"; stop "$recv_pid"
  python3 - "$w" "$iso_runs" "$STEADY_SECS" <<'PY' | tee "$OUT/steady.log"
import re, sys
w, iso_runs, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = open(f"{w}/run.log").read()
cycles = [tuple(map(int, m.groups())) for m in re.finditer(
    r"Number of requests made: (\d+); Number of events received: (\d+); Number of duplicated events filtered out: (\d+); Number of events generated and sent: (\d+)", log)]
# The first two cycles are the catch-up of the hour of history; the rest is the steady state.
steady = cycles[2:]
req, recv, dup, sent = (sum(c[i] for c in steady) for i in range(4))
delivered_file = sum(1 for _ in open(f"{w}/out/tap.proofpoint.isolation.browser_and_email.jsonl"))
sim = re.search(r"^web stats: requests=(\d+).* events_served=(\d+)", open(f"{w}/sim.log").read(), re.M)
iso_delivered = int(open(f"{w}/count").read().split()[0])
iso_requests = sum(int(x) for x in re.findall(r"^bench: api_requests=(\d+)", open(f"{w}/iso/out.log").read(), re.M))
print(f"collector: {len(cycles)} cycles, steady ones: {len(steady)}: {req} requests, {recv} events downloaded, "
      f"{dup} duplicates dropped, {sent} delivered")
print(f"collector steady state: {req / max(sent, 1):.4f} API requests and {recv / max(sent, 1):.2f} events downloaded per delivered event")
print(f"collector delivered in total (file): {delivered_file}")
print(f"iso2web: {iso_runs} runs, {iso_requests} API requests, delivered {iso_delivered} in total "
      f"(simulator, both collectors together: {sim.group(1)} requests, {sim.group(2)} events served)")
print(f"RESULT mode=steady secs={secs} requests={req} downloaded={recv} duplicates={dup} sent={sent} "
      f"collector_total={delivered_file} iso_runs={iso_runs} iso_requests={iso_requests} iso_delivered={iso_delivered}")
PY
  rm -rf "$w"
fi

python3 scripts/bench/summary.py "$OUT" | tee "$OUT/summary.txt"
echo "raw results: $OUT"
