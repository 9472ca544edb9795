"""Each expert's logit offset and scale against its teacher's: the measurement behind Table 6.

The paper (Section 4.2) argues that experts trained apart cross each other's classes when their
logits live on different scales: a task model takes the argmax over the concatenated logits of
its experts, so an expert whose logits sit higher, or spread wider, wins images of other tasks.
L_scale pins each expert's logits to the teacher's; L_soft (softmax at T=4) only sees differences
between logits, so an expert trained with it alone may drift in offset and scale.

For every expert, on the images of its own classes (the validation split the pool records, or the
test set), per image: offset = mean of the expert's logits over its classes, scale = their
standard deviation over its classes; the same for the teacher's logits of those classes. The
report gives the mean and spread (over images) of both, per expert and pooled.

    python -m poe.logit_scale --dataset cifar100 --data_root DIR --db POOL --label soft [--db ...] \\
        --pretrained_db DB_pretrained/cifar100 --teacher oracle --score_on val --json OUT.json
"""
from __future__ import annotations

from pathlib import Path

import torch

from .cli import ArgumentParser, add_pool_study_args, run, setup_torch, write_report_files
from .evaluate import autocast
from .history import save_png
from .pool import Pool
from .teachers import ORACLE_TEACHERS, oracle_teacher


def _moments(values: torch.Tensor) -> dict:
    return {"mean": values.mean().item(), "std": values.std().item()}


@torch.no_grad()
def logit_statistics(pool: Pool, tasks: list[str], images, teacher, teacher_from_features: bool, *,
                     device="cpu", amp="none") -> dict:
    """{task: {"expert": {"offset", "scale"}, "teacher": {...}, "images"}} on `images` of the task's classes;
    offset and scale each as {"mean", "std"} over images."""
    profile = pool.profile
    library = pool.load_library().to(device).eval()
    teacher = teacher.to(device).eval()
    out = {}
    for t in tasks:
        ids = profile.hierarchy[t]
        expert = pool.load_expert(t).to(device).eval()
        zs_e, zs_t = [], []
        for x, _ in profile.eval_loader(images.subset(ids)):
            x = x.to(device)
            with autocast(device, amp):
                features = library(x)
                z_e = expert(features)
                z_t = teacher(features) if teacher_from_features else teacher(x)
            zs_e.append(z_e.float().cpu())
            zs_t.append(z_t.float().cpu()[:, ids])
        z_e, z_t = torch.cat(zs_e), torch.cat(zs_t)
        out[t] = {"images": len(z_e),
                  "expert": {"offset": _moments(z_e.mean(1)), "scale": _moments(z_e.std(1))},
                  "teacher": {"offset": _moments(z_t.mean(1)), "scale": _moments(z_t.std(1))}}
    return out


def pooled(stats: dict) -> dict:
    """Means over the experts (weighted alike) of each quantity, and the spread of the experts' mean
    offsets: how far apart the experts' logits sit, the thing that makes argmax cross experts."""
    def avg(who, what):
        return sum(s[who][what]["mean"] for s in stats.values()) / len(stats)

    def spread(who, what):
        return torch.tensor([s[who][what]["mean"] for s in stats.values()]).std().item()

    return {who: {"offset": avg(who, "offset"), "scale": avg(who, "scale"),
                  "offset_spread_across_experts": spread(who, "offset"),
                  "scale_spread_across_experts": spread(who, "scale")} for who in ("expert", "teacher")}


def load_teacher(kind: str, profile, pool: Pool, pretrained_db, *, device) -> tuple[torch.nn.Module, bool]:
    """(teacher, reads_features) for the studies of stored pools against their teacher (here and
    poe.teacher_ceiling): an Oracle-based teacher from `pretrained_db` (reads images), or the library
    student's head from `pool` (reads the library's features)."""
    if kind not in ORACLE_TEACHERS:
        return pool.load_student_head(), True
    from .paths import default_pretrained_dir
    from .preprocess import stored_oracle

    return oracle_teacher(kind, stored_oracle(profile, Path(pretrained_db or default_pretrained_dir(profile)),
                                              device)), False


def open_pool_study(args):
    """What a study of stored pools against their teacher starts from (here and poe.teacher_ceiling):
    (profile, device, amp, tasks, train, test, pools) from its parsed flags (cli.add_pool_study_args)."""
    from .profiles import get_profile
    from .train import pick_amp, pick_device

    setup_torch(args)
    profile = get_profile(args.dataset)
    device = pick_device(args.device)
    tasks = profile.resolve_tasks(args.tasks or profile.default_tasks, "--tasks")
    train, test = profile.load(args.data_root, False)
    return profile, device, pick_amp(args.amp, device), tasks, train, test, [Pool(d, profile) for d in args.db]


def markdown(doc: dict) -> str:
    lines = ["| pool | expert | offset: expert / teacher | scale: expert / teacher | scale ratio |",
             "|---|---|---:|---:|---:|"]
    for row in doc["rows"]:
        for t, s in row["experts"].items():
            e, te = s["expert"], s["teacher"]
            lines.append(f"| {row['label']} | {t} | {e['offset']['mean']:.2f} ± {e['offset']['std']:.2f} / "
                         f"{te['offset']['mean']:.2f} ± {te['offset']['std']:.2f} | "
                         f"{e['scale']['mean']:.2f} ± {e['scale']['std']:.2f} / "
                         f"{te['scale']['mean']:.2f} ± {te['scale']['std']:.2f} | "
                         f"{e['scale']['mean'] / te['scale']['mean']:.2f} |")
    lines += ["", "| pool | mean offset: expert / teacher | spread of the experts' offsets: expert / teacher | "
                  "mean scale: expert / teacher |", "|---|---:|---:|---:|"]
    for row in doc["rows"]:
        p = row["pooled"]
        lines.append(f"| {row['label']} | {p['expert']['offset']:.2f} / {p['teacher']['offset']:.2f} | "
                     f"{p['expert']['offset_spread_across_experts']:.2f} / "
                     f"{p['teacher']['offset_spread_across_experts']:.2f} | "
                     f"{p['expert']['scale']:.2f} / {p['teacher']['scale']:.2f} |")
    return "\n".join(lines) + (
        f"\n\nOn the {doc['split']} images of each expert's own classes; teacher: {doc['teacher']}. Offset: the "
        "mean of an expert's logits over its classes, per image; scale: their standard deviation over its "
        "classes, per image; mean ± standard deviation over images.\n")


def plot(doc: dict, path: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2)
    for ax, what in zip(axes, ("offset", "scale")):
        tasks = list(doc["rows"][0]["experts"])
        width = 0.8 / (len(doc["rows"]) + 1)
        xs = torch.arange(len(tasks)).float()
        teacher = [doc["rows"][0]["experts"][t]["teacher"][what]["mean"] for t in tasks]
        ax.bar(xs, teacher, width, color="0.6", label=f"teacher ({doc['teacher']})")
        for i, row in enumerate(doc["rows"], 1):
            ax.bar(xs + i * width, [row["experts"][t]["expert"][what]["mean"] for t in tasks], width, label=row["label"])
        ax.set_xticks((xs + 0.4 - width / 2).tolist(), [t[:12] for t in tasks], rotation=30, fontsize=7)
        ax.set_title(f"logit {what} on own classes ({doc['split']})", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def main(argv=None) -> None:
    from .table6 import validation_images

    p = ArgumentParser(description="Each expert's logit offset and scale on its own classes, against its teacher's.")
    add_pool_study_args(p)
    p.add_argument("--score_on", default="val", choices=["val", "test"])
    args = p.parse_args(argv)
    profile, device, amp, tasks, train, test, pools = open_pool_study(args)
    teacher, from_features = load_teacher(args.teacher, profile, pools[0], args.pretrained_db, device=device)
    rows = []
    for i, pool in enumerate(pools):
        images = test if args.score_on == "test" else validation_images(pool, tasks, train, None, None)
        stats = logit_statistics(pool, tasks, images, teacher, from_features, device=device, amp=amp)
        label = args.label[i] if i < len(args.label) else pool.root.name
        rows.append({"label": label, "db": str(pool.root), "experts": stats, "pooled": pooled(stats)})
    doc = {"dataset": profile.name, "split": args.score_on, "teacher": args.teacher, "rows": rows}
    text = markdown(doc)
    print(text)
    write_report_files(args, doc, text, plot)

if __name__ == "__main__":
    raise SystemExit(run(main))
