"""Every figure of a scripts/bench/run.sh results directory, computed from the runs of that one
invocation: medians of the repeated runs, the ratios against iso2web, instruction counts, the
job latency curve and each target, met or not.

  python3 scripts/bench/summary.py RESULTS_DIR     # prints the summary, writes RESULTS_DIR/results.json

scripts/bench/report.py turns results.json into docs/performance.md. The inputs are the lines
`SETTINGS key=value ...` and `RESULT key=value ...` that scripts/bench/backfill.sh and run.sh
write (ours.log, iso2web.log, steady.log; raw.log, scripts/bench/raw_sender.sh's lines, when
the raw part ran), the many-tenant part's tenants/tenants.log
(scripts/bench/tenants.sh; its figures computed by tenants.py), criterion.json (µs per element, per benchmark name,
whatever benches/hot_path.rs measures), callgrind.txt (callgrind_annotate --inclusive=yes) and
machine.txt. A part that did not run leaves its figures and targets out.
"""

import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tenants as tenants_part  # noqa: E402 (beside this file)

TENANTS_RSS_TARGET_MB = 200  # issue 12: peak RSS of 1,000 tenants x 2 services in one process
RSS_TARGET_MIB = 32  # issue 23: peak RSS, default config (both services; and every curve run)
RAW_TLS_TARGET_PCT = 90  # issue 23 §3: ours' TLS delivery, % of the raw sender's events/s
RELP_CPU_TARGET_X = 2  # issue 23 §3: RELP's CPU per event over TLS syslog's
OBFUSCATION_TARGET_US = 0.5  # issue 23 §2: obfuscate_mask_hmac_pattern, µs per event
CURVE = re.compile(r"curve-(?:x([\d.]+)-)?(\d+)-(.+)")  # curve-[xFACTOR-]LATENCY-SIDE


def read(out, name):
    path = os.path.join(out, name)
    return open(path).read() if os.path.exists(path) else ""


def keyed_lines(text, kind):
    """The `kind key=value ...` lines of text, as dicts."""
    return [dict(kv.split("=", 1) for kv in line.split()[1:])
            for line in text.splitlines() if line.startswith(kind + " ")]


def readme_defaults():
    """The collector's defaults as the README's configuration table documents them."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    found = {}
    for line in open(readme).read().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or "`" not in cells[1]:
            continue
        keys = re.findall(r"`(\w+)`", cells[1])
        values = [v.strip() for v in cells[2].split("/")]
        if len(keys) == len(values):
            found.update({k: v for k, v in zip(keys, values) if k not in found})
    # A `globals` key documented in prose: "`window_memory_budget_in_mb` (default 16, ...".
    budget = re.search(r"`window_memory_budget_in_mb` \(default (\d+)", open(readme).read())
    if budget:
        found["window_memory_budget_in_mb"] = budget.group(1)
    return found


def group_medians(rows):
    """Medians over the runs of one group (one side, one size, one setting)."""
    m = lambda f: statistics.median(f(r) for r in rows)
    n = int(rows[0]["n"]) * (2 if rows[0].get("services") == "both" else 1)
    return {
        "n": int(rows[0]["n"]),
        "runs": len(rows),
        "delivered": m(lambda r: float(r["delivered"])),
        "all_delivered": all(int(r["delivered"]) == n for r in rows),
        "walls": [float(r["wall"]) for r in rows],
        "wall": m(lambda r: float(r["wall"])),
        "eps": m(lambda r: float(r["delivered"]) / float(r["wall"])),
        "cpu_us": m(lambda r: float(r["cpu"]) / max(float(r["delivered"]), 1) * 1e6),
        "rss_mib": m(lambda r: float(r["rss_kb"]) / 1024),
        "requests": m(lambda r: float(r["sim_requests"])),
        "bytes_per_event": m(lambda r: float(r["bytes_downloaded"]) / max(float(r["delivered"]), 1)),
        "job_wait": m(lambda r: float(r.get("job_wait", "nan"))),
        "first_job": m(lambda r: float(r.get("first_job", "nan"))),
        "avoidable_wait_pct": m(lambda r: (float(r.get("job_wait", "nan")) - float(r.get("first_job", "nan")))
                                / float(r["wall"]) * 100),
        "wait_pct": m(lambda r: float(r.get("job_wait", "nan")) / float(r["wall"]) * 100),
        # API jobs the simulator saw created (older results directories lack it: NaN).
        "jobs": m(lambda r: float(r.get("jobs", "nan"))),
        "rss_max_mib": max(float(r["rss_kb"]) / 1024 for r in rows),
    }


def end_to_end(out):
    """Groups of runs keyed by `group/n`, each with its settings and medians."""
    results = keyed_lines(read(out, "ours.log") + read(out, "iso2web.log"), "RESULT")
    settings = {}
    for s in keyed_lines(read(out, "ours.log") + read(out, "iso2web.log"), "SETTINGS"):
        settings.setdefault(f"{s['group']}/{s['n']}", s)
    groups = {}
    for row in results:
        groups.setdefault(f"{row['group']}/{row['n']}", []).append(row)
    return {k: dict(group_medians(rows), group=k.split("/")[0], settings=settings.get(k, {}))
            for k, rows in groups.items()}


def callgrind(out, e2e):
    """Instructions per delivered event, with sha2 (its software path under valgrind) apart."""
    text = read(out, "callgrind.txt")
    total = re.search(r"^\s*([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", text, re.M)
    run = next((g for g in e2e.values() if g["group"] == "callgrind"), None)
    if not total or not run:
        return None
    # The function table only (the annotated source below it repeats counts per call site).
    table = text.split("file:function", 1)[-1].split("\n-----", 2)[1] if "file:function" in text else ""
    # Inclusive counts: the outermost function of sha2's code (its crate's files, or inlined
    # under its name) holds every call of the hash.
    sha = [int(m.group(1).replace(",", "")) for m in
           re.finditer(r"^\s*([\d,]+) \([^)]*\)\s+(\S*/sha2-[^:]*:|\S*:\S*sha2::)", table, re.M)]
    ir, sha_ir, events = int(total.group(1).replace(",", "")), max(sha, default=0), run["delivered"]
    return {"top_self": top_self(read(out, "callgrind-self.txt"), events),"n": run["n"], "delivered": events, "instructions": ir, "sha2_instructions": sha_ir,
            "per_event": ir / events, "sha2_per_event": sha_ir / events,
            "without_sha2_per_event": (ir - sha_ir) / events}


def top_self(text, events, count=12):
    """The functions with the most instructions of their own: [name, per event, % of all].

    callgrind_annotate prints only the functions above its threshold (99% of the total)."""
    table = text.split("file:function", 1)[-1].split("\n-----", 2)[1] if "file:function" in text else ""
    totals = {}  # callgrind_annotate splits a function by the source file of its (inlined) lines
    for m in re.finditer(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+\S*?:(.+?)(?: \[[^\]]*\])?$", table, re.M):
        ir, pct = totals.get(m.group(3), (0, 0.0))
        totals[m.group(3)] = (ir + int(m.group(1).replace(",", "")), pct + float(m.group(2)))
    rows = sorted(([f, ir / events, pct] for f, (ir, pct) in totals.items()), key=lambda r: -r[1])
    return rows[:count]


def curve(e2e):
    """The job latency curves, one per events per service and event size factor: a list of
    {"n", "factor", "rows": {latency_ms: {side: medians}}}, sides `mcj-default` (ours, the
    default config), `mcj-16` (another max_concurrent_jobs, when CURVE_MCJ asked) and `iso2web`."""
    series = {}
    for g in e2e.values():
        m = CURVE.fullmatch(g["group"])
        if m:
            factor = float(m.group(1) or 1)
            rows = series.setdefault((g["n"], factor), {})
            rows.setdefault(int(m.group(2)), {})[m.group(3)] = g
    # run.sh's iso2web runs (part `iso`) are the curve's 0 s row when they have the curve's size.
    iso = [g for g in e2e.values() if g["group"] == "iso" and g["settings"].get("job_latency_ms") == "0"
           and float(g["settings"].get("event_size_factor", 1)) == 1]
    for g in iso:
        rows = series.get((g["n"], 1.0), {})
        if 0 in rows:
            rows[0].setdefault("iso2web", g)
    return [{"n": n, "factor": f, "rows": dict(sorted(rows.items()))} for (n, f), rows in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def curve_verdict(c):
    """One curve's cells ours (default config) against iso2web: (every cell faster?, cells, losses)."""
    cells = [(lat, sides.get("mcj-default"), sides.get("iso2web")) for lat, sides in c["rows"].items()]
    complete = [(lat, o, i) for lat, o, i in cells if o and i]
    losses = [lat for lat, o, i in complete if o["wall"] >= i["wall"]]
    met = bool(complete) and len(complete) == len(cells) and not losses and all(o["all_delivered"] for _, o, _ in complete)
    return met, complete, losses


def size_text(c):
    return f"{c['n']:,} events" + ("" if c["factor"] == 1 else f", events x{c['factor']:g} the size")


def raw_sender(out):
    """The raw sender's runs (raw.log, part `raw`): {`tls`|`relp`: {n: medians}}."""
    groups = {}
    for r in keyed_lines(read(out, "raw.log"), "RESULT"):
        groups.setdefault(r["group"].removeprefix("raw-"), {}).setdefault(int(r["n"]), []).append(r)
    m = lambda rows, f: statistics.median(f(r) for r in rows)
    return {mode: {n: {"n": n, "runs": len(rows), "walls": [float(r["wall"]) for r in rows],
                       "eps": m(rows, lambda r: float(r["delivered"]) / float(r["wall"])),
                       "cpu_us": m(rows, lambda r: float(r["cpu"]) / max(float(r["delivered"]), 1) * 1e6),
                       "receiver_cpu_us": m(rows, lambda r: float(r.get("receiver_cpu", "nan"))
                                            / max(float(r["delivered"]), 1) * 1e6),
                       "all_delivered": all(int(r["delivered"]) == n for r in rows)}
                   for n, rows in sizes.items()}
            for mode, sizes in groups.items()}


def largest(e2e, group):
    sizes = [g for g in e2e.values() if g["group"] == group]
    return max(sizes, key=lambda g: g["n"]) if sizes else None


def target(rows, name, met, figure):
    rows.append({"target": name, "met": bool(met), "figure": figure})


def targets(res):
    """Each target of issues 10, 12 and 23 that this run measured: met or not, and the figure."""
    e2e, micro, rows = res["end_to_end"], res["micro"], []
    big_file, big_tls = largest(e2e, "file"), largest(e2e, "tls")
    if big_file:
        cg = res["callgrind"]
        beside = (f" (callgrind, {cg['n']:,} events: {cg['per_event']:,.0f} instructions per event, "
                  f"{cg['without_sha2_per_event']:,.0f} without sha2's software path)") if cg else ""
        target(rows, f"CPU per delivered event <= 1.0 us (file output, {big_file['n']:,} events)",
               big_file["cpu_us"] <= 1.0, f"{big_file['cpu_us']:.2f} us{beside}")
    if "parse_page" in micro:
        target(rows, "parse_page <= 0.6 us per event (Criterion)", micro["parse_page"] <= 0.6,
               f"{micro['parse_page']:.3f} us")
    if "obfuscate_mask_hmac_pattern" in micro:
        obf = res.get("obfuscation")
        beside = (f" (end to end, file, {obf['n']:,} events: {obf['cpu_us']:.2f} us CPU per event with the rules, "
                  f"{obf['plain_cpu_us']:.2f} without)") if obf else ""
        target(rows, f"obfuscation (mask + HMAC + pattern) <= {OBFUSCATION_TARGET_US} us per event (Criterion "
               "obfuscate_mask_hmac_pattern)", micro["obfuscate_mask_hmac_pattern"] <= OBFUSCATION_TARGET_US,
               f"{micro['obfuscate_mask_hmac_pattern']:.3f} us{beside}")
    both = sorted((g for g in e2e.values() if g["group"] == "both"), key=lambda g: g["n"])
    for g in both:
        target(rows, f"peak RSS <= {RSS_TARGET_MIB} MiB, both services, default config, {g['n']:,} events each",
               g["rss_max_mib"] <= RSS_TARGET_MIB, f"{g['rss_max_mib']:.1f} MiB (the largest of {runs(g)})")
    curve_runs = [g for c in res["curve"] for sides in c["rows"].values()
                  for side, g in sides.items() if side != "iso2web"]
    if curve_runs:
        top = max(curve_runs, key=lambda g: g["rss_max_mib"])
        target(rows, f"peak RSS <= {RSS_TARGET_MIB} MiB in every run of ours on the job latency curve",
               top["rss_max_mib"] <= RSS_TARGET_MIB,
               f"at most {top['rss_max_mib']:.1f} MiB ({top['group']}, {top['n']:,} events), {len(curve_runs)} groups")
    if len(both) >= 2:
        lo, hi = both[0]["rss_mib"], both[-1]["rss_mib"]
        target(rows, f"peak RSS at {both[0]['n']:,} and {both[-1]['n']:,} within 10%",
               abs(hi - lo) <= 0.1 * min(lo, hi), f"{lo:.1f} and {hi:.1f} MiB ({(hi / lo - 1) * 100:+.0f}%)")
    raw_tls = big_tls and res["raw"].get("tls", {}).get(big_tls["n"])
    if raw_tls:
        pct = big_tls["eps"] / raw_tls["eps"] * 100
        target(rows, f"TLS delivery >= {RAW_TLS_TARGET_PCT}% of the raw sender's into the same rsyslog "
               f"({big_tls['n']:,} events)", pct >= RAW_TLS_TARGET_PCT,
               f"{pct:.0f}% ({big_tls['eps']:,.0f} vs {raw_tls['eps']:,.0f} events/s)")
    for tls, relp in relp_pairs(e2e):
        x = relp["cpu_us"] / tls["cpu_us"]
        target(rows, f"RELP CPU per event <= {RELP_CPU_TARGET_X}x TLS syslog's ({relp['n']:,} events, same rsyslog, "
               "interleaved)", x <= RELP_CPU_TARGET_X, f"x{x:.2f} ({relp['cpu_us']:.2f} vs {tls['cpu_us']:.2f} us)")
    curve_targets(rows, res["curve"])
    t = res.get("tenants")
    if t and t.get("spread_s") is not None:
        target(rows, f"every tenant up to date within one request_period ({t['period']} s) of the first "
               f"({t['tenants']:,} tenants x 2 services)", t["spread_s"] <= float(t["period"]),
               f"the last {t['spread_s']:.1f} s after the first (first {t['first_tenant_s']:.1f} s, median "
               f"{t['median_tenant_s']:.1f} s, last {t['catch_up_s']:.1f} s from the start)")
    if t:
        target(rows, f"peak RSS < {TENANTS_RSS_TARGET_MB} MB, {t['tenants']:,} tenants x 2 services in one process",
               t["peak_rss_mb"] < TENANTS_RSS_TARGET_MB, f"{t['peak_rss_mb']:.0f} MB ({t['peak_rss_mib']:.1f} MiB)")
        target(rows, f"every tenant's events delivered exactly ({t['tenants']:,} tenants x 2 services)",
               t["exact_files"] == t["files"], f"{t['exact_files']:,} of {t['files']:,} files exact")
    return rows


def runs(g):
    return f"{g['runs']} run" + ("" if g["runs"] == 1 else "s")


def relp_pairs(e2e):
    """(TLS syslog, RELP) groups of the relp part, same size: the interleaved runs."""
    return [(t, r) for t in e2e.values() if t["group"] == "relp-vs-tls"
            for r in e2e.values() if r["group"] == "relp" and r["n"] == t["n"]]


def curve_targets(rows, curves):
    """Issue 23 §1: ours faster than iso2web at every job latency of each curve, and over all."""
    verdicts = []
    for c in curves:
        met, cells, losses = curve_verdict(c)
        verdicts.append(met)
        lats = ", ".join(f"{lat / 1000:g}" for lat in c["rows"])
        worst = max(cells, key=lambda cell: cell[1]["wall"] / cell[2]["wall"], default=None)
        figure = (f"{len(cells)} of {len(c['rows'])} latencies compared; slower or equal at "
                  f"{', '.join(f'{lat / 1000:g} s' for lat in losses) or 'none'}")
        if worst:
            figure += (f"; closest {worst[0] / 1000:g} s: {worst[1]['wall']:.1f} s vs {worst[2]['wall']:.1f} s")
        target(rows, f"ours (default config) faster than iso2web at every job latency ({lats} s), "
               f"{size_text(c)}", met, figure)
    if len(verdicts) > 1:
        target(rows, "ours faster than iso2web at every job latency and size", all(verdicts),
               f"{sum(verdicts)} of {len(verdicts)} curves")


def obfuscation(e2e):
    """The obfuscated file backfill beside the plain one of the same size, or None."""
    obf = largest(e2e, "obfuscate")
    plain = obf and next((g for g in e2e.values() if g["group"] == "file" and g["n"] == obf["n"]), None)
    if not obf:
        return None
    return {"n": obf["n"], "cpu_us": obf["cpu_us"], "eps": obf["eps"],
            "plain_cpu_us": plain["cpu_us"] if plain else float("nan"),
            "plain_eps": plain["eps"] if plain else float("nan")}


def compute(out):
    res = {
        "machine": read(out, "machine.txt").strip().splitlines(),
        "duration": read(out, "duration.txt").strip(),
        "defaults": readme_defaults(),
        "micro": json.loads(read(out, "criterion.json") or "{}"),
        "end_to_end": end_to_end(out),
    }
    res["callgrind"] = callgrind(out, res["end_to_end"])
    res["curve"] = curve(res["end_to_end"])
    res["raw"] = raw_sender(out)
    res["raw_skipped"] = read(out, "raw-skipped.txt").strip()
    res["obfuscation"] = obfuscation(res["end_to_end"])
    res["iso_ratios"] = iso_ratios(res["end_to_end"])
    steady = keyed_lines(read(out, "steady.log"), "RESULT")
    res["steady"] = dict(steady[0], **keyed_lines(read(out, "steady.log"), "SETTINGS")[0]) if steady else None
    res["tenants"] = tenants(out)
    res["targets"] = targets(res)
    return res


def tenants(out):
    """The many-tenant part's figures (run.sh writes them into OUT/tenants, tenants.sh alone into
    its own OUT), or None when it did not run."""
    for d in (os.path.join(out, "tenants"), out):
        rows = tenants_part.read_results(d)
        if rows and {"catchup", "idle", "exact", "settings"} <= rows.keys():
            return tenants_part.figures(rows)
    return None


def iso_ratios(e2e):
    """Ours over iso2web at the same size and simulator settings (iso2web's group `iso`)."""
    ratios = []
    for iso in (g for g in e2e.values() if g["group"] == "iso"):
        for ours in (g for g in e2e.values() if g["group"] in ("file", "tls") and g["n"] == iso["n"]):
            ratios.append({"side": ours["group"], "n": iso["n"], "throughput": ours["eps"] / iso["eps"],
                           "cpu_per_event": ours["cpu_us"] / iso["cpu_us"], "rss": ours["rss_mib"] / iso["rss_mib"]})
    return ratios


def setting_text(s, defaults):
    """One side's settings, a default named as such with its value."""
    d = lambda key, cfg: f"{defaults.get(cfg, '?')} (default)" if s.get(key) in (None, "default") else s[key]
    extra = "" if float(s.get("event_size_factor") or 1) == 1 else f", events x{s['event_size_factor']} the default size"
    if s.get("obfuscate"):
        extra += ", obfuscation rules: userId masked, userName hmac_sha256, url host string_patterns"
    if s.get("mode") == "iso2web":
        return (f"iso2web defaults: page size {s['page_size']}, {s['chunk_size']} events per POST, polls a pending "
                f"job again at once; job latency {s['job_latency_ms']} ms, pending polls {s['pending_polls']}, "
                f"{s.get('span_hours')} h of events{extra}")
    return (f"poll interval {d('poll_initial', 'job_poll_initial_interval_in_seconds')} s, page size "
            f"{d('page_size', 'page_size')}, max_events_per_window {d('max_events_per_window', 'max_events_per_window')}, "
            f"max_concurrent_jobs {d('max_concurrent_jobs', 'max_concurrent_jobs')}, window memory budget "
            f"{defaults.get('window_memory_budget_in_mb', '?')} MiB (default); job latency {s.get('job_latency_ms')} ms, "
            f"pending polls {s.get('pending_polls')}, {s.get('span_hours')} h of events, services {s.get('services')}{extra}")


def count(x):
    """x as a whole number, or "-" where the side does not measure it (NaN)."""
    return "-" if x != x else f"{x:.0f}"


def num(x):
    """x with two decimals, or "-" where the side does not measure it (NaN)."""
    return "-" if x != x else f"{x:.2f}"


def render(res):
    lines = [*res["machine"], res["duration"], ""]
    if res["micro"]:
        lines.append("Micro-benchmarks (Criterion median, us per event):")
        lines += [f"  {name:<40} {us:8.3f}" for name, us in sorted(res["micro"].items())]
        lines.append("")
    cg = res["callgrind"]
    if cg:
        lines += [f"callgrind, {cg['n']:,}-event backfill to the file output, {cg['delivered']:,.0f} delivered: "
                  f"{cg['instructions']:,} instructions, {cg['per_event']:,.0f} per event; sha2 (software path under "
                  f"valgrind) {cg['sha2_per_event']:,.0f} per event; without sha2 {cg['without_sha2_per_event']:,.0f} per event", ""]
    lines.append("End-to-end (medians; ! = not every event delivered in some run; job wait: ours only, "
                 "summed over the services of the process):")
    lines.append(f"  {'group':<26} {'events':>9} {'runs':>4} {'wall s':>8} {'events/s':>9} {'CPU us/ev':>9} "
                 f"{'RSS MiB':>8} {'requests':>8} {'dl B/ev':>7} {'job wait s':>10} {'first job s':>11}")
    for k, g in sorted(res["end_to_end"].items(), key=lambda kv: (kv[1]["group"], kv[1]["n"])):
        lines.append(f"  {g['group']:<26} {g['n']:>9,} {g['runs']:>4} {g['wall']:>8.2f}{'' if g['all_delivered'] else '!'} "
                     f"{g['eps']:>9,.0f} {g['cpu_us']:>9.2f} {g['rss_mib']:>8.1f} {g['requests']:>8.0f} "
                     f"{g['bytes_per_event']:>7.0f} {num(g['job_wait']):>10} {num(g['first_job']):>11}")
    lines += ["", "Settings of each group:"]
    # A group's settings are the same at every size: one line per distinct pair.
    lines += list(dict.fromkeys(f"  {g['group']}: {setting_text(g['settings'], res['defaults'])}"
                                for _, g in sorted(res["end_to_end"].items()) if g["settings"]))
    for c in res["curve"]:
        lines += ["", f"Job latency curve, {size_text(c)} (median wall s; ours: time only waiting for jobs / the "
                  "first job's latency; API jobs created):"]
        for lat, sides in c["rows"].items():
            cells = []
            for side, g in sorted(sides.items()):
                wait = "" if side == "iso2web" else f" (waited {g['job_wait']:.1f} / first {g['first_job']:.1f})"
                cells.append(f"{side} {g['wall']:.1f}{'' if g['all_delivered'] else '!'}{wait} "
                             f"[{runs(g)}, API jobs {count(g['jobs'])}]")
            lines.append(f"  {lat / 1000:>4g} s: " + "; ".join(cells))
    for mode, sizes in sorted(res["raw"].items()):
        for n, g in sorted(sizes.items()):
            lines.append(f"Raw sender, {mode}, {n:,} events: {g['eps']:,.0f} events/s{'' if g['all_delivered'] else '!'}, "
                         f"sender CPU {g['cpu_us']:.2f} us/event, rsyslog {g['receiver_cpu_us']:.2f} us/event [{runs(g)}]")
    if res["raw_skipped"]:
        lines.append(res["raw_skipped"])
    if res["obfuscation"]:
        o = res["obfuscation"]
        lines.append(f"Obfuscation end to end ({o['n']:,} events, file): CPU {o['cpu_us']:.2f} us/event with the rules, "
                     f"{o['plain_cpu_us']:.2f} without")
    lines += ["", "Ours over iso2web (same size and simulator settings):"]
    lines += [f"  {r['side']:<4} {r['n']:>9,}: throughput x{r['throughput']:.1f}, CPU per event x{r['cpu_per_event']:.3f}, "
              f"peak RSS x{r['rss']:.3f}" for r in res["iso_ratios"]]
    if res["steady"]:
        s = res["steady"]
        sent = max(int(s["sent"]), 1)
        lines += ["", f"Steady state ({s['secs']} s): ours {int(s['requests']) / sent:.4f} API requests and "
                  f"{int(s['downloaded']) / sent:.2f} events downloaded per delivered event, {s['collector_total']} delivered; "
                  f"iso2web {s['iso_runs']} runs, {s['iso_requests']} requests, {s['iso_delivered']} delivered"]
    if res.get("tenants"):
        lines += ["", "Many tenants in one process (scripts/bench/tenants.sh):"]
        lines += [f"  {line}" for line in tenants_part.render(res["tenants"]).splitlines()]
    lines += ["", "Targets:"]
    lines += [f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['figure']}" for t in res["targets"]]
    return "\n".join(lines)


if __name__ == "__main__":
    out = sys.argv[1]
    res = compute(out)
    json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
    print(render(res))
