"""Run_Baselines.py on the demo with a sixth of its images (conftest.shrink_demo's draw), in a
process of its own: one process, or each of torchrun's (test_baselines_study's sharding test).

    python tests/baselines_worker.py ARGS...                                   # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/baselines_worker.py ARGS...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

import poe.train  # noqa: E402
from Demo import PROFILE as DEMO  # noqa: E402
from poe.data import ArrayDataset  # noqa: E402


def shrink() -> None:
    """The same draw as conftest.shrink_demo: 480 training and 160 test images."""
    generator = torch.Generator().manual_seed(0)
    train, test = (ArrayDataset(d.images[keep], d.labels[keep]) for d in DEMO.load()
                   for keep in [torch.randperm(len(d), generator=generator)[:len(d) // 6]])
    DEMO.load = lambda data_root=None, download=False: (train, test)
    poe.train.write_history = lambda *args, **kwargs: None  # no per-epoch plots


if __name__ == "__main__":
    shrink()
    import Run_Baselines
    from poe.cli import run

    sys.exit(run(Run_Baselines.main, sys.argv[1:]))
