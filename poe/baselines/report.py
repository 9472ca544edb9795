"""The study's report: a Markdown document (what the comparison rests on, PoE's costs from its own
pool, the race per n(Q), the break-even table, every query) and plots: accuracy against the wall
time to a model, and each query's PoE accuracy against the head-only baselines'."""
from __future__ import annotations

import io
import math
from pathlib import Path

from ..files import atomic_write_bytes
from .schedules import PAPER

PAPER_BATCH = 512
INIT_WORDS = {"torch": "PyTorch's default init (--init torch)",
              "authors": "the authors' WRN init (--init authors)"}


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


def _pm(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _schedule(b: dict) -> str:
    drops = f"×0.1 at epochs {', '.join(map(str, b['milestones']))}" if b["milestones"] else "no LR drop"
    return f"{b['epochs']} epoch(s), lr {b['lr']}, {drops}"


def _paper(kind: str) -> str:
    b = PAPER[kind]
    return f"paper: {b.epochs}, ×{b.gamma} at {' and '.join(map(str, b.milestones))}"


def _reach(m: dict) -> tuple[str, str]:
    """(time to PoE's accuracy, its ratio to PoE's query time) cells of a summary entry."""
    if m["reached"] == 0:
        bound = f"> {m['ratio_lower_bound']:,.0f}×" if m["ratio_lower_bound"] else "–"
        return "not within budget", bound
    return _s(m["time_to_poe_accuracy_s"]), f"{m['ratio_to_poe_query_time']:,.0f}×"


def _count(n: int, word: str) -> str:
    if word.endswith("y"):
        return f"{n} {word[:-1]}{'y' if n == 1 else 'ies'}"
    return f"{n} {word}{'' if n == 1 else 's'}"


def _target_words(v: dict) -> tuple[str, str]:
    """(where the curves are read, which accuracy of PoE they must reach)."""
    if v["curves_read_on"] == "test":
        return "the test set (no validation split)", "PoE's test accuracy"
    read = f"the validation split ({_count(v['per_class'], 'training image')} per class held out, seed {v['seed']})"
    return read, ("PoE's validation accuracy" if v["poe_target"] == "val" else "PoE's test accuracy")


def speedups(setup, methods: list[str]) -> list[str]:
    """What the study does to make each method fast (the report's "Speed-ups" list), from its
    settings (a poe.baselines.training.Setup)."""
    out = [f"mixed precision: {setup.amp} autocast for every method and PoE alike; channels-last training "
           "(the one training loop, poe.train.fit)"]
    if {"Transfer", "CKD"} & set(methods):
        out.append("Transfer, CKD: " + (
            f"trained from cached library features (and teacher logits) of min({setup.cache_views}, epochs) augmented "
            "views of the query's images, one pass shared by both, its time counted in full in each"
            if setup.head_source == "cache" else "no feature cache (--head_source live): library recomputed every batch"))
    if {"SD_CKD", "UHC_CKD"} & set(methods):
        out.append("SD_CKD, UHC_CKD: the n expert teachers run as PoE's fused task model, library once per batch")
    if {"SD_Scratch", "UHC_Scratch"} & set(methods):
        out.append("SD_Scratch, UHC_Scratch: each single-task Scratch teacher trained once and shared by every "
                   "query and both methods; its training time is shown apart")
    if any(m.startswith(("SD_", "UHC_")) for m in methods):
        out.append("SD_*, UHC_*: their teachers run on every batch, no logit cache (a whole network "
                   "trained from random init needs each epoch's fresh augmentation, which a few cached views would "
                   "take away); one teacher pass shared by SD and UHC would shorten the study, not either "
                   "method's time to model")
    out.append("every method's teacher passes run under no_grad in eval mode; no method's time includes the "
               "per-epoch evaluation passes")
    return out


def rests_on(doc: dict) -> list[str]:
    """What the comparison's conclusion rests on, and what it does not show."""
    s, v = doc["settings"], doc["settings"]["validation"]
    sizes = doc["summary"]
    per_n = ", ".join(f"{e['queries']} at n(Q) = {n}" for n, e in sizes.items())
    methods = doc["methods"]
    head = [m for m in methods if m in ("Transfer", "CKD")]
    network = [m for m in methods if m not in ("Transfer", "CKD")]
    budgets = []
    if network:
        budgets.append(f"whole networks ({', '.join(network)}) {s['network']['epochs']} epochs against the paper's "
                       f"{PAPER['network'].epochs}")
    if head:
        budgets.append(f"heads on the library ({', '.join(head)}) {s['head']['epochs']} epochs against the "
                       f"paper's {PAPER['head'].epochs}")
    read, target = _target_words(v)
    pool_saw = {True: "PoE's experts and library were trained on every training image, the validation split's "
                      "included (the pool records no split)",
                False: "PoE's experts were trained without the validation split (the pool's own)",
                None: "There is no validation split, so the crossings are read on the test images the final "
                      "accuracies are read on (a stopping rule no user could apply)"}[v["poe_trained_on_val"]]
    costs = doc["poe_costs"]
    lines = ["## What this rests on", "",
             f"- **Budgets**: {'; '.join(budgets)}; batch {s['batch_size']} (the paper's README: {PAPER_BATCH}; its "
             f"code: 256). Training is shorter than the paper's, which shortens the baselines' times and can "
             f"lower their accuracies; the crossings below say when a curve first reached PoE, not what the "
             f"paper's budget would reach.",
             f"- **Data each side sees**: every baseline trains on the queried classes' training images only"
             f"{', minus the validation split' if v['per_class'] else ''}; Transfer and CKD train a head on PoE's frozen library, so they share "
             f"what the library learnt. {pool_saw}. The per-epoch curves are read on {read}, the finishing "
             f"line is {target}; the final accuracies are on the test set, last epoch.",
             f"- **Queries**: {s['queries']} ({per_n}), {s['queries_note']}; one seed ({s['seed']}). Means carry "
             "± the standard deviation over the queries of an n(Q) where there are two or more.",
             "- **PoE's cost**: its query time is measured here (a distribution over builds from the files); its "
             "one-off preprocessing " + (f"is this pool's own record ({_s(costs['total_s'])})" if costs["recorded"]
                                         else "is not recorded for this pool, so no amortized comparison is drawn")
             + ".",
             f"- **What it does not show**: the paper's budgets; other seeds; a GPU (times are for "
             f"{s['machine']}); tuned baselines (each has the authors' recipe, squeezed); a pool whose preprocessing "
             "cost is unknown (the authors') set against per-query training in total cost.", ""]
    return lines


def markdown(doc: dict) -> str:
    s = doc["settings"]
    v = s["validation"]
    shares = doc.get("shares_wall_s") or []
    lines = [f"# PoE against the per-query training baselines, {doc['title']}", "",
             f"Command: `{doc['command']}`", "",
             f"Wall time of this command: {doc['wall_s'] / 60:.1f} min ({doc['wall_s']:.0f} s) on {s['machine']}"
             + (f", {s['processes']} processes sharing the queries (their shares took "
                f"{', '.join(f'{w:.0f}' for w in shares)} s)" if s.get("processes", 1) > 1 else "")
             + f"; training the models it reports took {doc['training_wall_s'] / 60:.1f} min of wall time when they "
             "were trained (their recorded times, each model once, single-task teachers included, per-epoch "
             "evaluation passes too; a rerun loads them and only evaluates).", ""]
    lines += rests_on(doc)
    read, target = _target_words(v)
    budgets = []
    if any(m not in ("Transfer", "CKD") for m in doc["methods"]):
        budgets.append(f"whole-network methods (Scratch, SD_*, UHC_*, and the single-task Scratch teachers) "
                       f"{_schedule(s['network'])} ({_paper('network')})")
    if any(m in ("Transfer", "CKD") for m in doc["methods"]):
        budgets.append(f"head-only methods (Transfer, CKD) {_schedule(s['head'])} ({_paper('head')})")
    lines += ["## Settings", "",
              f"Budget: {'; '.join(budgets)}; SGD momentum 0.9, weight decay 5e-4, batch "
              f"{s['batch_size']}, seed {s['seed']}, new weights {INIT_WORDS[s.get('init', 'authors')]}; device "
              f"{s['device']}, amp {s['amp']}. CKD's teacher: "
              f"{s['teacher']}. PoE pool: `{s['pool']}`.", "",
              f"Queries: {s['queries_note']}.", "",
              (f"Validation split: {_count(v['per_class'], 'training image')} per class, seed {v['seed']} "
               f"({_count(v['images'], 'image')} of the queried classes in all); source: {v['source']}. "
               if v["per_class"] else f"Validation split: {v['source']}. ")
              + f"Curves read on {read}; a method reaches PoE at the first epoch whose accuracy there is at least "
              f"{target}.", "",
              "Speed-ups given to the baselines (as PoE's preprocessing has them):", ""]
    lines += [f"- {x}" for x in doc["speedups"]]
    lines += poe_cost_lines(doc)
    methods = doc["methods"]
    sizes = list(doc["summary"])
    lines += ["## Headline: time to PoE's accuracy ÷ PoE's query time", "",
              "| method | " + " | ".join(f"n(Q) = {n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for m in methods:
        cells = []
        for n in sizes:
            e, queries = doc["summary"][n][m], doc["summary"][n]["queries"]
            _, ratio = _reach(e)
            cells.append(f"{ratio} ({e['reached']}/{queries} reached)" if e["reached"] else f"not reached, {ratio}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "The ratio is the crossing epoch's time (getting ready plus the epochs up to it) over PoE's median "
              "query time for the same query, averaged over the queries that reached PoE; '> k×': none did, and the "
              "whole budget took k times PoE's query time.", ""]
    lines += break_even_lines(doc)
    for n, entry in doc["summary"].items():
        p = entry["PoE"]
        val = f"; validation {p['val_accuracy_pct']:.2f} %" if p.get("val_accuracy_pct") is not None else ""
        lines += [f"## n(Q) = {n} ({_count(entry['queries'], 'query')})", "",
                  "| method | test accuracy % | params | FLOPs | time to model | single-task teachers' training "
                  "| time to PoE's accuracy | ÷ PoE's query time | queries reaching it |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| **PoE** | {_pm(p['accuracy_pct'], p['accuracy_std'])}{val} | {_num(p['params'])} | "
                  f"{_num(p['flops'])} | {_s(p['build_ms'] / 1000)} (query, median; p90 {_s(p['build_p90_ms'] / 1000)}) "
                  f"| – | – | 1× | – |"]
        for m in methods:
            e = entry[m]
            t, ratio = _reach(e)
            teachers = _s(e["teachers_s"]) if e["teachers_s"] else "–"
            lines.append(f"| {m} | {_pm(e['accuracy_pct'], e['accuracy_std'])} | {_num(e['params'])} | "
                         f"{_num(e['flops'])} | {_s(e['time_to_model_s'])} | {teachers} | {t} | {ratio} | "
                         f"{e['reached']}/{entry['queries']} |")
        lines.append("")
    lines += ["Accuracy: final epoch (never the best epoch), top-1 over the query's classes on their test images; "
              "means (± standard deviation) over the queries of each n(Q). Time to model: getting ready (teacher "
              "loading, feature cache) plus the training epochs, per-epoch evaluation passes excluded. The "
              "single-task teachers of *_Scratch are trained once per task and shared; their time is shown apart, "
              "not in the students' times.", "",
              "## Per query", "", "| query | PoE % (median ms) | " + " | ".join(methods) + " |",
              "|---|---:|" + "---:|" * len(methods)]
    for q in doc["queries"]:
        cells = []
        for m in methods:
            r = q["methods"][m]
            hit = _s(r["time_to_poe_accuracy_s"]) if r["time_to_poe_accuracy_s"] is not None else "–"
            cells.append(f"{r['accuracy_pct']:.1f} ({_s(r['time_to_model_s'])}; PoE's at {hit})")
        pv = q["poe"].get("val_accuracy_pct")
        lines.append(f"| {' + '.join(q['tasks'])} | {q['poe']['accuracy_pct']:.1f}"
                     + (f" (val {pv:.1f})" if pv is not None else "") + f" ({q['poe']['build_ms']:.1f}) | "
                     + " | ".join(cells) + " |")
    if doc.get("teachers"):
        lines += ["", "Single-task Scratch teachers (trained by this study, n(Q) = 1): " + ", ".join(
            f"{t} {v['accuracy_pct']:.1f} % in {_s(v['time_to_model_s'])}" for t, v in doc["teachers"].items()) + "."]
    if doc.get("notes"):
        lines += ["", *doc["notes"]]
    return "\n".join(lines) + "\n"


def poe_cost_lines(doc: dict) -> list[str]:
    """PoE's query time as a distribution, its first builds apart, and the pool's preprocessing."""
    sizes = doc["summary"]
    lines = ["", "## PoE's costs, from this pool alone", "",
             "Query time: building the task model from the pool's files, no training (every build with the "
             "in-process cache of folded experts emptied).", "",
             "| n(Q) | builds | median | p90 |", "|---|---:|---:|---:|"]
    for n, e in sizes.items():
        p = e["PoE"]
        lines.append(f"| {n} | {p['builds']} | {_s(p['build_ms'] / 1000)} | {_s(p['build_p90_ms'] / 1000)} |")
    firsts = doc.get("first_builds") or []
    if firsts:
        lines += ["", "The first build of a process pays one-off costs (lazy imports, first kernels) that a running "
                  "service does not; shown apart, not in the distribution: " + "; ".join(
                      f"{_s(f['build_ms'] / 1000)} ({' + '.join(f['tasks'])})" for f in firsts) + "."]
    costs = doc["poe_costs"]
    names = {"oracle": "Oracle", "library_student": "library student (the library is its front)",
             "experts": "experts"}
    lines += ["", f"Preprocessing of this pool (`{costs['pool']}`), once for all queries:", "",
              "| stage | wall time | source |", "|---|---:|---|"]
    for stage, c in costs["stages"].items():
        lines.append(f"| {names[stage]} | {_s(c['seconds']) if c['seconds'] is not None else 'not recorded'} | "
                     f"{c['source']} |")
    lines.append(f"| **total** | {_s(costs['total_s']) if costs['recorded'] else 'not recorded'} | |")
    lines.append("")
    return lines


def break_even_lines(doc: dict) -> list[str]:
    costs = doc["poe_costs"]
    lines = ["## Break-even: queries after which PoE's preprocessing has paid off", ""]
    if not costs["recorded"]:
        return lines + ["Not computed: this pool records no preprocessing cost (a stage above reads 'not recorded'), "
                        "and no other pool's figure stands in for it. Per-query costs alone are above.", ""]
    lines += [f"PoE costs P + k·q for k queries (P = {_s(costs['total_s'])}, this pool's whole preprocessing; q = "
              "its median query time), a method k·B; PoE is cheaper from k = ⌈P / (B − q)⌉ queries on. B = the time "
              "to PoE's accuracy (mean over the queries that reached it), or the whole budget's time to model.", "",
              "| n(Q) | method | B: time to PoE's accuracy | k | B: time to model | k |", "|---|---|---:|---:|---:|---:|"]
    for r in doc["break_even"]:
        k1 = f"{r['queries_vs_reaching']:,}" if r["queries_vs_reaching"] is not None else "– (not reached)"
        k2 = f"{r['queries_vs_model']:,}" if r["queries_vs_model"] is not None else "–"
        lines.append(f"| {r['n']} | {r['method']} | {_s(r['time_to_poe_accuracy_s'])} | {k1} | "
                     f"{_s(r['time_to_model_s'])} | {k2} |")
    return lines + [""]


def plot(doc: dict, path: Path) -> str:
    """Accuracy against wall time to the model (log scale): per n(Q) one panel, per method the mean
    validation curve over its queries, PoE's target as a point; and beside it (`<name>_scatter.png`)
    each query's test accuracy, PoE against Transfer and CKD. Returns the lines to print
    (matplotlib is optional)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install matplotlib to get {path})"
    v = doc["settings"]["validation"]
    key = f"{v['curves_read_on']}_top1_pct"
    target_key = "val_accuracy_pct" if v["curves_read_on"] == "val" and v["poe_target"] == "val" else "accuracy_pct"
    sizes = list(doc["summary"])
    fig = Figure(figsize=(4.6 * len(sizes), 4.0))
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, n in zip(axes, sizes):
        group = [q for q in doc["queries"] if str(q["n"]) == n]
        for i, m in enumerate(doc["methods"]):
            curves = [q["methods"][m]["curve"] for q in group]
            epochs = min(len(c) for c in curves)
            xs = [sum(c[e]["time_s"] for c in curves) / len(curves) for e in range(epochs)]
            ys = [sum(c[e][key] for c in curves) / len(curves) for e in range(epochs)]
            ax.plot(xs, ys, "o^vsD<>"[i % 7] + "-", color=f"C{i}", markersize=3, label=m)
        p = doc["summary"][n]["PoE"]
        target = sum(q["poe"][target_key] for q in group) / len(group)
        ax.plot([p["build_ms"] / 1000], [target], "*", color="k", markersize=14,
                label=f"PoE ({'validation' if target_key.startswith('val') else 'test'} accuracy; median query time)")
        ax.axhline(target, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("wall time to the model (s, log scale)")
        ax.set_ylabel(f"{'validation' if key.startswith('val') else 'test'} accuracy on the query's classes (%)")
        ax.set_title(f"n(Q) = {n} (mean of {_count(len(group), 'query')})", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"PoE vs per-query training, {doc['title']}", fontsize=11)
    fig.tight_layout()
    _save(fig, Path(path))
    out = [f"plot          : {path}"]
    head = [m for m in ("Transfer", "CKD") if m in doc["methods"]]
    if head:
        scatter = Path(path).with_name(Path(path).stem + "_scatter.png")
        _save(scatter_figure(doc, head, Figure), scatter)
        out.append(f"scatter plot  : {scatter}")
    return "\n".join(out)


def scatter_figure(doc: dict, methods: list[str], Figure):
    """Each query's final test accuracy: PoE (x) against each method (y), marker size by n(Q)."""
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.subplots()
    xs_all = [q["poe"]["accuracy_pct"] for q in doc["queries"]]
    ys_all = [q["methods"][m]["accuracy_pct"] for q in doc["queries"] for m in methods]
    lo = math.floor(min(xs_all + ys_all) / 5) * 5
    hi = math.ceil(max(xs_all + ys_all) / 5) * 5
    for i, m in enumerate(methods):
        for n in sorted({q["n"] for q in doc["queries"]}):
            group = [q for q in doc["queries"] if q["n"] == n]
            ax.scatter([q["poe"]["accuracy_pct"] for q in group], [q["methods"][m]["accuracy_pct"] for q in group],
                       s=12 + 10 * n, marker="o^"[i % 2], color=f"C{n}", alpha=0.75,
                       label=f"{m}, n(Q) = {n}")
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.7, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("PoE test accuracy (%)")
    ax.set_ylabel("baseline test accuracy (%, last epoch)")
    ax.set_title(f"Per query: above the line the baseline beats PoE\n{doc['title']}, "
                 f"{_count(len(doc['queries']), 'query')}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(Path(path), buffer.getvalue())
