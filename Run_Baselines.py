#!/usr/bin/env python
"""PoE against the seven per-query training baselines of the paper's comparison (Scratch, Transfer,
CKD, SD_Scratch, SD_CKD, UHC_Scratch, UHC_CKD): per query, accuracy, params, FLOPs and the wall time
to a ready model, the per-epoch curve on a validation split held out of every baseline's training,
and when each method first reaches PoE's accuracy there; PoE's query time as a distribution and its
one-off preprocessing from the pool's own records.

PoE's row comes from the pool (--db: library + experts, no training); its experts are also the
teachers of SD_CKD and UHC_CKD, its library the frozen front of Transfer and CKD. Trained baselines
are stored in --out (one file per method, query and settings), so rerunning a command only
evaluates. Either one query (--queriedTask) or the study over n(Q) in --sizes of --tasks (every
combination, or a seeded sample of --queries per n(Q)).

    python Run_preprocessing.py --dataset demo      # once: the demo pool (PoE's row, the teachers)
    python Run_Baselines.py --dataset demo --queriedTask disks rings --teacher library-student
    python Run_Baselines.py --dataset cifar100 --data_root ../shared/data \\
        --db ../shared/reference/poe-authors/CIFAR100 --teacher library-student --queries 1 \\
        --epochs_network 20 --epochs_head 30 --batch_size 128 --amp bf16 \\
        --json results/baselines_cifar100_study.json --markdown results/baselines_cifar100_study.md
    python Run_Baselines.py --dataset tinyimagenet --data_root ../shared/data \\
        --db ../shared/reference/poe-authors/TinyImageNet --teacher library-student \\
        --queriedTask canine feline --epochs_network 1 --epochs_head 1     # a smoke test
    torchrun --standalone --nproc_per_node 2 Run_Baselines.py --dataset demo --teacher library-student \\
        --queries 2 --epochs_network 2 --epochs_head 3 --threads 1
        # the queries divided among 2 processes: each writes its share, the first merges the report
"""
import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from poe import distributed
from poe.baselines import METHODS, report, study
from poe.baselines.query import Query, study_queries
from poe.baselines.training import Setup, obtain
from poe.cli import add_common_args, check_writable, profile_from_args, run, setup_torch, write_report_files
from poe.errors import PoEError
from poe.feature_cache import CACHE_DTYPES
from poe.files import atomic_write_text
from poe.paths import PROJECT_ROOT, default_pool_dir, default_pretrained_dir
from poe.pool import Pool
from poe.split import ValidationSplit, check_same, recorded_split
from poe.service import export
from poe.table6 import SIZES
from poe.train import pick_amp, pick_device

# The authors' schedules (shared/spec/baselines.md); --epochs_* squeeze them, milestones in proportion.
NETWORK_EPOCHS, HEAD_EPOCHS = 200, 100


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--queriedTask", "--queried-task", dest="queried", nargs="+", default=None, metavar="TASK",
                   help="one query; default: the study over --tasks and --sizes")
    p.add_argument("--tasks", nargs="+", default=None, help="the study's tasks (default: the paper's six)")
    p.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="the study's n(Q) (default 2 3 4 5)")
    p.add_argument("--queries", type=int, default=None, metavar="N",
                   help="a seeded sample of N queries per n(Q) (default: every combination; six tasks make "
                        "15/20/15/6 = 56 queries for n(Q) = 2..5)")
    p.add_argument("--query_seed", type=int, default=0, help="seed of the --queries sample")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                   help="baselines to race (default: all seven)")
    p.add_argument("--teacher", default="oracle", choices=["oracle", "library-student"],
                   help="CKD's teacher: the Oracle (--pretrained_db/oracle.pt) or the library student (the pool's "
                        "library + its classifier; the only choice with the authors' pool, which has no Oracle)")
    p.add_argument("--pretrained_db", "--pretrained-db", default=None,
                   help="folder holding oracle.pt; default DB_pretrained/<dataset>")
    p.add_argument("--epochs_network", type=int, default=NETWORK_EPOCHS,
                   help=f"epochs of Scratch, SD_*, UHC_* and the single-task teachers (default the paper's "
                        f"{NETWORK_EPOCHS}, lr 0.1 ×0.1 at 80/160; milestones scale in proportion)")
    p.add_argument("--epochs_head", type=int, default=HEAD_EPOCHS,
                   help=f"epochs of Transfer and CKD (default the paper's {HEAD_EPOCHS}, ×0.1 at 40/80)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=None,
                   help="default: the profile's (paper 512; the authors' code used 256)")
    p.add_argument("--head_source", "--head-source", default="cache", choices=["cache", "live"],
                   help="Transfer/CKD: cache (default) trains from the library's features (and the teacher's "
                        "logits) of --cache_views augmented views, computed once per query for both; live "
                        "recomputes them every batch")
    p.add_argument("--cache_views", "--cache-views", type=int, default=5, metavar="V",
                   help="augmented views in the head methods' feature cache (default 5; capped at --epochs_head)")
    p.add_argument("--cache_dtype", "--cache-dtype", default="float16", choices=list(CACHE_DTYPES))
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where trained baselines (and their feature caches) are stored; default DB_baselines/<dataset>")
    p.add_argument("--val_per_class", "--val-per-class", type=int, default=None, metavar="N",
                   help="the validation split the curves and crossings are read on: N training images of every "
                        "class held out of every baseline's training (poe/split.py). Default: the pool's own split "
                        "where its experts record one (then it must match), else a tenth of the smallest class "
                        "(CIFAR-100: 50). 0: no split, curves read on the test set")
    p.add_argument("--val_seed", "--val-seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--poe_target", "--poe-target", default="auto", choices=["auto", "val", "test"],
                   help="PoE's accuracy the validation curves must reach: its accuracy on the validation split "
                        "(val), or on the test set (test). auto (default): val when the pool's experts were trained "
                        "without that split, test when they were trained on it (their validation accuracy is then "
                        "read on images they learnt)")
    p.add_argument("--init", default="torch", choices=["torch", "authors"],
                   help="the baselines' new weights: PyTorch's default for each layer (default), or the authors' "
                        "WRN init (conv ~ N(0, sqrt(2/(k·k·out))), about 2.4x larger): with BatchNorm after every "
                        "conv, larger weights train more slowly, which a short budget does not make up "
                        "(results/baselines_cifar100.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs a network)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every number (curves included) as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="PNG plot; default: beside --json, with .png")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="write the report (command, budget, wall time, tables) as Markdown")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="with --queriedTask and one --methods: write that trained model as a torch.export "
                        "program (.pt2), as Run_Service.py --export does for PoE's")
    return p


def make_budgets(args) -> dict:
    from poe.profiles import Budget
    for flag in ("epochs_network", "epochs_head"):
        if getattr(args, flag) < 1:
            raise PoEError(f"--{flag} must be at least 1")
    return {"network": Budget(NETWORK_EPOCHS, 0.1, (80, 160)).with_epochs(args.epochs_network),
            "head": Budget(HEAD_EPOCHS, 0.1, (40, 80)).with_epochs(args.epochs_head)}


def shown_path(path: Path) -> str:
    """A path as the report shows it: relative to the project when inside it (no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def speedups(setup: Setup, methods: list[str]) -> list[str]:
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


def validation(args, pool: Pool, tasks: list[str], train) -> tuple[ValidationSplit, dict]:
    """The split the curves are read on, and what the report says of it. A pool whose experts record
    a split gives it (PoE never trained on those images); otherwise one is drawn here, seeded and
    stratified by poe.split, and the pool's experts were trained on its images."""
    recorded = recorded_split(pool.manifest().get("experts", {}), tasks, str(pool.root))
    if recorded:
        split = ValidationSplit.from_meta(recorded)
        if args.val_per_class is not None:
            check_same(recorded, ValidationSplit(args.val_per_class, args.val_seed).describe(train),
                       f"the pool {pool.root}")
        check_same(recorded, split.describe(train), f"the pool {pool.root}")  # the same images, not only N
        return split, {"source": "the pool's own split, recorded with its experts", "poe_trained_on_val": False}
    per_class = args.val_per_class
    if per_class is None:
        per_class = max(1, int(torch.bincount(train.labels).min()) // 10)
    split = ValidationSplit(per_class, args.val_seed)
    if not split:
        return split, {"source": "none (--val_per_class 0): curves read on the test set", "poe_trained_on_val": None}
    return split, {"source": "drawn here (the pool records none); its experts and library were trained on these images",
                   "poe_trained_on_val": True}


def share_path(setup: Setup, command_key: str, rank: int, size: int) -> Path:
    return setup.out / "shares" / f"{command_key}-rank{rank}of{size}.json"


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    command = shlex.join(["python", "Run_Baselines.py", *(sys.argv[1:] if argv is None else argv)])
    setup_torch(args)
    tic = time.perf_counter()
    budgets = make_budgets(args)
    profile = profile_from_args(args)
    from poe.baselines.model import wrn_architecture
    wrn_architecture(profile)  # the authors' baselines are WRNs: refuse ImageNet before any work
    if args.queried:
        queries = [tuple(profile.resolve_tasks(args.queried, "--queriedTask"))]
        note = f"one query, {' + '.join(queries[0])}"
    else:
        tasks = profile.resolve_tasks(args.tasks or profile.default_tasks, "--tasks")
        sizes = sorted(set(args.sizes))
        if not sizes or min(sizes) < 1 or max(sizes) > len(tasks):
            raise PoEError(f"--sizes must lie in 1..{len(tasks)} (the number of --tasks)")
        if args.queries is not None and args.queries < 1:
            raise PoEError("--queries must be at least 1")
        queries = study_queries(tasks, sizes, args.queries, args.query_seed)
        n_study = study.study_query_count(len(tasks), sizes)
        note = (f"{len(queries)} of the {n_study} combinations of {len(tasks)} tasks ({', '.join(tasks)}) for n(Q) = "
                f"{', '.join(map(str, sizes))}" + (f", a seeded sample of {args.queries} per n(Q) "
                                                   f"(--query_seed {args.query_seed})" if args.queries else ""))
    pool = Pool(args.db or default_pool_dir(profile), profile)
    all_tasks = sorted({t for q in queries for t in q})
    missing = [t for t in all_tasks if not pool.has_expert(t)]
    if missing:
        raise PoEError(f"the pool {pool.root} has no expert for {', '.join(missing)} (PoE's row needs them); "
                       f"build with python Run_preprocessing.py --dataset {profile.name}, or pass --db")
    batch_size = args.batch_size or profile.batch_size
    if batch_size < 1:
        raise PoEError("--batch_size must be positive")
    if args.cache_views < 1:
        raise PoEError("--cache_views must be at least 1")
    if args.val_per_class is not None and args.val_per_class < 0:
        raise PoEError("--val_per_class must be 0 or more")
    if args.export and not (args.queried and len(args.methods) == 1):
        raise PoEError("--export writes one model: give --queriedTask and exactly one --methods")
    check_writable(args.export, "--export")
    pretrained_dir = Path(args.pretrained_db or default_pretrained_dir(profile))
    if "CKD" in args.methods and args.teacher == "oracle" and not (pretrained_dir / "oracle.pt").is_file():
        raise PoEError(f"CKD's teacher 'oracle' needs {pretrained_dir / 'oracle.pt'}: pass --pretrained_db, "
                       "or --teacher library-student (the authors' published pool has no Oracle)")
    device = distributed.setup(pick_device(args.device))  # joins torchrun's processes, if started by it
    world = distributed.world()
    amp = pick_amp(args.amp or profile.amp_default, device)
    data = profile.load(args.data_root, args.download)
    split, split_info = validation(args, pool, all_tasks, data[0])
    target = args.poe_target if args.poe_target != "auto" else \
        ("test" if split_info["poe_trained_on_val"] else "val")
    if not split:
        target = "test"
    elif target == "val" and split_info["poe_trained_on_val"]:
        split_info["source"] += " (--poe_target val: PoE's validation accuracy is read on images it learnt)"
    setup = Setup(profile=profile, pool=pool, data=data,
                  out=Path(args.out) if args.out else PROJECT_ROOT / "DB_baselines" / profile.name,
                  budgets=budgets, batch_size=batch_size, device=device, amp=amp, seed=args.seed,
                  teacher=args.teacher, pretrained_dir=pretrained_dir, head_source=args.head_source,
                  cache_views=args.cache_views, cache_dtype=args.cache_dtype, split=split, poe_target=target,
                  init=args.init)
    mine = distributed.mine(queries, world)
    print(f"Baselines vs PoE, {profile.title}: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}"
          + (f" shared among {world.size} processes" if world.size > 1 else "")
          + f", methods {', '.join(args.methods)}; network {args.epochs_network} epochs, head {args.epochs_head} "
          f"epochs, batch {batch_size}, device {device}, amp {amp}; pool {pool.root}; models in {setup.out}; "
          f"validation split: {split.per_class} per class, seed {split.seed} ({split_info['source']})")

    # The single-task teachers of *_Scratch are shared by every query holding their task: trained
    # first, divided among the processes, so that no two train the same one.
    scratch_tasks = all_tasks if {"SD_Scratch", "UHC_Scratch"} & set(args.methods) else []
    for t in distributed.mine(scratch_tasks, world):
        obtain(setup, "Scratch", Query.of([t], profile.hierarchy))
    distributed.barrier()
    results, first = study.run(setup, mine, args.methods)
    share = {"rank": world.rank, "size": world.size, "results": results, "first_build": first,
             "wall_s": round(time.perf_counter() - tic, 1)}
    if world.size > 1:  # each process writes its share; the first merges them once all are written
        key = hashlib.sha256(command.encode()).hexdigest()[:10]
        atomic_write_text(share_path(setup, key, world.rank, world.size), json.dumps(share, indent=1) + "\n")
        distributed.barrier()
        if not world.is_main:
            distributed.cleanup()
            return
        shares = [json.loads(share_path(setup, key, r, world.size).read_text()) for r in range(world.size)]
    else:
        shares = [share]
    results = merge(queries, shares)
    teachers = {}
    for t in scratch_tasks:
        model, meta = obtain(setup, "Scratch", Query.of([t], profile.hierarchy))
        teachers[t] = {"accuracy_pct": setup.accuracy(model, Query.of([t], profile.hierarchy)),
                       "time_to_model_s": meta["time_to_model_s"], "training_wall_s": meta.get("wall_s_this_process")}
    settings = {"device": str(device), "amp": amp, "batch_size": batch_size, "seed": args.seed, "init": args.init,
                "teacher": args.teacher, "pool": str(pool.root), "out": shown_path(setup.out), "queries_note": note,
                "queries": len(queries), "processes": world.size,
                "head_source": args.head_source, "cache_views": min(args.cache_views, args.epochs_head),
                "network": setup.budget_meta("network"), "head": setup.budget_meta("head"),
                "validation": {"per_class": split.per_class, "seed": split.seed,
                               "images": split.per_class * len({c for q in results for c in q["classes"]}),
                               **split_info,
                               "curves_read_on": setup.read_on, "poe_target": target},
                "machine": f"{platform.machine()} with {os.cpu_count()} CPU core(s), torch threads "
                           f"{torch.get_num_threads()}" if device.type == "cpu" else str(device)}
    summary = study.summary(results, args.methods)
    costs = study.poe_costs(pool, pretrained_dir)
    doc = {"dataset": profile.name, "title": profile.title, "command": command, "settings": settings,
           "methods": args.methods, "speedups": speedups(setup, args.methods),
           "poe_costs": costs, "first_builds": [s["first_build"] for s in shares if s["first_build"]],
           "queries": results, "summary": summary, "break_even": study.break_even(costs, summary, args.methods),
           "teachers": teachers, "shares_wall_s": [s["wall_s"] for s in shares],
           "wall_s": round(time.perf_counter() - tic, 1), "training_wall_s": study.training_wall_s(results, teachers)}
    text = report.markdown(doc)
    print(text)
    write_report_files(args, doc, text, report.plot)
    if args.export:
        model, _ = obtain(setup, args.methods[0], Query.of(queries[0], profile.hierarchy))
        export(model, profile, profile.input_shape, args.export)
        print(f"exported      : {args.export} ({args.methods[0]}; torch.export.load(path).module())")
    distributed.cleanup()


def merge(queries: list[tuple], shares: list[dict]) -> list[dict]:
    """The processes' results in the study's query order (process r took queries r, r + size, ...)."""
    by_tasks = {tuple(r["tasks"]): r for s in shares for r in s["results"]}
    if sorted(by_tasks) != sorted(tuple(q) for q in queries):
        raise PoEError("the processes' shares do not hold every query once: rerun the same command")
    return [by_tasks[tuple(q)] for q in queries]

if __name__ == "__main__":
    raise SystemExit(run(main))
