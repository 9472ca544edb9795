"""The tests' fixtures (pytest finds them here); what they are built from is in helpers.py."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages
torch.set_num_threads(2)

from helpers import SHARED, demo_e2e_argv, make_pool, shared_path, shrink_demo  # noqa: E402


@pytest.fixture(scope="session")
def cifar_root():
    shared_path("data", "cifar-100-python", "test")
    return SHARED / "data"


@pytest.fixture(scope="session")
def authors_cifar_pool():
    return shared_path("reference", "poe-authors", "CIFAR100")


@pytest.fixture
def small_demo(monkeypatch):
    """The demo shrunk (helpers.shrink_demo), with no per-epoch history files: one plot per epoch of
    the many short trainings of a study would cost more than the training."""
    import poe.train

    monkeypatch.setattr(poe.train, "write_history", lambda *args, **kwargs: None)
    return shrink_demo(monkeypatch)


@pytest.fixture
def demo_pool(tmp_path):
    """An untrained demo pool (library, library-student head, an expert per task): PoE's row and teachers."""
    from Demo import PROFILE as DEMO

    return make_pool(tmp_path / "pool", DEMO, experts=DEMO.hierarchy).root


@pytest.fixture(scope="session")
def demo_pool_alone(tmp_path_factory):
    """(root, argv): root/pool and root/pre built by Run_preprocessing.py in this process
    (helpers.demo_e2e_argv), once per session: tests/test_end_to_end.py checks it,
    tests/test_torchrun.py compares its torchrun-built twin with it."""
    import Run_preprocessing
    from poe.cli import run

    root = tmp_path_factory.mktemp("e2e")
    argv = demo_e2e_argv(root)
    assert run(Run_preprocessing.main, argv) == 0
    return root, argv
