"""The pool ablation's report: what each setting of the expert stage is worth, read on validation.

results/pool_ablation_cifar100.sh builds one pool per cell (Run_preprocessing.py, one setting
changed against `base`) and scores them all with `Run_Table6.py --db ... --score_on val`. This
module joins that Table 6 JSON with each cell's manifest (budget, views, teacher, library, seed,
wall time) into one table: mean PoE accuracy at n(Q)=2..5 over all combinations, cross-expert
share, each expert's accuracy on its own classes, and the difference to `base` against the
run-to-run noise measured by the `seed1` cell (another expert seed of base).

    python -m poe.ablation --table6 T6.json --json OUT.json --markdown OUT.md [--plot OUT.png]
"""
from __future__ import annotations

import json
from pathlib import Path

from .cli import ArgumentParser, run, write_report_files
from .history import save_png


def cell_settings(db: Path) -> dict:
    """A cell's expert settings and wall time, from its pool's manifest (every expert shares them)."""
    manifest = json.loads((Path(db) / "manifest.json").read_text())
    entry = next(iter(manifest["experts"].values()))
    extraction = entry.get("extraction") or {}
    walls = extraction.get("wall_s") or {}
    budget = entry.get("budget") or {}
    library = manifest.get("library") or {}
    return {"epochs": budget.get("epochs"), "milestones": budget.get("milestones"),
            "batch_size": budget.get("batch_size"), "views": extraction.get("views"),
            "teacher": entry.get("teacher"), "loss": entry.get("loss"),
            "library": library.get("source") or "trained here", "library_fingerprint": library.get("fingerprint"),
            "validation": entry.get("validation"),
            "cache_s": walls.get("cache_this_process_s"),
            "training_s": walls.get("training_and_scoring_this_process_s"),
            "epoch_s": [h.get("seconds") for h in entry.get("history") or []]}


def summarise(table6: dict, base: str = "base", noise: str = "seed1") -> dict:
    """One entry per cell: its settings and validation scores, and the difference to `base`."""
    cells = []
    for row in table6["rows"]:
        s = cell_settings(Path(row["db"]))
        own = row.get("own_class_pct") or {}
        cells.append({"cell": row["label"], "db": row["db"], **s, "split": row.get("split"),
                      "accuracy_pct": row["accuracy_pct"], "cross_expert_pct": row["cross_expert_pct"],
                      "own_class_pct": own, "own_class_mean_pct": sum(own.values()) / len(own) if own else None})
    by_name = {c["cell"]: c for c in cells}
    ref = by_name.get(base)
    for c in cells:
        if ref is not None:
            c["delta_accuracy_pct"] = {n: c["accuracy_pct"][n] - ref["accuracy_pct"][n] for n in c["accuracy_pct"]}
    spread = None
    if ref is not None and noise in by_name:  # two seeds of one cell: the run-to-run noise
        spread = {n: abs(by_name[noise]["accuracy_pct"][n] - ref["accuracy_pct"][n]) for n in ref["accuracy_pct"]}
        for c in cells:
            if c["cell"] not in (base, noise):
                # beyond noise when the mean over n(Q) moves by more than twice the seeds' mean gap
                gap = sum(abs(v) for v in c["delta_accuracy_pct"].values()) / len(spread)
                c["beyond_noise"] = gap > 2 * sum(spread.values()) / len(spread)
    return {"split": next(iter({c["split"] for c in cells}), None), "base": base, "noise_cell": noise,
            "seed_spread_pct": spread, "cells": cells, "table6_command": table6.get("command")}


def markdown(doc: dict) -> str:
    sizes = list(doc["cells"][0]["accuracy_pct"]) if doc["cells"] else []
    head = (["cell", "epochs", "batch", "views", "teacher", "library"] + [f"n(Q)={n}" for n in sizes]
            + ["Δ vs base (mean)", "cross-expert % n(Q)=2/5", "own classes (mean)", "training min"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 6 + "---:|" * (len(sizes) + 4)]
    for c in doc["cells"]:
        delta = c.get("delta_accuracy_pct")
        mean_delta = "–" if not delta else f"{sum(delta.values()) / len(delta):+.2f}" + (
            "" if "beyond_noise" not in c else (" (beyond noise)" if c["beyond_noise"] else " (within noise)"))
        ce = c["cross_expert_pct"]
        lib = "authors'" if "poe-authors" in str(c["library"]) else "ours"
        lines.append("| " + " | ".join([
            c["cell"], str(c["epochs"]), str(c["batch_size"]), str(c["views"]), str(c["teacher"]), lib,
            *[f"{c['accuracy_pct'][n]:.2f}" for n in sizes], mean_delta,
            f"{ce[sizes[0]]:.1f} / {ce[sizes[-1]]:.1f}",
            "–" if c["own_class_mean_pct"] is None else f"{c['own_class_mean_pct']:.2f}",
            "–" if c["training_s"] is None else f"{c['training_s'] / 60:.1f}"]) + " |")
    own_tasks = list(doc["cells"][0]["own_class_pct"]) if doc["cells"] else []
    lines += ["", "Each expert on its own classes (validation top-1 %):", "",
              "| cell | " + " | ".join(own_tasks) + " |", "|---|" + "---:|" * len(own_tasks)]
    for c in doc["cells"]:
        lines.append("| " + c["cell"] + " | " + " | ".join(f"{c['own_class_pct'][t]:.1f}" for t in own_tasks) + " |")
    notes = [f"Accuracy: mean PoE accuracy (%) over all combinations of the six tasks at each n(Q), on the "
             f"{doc['split']} split; Δ: the mean over n(Q) of the difference to `{doc['base']}`."]
    if doc["seed_spread_pct"]:
        notes.append("Run-to-run noise (`base` vs `seed1`, |difference| per n(Q)): "
                     + ", ".join(f"{v:.2f}" for v in doc["seed_spread_pct"].values())
                     + "; a cell is 'beyond noise' when its mean |Δ| exceeds twice the seeds' mean gap.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def plot(doc: dict, path: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for i, c in enumerate(doc["cells"]):
        xs = [int(n) for n in c["accuracy_pct"]]
        ax.plot(xs, list(c["accuracy_pct"].values()), "o^vsD<>p"[i % 8] + "-", label=c["cell"],
                linewidth=2.5 if c["cell"] == doc["base"] else 1.2)
    ax.set_xlabel("n(Q), tasks per query")
    ax.set_ylabel(f"mean PoE accuracy (%), {doc['split']} split")
    ax.set_xticks(sorted({int(n) for c in doc["cells"] for n in c["accuracy_pct"]}))
    ax.set_title("Pool ablation, CIFAR-100: one setting changed per cell", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def main(argv=None) -> None:
    p = ArgumentParser(description="Join an ablation's Table 6 rows with its cells' manifests.")
    p.add_argument("--table6", required=True, help="Run_Table6.py --json output over the cells' pools")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--plot", default=None, help="PNG; default: beside --json")
    args = p.parse_args(argv)
    doc = summarise(json.loads(Path(args.table6).read_text()))
    text = markdown(doc)
    print(text)
    write_report_files(args, doc, text, plot)


if __name__ == "__main__":
    raise SystemExit(run(main))
