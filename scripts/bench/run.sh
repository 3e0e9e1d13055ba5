#!/usr/bin/env bash
# The whole benchmark, one command on a fresh machine (not part of CI; wants a quiet machine,
# takes about 35 minutes on 2 cores (1,937 s at beb316b), see the README's Benchmark section):
#
#   bash scripts/bench/run.sh            # everything; WRITE_DOC=1 also rewrites docs/performance.md
#
# Every figure and ratio is computed from the runs of this one invocation (summary.py), and
# docs/performance.md is generated from the results directory (report.py). Parts, in order:
#   micro     Criterion micro-benchmarks of the hot path (benches/hot_path.rs), per event.
#   callgrind `valgrind --tool=callgrind` of `run --once`, a CALLGRIND_N-event backfill to the
#             file output: instructions per delivered event, SHA-256 (software path) apart.
#   backfill  backfills of each of SIZES events to the file output and to a local mutual-TLS
#             rsyslog (scripts/bench/backfill.sh).
#   relp      the relp output against the TLS syslog output: RELP_N-event backfills to a local
#             rsyslog over mutual TLS, imtcp (devo_platform) and imrelp (relp) interleaved; and
#             RELP_CRASH_ITER iterations of scripts/reliability/crash_loop.sh (events re-sent
#             per kill -9, both outputs in the same runs).
#   both      both services in one process, the collector's default config, BOTH_SIZES events each.
#   iso       iso2web (Proofpoint's community collector, PyPI, in a virtualenv) at ISO_N events,
#             posting to a local webhook receiver (scripts/bench/iso2web_wrapper.py); with
#             ISO_N = CURVE_N these runs are also the curve's 0 s row for iso2web.
#   curve     the job latency curve: LATENCIES (ms) at CURVE_N events over 30 days, ours with
#             the default config at max_concurrent_jobs default and 16, and iso2web.
#   steady    the collector as a daemon against a live feed with late arrivals, iso2web every 5 s.
#   ha        high availability on Redis (scripts/bench/ha.sh, its knobs there): takeover times
#             after kill -9 and SIGTERM, records re-sent per takeover, Redis operations per
#             cycle; its summary is OUT/ha/ha-summary.txt, quoted in docs/reliability.md.
#   tenants   1,000 tenants x 2 services in one collector process against the simulator's
#             multi-key mode (scripts/bench/tenants.sh, its knobs there): peak RSS, time until
#             every tenant is up to date, CPU per idle pull cycle per service, exact delivery per
#             tenant; results in OUT/tenants, in docs/performance.md's "1,000 tenants" section.
# Each end-to-end measurement runs REPS times (the curve: see CURVE_REPS); the summary shows
# medians. Rough minutes per part, estimated from single 1,000,000-event runs on a loaded 2-core
# machine: micro 4, callgrind 1, backfill 2, both 3, iso 6 (iso2web: ~2 min and ~1.7 GB a run),
# curve 23 (ours ~1 min a run, iso2web ~2), steady 2, tenants 6.
#
# Knobs (environment, defaults in brackets): PARTS ["micro callgrind backfill relp both iso curve
# steady ha tenants"], REPS [3], RELP_N [100000], RELP_CRASH_ITER [5: crash-loop iterations for relp],
# SIZES ["100000 1000000"], BOTH_SIZES [same], ISO_N [1000000],
# CURVE_N [1000000], LATENCIES ["0 2000 5000 10000"], CURVE_MCJ ["default 16"],
# CURVE_REPS [1: runs per side at the curve's latencies other than TARGET_LATENCY, 5000,
# which gets REPS], CALLGRIND_N [100000], STEADY_SECS [120], OUT [a new /tmp/isolation-bench.*],
# ISO_VENV [/tmp/isoenv], PORT_BASE [18180: simulator web, +1 url, +10 receiver, +20 TLS],
# WRITE_DOC [unset; 1: write docs/performance.md, else it is written into OUT].
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$CARGO_TARGET_DIR/release
PARTS=${PARTS-"micro callgrind backfill relp both iso curve steady ha tenants"}
RELP_N=${RELP_N:-100000}
RELP_CRASH_ITER=${RELP_CRASH_ITER:-5}
REPS=${REPS:-3}
SIZES=${SIZES-"100000 1000000"}
BOTH_SIZES=${BOTH_SIZES-$SIZES}
ISO_N=${ISO_N:-1000000}
CURVE_N=${CURVE_N:-1000000}
LATENCIES=${LATENCIES-"0 2000 5000 10000"}
CURVE_MCJ=${CURVE_MCJ-"default 16"}
TARGET_LATENCY=5000
CURVE_REPS=${CURVE_REPS:-1}
CALLGRIND_N=${CALLGRIND_N:-100000}
STEADY_SECS=${STEADY_SECS:-120}
ISO_VENV=${ISO_VENV:-/tmp/isoenv}
OUT=${OUT:-$(mktemp -d /tmp/isolation-bench.XXXXXX)}
mkdir -p "$OUT"
PORT_BASE=${PORT_BASE:-18180}
PORT_WEB=$PORT_BASE PORT_URL=$((PORT_BASE + 1)) PORT_RECV=$((PORT_BASE + 10))
export PORT_WEB PORT_URL PORT_TLS=$((PORT_BASE + 20)) SKIP_BUILD=1
# Every backfill's events span 30 days, the API's retention (719 h: the oldest stay inside it
# while a run starts), and a job completes once its latency has passed (no extra PENDING answer).
export SPAN_HOURS=719 PENDING_POLLS=0
KEY=00000000-0000-0000-0000-000000000000
. scripts/lib/collector_config.sh
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
started=$SECONDS

# What it needs: release binaries, iso2web in a virtualenv, valgrind, rsyslog, GNU time.
# Every measurement must run what a user runs: a release build without the test hooks. `cargo
# bench` builds the package's binaries too, with the same features (no `test-hooks`; see
# .ci/check_hooks.sh); the build after the micro part and the refusal of a binary holding a hook
# stay, in case another build with the feature wrote target/release meanwhile.
build_release() {
  cargo build --release --quiet --bin isolation-collector --bin isolation-sim
  if grep -qa ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME "$BIN/isolation-collector"; then
    echo "run.sh: $BIN/isolation-collector holds the test hooks; not measuring it" >&2
    exit 1
  fi
}
build_release
if { has_part iso || has_part curve || has_part steady; } && [ ! -x "$ISO_VENV/bin/iso2web" ]; then
  python3 -m venv "$ISO_VENV" && "$ISO_VENV/bin/pip" install --quiet iso2web
fi
need() {  # need COMMAND PACKAGE: install PACKAGE with apt-get when root, else say what is missing
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null || { echo "run.sh: '$1' is missing: install the '$2' package (as root: apt-get install $2), or leave its part out of PARTS" >&2; exit 1; }
}
[ -x /usr/bin/time ] || need /usr/bin/time time
has_part callgrind && need valgrind valgrind && need callgrind_annotate valgrind
{ has_part backfill || has_part both || has_part relp; } && need rsyslogd rsyslog
if has_part relp && ! ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1; then
  echo "run.sh: rsyslog's imrelp is missing: apt-get install rsyslog-relp, or leave relp out of PARTS" >&2; exit 1
fi

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "rustc: $(rustc --version); collector: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  [ -x "$ISO_VENV/bin/python" ] && echo "python: $("$ISO_VENV/bin/python" --version); iso2web $("$ISO_VENV/bin/pip" show iso2web | awk '/^Version/ {print $2}')"
  command -v valgrind >/dev/null && echo "valgrind: $(valgrind --version)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); parts: $PARTS; REPS=$REPS"
} | tee "$OUT/machine.txt"

# backfill GROUP N MODE [VAR=VALUE...]: one run of scripts/bench/backfill.sh, its SETTINGS and
# RESULT lines tagged with GROUP, appended to ours.log.
backfill() {
  local group=$1 n=$2 mode=$3; shift 3
  echo "== ours: $group n=$n mode=$mode $*"
  env "$@" bash scripts/bench/backfill.sh "$n" "$mode" | sed -E "s/^(RESULT|SETTINGS) /\1 group=$group /" | tee -a "$OUT/ours.log"
}

# 1. Micro-benchmarks: Criterion's median per page over the page's elements (its Throughput).
if has_part micro; then
  touch "$OUT/.micro-start"
  cargo bench --quiet --bench hot_path 2>&1 | tee "$OUT/criterion.txt"
  build_release  # the release profile the measurements use (see build_release)
  python3 - "$CARGO_TARGET_DIR/criterion/hot_path" "$OUT" <<'PY'
import json, os, sys
root, out = sys.argv[1:]
start = os.path.getmtime(f"{out}/.micro-start")
rows = {}
for name in sorted(os.listdir(root)):
    est, bench = f"{root}/{name}/new/estimates.json", f"{root}/{name}/new/benchmark.json"
    if not os.path.exists(est) or os.path.getmtime(est) < start:
        continue  # not run by this invocation
    elements = (json.load(open(bench)).get("throughput") or {}).get("Elements") or 1
    rows[name] = json.load(open(est))["median"]["point_estimate"] / 1000 / elements
json.dump(rows, open(f"{out}/criterion.json", "w"), indent=1)
PY
fi

# 2. Instruction counts: one run suffices, they repeat exactly.
if has_part callgrind; then
  backfill callgrind "$CALLGRIND_N" file CALLGRIND="$OUT/callgrind.out"
  callgrind_annotate --inclusive=yes --threshold=100 "$OUT/callgrind.out" >"$OUT/callgrind.txt" 2>/dev/null
  callgrind_annotate "$OUT/callgrind.out" >"$OUT/callgrind-self.txt" 2>/dev/null  # where the time goes
fi

# 3. Our backfills; the bench shortens the poll interval (0.01 s, see backfill.sh); the curve's
# 0 s row is the default's figure.
if has_part backfill; then
  for n in $SIZES; do
    for mode in file tls; do
      for r in $(seq 1 "$REPS"); do backfill "$mode" "$n" "$mode"; done
    done
  done
fi

# 3b. RELP against TLS syslog, same events, same rsyslog, interleaved (tls relp tls relp ...):
# the TLS syslog output proves delivery per connection, the relp output per record.
if has_part relp; then
  for r in $(seq 1 "$REPS"); do
    backfill relp-vs-tls "$RELP_N" tls
    backfill relp "$RELP_N" relp
  done
  # Events re-sent per crash, both outputs in the same runs: the crash loop kills the collector
  # (kill -9) at random moments of backfills into both receivers and counts what each stored.
  PROFILE=release PORT_WEB=$PORT_WEB PORT_URL=$PORT_URL PORT_TLS=$((PORT_BASE + 30)) \
    PORT_RELP=$((PORT_BASE + 31)) bash scripts/reliability/crash_loop.sh "$RELP_CRASH_ITER" 20000 \
    | tee "$OUT/relp-crash.log"
fi

# 4. Both services in one process, the default config (nothing changed, not even the poll).
if has_part both; then
  for n in $BOTH_SIZES; do
    for r in $(seq 1 "$REPS"); do backfill both "$n" file SERVICES=both POLL_INITIAL=default; done
  done
fi

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

# iso2web GROUP N LATENCY_MS SPAN_HOURS PENDING_POLLS: one iso2web run against the simulator,
# its SETTINGS and RESULT lines appended to iso2web.log.
wrapper=$PWD/scripts/bench/iso2web_wrapper.py
iso2web() {
  local group=$1 n=$2 lat=$3 span=$4 pending=$5 w
  echo "== iso2web: $group n=$n job latency $lat ms"
  w=$(mktemp -d)
  start_sim "$w/sim.log" --events "$n" --span-hours "$span" --pending-polls "$pending" --job-latency-ms "$lat"
  start_receiver "$w/count"
  (cd "$w" && /usr/bin/time -v "$ISO_VENV/bin/python" "$wrapper" run "http://127.0.0.1:$PORT_WEB" \
    "http://127.0.0.1:$PORT_RECV/" "$KEY" >"$w/iso2web.out" 2>"$w/time.log") || tail "$w/time.log"
  stop "$sim_pid"; stop "$recv_pid"
  echo "SETTINGS group=$group mode=iso2web n=$n services=web span_hours=$span pending_polls=$pending" \
    "job_latency_ms=$lat job_latency_ms_per_10k=0 page_latency_ms=0 poll_initial=0 page_size=10000 chunk_size=10000" \
    | tee -a "$OUT/iso2web.log"
  python3 - "$n" "$w" "$group" "$lat" <<'PY' | tee -a "$OUT/iso2web.log"
import re, sys
n, w, group, lat = sys.argv[1:]
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
print(f"RESULT group={group} mode=iso2web n={n} delivered={delivered} wall={wall:.3f} cpu={cpu:.3f} rss_kb={rss} "
      f"requests={s.group(1)} sim_requests={s.group(1)} bytes_downloaded={s.group(3)} events_downloaded={s.group(2)} "
      f"first_job={int(lat) / 1000:.3f}")
PY
  rm -rf "$w"
}

# 5. iso2web's backfills, the simulator as for ours; they are also the curve's 0 s row.
if has_part iso; then
  for r in $(seq 1 "$REPS"); do iso2web iso "$ISO_N" 0 "$SPAN_HOURS" "$PENDING_POLLS"; done
fi

# 6. The job latency curve, jobs that complete LATENCY ms after their creation. Ours runs the
# default config, as a user would (at 0 s: the default poll interval's figure). REPS runs at the
# target latency, CURVE_REPS elsewhere.
if has_part curve; then
  for lat in $LATENCIES; do
    reps=$CURVE_REPS; [ "$lat" = "$TARGET_LATENCY" ] && reps=$REPS
    for mcj in $CURVE_MCJ; do
      for r in $(seq 1 "$reps"); do
        backfill "curve-$lat-mcj-$mcj" "$CURVE_N" file JOB_LATENCY_MS="$lat" POLL_INITIAL=default \
          $([ "$mcj" = default ] || echo MAX_CONCURRENT_JOBS="$mcj")
      done
    done
    if [ "$lat" = 0 ] && has_part iso && [ "$ISO_N" = "$CURVE_N" ]; then continue; fi  # done in part 5
    for r in $(seq 1 "$reps"); do iso2web "curve-$lat-iso2web" "$CURVE_N" "$lat" "$SPAN_HOURS" "$PENDING_POLLS"; done
  done
fi

# 7. Steady state: a live feed (20 events/s per dataset, 30% of them up to 90 s late) and the
# collector as a daemon with the late-arrival defaults scaled down (lookback 2 min, sweep every
# 0.5 min, period 5 s); iso2web runs every 5 s against the same feed, as cron would run it.
if has_part steady; then
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
  echo "SETTINGS group=steady secs=$STEADY_SECS live_rate=20 late_fraction=0.3 late_minutes=1.5 period=5 lookback_minutes=2 sweep_minutes=0.5 poll_initial=0.01" >"$OUT/steady.log"
  python3 - "$w" "$iso_runs" "$STEADY_SECS" <<'PY' | tee -a "$OUT/steady.log"
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

# 8. High availability: its own script (also run alone), on the binaries built above.
if has_part ha; then
  OUT="$OUT/ha" SKIP_BUILD=1 bash scripts/bench/ha.sh
fi

# 9. Many tenants in one process: its own script (also run alone), on the binaries built above.
if has_part tenants; then
  OUT="$OUT/tenants" SKIP_BUILD=1 WRITE_DOC= bash scripts/bench/tenants.sh
fi

echo "total bench time: $((SECONDS - started)) s" | tee "$OUT/duration.txt"
python3 scripts/bench/summary.py "$OUT" | tee "$OUT/summary.txt"
doc=$OUT/performance.md; [ -z "${WRITE_DOC:-}" ] || doc=docs/performance.md
python3 scripts/bench/report.py "$OUT" >"$doc"
echo "raw results: $OUT; performance page: $doc"
