"""Many tenants in one process (issue 12): the figures of scripts/bench/tenants.sh, which builds
the release binaries, starts the simulator in multi-key mode and calls this file:

  python3 scripts/bench/tenants.py config WORK TENANTS FORM PORT_WEB PORT_URL  # FORM: dir or list
  python3 scripts/bench/tenants.py run WORK TENANTS IDLE_SECS                   # RESULT lines
  python3 scripts/bench/tenants.py summary OUT                                  # from OUT/tenants.log

config: WORK/config.yaml with TENANTS inputs, each one tenant: input id 10001, 10002, ..., key
`tenant-0001`, `tenant-0002`, ... (the simulator's `--keys TENANTS --key-prefix tenant-`), both
services on the simulator's two listeners, every other setting the collector's default; the
file output into WORK/out (with many inputs, each writes under WORK/out/<input id>/). FORM
`dir` writes one file per tenant into WORK/tenants.d (`inputs_dir`), `list` one list of blocks.

run: starts `isolation-collector run` (the daemon) and measures
  * the time from its start until every tenant is up to date: every one of the 2 x TENANTS
    files holds as many bytes as the simulator's events for it (WORK/expected,
    `isolation-sim --dump-events`), polled every 0.5 s; and per tenant, the time from the
    start until both its files are: the first, median, 95th percentile and last tenant. The
    catch-up target (issue 23 §4, "every tenant up to date within one request_period after the
    backfill") is read as: the last tenant is up to date at most one request_period after the
    first. The first tenant up to date marks the end of the backfill as one tenant alone sees
    it (its history downloaded and delivered, on this machine, with this process's start-up);
    every tenant after it waited on the others;
  * peak RSS: VmHWM of /proc/PID/status at that moment and at the end, and VmRSS when idle;
  * CPU per idle pull cycle per service: once every service has logged its first complete
    cycle, utime + stime of /proc/PID/stat over IDLE_SECS divided by the complete cycles
    (`Statistics for this pull cycle` lines without `(Partial)`) logged meanwhile;
  * that every tenant's events are delivered: after SIGTERM, each file compared with the
    tenant's events as multisets (missing, duplicated, unknown lines per file).
Every line it prints for the summary starts with RESULT.
"""

import collections
import os
import re
import signal
import subprocess
import sys
import time

TABLES = {"web": "tap.proofpoint.isolation.browser_and_email", "url": "tap.proofpoint.isolation.url_isolation"}
SERVICES = {"web": "browser_and_email_isolation", "url": "url_isolation"}
KEY_PREFIX = "tenant-"
FIRST_ID = 10001
PROXY_VARIABLES = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
CYCLE = re.compile(r"Statistics for this pull cycle")


def key(i, tenants):
    """The simulator's key of tenant i (0-based) of TENANTS: its KeySet scheme, the number
    zero-padded to 4 digits or to the width of TENANTS."""
    return f"{KEY_PREFIX}{i + 1:0{max(4, len(str(tenants)))}d}"


def input_block(i, tenants, port_web, port_url, indent):
    pad = " " * indent
    lines = [f'id: "{FIRST_ID + i}"', f'credentials: {{api_key: "{key(i, tenants)}"}}', "services:"]
    for dataset, port in (("web", port_web), ("url", port_url)):
        lines += [f"  {SERVICES[dataset]}:", f"    override_base_url: http://127.0.0.1:{port}"]
    return "\n".join(pad + line for line in lines) + "\n"


def config(work, tenants, form, port_web, port_url):
    head = (f"globals:\n  id: tenants\n  name: tenants\n"
            f"  persistence: {{type: filesystem, config: {{directory_name: {work}/state}}}}\n"
            f"outputs:\n  local: {{type: file, config: {{directory: {work}/out}}}}\n")
    with open(f"{work}/config.yaml", "w") as f:
        f.write(head)
        if form == "dir":
            os.makedirs(f"{work}/tenants.d", exist_ok=True)
            f.write("inputs_dir: tenants.d\n")
            for i in range(tenants):
                with open(f"{work}/tenants.d/{key(i, tenants)}.yaml", "w") as t:
                    t.write(input_block(i, tenants, port_web, port_url, 0))
        else:
            f.write("inputs:\n  proofpoint_isolation:\n")
            for i in range(tenants):
                block = input_block(i, tenants, port_web, port_url, 6)
                f.write("    - " + block[6:])


def expected(work):
    """{(input id, dataset): Counter of event lines}, from the simulator's dump."""
    want = collections.defaultdict(collections.Counter)
    with open(f"{work}/expected", encoding="utf-8") as f:
        for line in f:
            dataset, k, event = line.rstrip("\n").split(" ", 2)
            want[(str(FIRST_ID + int(k[len(KEY_PREFIX):]) - 1), dataset)][event] += 1
    return want


def path_of(work, input_id, dataset):
    return f"{work}/out/{input_id}/{TABLES[dataset]}.jsonl"


def size(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def proc_status(pid, field):
    """A /proc/PID/status field in kB (VmHWM, VmRSS)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def complete_cycles(log):
    with open(log, errors="replace") as f:
        return sum(1 for line in f if CYCLE.search(line) and "(Partial) " not in line)


def wait_until(what, check, limit, step):
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"tenants.py: {what}: not within {limit} s")
        time.sleep(step)


def compare(work, want):
    """Per file: (missing, duplicated, unknown) lines against the tenant's events."""
    problems = {}
    for (input_id, dataset), events in want.items():
        got = collections.Counter()
        path = path_of(work, input_id, dataset)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                got.update(line.rstrip("\n") for line in f)
        missing = sum((events - got).values())
        extra = got - events
        unknown = sum(n for e, n in extra.items() if e not in events)
        duplicated = sum(extra.values()) - unknown
        if missing or duplicated or unknown:
            problems[(input_id, dataset)] = (missing, duplicated, unknown)
    return problems


def tenant_times(done_at):
    """Per tenant, sorted: seconds until both its services' files were complete."""
    per_tenant = {}
    for (input_id, _dataset), secs in done_at.items():
        per_tenant[input_id] = max(per_tenant.get(input_id, 0.0), secs)
    return sorted(per_tenant.values())


def run(work, tenants, idle_secs):
    want = expected(work)
    target = {k: sum(len(e.encode()) + 1 for e in c.elements()) for k, c in want.items()}
    files, events = len(target), sum(sum(c.values()) for c in want.values())
    child_env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    log = f"{work}/run.log"
    t0 = time.monotonic()
    proc = subprocess.Popen([os.environ["BIN"] + "/isolation-collector", "run", "--config", f"{work}/config.yaml"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=child_env)
    try:
        behind = dict(target)
        done_at = {}  # (input id, dataset) -> seconds from the start until the file was complete

        def up_to_date():
            if proc.poll() is not None:
                sys.exit(f"tenants.py: the collector exited with {proc.returncode}; see {log}")
            for k in list(behind):
                if size(path_of(work, *k)) >= behind[k]:
                    del behind[k]
                    done_at[k] = time.monotonic() - t0
            return not behind

        wait_until("every tenant up to date", up_to_date, limit=float(os.environ.get("CATCHUP_LIMIT", 900)), step=0.5)
        catch_up = time.monotonic() - t0
        hwm_catch_up, cpu_catch_up = proc_status(proc.pid, "VmHWM"), cpu_seconds(proc.pid)
        per_tenant = tenant_times(done_at)
        print(f"RESULT part=catchup tenants={tenants} files={files} events={events} seconds={catch_up:.2f} "
              f"cpu={cpu_catch_up:.2f} vmhwm_kb={hwm_catch_up} first_tenant={per_tenant[0]:.2f} "
              f"median_tenant={per_tenant[len(per_tenant) // 2]:.2f} "
              f"p95_tenant={per_tenant[max(0, -(-len(per_tenant) * 95 // 100) - 1)]:.2f}", flush=True)
        # Idle: every service has finished its first cycle (its checkpoint committed), and the
        # simulator has no new events.
        services = 2 * tenants
        wait_until("every service's first cycle", lambda: complete_cycles(log) >= services, limit=300, step=1.0)
        c0, cpu0, t1 = complete_cycles(log), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_secs)
        c1, cpu1, secs = complete_cycles(log), cpu_seconds(proc.pid), time.monotonic() - t1
        rss_idle, hwm = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
        cycles, cpu = c1 - c0, cpu1 - cpu0
        print(f"RESULT part=idle services={services} seconds={secs:.1f} cycles={cycles} cpu={cpu:.3f} "
              f"cpu_per_cycle_ms={cpu / max(cycles, 1) * 1000:.4f} core_pct={cpu / secs * 100:.2f} "
              f"vmrss_kb={rss_idle} vmhwm_kb={hwm}", flush=True)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    problems = compare(work, want)
    worst = sorted(problems.items())[:5]
    print(f"RESULT part=exact tenants={tenants} files={files} events={events} exact_files={files - len(problems)} "
          f"missing={sum(p[0] for p in problems.values())} duplicated={sum(p[1] for p in problems.values())} "
          f"unknown={sum(p[2] for p in problems.values())} exit={code} "
          f"first_problems={';'.join(f'{i}/{d}:{m}/{dup}/{unk}' for (i, d), (m, dup, unk) in worst) or 'none'}",
          flush=True)


def keyed(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def read_results(out):
    """The RESULT and SETTINGS lines of OUT/tenants.log as dicts keyed by part, or None."""
    path = os.path.join(out, "tenants.log")
    if not os.path.exists(path):
        return None
    rows = {}
    for line in open(path):
        if line.startswith("RESULT "):
            r = keyed(line)
            rows[r["part"] + (f"-{r['dataset']}" if "dataset" in r else "")] = r
        elif line.startswith("SETTINGS "):
            rows["settings"] = keyed(line)
    machine = os.path.join(out, "tenants-machine.txt")
    rows["machine"] = open(machine).read().strip().splitlines() if os.path.exists(machine) else []
    return rows


def figures(rows):
    """The figures the summary and docs/performance.md show, computed from the RESULT lines."""
    c, i, e, s = rows["catchup"], rows["idle"], rows["exact"], rows["settings"]
    peak_kb = max(int(c["vmhwm_kb"]), int(i["vmhwm_kb"]))
    return {
        "tenants": int(s["tenants"]), "services": int(i["services"]), "events_per_service": int(s["events"]),
        "events": int(c["events"]), "catch_up_s": float(c["seconds"]), "catch_up_cpu_s": float(c["cpu"]),
        "peak_rss_mib": peak_kb / 1024, "peak_rss_mb": peak_kb * 1024 / 1e6,
        "catch_up_rss_mib": int(c["vmhwm_kb"]) / 1024, "idle_rss_mib": int(i["vmrss_kb"]) / 1024,
        "idle_secs": float(i["seconds"]), "idle_cycles": int(i["cycles"]), "idle_cpu_s": float(i["cpu"]),
        "cpu_per_cycle_ms": float(i["cpu_per_cycle_ms"]), "idle_core_pct": float(i["core_pct"]),
        "files": int(e["files"]), "exact_files": int(e["exact_files"]), "missing": int(e["missing"]),
        "duplicated": int(e["duplicated"]), "unknown": int(e["unknown"]), "exit": e["exit"],
        "form": s["form"], "period": s["period"], "machine": rows["machine"],
        # Per tenant (older results lack them): the first, median and 95th percentile tenant up
        # to date, and how long after the first the last one was (catch_up_s is the last).
        "first_tenant_s": float(c["first_tenant"]) if "first_tenant" in c else None,
        "median_tenant_s": float(c["median_tenant"]) if "median_tenant" in c else None,
        "p95_tenant_s": float(c["p95_tenant"]) if "p95_tenant" in c else None,
        "spread_s": float(c["seconds"]) - float(c["first_tenant"]) if "first_tenant" in c else None,
        "sim_requests": sum(int(rows[k]["requests"]) for k in ("sim-web", "sim-url") if k in rows),
        "auth_failures": sum(int(rows[k]["auth_failures"]) for k in ("sim-web", "sim-url") if k in rows),
    }


def render(f):
    return "\n".join([
        f"{f['tenants']:,} tenants x 2 services ({f['services']:,} services), {f['events_per_service']:,} events per service "
        f"({f['events']:,} in all), config form {f['form']}, request period {f['period']} s (the default)",
        f"peak RSS (VmHWM): {f['peak_rss_mib']:.1f} MiB ({f['peak_rss_mb']:.0f} MB); {f['catch_up_rss_mib']:.1f} MiB at catch-up, "
        f"{f['idle_rss_mib']:.1f} MiB resident when idle",
        f"every tenant up to date after {f['catch_up_s']:.1f} s (CPU {f['catch_up_cpu_s']:.1f} s)"
        + ("" if f["spread_s"] is None else
           f"; per tenant: first {f['first_tenant_s']:.1f} s, median {f['median_tenant_s']:.1f} s, p95 "
           f"{f['p95_tenant_s']:.1f} s; the last {f['spread_s']:.1f} s after the first"),
        f"idle: {f['idle_cycles']:,} pull cycles in {f['idle_secs']:.0f} s, CPU {f['idle_cpu_s']:.2f} s = "
        f"{f['cpu_per_cycle_ms']:.3f} ms per pull cycle per service, {f['idle_core_pct']:.2f}% of one core",
        f"delivered: {f['exact_files']:,} of {f['files']:,} tenant files exact; missing {f['missing']}, "
        f"duplicated {f['duplicated']}, unknown {f['unknown']}; exit code after SIGTERM {f['exit']}",
        f"simulator: {f['sim_requests']:,} requests, {f['auth_failures']} refused keys",
    ])


def summary(out):
    rows = read_results(out)
    if not rows:
        sys.exit(f"tenants.py: no {out}/tenants.log")
    print("\n".join(rows["machine"]))
    print(render(figures(rows)))


def main():
    what, args = sys.argv[1], sys.argv[2:]
    if what == "config":
        config(args[0], int(args[1]), args[2], args[3], args[4])
    elif what == "run":
        run(args[0], int(args[1]), float(args[2]))
    elif what == "summary":
        summary(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
