import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


def shared_path(*parts) -> Path:
    """A path under ../shared, or skip the test saying why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder beside the checkout), which is absent")
    return path


@pytest.fixture(scope="session")
def cifar_root():
    shared_path("data", "cifar-100-python", "test")
    return SHARED / "data"


@pytest.fixture(scope="session")
def authors_cifar_pool():
    return shared_path("reference", "poe-authors", "CIFAR100")


def shrink_demo(monkeypatch):
    """The demo with a sixth of its images (480 to train, 160 to test, a fixed random draw), so that
    studies training many models stay quick. Returns the demo profile."""
    from Demo import PROFILE as DEMO
    from poe.data import ArrayDataset

    generator = torch.Generator().manual_seed(0)
    train, test = (ArrayDataset(d.images[keep], d.labels[keep]) for d in DEMO.load()
                   for keep in [torch.randperm(len(d), generator=generator)[:len(d) // 6]])
    monkeypatch.setattr(DEMO, "load", lambda data_root=None, download=False: (train, test))
    return DEMO

