"""Run_Baselines.py on the demo with a sixth of its images (helpers.shrunk_demo_data's draw), in a
process of its own: one process, or each of torchrun's (test_baselines_study's sharding test).

    python tests/baselines_worker.py ARGS...                                   # one process
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/baselines_worker.py ARGS...
"""
import sys

# python runs this file as a script, so its folder (tests/) is on sys.path; helpers puts the project's there too
from helpers import shrunk_demo_data

import poe.train  # noqa: E402  (after helpers: the project's packages)
from Demo import PROFILE as DEMO  # noqa: E402


def shrink() -> None:
    """The same draw as conftest's small_demo: 480 training and 160 test images, no per-epoch plots."""
    train, test = shrunk_demo_data()
    DEMO.load = lambda data_root=None, download=False: (train, test)
    poe.train.write_history = lambda *args, **kwargs: None  # no per-epoch plots


if __name__ == "__main__":
    shrink()
    import Run_Baselines
    from poe.cli import run

    sys.exit(run(Run_Baselines.main, sys.argv[1:]))
