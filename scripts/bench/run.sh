#!/usr/bin/env bash
# The whole benchmark, one command on a fresh machine (not part of CI; wants a quiet machine,
# about 50 minutes on 2 cores with the default parts and knobs: it prints its own estimate from
# the knobs as it starts; see the README's Benchmark section):
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
#   raw       the receiver's own limit: scripts/bench/raw_sender.sh writes pre-formatted records
#             to the same rsyslog over the same TLS (RAW_TLS_N events) and RELP (RELP_N events),
#             for the targets "ours' TLS >= 90% of raw" and "ours' RELP against raw RELP";
#             skipped with a note when that script is absent.
#   obfuscate the file backfill of OBF_N events with a masking + HMAC + pattern rule set in the
#             config (backfill.sh OBFUSCATE=1, the rules of the obfuscate_mask_hmac_pattern
#             micro-benchmark), beside the plain file row of the same size.
#   both      both services in one process, the collector's default config, BOTH_SIZES events each.
#   iso       iso2web (Proofpoint's community collector, PyPI, in a virtualenv) at ISO_N events,
#             posting to a local webhook receiver (scripts/bench/iso2web_wrapper.py); with
#             ISO_N one of CURVE_SIZES these runs are also that curve's 0 s row for iso2web.
#   curve     the job latency curve: LATENCIES (ms), events over 30 days, one service (Browser &
#             Email Isolation) on both sides, ours with the default config (CURVE_MCJ: also other
#             max_concurrent_jobs) and iso2web, at each of CURVE_SIZES events, and at each of
#             CURVE_LARGE_N events with events CURVE_LARGE_FACTOR times the default's size
#             (isolation-sim --event-size-factor).
#   steady    the collector as a daemon against a live feed with late arrivals, iso2web every 5 s.
#   ha        high availability on Redis (scripts/bench/ha.sh, its knobs there): takeover times
#             after kill -9 and SIGTERM, records re-sent per takeover, Redis operations per
#             cycle; its summary is OUT/ha/ha-summary.txt, quoted in docs/reliability.md. Not in
#             the default PARTS (about 10 minutes, and no figure of docs/performance.md): name it
#             in PARTS, or run ha.sh alone.
#   tenants   1,000 tenants x 2 services in one collector process against the simulator's
#             multi-key mode (scripts/bench/tenants.sh, its knobs there): peak RSS, time until
#             every tenant is up to date, CPU per idle pull cycle per service, exact delivery per
#             tenant; results in OUT/tenants, in docs/performance.md's "1,000 tenants" section.
# Each end-to-end measurement runs REPS times (the curve: CURVE_REPS per cell); the summary shows
# medians. Rough minutes per part with the defaults, from runs on a loaded 2-core machine: micro
# 4, callgrind 1, backfill 2, relp 2, raw 1, obfuscate 1, both 3, iso 5 (iso2web: ~1.5 min and
# ~1.7 GB a 1,000,000-event run), curve 23 (iso2web ~17 of them: 17 runs, 90 s plus the latency
# at 1,000,000 events), steady 2, tenants 7.
#
# Knobs (environment, defaults in brackets): PARTS ["micro callgrind backfill relp raw obfuscate
# both iso curve steady tenants"; `ha` too on request], REPS [3], RELP_N [100000],
# RELP_CRASH_ITER [5: crash-loop iterations for relp], SIZES ["100000 1000000"], BOTH_SIZES
# [same], ISO_N [1000000], ISO_REPS [1: iso2web's runs vary by about 2% (84.2 to 86.5 s at
# 1,000,000 events), and each costs 90 s], RAW_TLS_N [the largest of SIZES: compared with ours' TLS row of that
# size], OBF_N [the largest of SIZES], CURVE_SIZES ["300000 1000000"], CURVE_LARGE_N [300000;
# "" for none], CURVE_LARGE_FACTOR [2], LATENCIES ["0 2000 5000 10000 20000 30000"], CURVE_MCJ
# ["default"; e.g. "default 16"], CURVE_REPS [1], CALLGRIND_N [100000], STEADY_SECS [120], OUT
# [a new /tmp/isolation-bench.*],
# ISO_VENV [/tmp/isoenv], PORT_BASE [18180: simulator web, +1 url, +10 receiver, +20 TLS],
# WRITE_DOC [unset; 1: write docs/performance.md, else it is written into OUT].
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$CARGO_TARGET_DIR/release
PARTS=${PARTS-"micro callgrind backfill relp raw obfuscate both iso curve steady tenants"}
RELP_N=${RELP_N:-100000}
RELP_CRASH_ITER=${RELP_CRASH_ITER:-5}
REPS=${REPS:-3}
SIZES=${SIZES-"100000 1000000"}
BOTH_SIZES=${BOTH_SIZES-$SIZES}
ISO_N=${ISO_N:-1000000}
ISO_REPS=${ISO_REPS:-1}
largest_size=$(printf '%s\n' $SIZES 0 | sort -n | tail -1)
RAW_TLS_N=${RAW_TLS_N:-$largest_size}
OBF_N=${OBF_N:-$largest_size}
CURVE_SIZES=${CURVE_SIZES-"300000 1000000"}
CURVE_LARGE_N=${CURVE_LARGE_N-300000}
CURVE_LARGE_FACTOR=${CURVE_LARGE_FACTOR:-2}
LATENCIES=${LATENCIES-"0 2000 5000 10000 20000 30000"}
CURVE_MCJ=${CURVE_MCJ-"default"}
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

# The curve's cells, one "EVENTS:FACTOR" per size: CURVE_SIZES at the default event size, and
# CURVE_LARGE_N at CURVE_LARGE_FACTOR times it.
curve_specs() {
  for n in $CURVE_SIZES; do echo "$n:1"; done
  for n in $CURVE_LARGE_N; do echo "$n:$CURVE_LARGE_FACTOR"; done
}

# Seconds the parts in PARTS take with these knobs, roughly: per-part costs measured on this
# 2-core machine (iso2web ~11,500 events/s; ours on the curve at about its latency plus 60,000
# events/s, once the spool (issue 23 §1) consumes one job as many windows).
estimate_seconds() {
  local s=15 n spec lat f
  has_part micro && s=$((s + 240))
  has_part callgrind && s=$((s + 20 + CALLGRIND_N / 2500))
  if has_part backfill; then for n in $SIZES; do s=$((s + 2 * REPS * (4 + n / 250000))); done; fi
  has_part relp && s=$((s + 2 * REPS * (4 + RELP_N / 40000) + 20 * RELP_CRASH_ITER))
  has_part raw && s=$((s + REPS * (8 + RAW_TLS_N / 300000 + RELP_N / 30000)))
  has_part obfuscate && s=$((s + REPS * (4 + OBF_N / 150000)))
  if has_part both; then for n in $BOTH_SIZES; do s=$((s + REPS * (5 + n / 30000))); done; fi
  has_part iso && s=$((s + ISO_REPS * (8 + ISO_N / 11500)))
  if has_part curve; then
    for spec in $(curve_specs); do
      n=${spec%:*} f=${spec#*:}
      for lat in $LATENCIES; do
        s=$((s + CURVE_REPS * (lat / 1000 + 4 + ${n%.*} * ${f%.*} / 60000)))
        covered_by_iso_part "$n" "$f" "$lat" || s=$((s + CURVE_REPS * (lat / 1000 + 8 + ${n%.*} * ${f%.*} / 11500)))
      done
    done
  fi
  has_part steady && s=$((s + STEADY_SECS + 20))
  has_part ha && s=$((s + 600))
  has_part tenants && s=$((s + 240 + ${IDLE_SECS:-180}))
  echo "$s"
}
# covered_by_iso_part EVENTS FACTOR LATENCY_MS: the iso part's runs are this curve cell's
# iso2web side (same events, same simulator settings).
covered_by_iso_part() { [ "$3" = 0 ] && [ "$2" = 1 ] && has_part iso && [ "$ISO_N" = "$1" ]; }

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "rustc: $(rustc --version); collector: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  [ -x "$ISO_VENV/bin/python" ] && echo "python: $("$ISO_VENV/bin/python" --version); iso2web $("$ISO_VENV/bin/pip" show iso2web | awk '/^Version/ {print $2}')"
  command -v valgrind >/dev/null && echo "valgrind: $(valgrind --version)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ); parts: $PARTS; REPS=$REPS; ISO_REPS=$ISO_REPS"
  echo "curve: sizes $CURVE_SIZES, x$CURVE_LARGE_FACTOR events at ${CURVE_LARGE_N:-none}; latencies $LATENCIES ms; CURVE_REPS=$CURVE_REPS; CURVE_MCJ=$CURVE_MCJ"
} | tee "$OUT/machine.txt"
echo "estimated duration: about $((($(estimate_seconds) + 59) / 60)) min (from the knobs; see estimate_seconds)" | tee "$OUT/estimate.txt"

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

# 3c. The receiver's own limit (issue 23 §3): a raw sender of pre-formatted records into the same
# rsyslog over the same TLS and RELP (another engineer's script; its lines tagged like ours).
if has_part raw; then
  if [ -f scripts/bench/raw_sender.sh ]; then
    for r in $(seq 1 "$REPS"); do
      for spec in "tls:$RAW_TLS_N" "relp:$RELP_N"; do
        echo "== raw sender: ${spec%%:*} n=${spec#*:}"
        SKIP_BUILD= bash scripts/bench/raw_sender.sh "${spec#*:}" "${spec%%:*}" \
          | sed -E "s/^(RESULT|SETTINGS) /\1 group=raw-${spec%%:*} /" | tee -a "$OUT/raw.log"
      done
    done
    build_release  # the raw sender's build shares target/release: the binaries measured stay hook-free
  else
    echo "run.sh: scripts/bench/raw_sender.sh is absent: part raw skipped (no raw-sender rows)" | tee "$OUT/raw-skipped.txt"
  fi
fi

# 3d. Obfuscation end to end: the file backfill with a masking + HMAC + pattern rule set.
if has_part obfuscate; then
  for r in $(seq 1 "$REPS"); do backfill obfuscate "$OBF_N" file OBFUSCATE=1; done
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

# iso2web GROUP N LATENCY_MS SPAN_HOURS PENDING_POLLS [EVENT_SIZE_FACTOR]: one iso2web run
# against the simulator, its SETTINGS and RESULT lines appended to iso2web.log.
wrapper=$PWD/scripts/bench/iso2web_wrapper.py
iso2web() {
  local group=$1 n=$2 lat=$3 span=$4 pending=$5 factor=${6:-1} w
  echo "== iso2web: $group n=$n job latency $lat ms, event size x$factor"
  w=$(mktemp -d)
  start_sim "$w/sim.log" --events "$n" --span-hours "$span" --pending-polls "$pending" --job-latency-ms "$lat" \
    --event-size-factor "$factor"
  start_receiver "$w/count"
  (cd "$w" && /usr/bin/time -v "$ISO_VENV/bin/python" "$wrapper" run "http://127.0.0.1:$PORT_WEB" \
    "http://127.0.0.1:$PORT_RECV/" "$KEY" >"$w/iso2web.out" 2>"$w/time.log") || tail "$w/time.log"
  stop "$sim_pid"; stop "$recv_pid"
  echo "SETTINGS group=$group mode=iso2web n=$n services=web span_hours=$span pending_polls=$pending" \
    "job_latency_ms=$lat job_latency_ms_per_10k=0 page_latency_ms=0 poll_initial=0 page_size=10000 chunk_size=10000" \
    "event_size_factor=$factor" \
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
s = re.search(r"^web stats: requests=(\d+) job_creates=(\d+).* events_served=(\d+) bytes_served=(\d+).* max_running_jobs=(\d+)",
              open(f"{w}/sim.log").read(), re.M)
print(f"iso2web n={n}: delivered {delivered:,} in {wall:.1f} s ({delivered / wall:,.0f} events/s), "
      f"CPU {cpu:.1f} s, peak RSS {rss / 1024:.0f} MiB, {s.group(1)} requests")
print(f"RESULT group={group} mode=iso2web n={n} delivered={delivered} wall={wall:.3f} cpu={cpu:.3f} rss_kb={rss} "
      f"requests={s.group(1)} sim_requests={s.group(1)} bytes_downloaded={s.group(4)} events_downloaded={s.group(3)} "
      f"first_job={int(lat) / 1000:.3f} jobs={s.group(2)} max_running_jobs={s.group(5)}")
PY
  rm -rf "$w"
}

# 5. iso2web's backfills, the simulator as for ours; they are also the curve's 0 s row.
if has_part iso; then
  for r in $(seq 1 "$ISO_REPS"); do iso2web iso "$ISO_N" 0 "$SPAN_HOURS" "$PENDING_POLLS"; done
fi

# 6. The job latency curve, jobs that complete LATENCY ms after their creation. Ours runs the
# default config, as a user would (at 0 s: the default poll interval's figure); both sides one
# service, the same simulator flags. A cell's groups are curve-LATENCY-SIDE (default event size)
# or curve-xFACTOR-LATENCY-SIDE, keyed by size too (summary.py's curve()).
if has_part curve; then
  for spec in $(curve_specs); do
    n=${spec%:*} f=${spec#*:} tag=""; [ "$f" = 1 ] || tag="x$f-"
    for lat in $LATENCIES; do
      for mcj in $CURVE_MCJ; do
        for r in $(seq 1 "$CURVE_REPS"); do
          backfill "curve-$tag$lat-mcj-$mcj" "$n" file JOB_LATENCY_MS="$lat" POLL_INITIAL=default \
            EVENT_SIZE_FACTOR="$f" $([ "$mcj" = default ] || echo MAX_CONCURRENT_JOBS="$mcj")
        done
      done
      covered_by_iso_part "$n" "$f" "$lat" && continue  # done in part 5
      for r in $(seq 1 "$CURVE_REPS"); do
        iso2web "curve-$tag$lat-iso2web" "$n" "$lat" "$SPAN_HOURS" "$PENDING_POLLS" "$f"
      done
    done
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
