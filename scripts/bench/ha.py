"""High-availability figures (issue 11) for docs/reliability.md, driven by scripts/bench/ha.sh,
which builds the release binaries and starts Redis, the simulator and rsyslog for each part:

  python3 scripts/bench/ha.py takeover WORK MODE ROUNDS   # MODE kill9, kill9fast or term
  python3 scripts/bench/ha.py ops WORK IDLE_CYCLES
  python3 scripts/bench/ha.py summary OUT                  # the figures, from OUT/ha.log

takeover: two replicas (`run`, WORK/config.yaml, each with its own metrics listener) pull one
service; ROUNDS times the holder of its lease is found (its /metrics says
isolation_collector_lease_held 1), left pulling for a random 0.3..1.5 s, then killed (`kill -9`)
or stopped (SIGTERM); the takeover time runs from that signal to the other replica's /metrics
saying it holds the lease, polled every 20 ms. Then the stopped replica is started again (it
stands by). At the end the backfill is let finish and what rsyslog received (WORK/received.log,
the mutual-TLS devo_platform output) is compared with the simulator's events (WORK/expected,
`isolation-sim --dump-events`): a record beyond an event's expected count is re-sent, and is
counted against the round in which it arrived.

ops: one replica; the commands it sends Redis (`redis-cli MONITOR`: round trips, a script
counting once) during its backfill (per window: the statistics lines it logged), over
IDLE_CYCLES idle cycles, and for 10 s while it stands by behind a lease someone else holds.

Every line it prints for the summary starts with RESULT.
"""

import collections
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

SERVICE = "browser_and_email_isolation"
TABLE = "tap.proofpoint.isolation.browser_and_email"
PROXY_VARIABLES = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]


def env(name):
    return os.environ[name]


class Replica:
    """One collector daemon; started again after each kill, each run logging to its own file."""

    def __init__(self, work, name, metrics_port):
        self.work, self.name, self.runs, self.proc = work, name, 0, None
        self.metrics = f"127.0.0.1:{metrics_port}"

    def start(self):
        self.runs += 1
        child_env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
        child_env["METRICS_LISTEN"] = self.metrics
        self.proc = subprocess.Popen(
            [env("BIN") + "/isolation-collector", "run", "--config", f"{self.work}/config.yaml"],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path(), "wb"), env=child_env)
        STARTED.append(self.proc)

    def log_path(self):
        return f"{self.work}/{self.name}-{self.runs}.log"

    def log(self):
        return open(self.log_path(), errors="replace").read()

    def holds(self):
        """Whether its /metrics says it holds the lease (False while it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=0.5) as r:
                text = r.read().decode()
        except OSError:
            return False
        return f'isolation_collector_lease_held{{service="{SERVICE}"}} 1' in text

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=120):
        code = self.proc.wait(timeout)
        self.proc = None
        return code


def no_proxy():
    # The metrics listeners are on 127.0.0.1: a proxy in the environment must not route the polls.
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))


def wait_for(what, check, limit=120.0, step=0.02):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"ha.py: {what}: not within {limit} s")
        time.sleep(step)


def holder(replicas):
    for i, r in enumerate(replicas):
        if r.proc is not None and r.holds():
            return i
    return None


def received_bytes(work):
    try:
        return os.path.getsize(f"{work}/received.log")
    except FileNotFoundError:
        return 0


def expected_events(work):
    want = collections.Counter()
    for line in open(f"{work}/expected"):
        dataset, event = line.rstrip("\n").split(" ", 1)
        if dataset == "web":
            want[event] += 1
    return want


def received_count(work):
    try:
        with open(f"{work}/received.log", "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def received_events(work):
    """(JSON body, byte offset of the record's end) of each complete record rsyslog stored."""
    records, offset = [], 0
    if not os.path.exists(f"{work}/received.log"):
        return records
    with open(f"{work}/received.log", "rb") as f:
        for raw in f:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                break
            line = raw.decode()
            # <14>YYYY-MM-DD HH:MM:SS.mmm HOST TABLE: JSON
            records.append((line.rstrip("\n").split(" ", 4)[4], offset))
    return records


def settle(work, want_total, limit=600.0):
    """Waits until rsyslog has at least as many records as events and its file stops growing."""
    deadline = time.monotonic() + limit
    previous = -1
    while time.monotonic() < deadline:
        size = received_bytes(work)
        if size == previous and received_count(work) >= want_total:
            return
        previous = size
        time.sleep(1.0)
    sys.exit(f"ha.py: the backfill did not complete within {limit} s")


def takeover(work, mode, rounds):
    no_proxy()
    replicas = [Replica(work, "a", env("METRICS_A")), Replica(work, "b", env("METRICS_B"))]
    for r in replicas:
        r.start()
    want = expected_events(work)
    kill_offsets = []
    for i in range(rounds):
        h = wait_for("a holder", lambda: holder(replicas))
        time.sleep(random.uniform(0.3, 1.5))
        mid = received_count(work) < sum(want.values())
        other = replicas[1 - h]
        kill_offsets.append(received_bytes(work))
        t0 = time.monotonic()
        replicas[h].signal(signal.SIGKILL if mode.startswith("kill9") else signal.SIGTERM)
        wait_for("the takeover", other.holds, step=0.02)
        took = time.monotonic() - t0
        code = replicas[h].wait()
        print(f"RESULT part=takeover mode={mode} round={i} seconds={took:.3f} mid_backfill={int(mid)} exit={code}",
              flush=True)
        replicas[h].start()
    settle(work, sum(want.values()))
    for r in replicas:
        r.signal(signal.SIGTERM)
        r.wait()
    resent_by_round = [0] * rounds
    seen = collections.Counter()
    missing = 0
    for body, end in received_events(work):
        seen[body] += 1
        if seen[body] > want[body]:
            # Arrived after kill k (and before kill k + 1): re-sent after takeover k.
            k = max((j for j, off in enumerate(kill_offsets) if off < end), default=0)
            resent_by_round[k] += 1
    missing = sum(max(0, n - seen[e]) for e, n in want.items())
    strangers = sum(1 for e in seen if e not in want)
    windows = [int(x) for x in _sent_per_window(work, replicas)]
    print(f"RESULT part=resent mode={mode} takeovers={rounds} events={sum(want.values())} "
          f"records={sum(seen.values())} missing={missing} strangers={strangers} "
          f"resent={sum(resent_by_round)} per_round={','.join(map(str, resent_by_round))} "
          f"max_window={max(windows, default=0)}", flush=True)


def _sent_per_window(work, replicas):
    """The events each window delivered, from every run's statistics lines: a cycle logs a
    `(Partial)` line after each window but the last, each with the cycle's running totals."""
    import glob
    import re
    sizes = []
    for path in glob.glob(f"{work}/[ab]-*.log"):
        before = 0
        for line in open(path, errors="replace"):
            m = re.search(r"Number of events generated and sent: (\d+)", line)
            if m:
                sizes.append(int(m.group(1)) - before)
                before = int(m.group(1)) if "(Partial) " in line else 0
    return sizes


class Monitor:
    """`redis-cli MONITOR` into a file: every command Redis executes, the ones a script ran
    marked `[0 lua]`. A client's round trips are the other lines (INFO and MONITOR aside);
    INFO commandstats would count a script's inner GET and SET as operations of their own."""

    def __init__(self, work):
        self.path = f"{work}/monitor.log"
        self.proc = subprocess.Popen(["stdbuf", "-oL", "redis-cli", "-p", env("REDIS_PORT"), "MONITOR"],
                                     stdout=open(self.path, "wb"), stderr=subprocess.DEVNULL)
        STARTED.append(self.proc)
        wait_for("MONITOR", lambda: os.path.getsize(self.path) > 0, limit=10)

    def mark(self):
        time.sleep(0.3)  # let the last commands reach the file
        return sum(1 for _ in open(self.path, "rb"))

    def since(self, mark):
        """(round trips, commands run by scripts, round trips per command name) after `mark`."""
        client, scripted = collections.Counter(), 0
        for line in list(open(self.path, errors="replace"))[mark:]:
            if '"' not in line:
                continue
            name = line.split('"', 2)[1].upper()
            if "lua]" in line:
                scripted += 1
            elif name not in ("INFO", "MONITOR"):
                client[name] += 1
        return sum(client.values()), scripted, ",".join(f"{k}:{v}" for k, v in sorted(client.items()))


def final_cycles(replica):
    return sum(1 for line in replica.log().splitlines()
               if "Statistics for this pull cycle" in line and "(Partial) " not in line)


def windows_logged(replica):
    return sum(1 for line in replica.log().splitlines() if "Statistics for this pull cycle" in line)


def ops(work, idle_cycles):
    no_proxy()
    monitor = Monitor(work)
    a = Replica(work, "a", env("METRICS_A"))
    m0 = monitor.mark()
    a.start()
    wait_for("the backfill", lambda: final_cycles(a) >= 1, limit=600, step=0.05)
    m1 = monitor.mark()
    windows = windows_logged(a)
    trips, scripted, detail = monitor.since(m0)
    print(f"RESULT part=ops phase=backfill windows={windows} ops={trips} per_window={trips / windows:.2f} "
          f"scripted={scripted} commands={detail}", flush=True)
    start = final_cycles(a)
    t0 = time.monotonic()
    wait_for("the idle cycles", lambda: final_cycles(a) >= start + idle_cycles, limit=60 + 5 * idle_cycles)
    secs = time.monotonic() - t0
    trips, scripted, detail = monitor.since(m1)
    print(f"RESULT part=ops phase=idle cycles={idle_cycles} seconds={secs:.1f} ops={trips} "
          f"per_cycle={trips / idle_cycles:.2f} scripted={scripted} commands={detail}", flush=True)
    a.signal(signal.SIGTERM)
    a.wait()
    # Standby: the lease is someone else's for the next minute.
    lease = os.environ["LEASE_KEY"]
    subprocess.run(["redis-cli", "-p", env("REDIS_PORT"), "SET", lease, "elsewhere:1:0", "PX", "60000"],
                   check=True, capture_output=True)
    b = Replica(work, "b", env("METRICS_B"))
    b.start()
    wait_for("standing by", lambda: "standing by" in b.log(), limit=30)
    m3 = monitor.mark()
    time.sleep(10)
    trips, scripted, detail = monitor.since(m3)
    print(f"RESULT part=ops phase=standby seconds=10 ops={trips} per_second={trips / 10:.2f} "
          f"scripted={scripted} commands={detail}", flush=True)
    b.signal(signal.SIGTERM)
    b.wait()


def keyed(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def summary(out):
    rows = [keyed(line) for line in open(f"{out}/ha.log") if line.startswith("RESULT ")]
    settings = [line.strip() for line in open(f"{out}/ha.log") if line.startswith("SETTINGS ")]
    for s in settings:
        print(s)
    for mode, label in (("kill9", "kill -9"), ("kill9fast", "kill -9, fast API"), ("term", "SIGTERM")):
        times = sorted(float(r["seconds"]) for r in rows if r.get("part") == "takeover" and r["mode"] == mode)
        if times:
            mid = sum(int(r["mid_backfill"]) for r in rows if r.get("part") == "takeover" and r["mode"] == mode)
            exits = collections.Counter(r["exit"] for r in rows if r.get("part") == "takeover" and r["mode"] == mode)
            print(f"takeover after {label}: {len(times)} takeovers ({mid} during the backfill), median "
                  f"{statistics.median(times):.2f} s, worst {times[-1]:.2f} s, best {times[0]:.2f} s; "
                  f"exit codes of the stopped holder: {dict(exits)}")
        for r in (r for r in rows if r.get("part") == "resent" and r["mode"] == mode):
            per = [int(x) for x in r["per_round"].split(",")]
            print(f"re-sent on the TLS output, {label}: {r['resent']} records over {r['takeovers']} takeovers "
                  f"({int(r['resent']) / int(r['takeovers']):.0f} per takeover on average; median {statistics.median(per):.0f}, "
                  f"worst {max(per)}, takeovers with any: {sum(1 for p in per if p)}; largest window {r['max_window']} events); "
                  f"{r['events']} events, {r['records']} records, missing {r['missing']}, unknown {r['strangers']}")
    for r in (r for r in rows if r.get("part") == "ops"):
        if r["phase"] == "backfill":
            print(f"Redis operations during a backfill: {r['ops']} over {r['windows']} windows = {r['per_window']} per window "
                  f"({r['commands']}; the scripts ran {r['scripted']} commands inside Redis)")
        elif r["phase"] == "idle":
            print(f"Redis operations per idle pull cycle: {r['per_cycle']} ({r['ops']} over {r['cycles']} cycles in {r['seconds']} s: "
                  f"{r['commands']}; the scripts ran {r['scripted']} commands inside Redis)")
        else:
            print(f"Redis operations of a standby replica: {r['per_second']} per second ({r['commands']}; "
                  f"the scripts ran {r['scripted']} commands inside Redis)")


STARTED = []  # every replica process, killed on the way out whatever happens


def main():
    what = sys.argv[1]
    try:
        if what == "takeover":
            takeover(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        elif what == "ops":
            ops(sys.argv[2], int(sys.argv[3]))
    finally:
        for proc in STARTED:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if what == "summary":
        summary(sys.argv[2])
    elif what not in ("takeover", "ops"):
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
