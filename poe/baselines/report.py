"""The study's report: a Markdown document (tables per n(Q), with everything needed to judge the
race: command, budget, wall time, speed-ups, PoE's one-off cost) and a plot of accuracy against
the wall time to a model."""
from __future__ import annotations

import io
from pathlib import Path

from ..pool import atomic_write_bytes


def _s(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:,.1f} s"


def _num(x, unit="") -> str:
    if x is None:
        return "–"
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if x >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.0f}{unit}"


def _schedule(b: dict) -> str:
    drops = f"×0.1 at epochs {', '.join(map(str, b['milestones']))}" if b["milestones"] else "no LR drop"
    return f"{b['epochs']} epoch(s), lr {b['lr']}, {drops}"


def _reach(m: dict) -> tuple[str, str]:
    """(time to PoE's accuracy, its ratio to PoE's query time) cells of a summary entry."""
    if m["reached"] == 0:
        bound = f"> {m['ratio_lower_bound']:,.0f}×" if m["ratio_lower_bound"] else "–"
        return "not within budget", bound
    return _s(m["time_to_poe_accuracy_s"]), f"{m['ratio_to_poe_query_time']:,.0f}×"


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [f"# PoE against the per-query training baselines, {doc['title']}", "",
             f"Command: `{doc['command']}`", "",
             f"Wall time of this command: {doc['wall_s'] / 60:.1f} min ({doc['wall_s']:.0f} s) on {s['machine']}; "
             f"training the models it reports took {doc['training_wall_s'] / 60:.1f} min of wall time when they were "
             "trained (their recorded times, per-epoch test passes included; a rerun loads them and only evaluates).",
             "",
             f"Budget: whole-network methods (Scratch, SD_*, UHC_*, and the single-task Scratch teachers) "
             f"{_schedule(s['network'])} (paper: 200, ×0.1 at 80 and 160); head-only methods (Transfer, CKD) "
             f"{_schedule(s['head'])} (paper: 100, ×0.1 at 40 and 80); SGD momentum 0.9, weight decay 5e-4, batch "
             f"{s['batch_size']}, seed {s['seed']}; device {s['device']}, amp {s['amp']}. CKD's teacher: {s['teacher']}. "
             f"PoE pool: `{s['pool']}`.", "",
             f"Queries: {s['queries_note']}.", "",
             "Speed-ups given to the baselines (as PoE's preprocessing has them):", ""]
    lines += [f"- {x}" for x in doc["speedups"]]
    one = doc["poe_one_off"]
    cost = "not recorded" if one["seconds"] is None else \
        f"{_s(one['seconds'])}, i.e. {_s(one['per_query_s'])} per query if spread over the {one['queries']} queries " \
        "of n(Q) in the study's sizes"
    lines += ["", f"PoE's one-off cost (extracting the experts, done once for all queries): {cost}; source: "
              f"{one['source']}. PoE's query time below is the time to build the task model from the pool's "
              "files, no training (the median of 3 builds, each with the in-process cache emptied, after one "
              "untimed warm-up build).", ""]
    methods = doc["methods"]
    sizes = list(doc["summary"])
    lines += ["## Headline: time to PoE's accuracy ÷ PoE's query time", "",
              "| method | " + " | ".join(f"n(Q) = {n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for m in methods:
        cells = []
        for n in sizes:
            e, queries = doc["summary"][n][m], doc["summary"][n]["queries"]
            t, ratio = _reach(e)
            cells.append(f"{ratio} ({e['reached']}/{queries} reached)" if e["reached"] else f"not reached, {ratio}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "PoE's query time per n(Q): " + ", ".join(
        f"{_s(doc['summary'][n]['PoE']['build_ms'] / 1000)} (n(Q) = {n})" for n in sizes) + ".", ""]
    for n, entry in doc["summary"].items():
        lines += [f"## n(Q) = {n} ({entry['queries']} quer{'y' if entry['queries'] == 1 else 'ies'})", "",
                  "| method | accuracy % | params | FLOPs | time to model | single-task teachers' training "
                  "| time to PoE's accuracy | ÷ PoE's query time | queries reaching it |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        p = entry["PoE"]
        lines.append(f"| **PoE** | {p['accuracy_pct']:.2f} | {_num(p['params'])} | {_num(p['flops'])} | "
                     f"{_s(p['build_ms'] / 1000)} (query) | – | – | 1× | – |")
        for m in methods:
            e = entry[m]
            t, ratio = _reach(e)
            teachers = _s(e["teachers_s"]) if e["teachers_s"] else "–"
            lines.append(f"| {m} | {e['accuracy_pct']:.2f} | {_num(e['params'])} | {_num(e['flops'])} | "
                         f"{_s(e['time_to_model_s'])} | {teachers} | {t} | {ratio} | {e['reached']}/{entry['queries']} |")
        lines.append("")
    lines += ["Accuracy: final epoch (never the best epoch on test), top-1 over the query's classes on their test "
              "images; means over the queries of each n(Q). Time to model: getting ready (teacher loading, feature "
              "cache) plus the training epochs, per-epoch test passes excluded. Time to PoE's accuracy: the first "
              "epoch whose test accuracy reaches PoE's on the same query (from the per-epoch curve, reported only); "
              "its ratio to PoE's query time is averaged over the queries that reached it; '> k×' = no query did, "
              "and the whole budget already took k times PoE's query time. The single-task teachers of *_Scratch "
              "are trained once per task and shared; their time is shown apart, not in the students' times.", "",
              "## Per query", "", "| query | PoE % (ms) | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    for q in doc["queries"]:
        cells = []
        for m in methods:
            r = q["methods"][m]
            hit = _s(r["time_to_poe_accuracy_s"]) if r["time_to_poe_accuracy_s"] is not None else "–"
            cells.append(f"{r['accuracy_pct']:.1f} ({_s(r['time_to_model_s'])}; PoE's at {hit})")
        lines.append(f"| {' + '.join(q['tasks'])} | {q['poe']['accuracy_pct']:.1f} ({q['poe']['build_ms']:.1f}) | "
                     + " | ".join(cells) + " |")
    if doc.get("teachers"):
        lines += ["", "Single-task Scratch teachers (trained by this study, n(Q) = 1): " + ", ".join(
            f"{t} {v['accuracy_pct']:.1f} % in {_s(v['time_to_model_s'])}" for t, v in doc["teachers"].items()) + "."]
    if doc.get("notes"):
        lines += ["", *doc["notes"]]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> str:
    """Accuracy against wall time to the model (log scale): per n(Q) one panel, per method the mean
    curve over its queries, PoE as a point. Returns a note (matplotlib is optional)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install matplotlib to get {path})"
    sizes = list(doc["summary"])
    fig = Figure(figsize=(4.6 * len(sizes), 4.0))
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, n in zip(axes, sizes):
        group = [q for q in doc["queries"] if str(q["n"]) == n]
        for i, m in enumerate(doc["methods"]):
            curves = [q["methods"][m]["curve"] for q in group]
            epochs = min(len(c) for c in curves)
            xs = [sum(c[e]["time_s"] for c in curves) / len(curves) for e in range(epochs)]
            ys = [sum(c[e]["test_top1_pct"] for c in curves) / len(curves) for e in range(epochs)]
            ax.plot(xs, ys, "o^vsD<>"[i % 7] + "-", color=f"C{i}", markersize=3, label=m)
        p = doc["summary"][n]["PoE"]
        ax.plot([p["build_ms"] / 1000], [p["accuracy_pct"]], "*", color="k", markersize=14, label="PoE (query)")
        ax.axhline(p["accuracy_pct"], color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("wall time to the model (s, log scale)")
        ax.set_ylabel("test accuracy on the query's classes (%)")
        ax.set_title(f"n(Q) = {n} (mean of {len(group)} quer{'y' if len(group) == 1 else 'ies'})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"PoE vs per-query training, {doc['title']}", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return f"plot          : {path}"
