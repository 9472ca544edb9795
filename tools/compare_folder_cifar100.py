#!/usr/bin/env python
"""Summarise results/folder_vs_cifar100.sh: the pools built by `--dataset folder` on the PNG copy of
CIFAR-100's 30 classes and by `--dataset cifar100 --restrict_to` on the same classes, side by side,
with the run-to-run noise measured between two seeds of the same run.

    python tools/compare_folder_cifar100.py OUT --markdown results/folder_vs_cifar100.md --json results/folder_vs_cifar100.json

OUT holds, per run, <arm>_seed<N>.json (Run_preprocessing.py --json) and <arm>_seed<N>.table6.json
(Run_Table6.py --json on that pool), arm = folder or cifar100.
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poe.cli import run, write_report_files  # noqa: E402
from poe.errors import PoEError  # noqa: E402

def read_run(out: Path, name: str) -> dict:
    """One run's figures from its preprocessing and Table 6 reports."""
    try:
        pre = json.loads((out / f"{name}.json").read_text())
        table6 = json.loads((out / f"{name}.table6.json").read_text())
    except (OSError, ValueError) as exc:
        raise PoEError(f"cannot read the reports of run {name} in {out}: {exc}") from None
    stages, row = pre["stages"], table6["rows"][0]
    own = [e["metrics"]["own_classes_top1_pct"] for e in pre["experts"].values()]
    figures = {"Oracle top-1 (all classes)": stages["oracle"]["metrics"]["test_top1_pct"],
               "library student top-1 (all classes)": stages["library_student"]["metrics"]["test_top1_pct"],
               "experts, mean own-class top-1": statistics.mean(own)}
    sizes = sorted(row["accuracy_pct"], key=int)  # n(Q) = 2..5 for six tasks
    figures |= {f"PoE accuracy, n(Q)={n} (mean of combinations)": row["accuracy_pct"][n] for n in sizes}
    figures[f"PoE accuracy, mean over n(Q)={sizes[0]}..{sizes[-1]}"] = \
        statistics.mean(row["accuracy_pct"][n] for n in sizes)
    figures |= {f"cross-expert share of errors, n(Q)={n}": row["cross_expert_pct"][n] for n in sizes}
    walls = [s["wall_s"]["this_process_s"] for s in stages.values()]
    return {"name": name, "command": pre["command"], "figures": figures, "minutes": round(sum(walls) / 60, 1),
            "amp": pre["amp"], "tasks": table6["tasks"], "classes": int(re.search(r"(\d+) classes", table6["title"])[1])}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder results/folder_vs_cifar100.sh wrote its pools and reports in")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    names = sorted((re.sub(r"\.json$", "", f.name) for f in out.glob("*_seed*.json") if ".table6." not in f.name),
                   key=lambda n: (not n.startswith("folder"), n))  # the folder's runs first
    runs = {n: read_run(out, n) for n in names}
    folder, cifar = ([r for n, r in runs.items() if n.startswith(arm)] for arm in ("folder_", "cifar100_"))
    if not folder or not cifar or max(len(folder), len(cifar)) < 2:
        raise PoEError(f"{out} needs runs of both arms and two seeds of one (the noise), found {', '.join(names) or 'none'}")
    metrics = list(folder[0]["figures"])
    tasks, classes = folder[0]["tasks"], folder[0]["classes"]
    # Noise: the run-to-run standard deviation sigma, pooled over the arms' seeds (each arm's runs differ only
    # by the seed). The two arms' means differ by chance with sd sigma * sqrt(1/n_folder + 1/n_cifar100);
    # "same accuracy" = a difference within 2 of those.
    def spread(values):
        mean = statistics.mean(values)
        return sum((v - mean) ** 2 for v in values), len(values) - 1

    rows, doc_rows = [], []
    for m in metrics:
        f, c = [r["figures"][m] for r in folder], [r["figures"][m] for r in cifar]
        squares, dof = (sum(x) for x in zip(*(spread(v) for v in (f, c) if len(v) > 1)))
        sigma = (squares / dof) ** 0.5
        diff = statistics.mean(f) - statistics.mean(c)
        bound = 2 * sigma * (1 / len(f) + 1 / len(c)) ** 0.5
        doc_rows.append({"metric": m, **{r["name"]: r["figures"][m] for r in runs.values()},
                         "folder_minus_cifar100": diff, "run_to_run_sd": sigma, "two_sd_of_difference": bound,
                         "within_noise": abs(diff) <= bound})
        rows.append(f"| {m} | " + " | ".join(f"{r['figures'][m]:.2f}" for r in runs.values())
                    + f" | {diff:+.2f} | {sigma:.2f} | {bound:.2f} | {'yes' if abs(diff) <= bound else 'no'} |")
    header = ("| metric (%) | " + " | ".join(runs) + " | folder − cifar100 (means) | run-to-run sd | 2 sd of the "
              "difference | within |")
    within = sum(r["within_noise"] for r in doc_rows)
    text = "\n".join([
        f"# `--dataset folder` on PNG files against `--dataset cifar100` on the same {classes} classes", "",
        f"The {classes} classes of CIFAR-100's tasks {', '.join(tasks)} (all their training and test images) were "
        "written as PNG "
        "files (`tools/cifar100_to_png.py`: lossless, so the very same pixels) and a pool built from that folder "
        "with `--dataset folder`; beside it, `--dataset cifar100 --restrict_to` the same tasks built pools from the "
        "official files on the same classes, with the same networks, budget and seeds. What still differs between "
        "the two at one seed: the order of the training images (the folder lists them class by class, the "
        "official file interleaves them, so the same seed draws other batches) and the normalisation (the "
        f"folder's statistics are its own {classes} classes', the profile's CIFAR-100's 100 classes'). Given the same "
        "order and statistics the two readers feed the training loop identical batches "
        "(tests/test_folder_dataset.py::test_the_folder_reader_gives_cifar100s_batches).", "",
        f"Run-to-run noise: the standard deviation between seeds of the same run, pooled over the arms "
        f"({len(folder)} folder run(s), {len(cifar)} cifar100 run(s)); the two give the same accuracy when their "
        "means differ by at most 2 standard deviations of that difference.", "",
        header, "|---|" + "---:|" * (len(runs) + 4), *rows, "",
        f"{within} of {len(doc_rows)} figures within the noise. Runs: "
        + "; ".join(f"{r['name']} {r['minutes']} min" for r in runs.values()) + f" (amp {folder[0]['amp']}).", "",
        "Commands:", "", *[f"- `{r['command']}`" for r in runs.values()], ""])
    print(text)
    write_report_files(args, {"runs": runs, "rows": doc_rows}, text)


if __name__ == "__main__":
    raise SystemExit(run(main))
