#!/usr/bin/env bash
# High-availability figures (issue 11), one command on a fresh machine (not part of CI):
#
#   bash scripts/bench/ha.sh           # alone; run.sh runs it as its part `ha` (PARTS="ha")
#
# It builds hook-free release binaries (as run.sh does), installs redis-server and rsyslog with
# apt-get when run as root (otherwise it names what is missing), and measures with two replicas
# (`isolation-collector run`) of one config on one Redis (append-only, fsync always), one
# service (Browser & Email Isolation) from the simulator, the devo_platform output into a local
# mutual-TLS rsyslog:
#   kill9   takeover time after `kill -9` of the lease holder (KILLS rounds), from the kill to the
#           other replica's /metrics saying it holds the lease (polled every 20 ms), and the
#           records re-sent on the TLS output per takeover (records beyond each event's count);
#   kill9fast  the same against a fast API (HA_FAST_N events, pages of HA_FAST_PAGE_LATENCY_MS),
#           where a larger share of a window's time is its delivery, so that kills land in it;
#   term    the same after SIGTERM (TERMS rounds): the holder releases the lease as it leaves;
#   ops     Redis operations (INFO commandstats) per window during a backfill, per idle pull
#           cycle (request period 1 s), and per second of a standby replica.
# scripts/bench/ha.py drives the replicas and prints the figures; the summary goes to
# OUT/ha-summary.txt and is what docs/reliability.md quotes.
#
# Knobs (environment, defaults in brackets): HA_PARTS ["kill9 kill9fast term ops"], KILLS [20
# per kill9 part], TERMS [10], HA_FAST_N [1500000], HA_FAST_PAGE_LATENCY_MS [100],
# HA_TTL [5: lease_ttl_in_seconds of the takeover parts; the product default, 30, is used by
# `ops`], HA_N [300000 events], HA_PAGE_LATENCY_MS [1000: each 10,000-event page takes a second,
# as a slow API would, so that the backfill outlasts the rounds], IDLE_CYCLES [20], OUT [a new
# /tmp/isolation-bench-ha.*], HA_PORT_BASE [18380: simulator web, +1 url, +10 Redis, +11/+12
# the replicas' metrics, +20 TLS], SKIP_BUILD [unset; 1: run.sh built the binaries].
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export BIN=$CARGO_TARGET_DIR/release
HA_PARTS=${HA_PARTS-"kill9 kill9fast term ops"}
KILLS=${KILLS:-20}
TERMS=${TERMS:-10}
HA_TTL=${HA_TTL:-5}
HA_N=${HA_N:-300000}
HA_PAGE_LATENCY_MS=${HA_PAGE_LATENCY_MS:-1000}
HA_FAST_N=${HA_FAST_N:-1500000}
HA_FAST_PAGE_LATENCY_MS=${HA_FAST_PAGE_LATENCY_MS:-100}
IDLE_CYCLES=${IDLE_CYCLES:-20}
OUT=${OUT:-$(mktemp -d /tmp/isolation-bench-ha.XXXXXX)}
mkdir -p "$OUT"
P=${HA_PORT_BASE:-18380}
PORT_WEB=$P PORT_URL=$((P + 1)) PORT_TLS=$((P + 20))
export REDIS_PORT=$((P + 10)) METRICS_A=$((P + 11)) METRICS_B=$((P + 12))
export LEASE_KEY="isolation-collector:{proofpoint_isolation_10001_browser_and_email_isolation}:lease"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

need() {  # need COMMAND PACKAGE: install PACKAGE with apt-get when root, else say what is missing
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null || { echo "ha.sh: '$1' is missing: install the '$2' package (as root: apt-get install $2)" >&2; exit 1; }
}
need redis-server redis-server
need redis-cli redis-tools
need rsyslogd rsyslog
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -e /usr/lib/rsyslog/lmnsd_gtls.so ] \
  || [ "$(id -u)" != 0 ] || apt-get install -y -qq rsyslog-gnutls >/dev/null
need openssl openssl

if [ -z "${SKIP_BUILD:-}" ]; then
  # A binary that `cargo bench` or `cargo test --release` left holds the test hooks: rebuild, and
  # refuse to measure one that still does (see run.sh's build_release).
  cargo build --release --quiet --bin isolation-collector --bin isolation-sim
fi
if grep -qa ISOLATION_COLLECTOR_CRASH_BEFORE_STATE_RENAME "$BIN/isolation-collector"; then
  echo "ha.sh: $BIN/isolation-collector holds the test hooks; not measuring it" >&2
  exit 1
fi

. scripts/lib/tls_receiver.sh
. scripts/lib/collector_config.sh
make_pki "$OUT/certs"

wait_for() { for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# session WORK TTL OUTPUT_YAML SIM_ARGS...: Redis, the simulator (its events also dumped to
# WORK/expected) and the config; rsyslog too when the output is the TLS one.
session() {
  local w=$1 ttl=$2 output=$3; shift 3
  mkdir -p "$w/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$w/redis" --save '' --appendonly yes \
    --appendfsync always --logfile "$w/redis/redis.log" &
  pids+=($!)
  local anchor; anchor=$(date -u -d '-5 min' +%Y-%m-%dT%H:%M:%SZ)
  local sim=("$BIN"/isolation-sim --anchor "$anchor" --span-hours 719 --pending-polls 0 "$@")
  "${sim[@]}" --dump-events >"$w/expected"
  "${sim[@]}" --web-listen 127.0.0.1:$PORT_WEB --url-listen 127.0.0.1:$PORT_URL >"$w/sim.log" 2>&1 &
  pids+=($!)
  wait_for "$w/sim.log" '^url:'
  if [ "$output" = tls ]; then
    start_rsyslog "$w" "$OUT/certs" "$PORT_TLS"
    pids+=("$rsyslog_pid")
    output=$(devo_output_yaml "$OUT/certs" "$PORT_TLS")
  fi
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  {
    config_head_yaml ha "$w" "$output" \
      | sed -e '/^  persistence:/d' -e "s|^globals:|globals:\n  metrics_listen: \"\${METRICS_LISTEN}\"|"
    echo "      browser_and_email_isolation:"
    echo "        override_base_url: http://127.0.0.1:$PORT_WEB"
    echo "        request_period_in_seconds: 1"
    echo "        job_poll_initial_interval_in_seconds: 0.01"
  } >"$w/config.yaml"
  # The persistence block goes into globals (config_head_yaml writes the filesystem one).
  python3 - "$w/config.yaml" "$REDIS_PORT" "$ttl" <<'PY'
import sys
path, port, ttl = sys.argv[1:]
text = open(path).read().replace("globals:\n", "globals:\n  persistence:\n    type: redis\n"
    f"    config: {{host: 127.0.0.1, port: {port}, lease_ttl_in_seconds: {ttl}}}\n", 1)
open(path, "w").write(text)
PY
  sleep 1
}
end_session() { cleanup; wait 2>/dev/null || true; pids=(); }

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "tree: $(git describe --always --dirty 2>/dev/null || echo unknown); binary: built $(date -u -r "$BIN/isolation-collector" +%Y-%m-%dT%H:%MZ), sha256 $(sha256sum "$BIN/isolation-collector" | cut -c1-12); $(redis-server --version | cut -d' ' -f1-3); date: $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$OUT/ha-machine.txt"
: >"$OUT/ha.log"
for part in $HA_PARTS; do
  w="$OUT/$part"
  case $part in
    kill9|kill9fast|term)
      rounds=$KILLS; [ "$part" = term ] && rounds=$TERMS
      n=$HA_N latency=$HA_PAGE_LATENCY_MS
      [ "$part" = kill9fast ] && n=$HA_FAST_N latency=$HA_FAST_PAGE_LATENCY_MS
      echo "SETTINGS part=$part rounds=$rounds lease_ttl=$HA_TTL events=$n page_latency_ms=$latency output=devo_platform(rsyslog,mTLS) poll=20ms" | tee -a "$OUT/ha.log"
      session "$w" "$HA_TTL" tls --events "$n" --page-latency-ms "$latency" --shuffle
      python3 scripts/bench/ha.py takeover "$w" "$part" "$rounds" | tee -a "$OUT/ha.log"
      ;;
    ops)
      echo "SETTINGS part=ops lease_ttl=30 events=200000 request_period=1 idle_cycles=$IDLE_CYCLES output=file" | tee -a "$OUT/ha.log"
      session "$w" 30 "  local: {type: file, config: {directory: $w/out}}" --events 200000
      python3 scripts/bench/ha.py ops "$w" "$IDLE_CYCLES" | tee -a "$OUT/ha.log"
      ;;
    *) echo "ha.sh: unknown part $part" >&2; exit 1 ;;
  esac
  end_session
done
python3 scripts/bench/ha.py summary "$OUT" | tee "$OUT/ha-summary.txt"
echo "raw results: $OUT"
