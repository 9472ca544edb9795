"""What the benchmark scripts share: the project on sys.path, the inputs (real CIFAR-100 test
images and the authors' pool when ../shared is present, random otherwise), timing (medians of
interleaved repeats: A B A B ..., so load from other processes hits both sides alike) and tables.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the CLIs do (poe.cli.setup_torch)

import torch  # noqa: E402

from CIFAR100 import PROFILE  # noqa: E402
from ImageNet import PROFILE as IMAGENET  # noqa: E402
from poe.pool import Pool  # noqa: E402

AUTHORS_POOL = SHARED / "reference" / "poe-authors" / "CIFAR100"
DATA_ROOT = SHARED / "data"
TASKS = PROFILE.default_tasks  # the paper's six; n(Q)=k uses the first k
IMAGENET_TASKS = list(IMAGENET.hierarchy)[:4]  # the paper's four bird tasks


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    p.add_argument("--quick", action="store_true", help="tiny inputs and few repeats: checks the script runs")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")
    return p


def setup(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} ×{len(names)}" if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load}; "
            f"{datetime.datetime.now().isoformat(timespec='minutes')}")


def temporary_folder(prefix: str) -> Path:
    """A fresh folder, removed when the script exits."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@torch.no_grad()
def calibrate(net, x):
    """BatchNorm running statistics from one batch (as a trained network has): without them a
    random-init MobileNetV2 gives features of ~1e-8 and the logit comparison would mean nothing."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: this batch's statistics
    out = net.train()(x)
    net.eval()
    return out


def random_pool(root: Path, profile=PROFILE, tasks=TASKS, *, student_head: bool = True,
                calibrate_size: int | None = None, seed: int = 0) -> Pool:
    """A pool of random-init networks in our format (when the authors' checkpoints are absent).
    calibrate_size: BatchNorm statistics calibrated on random images of that size (MobileNetV2)."""
    torch.manual_seed(seed)
    pool = Pool(root, profile)
    arch = profile.architecture
    library = arch.library()
    features = calibrate(library, torch.randn(16, 3, calibrate_size, calibrate_size)) if calibrate_size else None
    pool.save_library(library)
    if student_head:
        pool.save_student_head(arch.student_head())
    for t in tasks:
        expert = arch.expert(len(profile.hierarchy[t]))
        if features is not None:
            calibrate(expert, features)
        pool.save_expert(t, expert)
    return pool


def imagenet_pool(size: int = 224) -> Pool:
    """An ImageNet pool (MobileNetV2 library, the four bird experts) of random-init networks with
    BatchNorm statistics calibrated on random size×size images, in a folder removed at exit."""
    return random_pool(temporary_folder("poe-bench-imagenet-pool-"), IMAGENET, IMAGENET_TASKS, student_head=False,
                       calibrate_size=size)


def cifar_pool(quick: bool = False) -> tuple[Pool, str]:
    if AUTHORS_POOL.is_dir() and not quick:
        return Pool(AUTHORS_POOL, PROFILE), "the authors' published CIFAR-100 library and experts"
    return random_pool(temporary_folder("poe-bench-pool-")), "random-init networks (../shared absent or --quick)"


def test_images(class_ids, n: int, quick: bool = False) -> tuple[torch.Tensor, str]:
    """n normalised test images of the given classes (real CIFAR-100 when present, else random)."""
    if (DATA_ROOT / "cifar-100-python" / "test").is_file() and not quick:
        test = PROFILE.load(DATA_ROOT)[1].subset(class_ids)
        x, _ = next(iter(PROFILE.eval_loader(test, batch_size=len(test))))
        x = x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n]
        return x.contiguous(), "CIFAR-100 test images of the queried classes"
    return torch.randn(n, *PROFILE.input_shape, generator=torch.Generator().manual_seed(0)), "random images"


def interleaved(fns: dict, repeats: int, warmup: int = 2, block: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved A B A B ...

    block > 1 interleaves runs of calls instead, A×block B×block ..., each run after one untimed
    call: every function is timed in its steady state (its weights and activations in the CPU
    caches, as in a service that keeps running one model) while slow drifts in the machine's
    speed still hit all sides alike. Single calls interleaved measure each model just after the
    other one has evicted its data from the caches."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if block > 1:
                fn()
            for _ in range(block):
                tic = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(ts) for name, ts in times.items()}


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def finish(args, title: str, table: str, notes: list[str], figures: dict) -> None:
    print(f"\n## {title}\n")
    print(table)
    for note in notes:
        print(f"\n{note}")
    print(f"\nmachine: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "machine": machine(), **figures}, indent=1) + "\n")
