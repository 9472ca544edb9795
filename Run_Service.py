#!/usr/bin/env python
"""Answer a query in realtime: build the task model for the queried primitive tasks from the
library and their experts (no training), evaluate it, and report accuracy, cross-expert errors,
parameters, FLOPs and the time to build it.

    python Run_Service.py --dataset demo --queriedTask disks rings stripes
    python Run_Service.py --dataset cifar100 --data_root DIR --queriedTask people vehicles_1 vehicles_2
    python Run_Service.py --dataset cifar100 --db ../shared/reference/poe-authors/CIFAR100 \\
        --data_root ../shared/data --queriedTask people vehicles_1 --json out.json --export model.pt2
    python Run_Service.py --dataset cifar100 --list          # the primitive tasks, and which have experts
    python Run_Service.py --dataset tinyimagenet --db ../shared/reference/poe-authors/TinyImageNet \\
        --data_root DIR --queriedTask canine feline bird
    python Run_Service.py --dataset imagenet --data_root DIR --queriedTask bird_passerine bird_Etc1
    python Run_Service.py --dataset demo --serve --port 8000   # a query server: http://127.0.0.1:8000/
    python Run_Service.py --dataset folder --db POOL --queriedTask TASK TASK --no_eval --export model.pt2
                                         # a pool built from your own images: no image folder needed
"""
import argparse
import json
import os
import sys
from pathlib import Path

from poe.cli import (ArgumentParser, add_common_args, add_output_args, add_query_arg, check_outputs, profile_from_args,
                     run, setup_torch)
from poe.errors import PoEError
from poe.files import atomic_write_text
from poe.paths import default_pool_dir
from poe.pool import Pool
from poe.server import QueryService, serve
from poe.service import export, query_report
from poe.train import pick_amp, pick_device


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser.from_doc(__doc__)
    add_common_args(p)
    add_query_arg(p, nargs="*", help="primitive tasks of the query (see --list)")
    p.add_argument("--list", action="store_true", help="print one line per primitive task and exit")
    add_output_args(p, json="also write the report as JSON")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="write the task model as a torch.export program (.pt2) runnable with plain PyTorch")
    p.add_argument("--no_fuse", dest="fuse", action="store_false",
                   help="answer with the plain sequential task model (library, then each expert) instead of the "
                        "fused one (BatchNorm folded; WRN experts as grouped convolutions, MobileNetV2 experts as one "
                        "matrix product; same logits, faster)")
    p.add_argument("--no_eval", dest="evaluate", action="store_false",
                   help="build (and export) the model without evaluating it (no data needed); with --serve: "
                        "a server that never evaluates (and does not load the test data)")
    p.add_argument("--serve", action="store_true",
                   help="stay up and answer queries over HTTP with the pool kept warm: a web page at /, a JSON "
                        "API (GET /tasks, POST /query, GET /model.pt2?tasks=..., GET /health; see the README)")
    p.add_argument("--host", default="127.0.0.1",
                   help="with --serve: the address to listen on (default 127.0.0.1, this machine only; the "
                        "server has no authentication, so name another address only on a trusted network)")
    p.add_argument("--port", type=int, default=8000, help="with --serve: the TCP port (default 8000; 0: any free one)")
    return p


def list_tasks(profile, pool: Pool) -> None:
    width = max(len(t) for t in profile.hierarchy)
    for task, classes in profile.hierarchy.items():
        status = "expert" if pool.has_expert(task) else "no-expert"
        names = ", ".join(profile.class_names[c] for c in classes)
        print(f"{task:<{width}}  {status:<9}  {names}")


def start_server(args, pool: Pool) -> None:
    used = [flag for flag, value in (("--queriedTask", args.queried), ("--json", args.json),
                                     ("--export", args.export)) if value is not None]
    if used:
        raise PoEError(f"--serve takes its queries over HTTP; drop {', '.join(used)}")
    if not pool.has_library():
        raise PoEError(f"no library in {pool.root} (expected {pool.library_path}); build the pool with: "
                       f"python Run_preprocessing.py --dataset {pool.profile.name}, or name one with --db")
    profile, test, reason = pool.profile, None, "started with --no-eval"
    if args.evaluate:
        try:
            test = profile.load(args.data_root, False)[1]
        except PoEError as exc:  # a server without the data still builds models
            reason = str(exc)
    device = pick_device(args.device)
    service = QueryService(pool, test=test, no_test_reason=reason, device=device,
                           amp=pick_amp(args.amp or profile.amp_default, device), fuse=args.fuse)
    serve(service, args.host, args.port)
    # Stopped cleanly. Threads of idle keep-alive connections (daemons) may still sit in torch's
    # thread pools, and interpreter teardown under them can abort ("terminate called ..."): leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    setup_torch(args)
    profile = profile_from_args(args)
    pool = Pool(args.db or default_pool_dir(profile), profile)
    if args.list:
        list_tasks(profile, pool)
        return
    if args.serve:
        return start_server(args, pool)
    if args.queried is None:
        raise PoEError("name the query with --queriedTask TASK [TASK ...] (see --list)")
    tasks = profile.resolve_tasks(args.queried, "--queriedTask")
    check_outputs(args)
    device = pick_device(args.device)
    amp = pick_amp(args.amp or profile.amp_default, device)
    test = profile.load(args.data_root, False)[1] if args.evaluate else None  # fail early on missing data

    model, report = query_report(pool, tasks, fuse=args.fuse, test=test, device=device, amp=amp)

    print(f"PoE service: {profile.title}, pool {pool.root} ({pool.layout} layout)")
    print(f"  queried tasks : {', '.join(tasks)} ({report['num_classes']} classes)")
    if test is not None:
        print(f"  accuracy      : {report['accuracy_pct']:.2f} % on {report['images']} test images")
        print(f"  cross-expert  : {report['cross_expert_pct']:.2f} % of {report['errors']} errors")
    print(f"  parameters    : {report['params']:,}")
    print(f"  FLOPs         : {report['flops'] / 1e6:,.2f} M per image")
    print(f"  build time    : {report['build_ms']:.2f} ms (library and experts read from the DB, consolidated"
          f"{', fused' if report['form'] == 'fused' else ''})")

    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1) + "\n")
        print(f"  report        : {args.json}")
    if args.export:
        export(model, profile, profile.input_shape, args.export)
        print(f"  exported      : {args.export} (torch.export program; torch.export.load(path).module())")


if __name__ == "__main__":
    raise SystemExit(run(main))
