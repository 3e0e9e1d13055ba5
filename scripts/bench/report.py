"""docs/performance.md from a scripts/bench/run.sh results directory: every number on the page
comes from that directory (through summary.py's computation); only the prose is written here.

  python3 scripts/bench/report.py RESULTS_DIR > docs/performance.md

run.sh calls it at the end: into RESULTS_DIR/performance.md, or with WRITE_DOC=1 into
docs/performance.md.

  python3 scripts/bench/report.py --splice docs/performance.md RESULTS_DIR

rewrites only the many-tenant section ("## 1,000 tenants ...") of the page from a results
directory of scripts/bench/tenants.sh (which does so with WRITE_DOC=1): that part runs alone in
minutes, where the whole benchmark takes more than half an hour. The section names its own run.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summary  # noqa: E402 (beside this file)

NAMES = {
    "file": "ours, file",
    "tls": "ours, TLS",
    "relp-vs-tls": "ours, TLS (interleaved with RELP)",
    "relp": "ours, RELP (imrelp, TLS)",
    "both": "ours, both services, default config",
    "iso": "iso2web",
    "callgrind": "ours, file, under callgrind",
    "obfuscate": "ours, file, obfuscation rules (mask + HMAC + pattern)",
}


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def name(g, defaults):
    m = summary.CURVE.fullmatch(g["group"])
    if m:
        factor, lat, side = m.group(1), int(m.group(2)), m.group(3).removeprefix("mcj-")
        mcj = f"{defaults.get('max_concurrent_jobs', '?')} (default)" if side == "default" else side
        who = "iso2web" if side == "iso2web" else f"ours, max_concurrent_jobs {mcj}"
        size = f", events x{factor} the size" if factor else ""
        return f"{who}, job latency {lat / 1000:g} s{size}"
    return NAMES.get(g["group"], g["group"])


def e2e_order(g):
    """Throughput rows first, then each curve (event size, events) by latency, ours before iso2web."""
    m = summary.CURVE.fullmatch(g["group"])
    if not m:
        return (0, 0.0, g["n"], 0, g["group"])
    return (1, float(m.group(1) or 1), g["n"], int(m.group(2)), m.group(3) == "iso2web")


def e2e_rows(res):
    rows = []
    for g in sorted(res["end_to_end"].values(), key=e2e_order):
        if g["group"] == "callgrind":
            continue  # its seconds are valgrind's
        walls = ", ".join(f"{w:.2f}" for w in g["walls"])
        rows.append([name(g, res["defaults"]), f"{g['n']:,}", f"{g['delivered']:,.0f}" + ("" if g["all_delivered"] else " (not all)"),
                     walls, f"{g['wall']:.2f}", f"{g['eps']:,.0f}", f"{g['cpu_us']:.2f}", f"{g['rss_mib']:.1f}",
                     f"{g['requests']:.0f}", f"{g['bytes_per_event']:.0f}"])
    return rows


runs = summary.runs


def curve_section(res):
    if not res["curve"]:
        return []
    default_mcj = res["defaults"].get("max_concurrent_jobs", "?")
    lines = ["## Job latency curve", "",
             "The simulator's jobs complete the given latency after their creation (no PENDING answer beyond it), "
             "events spread over 30 days. One service (Browser & Email Isolation) on both sides, the same simulator "
             "flags for both: the issue's sizes are per service, and iso2web collects one service per process, so "
             "one service each is the like-for-like comparison (the both-services rows above show ours with two). "
             "Ours runs the collector's default config (poll interval, page size, window, "
             f"`max_concurrent_jobs` {default_mcj}); iso2web asks one job for the whole range and polls it again at "
             "once. *Waited* is the time ours spent only waiting for jobs (the puller's `Waited S seconds for API "
             "jobs`), *first job* the part no collector can avoid: nothing can be downloaded before the first job "
             "completes. *API jobs / requests* are the jobs each side created and the requests it made, as the simulator "
             "counts them (iso2web creates one job and polls it again at once while it is pending). "
             "Wall seconds are medians; one run per cell unless the cell says otherwise. The target holds for a "
             "curve only where ours is faster in every cell.", ""]
    for c in res["curve"]:
        others = sorted({side for sides in c["rows"].values() for side in sides} - {"mcj-default", "iso2web"})
        rows = []
        for lat, sides in c["rows"].items():
            d, iso = sides.get("mcj-default"), sides.get("iso2web")
            ours = lambda g: (f"{g['wall']:.1f}{'' if g['all_delivered'] else ' (not all delivered)'} "
                              f"(waited {g['job_wait']:.1f}, {runs(g)})" if g else "-")
            rows.append([f"{lat / 1000:g} s", ours(d), f"{d['first_job']:.1f}" if d else "-",
                         f"{summary.count(d['jobs'])} / {d['requests']:.0f}" if d else "-",
                         f"{d['rss_max_mib']:.1f}" if d else "-",
                         *[ours(sides.get(o)) for o in others],
                         f"{iso['wall']:.1f} ({runs(iso)})" if iso else "-",
                         f"{summary.count(iso['jobs'])} / {iso['requests']:.0f}" if iso else "-",
                         f"x{iso['wall'] / d['wall']:.2f}" if d and iso else "-"])
        met, _, losses = summary.curve_verdict(c)
        verdict = ("faster at every latency: target met" if met else
                   "target **not met**" + (f": slower or equal at {', '.join(f'{x / 1000:g} s' for x in losses)}"
                                           if losses else ": a cell is missing a side or lost events"))
        lines += [f"### {summary.size_text(c).replace(' events', ' events per service', 1)}: {verdict}", ""]
        lines += table(["job latency", f"ours (mcj {default_mcj}): wall s", "first job s", "ours: API jobs / requests",
                        "ours: peak RSS MiB",
                        *[f"ours, max_concurrent_jobs {o.removeprefix('mcj-')}: wall s" for o in others],
                        "iso2web: wall s", "iso2web: API jobs / requests", "ours' speed over iso2web's"], rows) + [""]
    return lines


def head(res):
    lines = ["# Performance", "",
             "Generated by `scripts/bench/report.py` from the results of one `bash scripts/bench/run.sh` "
             "(see the README's Benchmark section); do not edit by hand, run the benchmark again. "
             "Every figure below comes from the runs of that one invocation.", "",
             "## Machine and conditions", ""]
    lines += [f"- {m}" for m in res["machine"]]
    lines += [f"- {res['duration']}" if res["duration"] else "- (duration not recorded)",
              "- Simulator, collector and (for iso2web) the receiver share the machine's cores; each end-to-end "
              "figure is the median of the runs listed. Peak RSS and CPU are the collector process's alone "
              "(`/usr/bin/time -v`).", ""]
    if partial(res):
        lines += [f"**A partial run** ({partial(res)}): the full benchmark (`bash scripts/bench/run.sh`: every part, "
                  "3 runs per side, 1,000,000 events) replaces these figures.", ""]
    lines += ["## Targets", ""]
    lines += table(["target", "figure", "met?"],
                   [[t["target"], t["figure"], "yes" if t["met"] else "**no**"] for t in res["targets"]])
    return lines + [""]


def partial(res):
    """Why this run is not the full benchmark, or "" when it is."""
    text = " ".join(res["machine"])
    parts = re.search(r"parts: (.*?); REPS=(\d+)", text)
    missing = [] if not parts else [p for p in "micro callgrind backfill relp raw obfuscate both iso curve steady tenants".split()
                                    if p not in parts.group(1).split()]
    why = [f"parts left out: {' '.join(missing)}"] if missing else []
    if parts and int(parts.group(2)) < 3:
        why.append(f"{parts.group(2)} run per side")
    sizes = {g["n"] for g in res["end_to_end"].values() if g["group"] in ("file", "iso")}
    if sizes and max(sizes) < 1_000_000:
        why.append(f"at most {max(sizes):,} events")
    return "; ".join(why)


def setting_row(g, defaults):
    """[run, settings]; a curve's runs differ only in their latency, so they share one row per side."""
    text = summary.setting_text(g["settings"], defaults)
    m = summary.CURVE.fullmatch(g["group"])
    if not m:
        return [name(g, defaults), text]
    who = re.sub(r", job latency [\d.]+ s", ", job latency curve", name(g, defaults))
    return [who, re.sub(r"job latency \d+ ms", "job latency as the curve's row", text)]


def settings_section(res):
    lines = ["## Settings of each side", "",
             "The collector's defaults are what a user runs. The throughput rows (`file`, `tls`, `callgrind`, the obfuscation row) "
             "change one default: the job poll interval, 0.01 s instead of the default, because the "
             "simulator's jobs there have no latency (they complete at the first poll) and iso2web polls "
             "a pending job again at once. The both-services rows and the job latency curve run the default "
             "config unchanged; the curve's 0 s row is the default's figure for the same events.", ""]
    # A group's settings are the same at every size: one row per distinct pair.
    rows = [setting_row(g, res["defaults"])
            for g in sorted(res["end_to_end"].values(), key=lambda g: g["group"]) if g["settings"]]
    rows = [list(r) for r in dict.fromkeys(tuple(r) for r in rows)]
    return lines + table(["run", "settings"], rows) + [""]


def micro_section(res):
    lines = []
    if res["micro"]:
        lines += ["## Micro-benchmarks (Criterion median, µs per event)", ""]
        lines += table(["benchmark (benches/hot_path.rs)", "µs/event"],
                       [[f"`{k}`", f"{v:.3f}"] for k, v in sorted(res["micro"].items())]) + [""]
    cg = res["callgrind"]
    if cg:
        lines += ["## Instructions (callgrind)", "",
                  f"`valgrind --tool=callgrind` of `run --once` on a {cg['n']:,}-event backfill to the file output "
                  f"({cg['delivered']:,.0f} events delivered), read with `callgrind_annotate --inclusive=yes`. "
                  "Instruction counts repeat exactly from run to run where seconds do not. Valgrind hides the CPU's "
                  "SHA extensions, so `sha2` runs its software path here; natively it uses SHA-NI. Its inclusive "
                  "count is therefore shown apart.", ""]
        lines += table(["", "instructions", "per delivered event"], [
            ["all", f"{cg['instructions']:,}", f"{cg['per_event']:,.0f}"],
            ["sha2 (software path, inclusive)", f"{cg['sha2_instructions']:,}", f"{cg['sha2_per_event']:,.0f}"],
            ["all without sha2", f"{cg['instructions'] - cg['sha2_instructions']:,}",
             f"{cg['without_sha2_per_event']:,.0f}"]]) + [""]
        if cg["top_self"]:
            lines += ["Where the instructions go (`callgrind_annotate`, each function's own instructions; "
                      "inlined code counted under the function it was inlined into):", ""]
            lines += table(["function", "per delivered event", "% of all"],
                           [[f"`{f[:90]}`", f"{per:,.0f}", f"{pct:.1f}%"] for f, per, pct in cg["top_self"]]) + [""]
    return lines


def e2e_section(res):
    lines = ["## End-to-end backfills", "",
             "`isolation-sim` serves N events per dataset (Browser & Email Isolation; both datasets for the "
             "both-services rows); ours is `isolation-collector run --once` to the file output (fsync per batch) "
             "or to a local rsyslog over mutual TLS (delivery proven per connection); iso2web is its "
             "`collect_events`, the vendor URL pointed at the simulator by `scripts/bench/iso2web_wrapper.py`, "
             "posting to a local receiver that counts the events.", ""]
    lines += table(["run", "events per service", "delivered (median)", "wall s (each run)", "wall s (median)",
                    "events/s", "CPU µs per event", "peak RSS MiB", "API requests", "bytes downloaded per event"],
                   e2e_rows(res)) + [""]
    if res["iso_ratios"]:
        lines += ["Ours over iso2web, same size and simulator settings:", ""]
        lines += table(["", "throughput", "CPU per event", "peak RSS"],
                       [[f"{r['side']}, {r['n']:,}", f"×{r['throughput']:.1f}", f"×{r['cpu_per_event']:.3f}",
                         f"×{r['rss']:.3f}"] for r in res["iso_ratios"]]) + [""]
    return lines


def each_eps(g):
    return ", ".join(f"{g['n'] / w:,.0f}" for w in g["walls"])


def relp_section(res, out):
    """The relp output against the TLS syslog output: the interleaved backfills, and the crash
    loop's events re-sent per kill -9 (relp-crash.log)."""
    e2e = list(res["end_to_end"].values())
    pairs = [(t, r) for t in e2e if t["group"] == "relp-vs-tls"
             for r in e2e if r["group"] == "relp" and r["n"] == t["n"]]
    crash = None
    if os.path.exists(f"{out}/relp-crash.log"):
        m = re.search(r"^summary: iterations=(\d+) events_per_iteration=(\d+) kill9=(\d+) .*"
                      r"tls: missing=(\d+) duplicated=(\d+).*relp: missing=(\d+) duplicated=(\d+)",
                      open(f"{out}/relp-crash.log").read(), re.M)
        crash = m and [int(x) for x in m.groups()]
    if not pairs and not crash:
        return []
    lines = ["## RELP against TLS syslog", "",
             "The same backfill (Browser & Email Isolation) to a local rsyslog over mutual TLS, run "
             "alternately as the `devo_platform` output into `imtcp` (delivery proven per connection by the "
             "receiver's close) and as the `relp` output into `imrelp` (every record acknowledged, window 128), "
             "same certificates and queues.", ""]
    lines += table(["events", "TLS syslog events/s (each run)", "RELP events/s (each run)", "RELP / TLS",
                    "CPU µs per event TLS / RELP"],
                   [[f"{t['n']:,}", f"{t['eps']:,.0f} ({each_eps(t)})", f"{r['eps']:,.0f} ({each_eps(r)})",
                     f"{r['eps'] / t['eps'] * 100:.0f}%", f"{t['cpu_us']:.2f} / {r['cpu_us']:.2f}"]
                    for t, r in pairs]) + [""]
    if crash:
        iters, per_iter, kills, tm, td, rm, rd = crash
        lines += [f"Events re-sent per crash: `scripts/reliability/crash_loop.sh {iters} {per_iter // 2}` killed the "
                  f"collector {kills} times (kill -9 at random moments) while it delivered both services, "
                  f"{per_iter:,} events per iteration, to both receivers at once (`max_events_per_window` 1500).", ""]
        lines += table(["output", "missing", "duplicated in all", "re-sent per crash"],
                       [["TLS syslog", tm, td, f"{td / max(kills, 1):.0f}"],
                        ["RELP", rm, rd, f"{rd / max(kills, 1):.0f}"]]) + [""]
        lines += ["Both are bounded by one unconfirmed window per service and kill. The fan-out delivers a batch to "
                  "its outputs one after the other (file, TLS syslog, RELP in the crash loop's config), so a kill "
                  "during the TLS output's delivery finds the batch not yet sent to RELP: part of the difference "
                  "comes from that order, not from the protocols.", ""]
    return lines


def raw_section(res):
    """Issue 23 §3: the receiver's own limit, a raw sender into the same rsyslog, beside ours."""
    if not res["raw"]:
        return [f"## The receiver's own limit (raw sender)", "", res["raw_skipped"], ""] if res["raw_skipped"] else []
    e2e = res["end_to_end"].values()
    ours = {"tls": {g["n"]: g for g in e2e if g["group"] == "tls"},
            "relp": {g["n"]: g for g in e2e if g["group"] == "relp"}}
    rows = []
    for mode, sizes in sorted(res["raw"].items(), key=lambda kv: kv[0] != "tls"):
        for n, raw in sorted(sizes.items()):
            o = ours.get(mode, {}).get(n)
            rows.append([f"{mode.upper()}, {n:,} events", f"{raw['eps']:,.0f} ({', '.join(f'{n / w:,.0f}' for w in raw['walls'])})",
                         f"{raw['cpu_us']:.2f}", f"{raw['receiver_cpu_us']:.2f}",
                         f"{o['eps']:,.0f} ({each_eps(o)})" if o else "-", f"{o['cpu_us']:.2f}" if o else "-",
                         f"{o['eps'] / raw['eps'] * 100:.0f}%" if o else "-"])
    return ["## The receiver's own limit (raw sender)", "",
            "`scripts/bench/raw_sender.sh` formats the simulator's events as the collector's records in memory, then "
            "writes them to the same local rsyslog, over the same mutual TLS (`imtcp`) or RELP (`imrelp`) as ours' "
            "rows, on one connection: what the receiver takes at most on this machine. Its wall time is the sending "
            "alone. Ours' rows are the `tls` backfills and the relp part's RELP backfills of the same size, from "
            "this invocation.", ""] + table(
        ["receiver", "raw sender: events/s (each run)", "raw sender: CPU µs per event", "rsyslog: CPU µs per event",
         "ours: events/s (each run)", "ours: CPU µs per event", "ours, % of raw"], rows) + [""]


def obfuscation_section(res):
    o = res["obfuscation"]
    if not o:
        return []
    micro = res["micro"].get("obfuscate_mask_hmac_pattern")
    return ["## Obfuscation end to end", "",
            f"The file backfill of {o['n']:,} events with a rule set in the service's config: `userId` masked, "
            "`userName` pseudonymised (`hmac_sha256`, a key file), the host of `url` masked (`string_patterns`): "
            "the rules of the `obfuscate_mask_hmac_pattern` micro-benchmark"
            + (f" ({micro:.3f} µs per event)" if micro is not None else "") + ". Beside it the plain file row of the "
            "same size and settings.", ""] + table(
        ["", "events/s", "CPU µs per event"],
        [["with the rules", f"{o['eps']:,.0f}", f"{o['cpu_us']:.2f}"],
         ["without (file)", f"{o['plain_eps']:,.0f}", f"{o['plain_cpu_us']:.2f}"],
         ["the rules' cost", "", f"{o['cpu_us'] - o['plain_cpu_us']:.2f}"]]) + [""]


def steady_section(res):
    s = res["steady"]
    if not s:
        return []
    sent = max(int(s["sent"]), 1)
    return ["## Steady state (late arrival on)", "",
            f"A live feed of {s['live_rate']} new events/s, {float(s['late_fraction']) * 100:.0f}% of them dated up "
            f"to {s['late_minutes']} minutes in the past; the collector as a daemon (period {s['period']} s, "
            f"lookback {s['lookback_minutes']} min, sweep every {s['sweep_minutes']} min, poll interval "
            f"{s['poll_initial']} s) and iso2web run every 5 s against the same feed, for {s['secs']} s. "
            "The first two cycles (catch-up of the history) are left out of the per-event figures.", ""] + table(
        ["", "API requests per delivered event", "events downloaded per delivered event", "delivered in total"],
        [["ours", f"{int(s['requests']) / sent:.4f}", f"{int(s['downloaded']) / sent:.2f}", s["collector_total"]],
         [f"iso2web ({s['iso_runs']} runs, {s['iso_requests']} requests)", "-", "-", s["iso_delivered"]]]) + [""]


TENANTS_HEADING = re.compile(r"^## [\d,]+ tenants", re.M)


def tenants_section(res):
    t = res.get("tenants")
    if not t:
        return []
    met = "met" if t["peak_rss_mb"] < summary.TENANTS_RSS_TARGET_MB else "**not met**"
    lines = [f"## {t['tenants']:,} tenants in one process", "",
             f"`scripts/bench/tenants.sh`: one `isolation-collector run` (the daemon, a hook-free release build) with "
             f"{t['tenants']:,} inputs of 2 services each ({t['services']:,} services; config form `{t['form']}`: "
             "`inputs_dir` with one file per tenant, or `list`) against `isolation-sim` in multi-key mode: every "
             f"tenant its own key, and per service its own {t['events_per_service']:,} events over 24 hours. Every other "
             f"setting is the collector's default (among them the request period, {t['period']} s, and the job poll "
             "interval, 2 s), output the file output, one directory per tenant. What was measured:", "",
             "- *peak RSS*: the kernel's high-water mark of the process's resident memory (`VmHWM` in "
             "`/proc/PID/status`), read when every tenant was up to date and again at the end; *idle RSS* is "
             "`VmRSS` at the end of the idle period;",
             "- *up to date*: from the process's start until each of its files held the bytes of all its "
             "tenant's events (file sizes polled every 0.5 s); a tenant is up to date when both its files are. "
             "The issue's target, every tenant up to date within one `request_period` after the backfill, is "
             "read as: the last tenant at most one period after the first. The first tenant up to date marks "
             "the end of the backfill as one tenant alone would see it; every tenant after it waited on the "
             "others;",
             "- *CPU per idle pull cycle per service*: once every service had logged its first complete pull "
             "cycle (no new events after that), the process's user + system CPU (`/proc/PID/stat`) over the "
             "idle period divided by the pull cycles completed in it (the statistics lines, one per service "
             "and cycle: create a job, poll it, read its empty page, commit the state);",
             "- *delivered*: after SIGTERM, every file compared with its tenant's events as multisets "
             "(`isolation-sim --dump-events` with the same flags).", ""]
    lines += ["Run: " + ("; ".join(t["machine"]) or "(machine not recorded)"), ""]
    lines += table(["figure", "value"], [
        ["peak RSS (target < 200 MB)", f"{t['peak_rss_mib']:.1f} MiB ({t['peak_rss_mb']:.0f} MB): {met}"],
        ["peak RSS when every tenant was up to date", f"{t['catch_up_rss_mib']:.1f} MiB"],
        ["RSS when idle", f"{t['idle_rss_mib']:.1f} MiB"],
        ["time until every tenant is up to date", f"{t['catch_up_s']:.1f} s ({t['events']:,} events; "
                                                   f"CPU {t['catch_up_cpu_s']:.1f} s)"],
        *([["per tenant, from the start until both its files were complete",
            f"first {t['first_tenant_s']:.1f} s, median {t['median_tenant_s']:.1f} s, 95th percentile "
            f"{t['p95_tenant_s']:.1f} s, last {t['catch_up_s']:.1f} s"],
           [f"the last tenant after the first (target <= one request_period, {t['period']} s)",
            f"{t['spread_s']:.1f} s: {'met' if t['spread_s'] <= float(t['period']) else '**not met**'}"]]
          if t.get("spread_s") is not None else []),
        ["CPU per idle pull cycle per service", f"{t['cpu_per_cycle_ms']:.3f} ms ({t['idle_cycles']:,} cycles "
                                                 f"in {t['idle_secs']:.0f} s, {t['idle_cpu_s']:.2f} s CPU: "
                                                 f"{t['idle_core_pct']:.2f}% of one core)"],
        ["tenant files exact", f"{t['exact_files']:,} of {t['files']:,} (missing {t['missing']}, duplicated "
                               f"{t['duplicated']}, unknown {t['unknown']})"],
        ["simulator", f"{t['sim_requests']:,} requests, {t['auth_failures']} refused keys"],
    ]) + [""]
    return lines


def splice(doc, out):
    """Replaces the many-tenant section of `doc` (or adds it before the raw summary)."""
    res = {"tenants": summary.tenants(out)}
    if not res["tenants"]:
        sys.exit(f"report.py: no many-tenant results in {out}")
    section = "\n".join(tenants_section(res)) + "\n"  # it ends with an empty line
    text = open(doc).read()
    start = TENANTS_HEADING.search(text)
    if start:
        end = text.find("\n## ", start.end())
        text = text[:start.start()] + section + (text[end + 1:] if end >= 0 else "")
    else:
        at = text.find("## Raw summary")
        text = text[:at] + section + text[at:] if at >= 0 else text + "\n" + section
    open(doc, "w").write(text)


def main():
    if sys.argv[1] == "--splice":
        splice(sys.argv[2], sys.argv[3])
        return
    out = sys.argv[1]
    res = summary.compute(out)
    lines = head(res) + settings_section(res) + micro_section(res) + e2e_section(res) + curve_section(res)
    lines += obfuscation_section(res) + relp_section(res, out) + raw_section(res) + steady_section(res)
    lines += tenants_section(res)
    lines += ["## Raw summary (scripts/bench/summary.py)", "", "```", summary.render(res), "```"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
