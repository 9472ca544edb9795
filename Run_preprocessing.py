#!/usr/bin/env python
"""Build a pool of experts: Oracle -> library student -> library + one expert per primitive task.

Paper settings are the defaults (CIFAR-100: Oracle WRN-40-4 and library student WRN-16-1, 200
epochs each; experts 100 epochs; SGD lr 0.1, momentum 0.9, wd 5e-4, batch 512). Stages already in
the DB are skipped; an interrupted stage resumes from its last epoch when the same command is run
again.

    python Run_preprocessing.py --dataset demo                                  # offline demo, minutes
    python Run_preprocessing.py --dataset cifar100 --data_root DIR               # the paper's run (GPU)
    python Run_preprocessing.py --dataset cifar100 --data_root DIR --epochs_oracle 30 --epochs_library 30 \\
        --epochs_expert 15                                                     # a reduced budget
    python Run_preprocessing.py --dataset cifar100 --data_root DIR --library_from POOL \\
        --teacher library-student --db DB_PoE/mine                              # experts on another library
    python Run_preprocessing.py --dataset tinyimagenet --data_root DIR            # DIR/tiny-imagenet-200/ as downloaded
    python Run_preprocessing.py --dataset imagenet --data_root DIR --weights oracle=W.pth student=M.pth
                                                      # experts only: Oracle and library come pretrained
    python Run_preprocessing.py --dataset cifar100 --data_root DIR --task_file my_tasks.txt  # your own tasks
    python Run_preprocessing.py --dataset folder --data_root DIR --budget cpu  # your own images: DIR/train/<task>/<class>/
    python Run_preprocessing.py --dataset cifar100 --data_root DIR --expert_source live   # experts the paper's
                                     # way: library and teacher recomputed every batch (default: feature cache)
    torchrun --standalone --nproc_per_node 2 Run_preprocessing.py --dataset demo    # 2 processes (DDP, see README)
"""
import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

from poe import distributed, lock
from poe.cli import (ArgumentParser, add_common_args, add_feature_cache_args, add_no_wait_arg, add_output_args,
                     add_pretrained_db_arg, add_run_args, add_validation_args, check_outputs, check_writable,
                     positive_float, positive_int, profile_from_args, run, selected_tasks, setup_torch,
                     validation_from_args, write_report_files)
from poe.errors import PoEError
from poe.losses import EXPERT_LOSSES
from poe.history import plot_stages
from poe.paths import default_pool_dir, default_pretrained_dir
from poe.pool import Pool
from poe.profiles import get_profile
from poe.preprocess import Preprocessor
from poe.stage_summary import stored_summary, summary_lines, summary_markdown
from poe.teachers import TEACHERS
from poe.train import pick_amp, pick_device

STAGES = ("oracle", "library", "experts")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser.from_doc(__doc__)
    add_common_args(p)
    add_pretrained_db_arg(p, holds="the Oracle and library-student checkpoints (written there)")
    p.add_argument("--weights", nargs="+", default=[], metavar="KIND=PATH",
                   help="imagenet: local files of the pretrained networks, e.g. oracle=wide_resnet101_2.pth "
                        "student=mobilenet_v2.pth (default: torchvision's cache, $TORCH_HOME/hub/checkpoints)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="primitive tasks to build experts for (default: the paper's; 'all' for every one)")
    p.add_argument("--expert_loss", default="soft+scale", choices=EXPERT_LOSSES,
                   help="loss the experts learn with (default soft+scale = L_soft + 0.3 L_scale)")
    p.add_argument("--teacher", default="oracle", choices=TEACHERS,
                   help="whose logits the experts mimic (default oracle)")
    add_feature_cache_args(p, joint="all experts", db="<db>")
    add_validation_args(p)
    p.add_argument("--library_from", default=None, metavar="POOL",
                   help="take the library (and its student's head) from this pool folder instead of training it")
    p.add_argument("--budget", default="paper", metavar="NAME",
                   help="paper (default): the paper's networks and schedules; or a named reduced budget of the "
                        "dataset, e.g. cifar100 'cpu' = "
                        f"{get_profile('cifar100').budget_presets['cpu'].description} (docs/preprocessing.md). "
                        "The flags below override parts of it")
    add_run_args(p, batch_size="the budget's (paper: 512; cpu: 128 for Oracle and student); a value given applies "
                                "to every stage",
                 download="the dataset, and pretrained weights (imagenet),")
    for stage in ("oracle", "library", "expert"):
        p.add_argument(f"--epochs_{stage}", type=positive_int, default=None, metavar="N",
                       help=f"{stage} epochs, at least 1 (LR milestones scale with it); default: the profile's")
        p.add_argument(f"--lr_{stage}", type=positive_float, default=None, metavar="LR",
                       help=f"{stage} learning rate; default: the profile's")
    p.add_argument("--force", nargs="+", default=[], choices=STAGES,
                   help="rebuild these stages even if the DB has them")
    add_output_args(p, json="write what the DB holds after the run (each stage's network, budget, wall time, test "
                             "scores, per-epoch history) as JSON, and a plot of the stages' curves beside it (.png)",
                    markdown="the same as a Markdown table, with the command")
    add_no_wait_arg(p)
    return p


def parse_weights(items: list[str], profile) -> dict[str, str]:
    """--weights oracle=PATH student=PATH -> {"oracle": PATH, ...}, for profiles with pretrained networks."""
    if items and not getattr(profile.architecture, "pretrained", False):
        raise PoEError(f"--weights applies to datasets whose networks come pretrained (imagenet), not {profile.name}")
    weights = {}
    for item in items:
        kind, _, path = item.partition("=")
        if kind not in ("oracle", "student") or not path:
            raise PoEError(f"--weights takes oracle=PATH and/or student=PATH, got {item!r}")
        weights[kind] = path
    return weights


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    command = shlex.join(["python", "Run_preprocessing.py", *(sys.argv[1:] if argv is None else argv)])
    tic = time.perf_counter()
    setup_torch(args)
    profile = profile_from_args(args).with_budget(args.budget)
    tasks = selected_tasks(args, profile)
    for stage in ("oracle", "library", "expert"):
        if stage not in profile.budgets and (getattr(args, f"epochs_{stage}") or getattr(args, f"lr_{stage}")):
            raise PoEError(f"{profile.name}'s {stage} comes pretrained: --epochs_{stage}/--lr_{stage} do not apply")
    budgets = {stage: profile.budgets[stage].with_epochs(getattr(args, f"epochs_{stage}") or profile.budgets[stage].epochs)
               .with_lr(getattr(args, f"lr_{stage}")) for stage in profile.budgets}
    weights = parse_weights(args.weights, profile)
    batch_size = args.batch_size or profile.batch_size
    if args.batch_size:  # one batch for every stage, whatever the budget's
        budgets = {stage: dataclasses.replace(b, batch_size=None) for stage, b in budgets.items()}
    pool = Pool(args.db or default_pool_dir(profile), profile)
    pool._writable()
    pretrained_dir = Path(args.pretrained_db or default_pretrained_dir(profile))
    for flag, folder in (("--db", pool.root), ("--pretrained_db", pretrained_dir), ("--cache_dir", args.cache_dir)):
        check_writable(folder, flag, folder=True)
    check_outputs(args, plot=True)  # the stages' curves beside --json
    device = distributed.setup(pick_device(args.device))  # joins torchrun's processes, if started by it
    amp = pick_amp(args.amp or profile.amp_default, device)
    # One writer per pool: a second run on the same pool (or pretrained folder) waits for this one.
    with lock.writing([pool.root, pretrained_dir], wait=args.wait):
        build(args, profile, tasks, pool, pretrained_dir, batch_size, budgets, weights, device, amp)
    if args.json or args.markdown:
        summary = stored_summary(profile, pool, pretrained_dir, tasks)
        distributed.main_writes(lambda: write_reports(args, summary, command, time.perf_counter() - tic, device, amp))


def build(args, profile, tasks, pool, pretrained_dir, batch_size, budgets, weights, device, amp) -> None:
    pre = Preprocessor(profile, pool, pretrained_dir,
                       data_root=args.data_root, download=args.download, batch_size=batch_size,
                       budgets=budgets, device=device, amp=amp, seed=args.seed, weights=weights,
                       expert_source=args.expert_source, cache_views=args.cache_views, cache_dir=args.cache_dir,
                       cache_dtype=args.cache_dtype, validation=validation_from_args(args, profile),
                       score_on=args.score_on, cache_seed=args.cache_seed)
    world = distributed.world()
    print(f"PoE preprocessing: {profile.title}, budget {args.budget}, device {device}, amp {amp}, "
          f"pool {pool.root}" + (f", {world.size} processes" if world.size > 1 else ""))

    oracle_cache = {}

    def oracle():
        if "oracle" not in oracle_cache:
            oracle_cache["oracle"] = pre.oracle(force="oracle" in args.force)
        return oracle_cache["oracle"]

    if args.library_from:
        if not pool.has_library() or "library" in args.force:
            pre.import_library(Pool(args.library_from, profile))
        else:
            print(f"[library] {pool.library_path} exists; skipping --library_from (use --force library)")
    elif not pool.has_library() or "library" in args.force or "oracle" in args.force:
        pre.library(oracle, force="library" in args.force or "oracle" in args.force)
    else:
        print(f"[library] using {pool.library_path}")

    todo = tasks if "experts" in args.force else pre.stale_or_missing(tasks, args.expert_loss, args.teacher)
    done = [t for t in tasks if t not in todo]
    if done:
        print(f"[experts] already in the pool: {', '.join(done)}")
    if todo:
        pre.experts(todo, args.expert_loss, args.teacher, oracle)
    distributed.barrier()  # every rank's experts saved
    print(f"pool ready: {pool.root} ({len(pool.experts_available())} experts)")
    print("\n".join(summary_lines(stored_summary(profile, pool, pre.pretrained_dir, tasks))))


def write_reports(args, summary: dict, command: str, seconds: float, device, amp) -> None:
    doc = {"command": command, "budget": args.budget, "device": str(device), "amp": amp,
           "this_run_s": round(seconds, 1), **summary}
    text = (f"# Preprocessing, {args.dataset}, budget {args.budget}\n\n{summary_markdown(summary)}\n"
            f"Command: `{command}` (device {device}, amp {amp}; this run {seconds / 60:.1f} min)\n")
    histories = {name.replace("_", " "): s["history"] for name, s in summary["stages"].items() if s.get("history")}

    def plot(doc, path):  # the stages' curves side by side
        if histories and plot_stages(histories, path, f"{args.dataset}, budget {args.budget}"):
            return f"plot          : {path}"
        return "plot          : none (no stage history, or matplotlib missing)"

    write_report_files(args, doc, text, plot)

if __name__ == "__main__":
    raise SystemExit(run(main))
