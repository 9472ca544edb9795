"""What the command-line tools share: common flags and turning errors into one line + exit code."""
from __future__ import annotations

import argparse
import sys

import torch

from .errors import PoEError
from .profiles import REGISTRY


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar100", choices=sorted(REGISTRY),
                        help="dataset profile (default: cifar100; 'demo' is a small synthetic set generated "
                             "offline in seconds)")
    parser.add_argument("--data_root", "--data-root", default="data",
                        help="folder holding the dataset (cifar100: DIR/cifar-100-python/); default ./data")
    parser.add_argument("--db", default=None,
                        help="pool folder (library + experts); default DB_PoE/<dataset>. A folder in the "
                             "authors' published layout (Library/, Experts/, student_for_library/) is read too")
    parser.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--amp", default=None, choices=["auto", "none", "bf16"],
                        help="bf16 autocast: 'auto' uses it where the hardware is fast at it; default: the "
                             "profile's (none for the paper's datasets, auto for demo)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")


def setup_torch(args) -> None:
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
