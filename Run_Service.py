#!/usr/bin/env python
"""Answer a query in realtime: build the task model for the queried primitive tasks from the
library and their experts (no training), evaluate it, and report accuracy, cross-expert errors,
parameters, FLOPs and the time to build it.

    python Run_Service.py --dataset demo --queriedTask disks rings stripes
    python Run_Service.py --dataset cifar100 --data_root DIR --queriedTask people vehicles_1 vehicles_2
    python Run_Service.py --dataset cifar100 --db ../shared/reference/poe-authors/CIFAR100 \\
        --data_root ../shared/data --queriedTask people vehicles_1 --json out.json --export model.pt2
    python Run_Service.py --dataset cifar100 --list          # the primitive tasks, and which have experts
    python Run_Service.py --dataset tinyimagenet --db ../shared/reference/poe-authors/TinyImageNet \
        --data_root DIR --queriedTask canine feline bird
    python Run_Service.py --dataset imagenet --data_root DIR --queriedTask bird_passerine bird_Etc1
"""
import argparse
import json
from pathlib import Path

import torch

from poe.cli import ArgumentParser, add_common_args, check_writable, profile_from_args, run, setup_torch
from poe.errors import PoEError
from poe.pool import Pool, atomic_write_text
from poe.preprocess import default_pool_dir
from poe.service import build_task_model, describe, evaluate_task_model, export
from poe.train import pick_amp, pick_device


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--queriedTask", "--queried-task", dest="queried", nargs="*", default=None, metavar="TASK",
                   help="primitive tasks of the query (see --list)")
    p.add_argument("--list", action="store_true", help="print one line per primitive task and exit")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="write the task model as a torch.export program (.pt2) runnable with plain PyTorch")
    p.add_argument("--no-fuse", "--no_fuse", dest="fuse", action="store_false",
                   help="answer with the plain sequential task model (library, then each expert) instead of the "
                        "fused one (BatchNorm folded; WRN experts as grouped convolutions, MobileNetV2 experts as one "
                        "matrix product; same logits, faster)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="build (and export) the model without evaluating it (no data needed)")
    return p


def list_tasks(profile, pool: Pool) -> None:
    width = max(len(t) for t in profile.hierarchy)
    for task, classes in profile.hierarchy.items():
        status = "expert" if pool.has_expert(task) else "no-expert"
        names = ", ".join(profile.class_names[c] for c in classes)
        print(f"{task:<{width}}  {status:<9}  {names}")


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    setup_torch(args)
    profile = profile_from_args(args)
    pool = Pool(args.db or default_pool_dir(profile), profile)
    if args.list:
        list_tasks(profile, pool)
        return
    if args.queried is None:
        raise PoEError("name the query with --queriedTask TASK [TASK ...] (see --list)")
    tasks = profile.resolve_tasks(args.queried, "--queriedTask")
    check_writable(args.json, "--json")
    check_writable(args.export, "--export")
    device = pick_device(args.device)
    amp = pick_amp(args.amp or profile.amp_default, device)
    test = profile.load(args.data_root, False)[1] if args.evaluate else None  # fail early on missing data

    model, build_ms = build_task_model(pool, tasks, fuse=args.fuse)
    report = {"dataset": profile.name, **describe(model, profile, profile.input_shape), "build_ms": build_ms}
    if test is not None:
        report.update(evaluate_task_model(model, profile, test, device, amp))

    print(f"PoE service: {profile.title}, pool {pool.root} ({pool.layout} layout)")
    print(f"  queried tasks : {', '.join(tasks)} ({report['num_classes']} classes)")
    if test is not None:
        print(f"  accuracy      : {report['accuracy_pct']:.2f} % on {report['images']} test images")
        print(f"  cross-expert  : {report['cross_expert_pct']:.2f} % of {report['errors']} errors")
    print(f"  parameters    : {report['params']:,}")
    print(f"  FLOPs         : {report['flops'] / 1e6:,.2f} M per image")
    print(f"  build time    : {build_ms:.2f} ms (library and experts read from the DB, consolidated"
          f"{', fused' if report['form'] == 'fused' else ''})")

    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")
        print(f"  report        : {args.json}")
    if args.export:
        export(model, profile, profile.input_shape, args.export)
        print(f"  exported      : {args.export} (torch.export program; torch.export.load(path).module())")


if __name__ == "__main__":
    raise SystemExit(run(main))
