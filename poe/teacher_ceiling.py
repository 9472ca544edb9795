"""The teacher as a pool: how far the experts' teacher itself gets on every query.

PoE's experts learn the teacher's logits of their classes (L_soft + L_scale), so the teacher's own
answer to a query — the argmax of its logits restricted to the query's classes — is what the
experts imitate. Scored exactly as Table 6 scores a pool (every combination of the tasks,
n(Q)=2..5, plus each task alone), it separates two causes of a weak pool: experts that fall short
of their teacher (the expert stage), and a teacher that falls short itself (the Oracle, or the
library student). Rows: the teacher, then each pool given, on each split asked for.

    python -m poe.teacher_ceiling --dataset cifar100 --data_root DIR --db POOL --label ours \\
        --pretrained_db DB_pretrained/cifar100 --teacher oracle --score_on val test --json OUT.json
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .cli import ArgumentParser, add_pool_study_args, run, write_report_files
from .evaluate import predict, score_all_combinations
from .history import save_png
from .logit_scale import load_teacher, open_pool_study


def teacher_task_logits(teacher: nn.Module, profile, tasks: list[str], images, *, device="cpu", amp="none",
                        desc: str | None = None) -> tuple[dict, torch.Tensor]:
    """({task: the teacher's logits of that task's classes}, labels) on the images of the tasks' classes:
    the same shape of input as the experts' logits that Table 6 scores."""
    classes = sorted(c for t in tasks for c in profile.hierarchy[t])
    z, labels = predict(teacher.to(device), profile.eval_loader(images.subset(classes)), device, amp, desc=desc)
    return {t: z[:, profile.hierarchy[t]] for t in tasks}, labels


def score_logits(logits: dict, labels: torch.Tensor, hierarchy: dict, tasks: list[str], sizes) -> dict:
    """Table 6's numbers for a set of per-task logits: accuracy and cross-expert share per n(Q)
    (mean over all combinations) and each task alone on its own classes."""
    summary = score_all_combinations(logits, labels, hierarchy, tasks, sizes)
    own = {}
    for t in tasks:
        ids = torch.tensor(hierarchy[t])
        mask = torch.isin(labels, ids)
        own[t] = 100.0 * (ids[logits[t][mask].argmax(1)] == labels[mask]).float().mean().item()
    return {"own_class_pct": own,
            "accuracy_pct": {str(n): s["accuracy_pct"] for n, s in summary.items()},
            "cross_expert_pct": {str(n): s["cross_expert_pct"] for n, s in summary.items()}}


def markdown(doc: dict) -> str:
    sizes = list(doc["rows"][0]["accuracy_pct"])
    lines = ["| row | split | " + " | ".join(f"accuracy % n(Q)={n}" for n in sizes)
             + " | own classes (mean) | cross-expert % n(Q)=" + "/".join(sizes) + " |",
             "|---|---|" + "---:|" * (len(sizes) + 2)]
    for r in doc["rows"]:
        own = r["own_class_pct"]
        lines.append(f"| {r['label']} | {r['split']} | " + " | ".join(f"{r['accuracy_pct'][n]:.2f}" for n in sizes)
                     + f" | {sum(own.values()) / len(own):.2f} | "
                     + " / ".join(f"{r['cross_expert_pct'][n]:.1f}" for n in sizes) + " |")
    gaps = []
    for split in dict.fromkeys(r["split"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["split"] == split]
        teacher = next(r for r in rows if r["kind"] == "teacher")
        for r in rows:
            if r["kind"] == "pool":
                gap = [r["accuracy_pct"][n] - teacher["accuracy_pct"][n] for n in sizes]
                gaps.append(f"- {r['label']} against its teacher ({split}): "
                            + " / ".join(f"{g:+.2f}" for g in gap) + f" points at n(Q)={'/'.join(sizes)}")
    return ("\n".join(lines) + "\n\n" + "\n".join(gaps) + "\n\n"
            f"The teacher row ({doc['teacher']}) answers each query with the argmax of its own logits over the "
            "query's classes: what the experts imitate. Means over all combinations of the tasks; own classes: each "
            "task alone.\n")


def plot(doc: dict, path: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for r in doc["rows"]:
        xs = [int(n) for n in r["accuracy_pct"]]
        ax.plot(xs, list(r["accuracy_pct"].values()), "s--" if r["kind"] == "teacher" else "o-",
                label=f"{r['label']} ({r['split']})")
    ax.set_xlabel("n(Q)")
    ax.set_ylabel("mean accuracy over all combinations, %")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def main(argv=None) -> None:
    from .table6 import evaluate_pool, sizes_for, validation_images

    p = ArgumentParser(description="The experts' teacher scored as a pool, beside the pools it taught.")
    add_pool_study_args(p)
    p.add_argument("--score_on", nargs="+", default=["val"], choices=["val", "test"],
                   help="val: the first pool's recorded validation split; test: the test set")
    args = p.parse_args(argv)
    profile, device, amp, tasks, train, test, pools = open_pool_study(args)
    teacher, from_features = load_teacher(args.teacher, profile, pools[0], args.pretrained_db, device=device)
    if from_features:  # the library student reads the first pool's library features
        teacher = nn.Sequential(pools[0].load_library(), teacher)
    sizes = sizes_for(len(tasks))
    rows = []
    for split in args.score_on:
        images = test if split == "test" else validation_images(pools[0], tasks, train, None, None)
        logits, labels = teacher_task_logits(teacher.eval(), profile, tasks, images, device=device, amp=amp,
                                             desc=f"teacher ({split})")
        rows.append({"label": f"teacher: {args.teacher}", "kind": "teacher", "split": split,
                     **score_logits(logits, labels, profile.hierarchy, tasks, sizes)})
        for i, pool in enumerate(pools):
            label = args.label[i] if i < len(args.label) else pool.root.name
            pool_images = images if split == "test" or i == 0 else validation_images(pool, tasks, train, None, None)
            r = evaluate_pool(pool, tasks, pool_images, label=label, device=device, amp=amp, split=split)
            rows.append({"label": label, "kind": "pool", "db": str(pool.root), "split": split,
                         **{k: r[k] for k in ("own_class_pct", "accuracy_pct", "cross_expert_pct")}})
    doc = {"dataset": profile.name, "teacher": args.teacher, "tasks": tasks, "rows": rows}
    text = markdown(doc)
    print(text)
    write_report_files(args, doc, text, plot)


if __name__ == "__main__":
    raise SystemExit(run(main))
