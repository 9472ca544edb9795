"""What the command-line tools share: common flags and turning errors into one line + exit code."""
from __future__ import annotations

import argparse
import os
import sys

import torch

from .errors import PoEError
from .profiles import REGISTRY, get_profile


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar100", choices=sorted(REGISTRY),
                        help="dataset profile (default: cifar100; 'demo' is a small synthetic set generated "
                             "offline in seconds; tinyimagenet; imagenet)")
    parser.add_argument("--data_root", "--data-root", default="data",
                        help="folder holding the dataset (cifar100: DIR/cifar-100-python/; tinyimagenet: "
                             "DIR/tiny-imagenet-200/ as downloaded; imagenet: DIR/{train,val}/<wnid>/); default ./data")
    parser.add_argument("--db", default=None,
                        help="pool folder (library + experts); default DB_PoE/<dataset>. A folder in the "
                             "authors' published layout (Library/, Experts/, student_for_library/) is read too")
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", default=None, choices=["auto", "none", "bf16"],
                        help="bf16 autocast: 'auto' uses it where the hardware is fast at it; default: the "
                             "profile's (none for the paper's datasets, auto for demo)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--task_file", "--task-file", default=None, metavar="PATH",
                        help="your own primitive tasks, added to the dataset's and made the default tasks: JSON "
                             "{\"task\": [class, ...]} or lines 'task: class, class' (class = id, name or wnid)")


def profile_from_args(args):
    """The --dataset profile, with the --task_file tasks added when given."""
    profile = get_profile(args.dataset)
    return profile.with_task_file(args.task_file) if args.task_file else profile


def setup_torch(args) -> None:
    # Large CPU tensors on transparent huge pages: far fewer page faults for fresh activations
    # (measured 2-4x faster elementwise passes over new 100 MB tensors on this machine).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)


def run(main, argv=None) -> int:
    """Call main(argv); a PoEError becomes `error: ...` on stderr and exit status 2."""
    try:
        main(argv)
    except PoEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last finished epoch", file=sys.stderr)
        return 130
    return 0
