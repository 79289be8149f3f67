#!/usr/bin/env python3
"""Turn raw load-test results into a markdown report, plots and a JSON bundle.

Usage:
    python3 load-tests/report/report.py --raw docs/benchmarks/raw --out docs/benchmarks

Inputs (all in --raw):
  * ``*.json`` -- one file per scenario run, written by the Rust load generator:
    ``{system, scenario, repeat, started_at, duration_s, params, generator,
    servers, steal_pct, steps: [...], summary: {...}}``. Several files with the
    same system + scenario are repetitions; the headline shows their median and
    range. Files that are not valid run objects are skipped with a warning.
  * ``machine.json`` (optional) -- ``{cpu_model, cores, mem_gb, kernel, os,
    rustc, node, date}``; whatever keys exist are rendered.

Outputs (in --out):
  * ``results.md``   -- machine, the fair comparison of issue #17 (figures,
    ratios, CPU per delivery or send of every process group at one rate both
    systems ran, steal), headline table (switchboard vs node, ratio oriented
    so that > 1 means Switchboard is better, targets), per-scenario step tables
    and the list of plots.
  * ``*.png``        -- typing-fanout-latency, typing-fanout-100-latency, typing-fanout-throughput,
    persisted-send-latency, persisted-send-ack-latency, idle-memory, node-kill
    (a plot is skipped, and any stale copy removed, when its data is missing).
  * ``results.json`` -- ``{machine, runs: [all raw runs], headline: [rows]}``.

Missing scenarios, systems or fields never crash the script; they render as "—".
Dependencies: the standard library and matplotlib (see requirements.txt).
"""
import argparse
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

SYSTEMS = ["switchboard", "node"]
COLORS = {"switchboard": "tab:blue", "node": "tab:orange"}
SCENARIOS = ["idle", "connect-storm", "typing-fanout", "typing-fanout-100", "persisted-send", "presence-churn",
             "node-kill"]
PLOTS = ["typing-fanout-latency.png", "typing-fanout-100-latency.png", "typing-fanout-throughput.png",
         "persisted-send-latency.png",
         "persisted-send-ack-latency.png", "idle-memory.png", "node-kill.png"]
DASH = "—"
FIGSIZE, DPI = (900 / 110, 550 / 110), 110
P99_TARGET_MS = 50.0


# ---------------------------------------------------------------- helpers
def num(x):
    """x as a float if it is a real number (not bool), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def get(d, *path):
    """Walk nested dicts; None as soon as something is missing."""
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def steps_of(run):
    steps = run.get("steps")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def stats(values):
    vals = [v for v in (num(x) for x in values) if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


FORMATS = {  # unit -> (value formatter, range-number formatter)
    "bytes": (lambda v: f"{v / 1000:.1f} KB", lambda v: f"{v / 1000:.1f}"),
    "rate": (lambda v: f"{v:,.0f}/s", lambda v: f"{v:,.0f}"),
    "ms": (lambda v: f"{v:.1f} ms", lambda v: f"{v:.1f}"),
    "s": (lambda v: f"{v:.1f} s", lambda v: f"{v:.1f}"),
    "us": (lambda v: f"{v:,.1f} µs", lambda v: f"{v:,.1f}"),
}


def fmt_stats(st, unit):
    if st is None:
        return DASH
    full, short = FORMATS[unit]
    text = full(st["median"])
    if st["n"] > 1:
        text += f" <small>({short(st['min'])}–{short(st['max'])}, n={st['n']})</small>"
    return text


def fmt(v, spec=",.0f"):
    v = num(v)
    return DASH if v is None else format(v, spec)


def load(raw_dir):
    machine, runs = {}, []
    for path in sorted(glob.glob(os.path.join(raw_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if os.path.basename(path) == "machine.json":
            machine = data if isinstance(data, dict) else {}
        elif isinstance(data, dict) and data.get("system") and data.get("scenario"):
            data["system"], data["scenario"] = str(data["system"]), str(data["scenario"])
            runs.append(data)
        else:
            print(f"warning: skipping {path}: not a run (no system/scenario)", file=sys.stderr)
    runs.sort(key=lambda r: (str(r["scenario"]), str(r["system"]), num(r.get("repeat")) or 0))
    return machine, runs


def select(runs, system, scenario):
    return [r for r in runs if r["system"] == system and r["scenario"] == scenario]


# ---------------------------------------------------------------- headline
def persisted_lost_dups(run):
    """(lost, duplicates) of a persisted-send run: summary, else the sum over steps."""
    out = []
    for key in ("lost", "duplicates"):
        v = num(get(run, "summary", key))
        if v is None:
            per_step = [num(s.get(key)) for s in steps_of(run)]
            v = sum(per_step) if per_step and None not in per_step else None
        out.append(v)
    return out


def worst(values):
    vals = [num(v) for v in values]
    return None if not vals or None in vals else max(vals)


def status(conditions):
    if any(c is False for c in conditions):
        return "❌"
    return DASH if not conditions or any(c is None for c in conditions) else "✅"


METRICS = [  # (metric, scenario, summary path, unit, higher_is_better, target ratio)
    ("Idle memory per connection", "idle", ("mem_per_conn_bytes",), "bytes", False, None),
    ("Typing max delivered rate, p99 < 50 ms", "typing-fanout",
     ("max_delivered_rate_p99_under_50ms",), "rate", True, 2.0),
    ("Typing, rooms of 100: max delivered rate, p99 < 50 ms", "typing-fanout-100",
     ("max_delivered_rate_p99_under_50ms",), "rate", True, None),
    ("Persisted max acked rate, p99 < 50 ms", "persisted-send",
     ("max_acked_rate_p99_under_50ms",), "rate", True, 3.0),
    ("Node-kill: all clients back", "node-kill", ("all_back_s",), "s", False, None),
    ("Connect-storm connect rate", "connect-storm", ("connect_rate",), "rate", True, None),
    ("Connect-storm handshake p99", "connect-storm", ("handshake_ms", "p99"), "ms", False, None),
    ("Presence-churn churn rate", "presence-churn", ("churn_rate",), "rate", True, None),
]


def headline(runs):
    rows = []
    for metric, scenario, path, unit, higher, target in METRICS:
        st = {s: stats(get(r, "summary", *path) for r in select(runs, s, scenario)) for s in SYSTEMS}
        sb, nd = (st[s]["median"] if st[s] else None for s in SYSTEMS)
        ratio = None
        if sb is not None and nd is not None:
            num_, den = (sb, nd) if higher else (nd, sb)
            ratio = num_ / den if den else None
        conds, target_text = [], ""
        if target is not None:
            conds.append(None if ratio is None else ratio >= target)
            target_text = f"≥ {target:g}×"
        sb_runs = select(runs, "switchboard", scenario)
        if scenario == "persisted-send":
            pairs = [persisted_lost_dups(r) for r in sb_runs]
            lost, dups = worst(p[0] for p in pairs), worst(p[1] for p in pairs)
            conds += [None if lost is None else lost == 0, None if dups is None else dups == 0]
            target_text += f", 0 lost/dup (switchboard: {fmt(lost)}/{fmt(dups)})"
        if scenario == "node-kill":
            back = worst(get(r, "summary", "all_back_s") for r in sb_runs)
            acked_lost = worst(get(r, "summary", "acked_lost") for r in sb_runs)
            conds += [None if back is None else back <= 15.0, None if acked_lost is None else acked_lost == 0]
            target_text = f"≤ 15 s (worst run), 0 acked lost (switchboard: {fmt(acked_lost)})"
        rows.append({
            "metric": metric, "scenario": scenario, "unit": unit,
            "better": "higher" if higher else "lower",
            "switchboard": st["switchboard"], "node": st["node"], "ratio": ratio,
            "target": target_text or None,
            "target_met": None if not target_text else {"✅": True, "❌": False}.get(status(conds)),
            "_status": status(conds) if target_text else "",
        })
    return rows


# ---------------------------------------------------------------- fair comparison (issue #17)
# The rate at which CPU is compared, per scenario, in deliveries/s (typing) or sends/s: the
# issue's figures (45,000 deliveries/s, 1,000 sends/s), or the highest rate below it that both
# systems' ladders reached.
CPU_AT = {"typing-fanout": 45000.0, "typing-fanout-100": 45000.0, "persisted-send": 1000.0}
PER = {"typing-fanout": "delivered", "typing-fanout-100": "delivered", "persisted-send": "acked"}
GROUP_ORDER = ["gateways", "membership", "messages", "presence", "node", "bare", "postgres", "redis", "generator"]


def cpu_rate(runs, scenario, systems=SYSTEMS):
    """The offered rate every system's ladders reached, at most CPU_AT (None without data)."""
    reached = [{num(s.get("offered_rate")) for s in steps_of(r) if get(s, "cpu_s")}
               for system in systems for r in select(runs, system, scenario)]
    common = set.intersection(*reached) if reached else set()
    common.discard(None)
    if not common:
        return None
    below = [r for r in common if r <= CPU_AT[scenario] * 1.02]
    return max(below) if below else min(common)


def step_at(run, rate):
    return next((s for s in steps_of(run) if num(s.get("offered_rate")) == rate), None)


def cpu_split(runs, scenario, rate, systems=SYSTEMS):
    """{system: {group: stats of µs per delivery/send}}, groups incl. 'servers' (all but the
    generator) and the step's steal and p99 beside them."""
    out = {}
    for system in systems:
        per = {}
        for run in select(runs, system, scenario):
            step = step_at(run, rate)
            n = num(step.get(PER[scenario])) if step else None
            cpu = get(step, "cpu_s") if step else None
            if not n or not isinstance(cpu, dict):
                continue
            us = {g: v * 1e6 / n for g, v in cpu.items() if num(v) is not None}
            us["servers"] = sum(v for g, v in us.items() if g != "generator")
            us["steal %"] = num(step.get("steal_pct"))
            key = "ack_latency_ms" if scenario == "persisted-send" else "latency_ms"
            us["p99 ms"] = num(get(step, key, "p99"))
            for g, v in us.items():
                per.setdefault(g, []).append(v)
        out[system] = {g: stats(v) for g, v in per.items()}
    return out


def best_any_latency(run):
    """Highest acked rate of a persisted-send run at any latency, nothing lost."""
    rates = [num(s.get("acked_rate")) for s in steps_of(run) if num(s.get("lost")) == 0]
    return max((r for r in rates if r is not None), default=None)


def at_most(limit, text):
    """An issue #17 floor on Switchboard's own figure: (text, met(sb, node, higher))."""
    return text, lambda sb, nd, higher: None if sb is None else sb <= limit


def ratio_at_least(target, text):
    """An issue #17 floor on the ratio, > 1 meaning Switchboard better (rates: sb ÷ node;
    costs: node ÷ sb)."""
    def met(sb, nd, higher):
        if not sb or not nd:
            return None
        return (sb / nd if higher else nd / sb) >= target
    return text, met


def fair_rows(runs):
    """The issue's table: (figure, unit, higher_is_better, {system: stats}, floor or None)."""
    def summary(scenario, *path):
        return {s: stats(get(r, "summary", *path) for r in select(runs, s, scenario)) for s in SYSTEMS}

    def cpu(scenario, group):
        rate = cpu_rate(runs, scenario)
        split = cpu_split(runs, scenario, rate) if rate else {}
        return rate, {s: get(split, s, group) for s in SYSTEMS}

    rows = [("idle memory per connection", "bytes", False, summary("idle", "mem_per_conn_bytes"),
             at_most(6 * 1024, "≤ 6 KB"))]
    for scenario, label, rate_floor, cpu_floor in [
            ("typing-fanout", "typing, rooms of 10",
             ratio_at_least(2.0, "≥ 2×"), ratio_at_least(3.0, "≤ ⅓ of Node's")),
            ("typing-fanout-100", "typing, rooms of 100", None, None)]:
        rows.append((f"{label}: highest delivered/s with p99 < 50 ms", "rate", True,
                     summary(scenario, "max_delivered_rate_p99_under_50ms"), rate_floor))
        rate, st = cpu(scenario, "servers")
        rows.append((f"{label}: server CPU per delivery at {fmt(rate)}/s (all processes but the generator)",
                     "us", False, st, cpu_floor))
    rows.append(("persisted, rooms of 10: highest acked/s with ack p99 < 50 ms, 0 lost/dup", "rate", True,
                 summary("persisted-send", "max_acked_rate_p99_under_50ms"), ratio_at_least(3.0, "≥ 3×")))
    rate, st = cpu("persisted-send", "servers")
    rows.append((f"persisted: server CPU per send at {fmt(rate)}/s (all processes but the generator)",
                 "us", False, st, ratio_at_least(2.0, "≤ ½ of Node's")))
    rows.append(("persisted: highest acked/s at any latency, nothing lost", "rate", True,
                 {s: stats(best_any_latency(r) for r in select(runs, s, "persisted-send")) for s in SYSTEMS}, None))
    return rows


def fair_markdown(runs):
    md = ["## Fair comparison (issue #17)", "",
          "Rooms of 10 for typing and sends on both systems, and typing in rooms of 100. Ratio > 1: "
          "Switchboard better (rates: switchboard ÷ node; memory, CPU: node ÷ switchboard).", ""]
    rows = []
    for figure, unit, higher, st, floor in fair_rows(runs):
        sb, nd = (get(st, s, "median") for s in SYSTEMS)
        ratio = DASH
        if sb and nd:
            ratio = f"{(sb / nd if higher else nd / sb):.2f}×"
        floor_text = DASH
        if floor is not None:
            text, met = floor
            floor_text = f"{text} {({True: '✅', False: '❌'}).get(met(sb, nd, higher), DASH)}"
        rows.append([figure, fmt_stats(st["switchboard"], unit), fmt_stats(st["node"], unit), ratio, floor_text])
    md += table(["figure", "switchboard", "node", "ratio", "floor (issue #17)"], rows)
    for scenario in PER:
        rate = cpu_rate(runs, scenario)
        if rate is None:
            continue
        md += [""] + cpu_table(scenario, rate, cpu_split(runs, scenario, rate), SYSTEMS)
    return md + [""]


def cpu_table(scenario, rate, split, systems, extra_rows=()):
    """The per-process table of µs per delivery or send, one column per system."""
    unit = "send" if PER[scenario] == "acked" else "delivery"
    groups = sorted({g for s in systems for g in split[s]} - {"servers", "steal %", "p99 ms"},
                    key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else 99, g))
    body = [[g] + [fmt_stats(split[s].get(g), "us") for s in systems] for g in groups]
    body += [["**servers (all but the generator)**"] + [fmt_stats(split[s].get("servers"), "us") for s in systems],
             *extra_rows,
             ["p99 at this step"] + [fmt_stats(split[s].get("p99 ms"), "ms") for s in systems],
             ["steal over the step"] + [fmt(get(split[s], "steal %", "median"), ".2f") + " %" for s in systems]]
    return [f"**{scenario}: µs of CPU per {unit} at {fmt(rate)}/s offered**", ""] + table(["process", *systems], body)


# ---------------------------------------------------------------- the minimum under both
# `bare` (load-tests/bare-peer): socketioxide and its Redis adapter serving the typing events and
# sends (one INSERT each) with nothing else, run by the same generator in the same run. Not a
# competitor: the floor under what Switchboard spends per delivery and per send on this machine.
REFERENCE = "bare"
WITH_REFERENCE = SYSTEMS + [REFERENCE]
BEST = {"typing-fanout": ("max_delivered_rate_p99_under_50ms", "highest delivered/s with p99 < 50 ms"),
        "typing-fanout-100": ("max_delivered_rate_p99_under_50ms", "highest delivered/s with p99 < 50 ms"),
        "persisted-send": ("max_acked_rate_p99_under_50ms", "highest acked/s with ack p99 < 50 ms")}


def transport_markdown(runs):
    scenarios = [s for s in PER if select(runs, REFERENCE, s)]
    if not scenarios:
        return []
    md = ["## The minimum under both (`bare`)", "",
          "`bare` is socketioxide with its Redis adapter on fred, through the same patched engineioxide, "
          "socketioxide and tungstenite as Switchboard, serving `room:join`, the typing events and sends "
          "(one `INSERT` each) with no authorization, rate limit, outbox, log or spans "
          "(load-tests/bare-peer). It ran in the same run, interleaved, driven by the same generator: not "
          "a competitor, but what the transport and one statement per send cost here.", ""]
    for scenario in scenarios:
        key, best_label = BEST[scenario]
        best = {s: stats(get(r, "summary", key) for r in select(runs, s, scenario)) for s in WITH_REFERENCE}
        rate = cpu_rate(runs, scenario, WITH_REFERENCE)
        if rate is None:
            continue
        split = cpu_split(runs, scenario, rate, WITH_REFERENCE)
        best_row = [best_label] + [fmt_stats(best[s], "rate") for s in WITH_REFERENCE]
        md += cpu_table(scenario, rate, split, WITH_REFERENCE, [best_row]) + [""]
    return md


# ---------------------------------------------------------------- plots
def new_axes(title, xlabel, ylabel):
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def save(fig, ax, out_dir, name, written):
    if ax.has_data():
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=DPI)
        written.append(name)
    plt.close(fig)


def series(run, getter):
    pts = ((num(s.get("offered_rate")), num(getter(s))) for s in steps_of(run))
    return sorted((x, y) for x, y in pts if x is not None and y is not None and y > 0)


def plot_lines(ax, runs, system, getter, label, style):
    """Median per offered rate (thick) plus each repeat as a thin line when n > 1."""
    per_run = [p for p in (series(r, getter) for r in runs) if p]
    if not per_run:
        return
    by_x = {}
    for pts in per_run:
        for x, y in pts:
            by_x.setdefault(x, []).append(y)
        if len(per_run) > 1:
            ax.plot(*zip(*pts), style, color=COLORS[system], lw=0.8, alpha=0.35)
    xs = sorted(by_x)
    suffix = f" (median of {len(per_run)})" if len(per_run) > 1 else ""
    ax.plot(xs, [statistics.median(by_x[x]) for x in xs], style, color=COLORS[system], lw=2,
            marker="o", ms=4, label=f"{system} {label}{suffix}")


def latency_plot(runs, scenario, key, name, title, out_dir, written):
    fig, ax = new_axes(title, "offered rate (msg/s)", "latency (ms, log)")
    for system in SYSTEMS:
        rs = select(runs, system, scenario)
        plot_lines(ax, rs, system, lambda s: get(s, key, "p99"), "p99", "-")
        plot_lines(ax, rs, system, lambda s: get(s, key, "p50"), "p50", "--")
    if ax.has_data():
        ax.set_yscale("log")
        ax.axhline(P99_TARGET_MS, color="red", lw=1, ls=":", label="p99 target 50 ms")
    save(fig, ax, out_dir, name, written)


def throughput_plot(runs, out_dir, written):
    fig, ax = new_axes("typing-fanout: delivered vs offered rate", "offered rate (msg/s)",
                       "delivered rate (deliveries/s)")
    for system in SYSTEMS:
        plot_lines(ax, select(runs, system, "typing-fanout"), system, lambda s: s.get("delivered_rate"),
                   "delivered", "-")
    ref = next((r for r in runs if r["scenario"] == "typing-fanout" and steps_of(r)), None)
    if ref is not None and ax.has_data():
        exp = series(ref, lambda s: (num(s.get("expected")) or 0) / (num(s.get("duration_s")) or float("inf")))
        if exp:
            ax.plot(*zip(*exp), ":", color="grey", label="expected (no loss)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    save(fig, ax, out_dir, name="typing-fanout-throughput.png", written=written)


def bar_plot(row, title, ylabel, scale, name, out_dir, written, hline=None):
    fig, ax = new_axes(title, "", ylabel)
    ax.grid(False)
    ax.grid(True, axis="y", alpha=0.3)
    for i, system in enumerate(SYSTEMS):
        st = row[system]
        if st is None:
            continue
        med = st["median"] / scale
        err = [[med - st["min"] / scale], [st["max"] / scale - med]]
        ax.bar(i, med, color=COLORS[system], yerr=err if st["n"] > 1 else None, capsize=6,
               label=f"{system} (n={st['n']})")
        ax.annotate(f"{med:,.1f}", (i, st["max"] / scale), ha="center", va="bottom", xytext=(0, 3), textcoords="offset points")
    ax.set_xticks(range(len(SYSTEMS)), SYSTEMS)
    ax.margins(y=0.12)
    if hline and ax.has_data():
        ax.axhline(hline[0], color="red", lw=1, ls=":", label=hline[1])
    save(fig, ax, out_dir, name, written)


def make_plots(runs, rows, out_dir):
    written = []
    latency_plot(runs, "typing-fanout", "latency_ms", "typing-fanout-latency.png",
                 "typing-fanout: delivery latency vs offered rate", out_dir, written)
    latency_plot(runs, "typing-fanout-100", "latency_ms", "typing-fanout-100-latency.png",
                 "typing-fanout, rooms of 100: delivery latency vs offered rate", out_dir, written)
    throughput_plot(runs, out_dir, written)
    latency_plot(runs, "persisted-send", "latency_ms", "persisted-send-latency.png",
                 "persisted-send: delivery latency vs offered rate", out_dir, written)
    latency_plot(runs, "persisted-send", "ack_latency_ms", "persisted-send-ack-latency.png",
                 "persisted-send: ack latency (send → ack) vs offered rate", out_dir, written)
    by_scn = {r["scenario"]: r for r in rows}
    bar_plot(by_scn["idle"], "idle: memory per connection (median, min–max)", "KB per connection",
             1000, "idle-memory.png", out_dir, written)
    bar_plot(by_scn["node-kill"], "node-kill: time until all killed clients are back", "seconds",
             1, "node-kill.png", out_dir, written, hline=(15.0, "target 15 s"))
    for name in PLOTS:  # never leave a stale plot from an earlier run next to this report
        if name not in written and os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    return written


# ---------------------------------------------------------------- markdown
def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def compact(obj):
    return "`" + json.dumps(obj, separators=(",", ":"), sort_keys=True) + "`"


STEP_HEADER = ["offered/s", "delivered/s", "acked/s", "p50 ms", "p99 ms", "max ms", "ack p99 ms",
               "lost", "dups", "errors", "server CPU s", "gen CPU s", "steal %", "CPU s by process"]


def step_row(s):
    return [fmt(s.get("offered_rate")), fmt(s.get("delivered_rate")), fmt(s.get("acked_rate")),
            fmt(get(s, "latency_ms", "p50"), ".1f"), fmt(get(s, "latency_ms", "p99"), ".1f"),
            fmt(get(s, "latency_ms", "max"), ".1f"), fmt(get(s, "ack_latency_ms", "p99"), ".1f"),
            fmt(s.get("lost")), fmt(s.get("duplicates")), fmt(s.get("errors")),
            fmt(s.get("server_cpu_s"), ".1f"), fmt(s.get("generator_cpu_s"), ".1f"), fmt(s.get("steal_pct"), ".1f"),
            ", ".join(f"{g} {fmt(v, '.2f')}" for g, v in sorted((get(s, "cpu_s") or {}).items())) or DASH]


def run_section(run):
    gen = run.get("generator") if isinstance(run.get("generator"), dict) else {}
    def mb(kb):
        return fmt(None if num(kb) is None else num(kb) / 1000, ".1f")

    servers_list = run.get("servers") if isinstance(run.get("servers"), list) else []
    servers = ", ".join(
        f"{s.get('name', '?')} RSS {mb(s.get('rss_before_kb'))}→{mb(s.get('rss_after_kb'))} MB, "
        f"CPU {fmt(s.get('cpu_s'), '.1f')} s" for s in servers_list if isinstance(s, dict))
    lines = [f"### {run['system']} — repeat {run.get('repeat', DASH)}", "",
             f"- started {run.get('started_at', DASH)}, duration {fmt(run.get('duration_s'), '.1f')} s, "
             f"steal {fmt(run.get('steal_pct'), '.1f')} %",
             f"- generator CPU {fmt(gen.get('cpu_s'), '.1f')} s ({fmt(gen.get('cpu_pct'), '.1f')} % of one core)",
             f"- servers: {servers or DASH}",
             f"- params: {compact(run.get('params', {}))}",
             f"- summary: {compact(run.get('summary', {}))}", ""]
    steps = steps_of(run)
    lines += table(STEP_HEADER, [step_row(s) for s in steps]) if steps else ["_no rate steps_"]
    return lines + [""]


def measured(runs, scenario):
    """The days a scenario's runs were made (a partial run keeps older scenarios' files)."""
    days = sorted({str(r.get("started_at", ""))[:10] for r in runs if r["scenario"] == scenario})
    return ", ".join(d for d in days if d) or DASH


def markdown(machine, runs, rows, plots):
    md = ["# Switchboard vs Node.js socket.io — benchmark results", "", "## Machine", ""]
    md += [f"- **{k}**: {v}" for k, v in machine.items()] or [f"{DASH} (no machine.json)"]
    md += [""] + fair_markdown(runs) + transport_markdown(runs) + ["## Headline", ""]
    md += table(["metric", "switchboard", "node", "ratio (better is ×)", "target", "measured"], [
        [r["metric"], fmt_stats(r["switchboard"], r["unit"]), fmt_stats(r["node"], r["unit"]),
         DASH if r["ratio"] is None else f"{r['ratio']:.2f}×",
         f"{r['target']} {r['_status']}" if r["target"] else DASH, measured(runs, r["scenario"])] for r in rows])
    md += ["", "Ratio > 1 means Switchboard is better (memory, time, latency: node ÷ switchboard; "
           "rates: switchboard ÷ node). Cells show the median over repeats with (min–max, n) when n > 1. "
           "In the step tables, *server CPU s* is the processes clients connect to (Switchboard's gateways, "
           "the Node peer's nodes); *CPU s by process* has every process group.", ""]
    extra = sorted({r["scenario"] for r in runs} - set(SCENARIOS))
    for scenario in SCENARIOS + extra:
        md += [f"## {scenario}", ""]
        for system in SYSTEMS + sorted({r["system"] for r in runs} - set(SYSTEMS)):
            rs = select(runs, system, scenario)
            if not rs:
                md += [f"### {system}", "", f"{DASH} (no runs)", ""]
            for run in rs:
                md += run_section(run)
    md += ["## Plots", ""] + ([f"- [{p}]({p})" for p in plots] or [f"{DASH} (no plottable data)"])
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", required=True, help="directory with raw run JSON files (+ machine.json)")
    ap.add_argument("--out", required=True, help="directory for results.md, results.json and PNGs")
    args = ap.parse_args()
    if not os.path.isdir(args.raw):
        sys.exit(f"error: raw directory {args.raw!r} does not exist")
    os.makedirs(args.out, exist_ok=True)
    machine, runs = load(args.raw)
    rows = headline(runs)
    plots = make_plots(runs, rows, args.out)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(machine, runs, rows, plots))
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "runs": runs,
                   "headline": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]},
                  f, indent=2, ensure_ascii=False)
    print(f"{len(runs)} runs -> {args.out}/results.md, results.json, {len(plots)} plots")


if __name__ == "__main__":
    main()
