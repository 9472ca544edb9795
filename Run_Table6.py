#!/usr/bin/env python
"""Reproduce Table 6 of the paper: the share of cross-expert errors (a wrong prediction in another
queried task than the true class) for experts trained with L_soft only, L_scale only and
L_soft + L_scale, averaged over every combination of the tasks for n(Q) = 2..5.

Training mode (no --db): builds three pools from the same library and teacher, one per loss, in
OUT_DB/<soft|scale|soft+scale>/ (default DB_PoE/<dataset>_table6/); experts already there are kept,
so rerunning the same command only evaluates. Evaluation mode (--db, repeatable): scores existing
pools only, in our layout or the authors' published one.

    python Run_Table6.py --dataset demo --library_from DB_PoE/demo --teacher library-student
    python Run_Table6.py --dataset cifar100 --data_root DIR --library_from ../shared/reference/poe-authors/CIFAR100 \\
        --teacher library-student --epochs_expert 15 --json results/table6_cifar100.json \\
        --markdown results/table6_cifar100.md
    python Run_Table6.py --dataset cifar100 --data_root ../shared/data \\
        --db ../shared/reference/poe-authors/CIFAR100 --label "authors' L_soft + L_scale"
"""
import argparse
import shlex
import sys
import time
from pathlib import Path

from poe import table6
from poe import distributed, lock
from poe.cli import (ArgumentParser, add_common_args, add_feature_cache_args, add_no_wait_arg, add_output_args,
                     add_pretrained_db_arg, add_run_args, add_validation_args, check_outputs, check_writable,
                     positive_float, positive_int, profile_from_args, run, selected_tasks, setup_torch,
                     validation_from_args, write_report_files)
from poe.errors import PoEError
from poe.paths import default_pool_dir, default_pretrained_dir
from poe.pool import Pool
from poe.teachers import TEACHERS
from poe.train import pick_amp, pick_device


class PoolsAction(argparse.Action):
    """--db DIR [--label LABEL] ... -> [(DIR, LABEL or None), ...]: each label names the pool before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        pools = list(getattr(namespace, self.dest) or [])
        if option_string == "--label":
            if not pools or pools[-1][1] is not None:
                raise PoEError(f"--label {value!r} must follow the --db it names (one label per --db)")
            pools[-1] = (pools[-1][0], value)
        else:
            pools.append((value, None))
        setattr(namespace, self.dest, pools)


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser.from_doc(__doc__)
    add_common_args(p, db=False)  # --db is repeatable here, with a --label each
    p.add_argument("--db", action=PoolsAction, default=None, metavar="DIR",
                   help="evaluate this existing pool (repeatable; our layout or the authors'); no training")
    p.add_argument("--label", action=PoolsAction, dest="db", metavar="LABEL",
                   help="row label of the --db just before it (default: from the pool's manifest)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="primitive tasks (default: the paper's; 'all' for every one); at least 2")
    p.add_argument("--out_db", default=None, metavar="ROOT",
                   help="training mode: where the three pools go (ROOT/soft, ROOT/scale, ROOT/soft+scale); "
                        "default DB_PoE/<dataset>_table6")
    p.add_argument("--library_from", default=None, metavar="POOL",
                   help="training mode: the library (and its student's head) every pool shares; "
                        "default: the pool DB_PoE/<dataset> built by Run_preprocessing.py")
    p.add_argument("--teacher", default="oracle", choices=TEACHERS,
                   help="whose logits the experts mimic (default oracle, read from --pretrained_db)")
    add_pretrained_db_arg(p)
    p.add_argument("--epochs_expert", type=positive_int, default=None, metavar="N",
                   help="expert epochs, at least 1 (LR milestones scale with it); default: the profile's (paper: 100)")
    p.add_argument("--lr_expert", type=positive_float, default=None, metavar="LR",
                   help="expert learning rate; default: the profile's")
    add_run_args(p, batch_size="the profile's (paper: 512)")
    add_feature_cache_args(p, joint="the experts of all three pools", db="OUT_DB")
    add_validation_args(p)
    p.add_argument("--force", nargs="+", default=[], choices=["library", "experts"],
                   help="training mode: re-import the library / retrain the experts even if the pools have them")
    add_output_args(p, json="write the rows as JSON", plot=True,
                    markdown="write the table with the command, budget and wall time as a Markdown file")
    add_no_wait_arg(p)
    return p


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    command = shlex.join(["python", "Run_Table6.py", *(sys.argv[1:] if argv is None else argv)])
    setup_torch(args)
    profile = profile_from_args(args)
    tasks = selected_tasks(args, profile)
    table6.sizes_for(len(tasks))
    check_outputs(args, plot=True)
    if not args.db:
        check_writable(args.out_db or table6.default_root(profile), "--out_db", folder=True)
        check_writable(args.cache_dir, "--cache_dir", folder=True)
    device = distributed.setup(pick_device(args.device))  # training under torchrun: experts divided among ranks
    amp = pick_amp(args.amp or profile.amp_default, device)
    tic = time.perf_counter()
    settings = {"device": str(device), "amp": amp}
    # The split the experts are trained with (training mode) and scored on with --score_on val; in
    # evaluation mode each pool's own recorded split is used, and an explicit --val_per_class must match it.
    validation = validation_from_args(args, profile)
    score_on = args.score_on or ["test"]

    if args.db:
        pools = [(label, Pool(db, profile)) for db, label in args.db]
        print(f"Table 6, {profile.title}: evaluating {len(pools)} pool(s) on {len(tasks)} tasks")
    else:
        budget = profile.budgets["expert"].with_epochs(args.epochs_expert or profile.budgets["expert"].epochs) \
            .with_lr(args.lr_expert)
        batch_size = args.batch_size or profile.batch_size
        root = Path(args.out_db) if args.out_db else table6.default_root(profile)
        source = Pool(args.library_from or default_pool_dir(profile), profile)
        if not source.has_library():
            raise PoEError(f"no library in {source.root}: build one with python Run_preprocessing.py --dataset "
                           f"{profile.name}, or pass --library_from POOL (e.g. the authors' folder)")
        print(f"Table 6, {profile.title}: three pools in {root}, library from {source.root}, teacher {args.teacher}, "
              f"expert epochs {budget.epochs} (lr {budget.lr}, milestones {list(budget.milestones)}), "
              f"batch {batch_size}, device {device}, amp {amp}")
        with lock.writing([root / v for v in table6.VARIANTS], wait=args.wait):  # one writer per pool
            pools_by_variant = table6.prepare_pools(
                profile, root, tasks, library_source=source, teacher=args.teacher,
                pretrained_dir=Path(args.pretrained_db or default_pretrained_dir(profile)), data_root=args.data_root,
                download=args.download, batch_size=batch_size, expert_budget=budget, device=device, amp=amp,
                seed=args.seed, force=args.force, expert_source=args.expert_source, cache_views=args.cache_views,
                cache_dir=args.cache_dir, cache_dtype=args.cache_dtype, validation=validation,
                score_on=args.score_on, cache_seed=args.cache_seed)
        pools = [(table6.VARIANT_LABELS[v], pool) for v, pool in pools_by_variant.items()]
        extraction = {"expert_source": args.expert_source}
        if args.expert_source == "cache":
            views = profile.cache_views if args.cache_views is None else args.cache_views
            extraction.update(cache_views=min(views, budget.epochs), cache_dtype=args.cache_dtype)
        settings.update(library=str(source.library_path), teacher=args.teacher, **extraction,
                        epochs_expert=budget.epochs,
                        lr_expert=budget.lr, milestones=list(budget.milestones), batch_size=batch_size,
                        seed=args.seed, train_seconds=round(time.perf_counter() - tic, 1))

    if not distributed.world().is_main:
        return  # the evaluation and the report are rank 0's
    train, test = profile.load(args.data_root, args.download)
    wanted = validation.describe(train) if args.val_per_class is not None or not args.db else None
    rows = []
    for split in score_on:
        for label, pool in pools:
            images = test if split == "test" else table6.validation_images(pool, tasks, train, wanted, args.val_per_class)
            rows.append(table6.evaluate_pool(pool, tasks, images, label=label, device=device, amp=amp, split=split,
                                             tag=len(score_on) > 1))
    settings["total_seconds"] = round(time.perf_counter() - tic, 1)
    doc = table6.report(profile, tasks, rows, command=command, settings=settings)
    table = table6.markdown(doc)
    print(table)

    text = (f"# Table 6, {profile.title}: cross-expert errors\n\n{table}\n"
            f"Command: `{command}`\n\nSettings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "\n")
    write_report_files(args, doc, text, table6.plot)

if __name__ == "__main__":
    raise SystemExit(run(main))
