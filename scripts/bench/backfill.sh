#!/usr/bin/env bash
# End-to-end backfill benchmark: isolation-sim serves N events per dataset (spread over 20
# days) and `isolation-collector run --once` collects them all, to the file output or (mode
# `tls`) to a local rsyslog over mutual TLS (the devo_platform output), or (mode `relp`) to a
# local rsyslog imrelp over mutual TLS (the relp output).
# Prints events/s, CPU seconds, peak RSS, API requests and bytes per event, and the lines
# `SETTINGS key=value ...` and `RESULT key=value ...` that scripts/bench/summary.py reads.
#
#   bash scripts/bench/backfill.sh [EVENTS] [file|tls|relp]       # defaults: 1000000 file
#
# Environment knobs (defaults in brackets): JOB_LATENCY_MS [0] and JOB_LATENCY_MS_PER_10K [0]
# (a job completes that long after its creation, as the real API's jobs take seconds),
# PAGE_LATENCY_MS [0], EVENT_SIZE_FACTOR [1: the simulator's events; 2: twice their mean size,
# the URLs lengthened (isolation-sim --event-size-factor)], SPAN_HOURS [480], PENDING_POLLS [1: PENDING answers to polls
# before a job can complete; 0: only the latency decides], MAX_CONCURRENT_JOBS [the collector's default],
# POLL_INITIAL [0.01: job_poll_initial_interval_in_seconds; `default` leaves the collector's
# default, 2 s], SERVICES [web: Browser & Email Isolation; `both`: that and URL Isolation in
# one process, each from its own simulator listener], OBFUSCATE [unset; 1: every service masks
# userId, pseudonymises userName (hmac_sha256, a key file) and masks the host of url (a
# string_patterns rule): the rule set of benches/hot_path.rs's obfuscate_mask_hmac_pattern], CALLGRIND [unset; a file name: run the
# collector under `valgrind --tool=callgrind` writing that profile instead of /usr/bin/time],
# SKIP_BUILD [unset; 1: use the binaries as built], RELP_WINDOW [unset: the relp output's window_size]. The summary reports the time the
# collector spent only waiting for jobs, and the first job's latency, which no collector can
# avoid (nothing can be downloaded before a job completes).
#
# Binaries come from $CARGO_TARGET_DIR (default target/). Not part of CI: it takes about a
# minute and wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
MODE=${2:-file}
JOB_LATENCY_MS=${JOB_LATENCY_MS:-0}
JOB_LATENCY_MS_PER_10K=${JOB_LATENCY_MS_PER_10K:-0}
PAGE_LATENCY_MS=${PAGE_LATENCY_MS:-0}
EVENT_SIZE_FACTOR=${EVENT_SIZE_FACTOR:-1}
SPAN_HOURS=${SPAN_HOURS:-480}
PENDING_POLLS=${PENDING_POLLS:-1}
PORT_WEB=${PORT_WEB:-18180}
PORT_URL=${PORT_URL:-18181}
work=$(mktemp -d)
sim_pid=; rsyslog_pid=
trap 'kill $sim_pid $rsyslog_pid 2>/dev/null || true; wait $rsyslog_pid 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --bin isolation-collector --bin isolation-sim
BIN=${CARGO_TARGET_DIR:-target}/release

"$BIN"/isolation-sim --events "$N" --span-hours "$SPAN_HOURS" --pending-polls "$PENDING_POLLS" \
  --job-latency-ms "$JOB_LATENCY_MS" --job-latency-ms-per-10k "$JOB_LATENCY_MS_PER_10K" \
  --page-latency-ms "$PAGE_LATENCY_MS" --event-size-factor "$EVENT_SIZE_FACTOR" \
  --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do grep -q '^url:' "$work/sim.log" 2>/dev/null && break; sleep 0.1; done

output_yaml="  local: {type: file, config: {directory: $work/out}}"
SERVICES=${SERVICES:-web}
POLL_INITIAL=${POLL_INITIAL:-0.01}
delivered="$work/out/tap.proofpoint.isolation.browser_and_email.jsonl"
[ "$SERVICES" = both ] && delivered="$delivered $work/out/tap.proofpoint.isolation.url_isolation.jsonl"
. scripts/lib/tls_receiver.sh
if [ "$MODE" = tls ] || [ "$MODE" = relp ]; then
  # A receiver like Devo's: TLS 1.2/1.3 with client certificates checked against our CA
  # (imtcp for `tls`, imrelp for `relp`); scripts/bench/raw_sender.sh starts the same one.
  PORT_TLS=${PORT_TLS:-18443}
  start_receiver "$MODE" "$work" "$PORT_TLS"
  rsyslog_ticks0=$(cpu_ticks "$rsyslog_pid")
  if [ "$MODE" = tls ]; then output_yaml=$(devo_output_yaml "$c" "$PORT_TLS"); else output_yaml=$(relp_output_yaml "$c" "$PORT_TLS"); fi
  delivered="$work/received.log"
fi

. scripts/lib/collector_config.sh
service_yaml() {  # service_yaml NAME PORT: one service of the config, on its simulator listener
  echo "      $1:"
  echo "        override_base_url: http://127.0.0.1:$2"
  # The simulator's job answers PENDING to PENDING_POLLS polls and until JOB_LATENCY_MS has
  # passed (with the defaults 1 and 0: PENDING to the first poll, done at the second); iso2web
  # polls again at once, so POLL_INITIAL 0.01 s keeps ours from idling where iso2web does not. The collector's default (2 s, doubling to 30 s) suits the real API,
  # whose jobs take seconds: POLL_INITIAL=default measures it.
  [ "$POLL_INITIAL" = default ] || echo "        job_poll_initial_interval_in_seconds: $POLL_INITIAL"
  [ -z "${MAX_CONCURRENT_JOBS:-}" ] || echo "        max_concurrent_jobs: $MAX_CONCURRENT_JOBS"
  [ -z "${OBFUSCATE:-}" ] || cat <<YAML
        obfuscation_data:
          - name: [userId]
          - name: [userName]
            method: hmac_sha256
            secret_file: $work/hmac.key
          - name: [url]
            string_patterns: ["https?://[^/]+"]
YAML
}
[ -z "${OBFUSCATE:-}" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/hmac.key"; chmod 600 "$work/hmac.key"; }
{
  config_head_yaml bench "$work" "$output_yaml"
  service_yaml browser_and_email_isolation "$PORT_WEB"
  [ "$SERVICES" != both ] || service_yaml url_isolation "$PORT_URL"
} >"$work/config.yaml"
echo "SETTINGS mode=$MODE n=$N services=$SERVICES span_hours=$SPAN_HOURS pending_polls=$PENDING_POLLS" \
  "job_latency_ms=$JOB_LATENCY_MS job_latency_ms_per_10k=$JOB_LATENCY_MS_PER_10K page_latency_ms=$PAGE_LATENCY_MS" \
  "poll_initial=$POLL_INITIAL max_concurrent_jobs=${MAX_CONCURRENT_JOBS:-default} page_size=default" \
  "max_events_per_window=default callgrind=${CALLGRIND:+yes} event_size_factor=$EVENT_SIZE_FACTOR" \
  "obfuscate=${OBFUSCATE:+mask_hmac_pattern}"

# The puller's debug line "Waited S seconds for API jobs" gives the time spent only waiting.
export RUST_LOG=info,isolation_collector::puller=debug
[ "$MODE" = tls ] && export RUST_LOG=$RUST_LOG,isolation_collector::output::syslog=debug,isolation_collector::output::net::connect=debug
if [ -n "${CALLGRIND:-}" ]; then
  # Instruction counts repeat exactly from run to run where seconds do not. Valgrind hides
  # the CPU's SHA extensions, so sha2 runs its software path here: summary.py counts it apart.
  # Under valgrind only the instructions mean something: wall and CPU are its, RSS is left 0.
  t0=$(date +%s%N)
  valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND" "$BIN"/isolation-collector run --once \
    --config "$work/config.yaml" 2>"$work/run.log" || { tail -20 "$work/run.log"; exit 1; }
  ms=$((($(date +%s%N) - t0) / 1000000)); cg_wall=$((ms / 1000)).$(printf %03d $((ms % 1000)))
  printf 'Elapsed (wall clock) time (h:mm:ss or m:ss): 0:%s\nUser time (seconds): %s\nSystem time (seconds): 0\nMaximum resident set size (kbytes): 0\n' \
    "$cg_wall" "$cg_wall" >>"$work/run.log"
else
  /usr/bin/time -v "$BIN"/isolation-collector run --once --config "$work/config.yaml" \
    2>"$work/run.log" || { tail -20 "$work/run.log"; exit 1; }
fi

echo "sim CPU (user+sys ticks): $(awk '{print $14+$15}' /proc/$sim_pid/stat)"
kill -TERM $sim_pid; wait $sim_pid || true; sim_pid=  # it prints its request statistics
stats_sum() {  # stats_sum KEY: KEY summed over the datasets the collector asked for
  grep -E "^($([ "$SERVICES" = both ] && echo 'web|url' || echo web)) stats:" "$work/sim.log" \
    | sed -E "s/.* $1=([0-9]+).*/\\1/" | awk '{s += $1} END {print s}'
}
served_bytes=$(stats_sum bytes_served)
served_events=$(stats_sum events_served)
sim_requests=$(stats_sum requests)
sim_jobs=$(stats_sum job_creates)
sim_max_running=$(stats_sum max_running_jobs)
if [ "$MODE" = tls ] || [ "$MODE" = relp ]; then  # rsyslog writes asynchronously: wait until the count settles
  wait_settled "$delivered"
  receiver_ticks=$(($(cpu_ticks "$rsyslog_pid") - rsyslog_ticks0))
  echo "rsyslog CPU (user+sys ticks): $receiver_ticks"
  export RECEIVER_CPU=$(awk -v t="$receiver_ticks" 'BEGIN {printf "%.2f", t / 100}')
fi
events=$(cat $delivered | wc -l)
wall=$(grep 'Elapsed (wall clock)' "$work/run.log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
user=$(grep 'User time' "$work/run.log" | awk '{print $NF}')
sys=$(grep 'System time' "$work/run.log" | awk '{print $NF}')
rss_kb=$(grep 'Maximum resident set size' "$work/run.log" | awk '{print $NF}')
requests=$(grep ' -> Statistics for this pull cycle' "$work/run.log" \
  | sed -E 's/.*Number of requests made: ([0-9]+);.*/\1/' | awk '{s += $1} END {print s}')
bytes=$(cat $delivered | wc -c)
python3 - "$N" "$events" "$wall" "$user" "$sys" "$rss_kb" "$requests" "$bytes" "$work/run.log" \
  "$served_bytes" "$served_events" "$sim_requests" "$MODE" "$SERVICES" "$JOB_LATENCY_MS" "$JOB_LATENCY_MS_PER_10K" \
  "$sim_jobs" "$sim_max_running" <<'PY'
import os, re, statistics, sys
n, events, wall, user, sys_, rss, req, size, log, sbytes, sevents, sreq, mode, services, lat, lat10k, jobs, running = sys.argv[1:]
# The first job's latency: nothing can be downloaded before a job completes, whatever the
# collector does. Known exactly only without the per-10,000-event part (its size is the window's).
first_job = float(lat) / 1000 if int(lat10k) == 0 else float("nan")
events, wall, cpu = int(events), float(wall), float(user) + float(sys_)
print(f"events served by the simulator : {int(n):,}")
print(f"events delivered               : {events:,}")
print(f"wall time                      : {wall:.2f} s")
print(f"throughput                     : {events / wall:,.0f} events/s")
print(f"CPU time (user+sys)            : {cpu:.2f} s  ({cpu / events * 1e6:.2f} us/event)")
print(f"peak RSS                       : {int(rss) / 1024:.1f} MiB")
print(f"API requests                   : {req}")
print(f"bytes delivered per event      : {int(size) / max(events, 1):.0f}")
job_wait = sum(float(m.group(1)) for m in re.finditer(r"Waited ([0-9.]+) seconds for API jobs", open(log).read()))
print(f"waiting only for jobs          : {job_wait:.2f} s ({job_wait / wall * 100:.0f}% of the wall time; "
      f"the first job's latency, unavoidable: {first_job:.2f} s)")
print(f"API bytes downloaded per event : {int(sbytes) / max(events, 1):.0f}  ({int(sevents):,} events served, {sreq} requests seen by the simulator)")
print(f"API jobs created               : {jobs} (at most {running} running at once, as the simulator counts them)")
print(f"RESULT mode={mode} n={n} delivered={events} wall={wall:.3f} cpu={cpu:.3f} rss_kb={rss} "
      f"requests={req} sim_requests={sreq} bytes_downloaded={sbytes} events_downloaded={sevents} "
      f"job_wait={job_wait:.3f} first_job={first_job:.3f} services={services} jobs={jobs} max_running_jobs={running}"
      # The receiver's (rsyslog's) CPU seconds over the run, in modes tls and relp.
      + (f" receiver_cpu={os.environ['RECEIVER_CPU']}" if os.environ.get("RECEIVER_CPU") else ""))
proofs = [float(m.group(1)) for m in re.finditer(r"proof_ms=([0-9.]+)", open(log).read())]
if proofs:
    proofs.sort()
    print(f"delivery proofs (connections)  : {len(proofs)}, close-to-confirmation median {statistics.median(proofs):.2f} ms, "
          f"p95 {proofs[int(len(proofs) * 0.95) - 1]:.2f} ms, total {sum(proofs) / 1000:.2f} s")
PY
