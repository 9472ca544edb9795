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
import shlex
import sys
import time
from pathlib import Path

from poe import distributed
from poe.baselines import METHODS, report, schedules, study
from poe.baselines.model import wrn_architecture
from poe.baselines.query import Query
from poe.baselines.training import Setup, obtain
from poe.cli import (ArgumentParser, add_cache_dtype_arg, add_common_args, add_output_args, add_pretrained_db_arg,
                     add_query_arg, add_run_args, add_validation_args, check_outputs, positive_int,
                     profile_from_args, run, setup_torch, write_report_files)
from poe.errors import PoEError
from poe.paths import default_pool_dir, default_pretrained_dir
from poe.pool import Pool
from poe.service import export
from poe.table6 import SIZES
from poe.train import pick_amp, pick_device


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser.from_doc(__doc__)
    add_common_args(p)
    add_query_arg(p, nargs="+", help="one query; default: the study over --tasks and --sizes")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="the study's tasks (default: the paper's six)")
    p.add_argument("--sizes", nargs="+", type=positive_int, default=list(SIZES), metavar="N",
                   help="the study's n(Q) (default 2 3 4 5)")
    p.add_argument("--queries", type=positive_int, default=None, metavar="N",
                   help="a seeded sample of N queries per n(Q) (default: every combination; six tasks make "
                        "15/20/15/6 = 56 queries for n(Q) = 2..5)")
    p.add_argument("--query_seed", type=int, default=0, metavar="S", help="seed of the --queries sample (default 0)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"baselines to race: {', '.join(METHODS)} (default: all seven)")
    p.add_argument("--teacher", default="oracle", choices=["oracle", "library-student"],
                   help="CKD's teacher: the Oracle (--pretrained_db/oracle.pt) or the library student (the pool's "
                        "library + its classifier; the only choice with the authors' pool, which has no Oracle)")
    add_pretrained_db_arg(p)
    network, head = schedules.PAPER["network"], schedules.PAPER["head"]
    p.add_argument("--epochs_network", type=positive_int, default=network.epochs, metavar="N",
                   help=f"epochs of Scratch, SD_*, UHC_* and the single-task teachers (default the paper's "
                        f"{network.epochs}, lr {network.lr} ×{network.gamma} at {'/'.join(map(str, network.milestones))}; "
                        "milestones scale in proportion)")
    p.add_argument("--epochs_head", type=positive_int, default=head.epochs, metavar="N",
                   help=f"epochs of Transfer and CKD (default the paper's {head.epochs}, ×{head.gamma} at "
                        f"{'/'.join(map(str, head.milestones))})")
    add_run_args(p, batch_size="the profile's (paper 512; the authors' code used 256)")
    p.add_argument("--head_source", default="cache", choices=["cache", "live"],
                   help="Transfer/CKD: cache (default) trains from the library's features (and the teacher's "
                        "logits) of --cache_views augmented views, computed once per query for both; live "
                        "recomputes them every batch")
    p.add_argument("--cache_views", type=positive_int, default=5, metavar="V",
                   help="augmented views in the head methods' feature cache (default 5; capped at --epochs_head)")
    add_cache_dtype_arg(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where trained baselines (and their feature caches) are stored; default DB_baselines/<dataset>")
    add_validation_args(p, scoring=False, per_class=(
        "the validation split the curves and crossings are read on: N training images of every class held out of "
        "every baseline's training (poe/split.py). Default: the pool's own split where its experts record one "
        "(then it must match), else a tenth of the smallest class (CIFAR-100: 50). 0: no split, curves read on "
        "the test set"))
    p.add_argument("--poe_target", default="auto", choices=["auto", "val", "test"],
                   help="PoE's accuracy the validation curves must reach: its accuracy on the validation split "
                        "(val), or on the test set (test). auto (default): val when the pool's experts were trained "
                        "without that split, test when they were trained on it (their validation accuracy is then "
                        "read on images they learnt)")
    p.add_argument("--init", default="torch", choices=["torch", "authors"],
                   help="the baselines' new weights: PyTorch's default for each layer (default), or the authors' "
                        "WRN init (conv ~ N(0, sqrt(2/(k·k·out))), about 2.4x larger): with BatchNorm after every "
                        "conv, larger weights train more slowly, which a short budget does not make up "
                        "(results/baselines_cifar100.md)")
    add_output_args(p, json="write every number (curves included) as JSON", plot=True,
                    markdown="write the report (command, budget, wall time, tables) as Markdown")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="with --queriedTask and one --methods: write that trained model as a torch.export "
                        "program (.pt2), as Run_Service.py --export does for PoE's")
    return p


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    command = shlex.join(["python", "Run_Baselines.py", *(sys.argv[1:] if argv is None else argv)])
    setup_torch(args)
    tic = time.perf_counter()
    budgets = schedules.budgets(args.epochs_network, args.epochs_head)
    profile = profile_from_args(args)
    wrn_architecture(profile)  # the authors' baselines are WRNs: refuse ImageNet before any work
    queries, note = study.select_queries(profile, args.queried, args.tasks, args.sizes, args.queries, args.query_seed)
    pool = Pool(args.db or default_pool_dir(profile), profile)
    study.require_experts(pool, queries)
    if args.export and not (args.queried and len(args.methods) == 1):
        raise PoEError("--export writes one model: give --queriedTask and exactly one --methods")
    check_outputs(args, plot=True)
    pretrained_dir = Path(args.pretrained_db or default_pretrained_dir(profile))
    if "CKD" in args.methods and args.teacher == "oracle" and not (pretrained_dir / "oracle.pt").is_file():
        raise PoEError(f"CKD's teacher 'oracle' needs {pretrained_dir / 'oracle.pt'}: pass --pretrained_db, "
                       "or --teacher library-student (the authors' published pool has no Oracle)")
    device = distributed.setup(pick_device(args.device))  # joins torchrun's processes, if started by it
    amp = pick_amp(args.amp or profile.amp_default, device)
    data = profile.load(args.data_root, args.download)
    split, split_info = study.validation_split(pool, sorted({t for q in queries for t in q}), data[0],
                                               args.val_per_class, args.val_seed)
    setup = Setup(profile=profile, pool=pool, data=data,
                  out=Path(args.out) if args.out else study.default_out_dir(profile), budgets=budgets,
                  batch_size=args.batch_size or profile.batch_size, device=device, amp=amp, seed=args.seed,
                  teacher=args.teacher, pretrained_dir=pretrained_dir, head_source=args.head_source,
                  cache_views=args.cache_views, cache_dtype=args.cache_dtype, split=split,
                  poe_target=study.curve_target(args.poe_target, split, split_info), init=args.init)

    doc = study.compare(setup, queries, args.methods, command=command, note=note, split_info=split_info, started=tic)
    if doc is None:
        return  # another process's share: the first one writes the report
    text = report.markdown(doc)
    print(text)
    write_report_files(args, doc, text, report.plot)
    if args.export:
        model, _ = obtain(setup, args.methods[0], Query.of(queries[0], profile.hierarchy))
        export(model, profile, profile.input_shape, args.export)
        print(f"exported      : {args.export} ({args.methods[0]}; torch.export.load(path).module())")


if __name__ == "__main__":
    raise SystemExit(run(main))
