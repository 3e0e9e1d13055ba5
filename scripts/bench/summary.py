"""Summary table of a scripts/bench/run.sh results directory: medians of the repeated runs, the
ratios against iso2web and the targets. Usage: python3 scripts/bench/summary.py RESULTS_DIR"""

import os
import re
import statistics
import sys

out = sys.argv[1]


def read(name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


def results(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("RESULT "):
            rows.append({k: v for k, v in (kv.split("=", 1) for kv in line.split()[1:])})
    return rows


UNIT = {"ps": 1e-6, "ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
micro = {}
for m in re.finditer(r"hot_path/(\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", read("criterion.txt")):
    micro[m.group(1)] = float(m.group(2)) * UNIT[m.group(3)] / 10_000  # µs per event
if micro:
    print("Micro-benchmarks (one 10,000-event page, Criterion median; µs per event):")
    for name, us in micro.items():
        print(f"  {name:<36} {us:8.3f} µs/event")
    print()

groups = {}
for row in results(read("ours.log")) + results(read("iso2web.log")):
    groups.setdefault((row["mode"], int(row["n"])), []).append(row)

med = {}
print("End-to-end backfill (median of the runs):")
print(f"  {'collector':<10} {'events':>9} {'runs':>4} {'delivered':>9} {'wall s':>8} {'events/s':>10} "
      f"{'CPU s/1M ev':>11} {'peak RSS MiB':>12} {'requests':>8} {'bytes dl/ev':>11}")
for (mode, n), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    m = lambda k: statistics.median(float(r[k]) for r in rows)
    delivered = m("delivered")
    d = {
        "delivered": delivered,
        "all_delivered": all(int(r["delivered"]) == n for r in rows),
        "wall": m("wall"),
        "eps": statistics.median(float(r["delivered"]) / float(r["wall"]) for r in rows),
        "cpu_per_m": statistics.median(float(r["cpu"]) / float(r["delivered"]) * 1e6 for r in rows),
        "rss": m("rss_kb") / 1024,
        "requests": m("sim_requests"),
        "bytes": statistics.median(float(r["bytes_downloaded"]) / float(r["delivered"]) for r in rows),
    }
    med[(mode, n)] = d
    name = {"file": "ours/file", "tls": "ours/tls"}.get(mode, mode)
    print(f"  {name:<10} {n:>9,} {len(rows):>4} {int(delivered):>9,}{'' if d['all_delivered'] else '!'} "
          f"{d['wall']:>8.2f} {d['eps']:>10,.0f} {d['cpu_per_m']:>11.2f} "
          f"{d['rss']:>12.1f} {int(d['requests']):>8} {d['bytes']:>11.0f}")
print()

print("Ours over iso2web (same N, same simulator):")
for (mode, n), d in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    theirs = med.get(("iso2web", n))
    if mode == "iso2web" or not theirs:
        continue
    print(f"  {mode:<5} n={n:>9,}: throughput x{d['eps'] / theirs['eps']:.1f}, peak RSS x{d['rss'] / theirs['rss']:.3f} "
          f"(1/{theirs['rss'] / d['rss']:.1f}), CPU per event x{d['cpu_per_m'] / theirs['cpu_per_m']:.3f} "
          f"(1/{theirs['cpu_per_m'] / d['cpu_per_m']:.0f})")
print()

steady = results(read("steady.log"))
if steady:
    s = steady[0]
    sent = max(int(s["sent"]), 1)
    print(f"Steady state ({s['secs']} s live feed, lookback 2 min, sweep 0.5 min, period 5 s):")
    print(f"  ours:    {int(s['requests']) / sent:.4f} API requests and {int(s['downloaded']) / sent:.2f} events downloaded "
          f"per delivered event; {s['collector_total']} delivered in total")
    print(f"  iso2web: {s['iso_runs']} runs, {s['iso_requests']} API requests, {s['iso_delivered']} delivered in total "
          f"(late events before its checkpoint are skipped)")
    print()

print("Targets:")
big = max((n for (mode, n) in med if mode == "iso2web"), default=None)
for mode in ("file", "tls"):
    ours, theirs = med.get((mode, 1_000_000)), med.get(("iso2web", 1_000_000))
    if ours and theirs:
        x = ours["eps"] / theirs["eps"]
        r = ours["rss"] / theirs["rss"]
        print(f"  [{'met' if x >= 20 else 'NOT met'}] {mode}: throughput >= 20x iso2web at 1M: x{x:.1f}")
        print(f"  [{'met' if r <= 0.2 else 'NOT met'}] {mode}: peak RSS <= 1/5 of iso2web at 1M: 1/{1 / r:.1f}")
sizes = sorted({n for (mode, n) in med if mode == "file"})
if len(sizes) >= 2:
    a, b = med[("file", sizes[0])]["rss"], med[("file", sizes[-1])]["rss"]
    print(f"  [{'met' if b <= a * 1.25 else 'NOT met'}] peak RSS independent of N: {a:.1f} MiB at {sizes[0]:,}, "
          f"{b:.1f} MiB at {sizes[-1]:,}")
if micro and ("file", 1_000_000) in med:
    cpu = med[("file", 1_000_000)]["cpu_per_m"]
    value, raw = micro.get("baseline_serde_value_per_event"), micro.get("baseline_serde_rawvalue_page")
    if value:
        print(f"  [{'met' if cpu <= 3 * value else 'NOT met'}] CPU per event <= 3x parsing its JSON "
              f"(serde_json::Value, {value:.2f} µs): {cpu:.2f} µs = x{cpu / value:.2f}")
    if raw:
        print(f"         against the validation-only parse (RawValue, {raw:.2f} µs): x{cpu / raw:.1f}")
