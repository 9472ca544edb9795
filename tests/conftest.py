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


@pytest.fixture
def small_demo(monkeypatch):
    """The demo shrunk (shrink_demo), with no per-epoch history files: one plot per epoch of the
    many short trainings of a study would cost more than the training."""
    import poe.train

    monkeypatch.setattr(poe.train, "write_history", lambda *args, **kwargs: None)
    return shrink_demo(monkeypatch)


@pytest.fixture
def demo_pool(tmp_path):
    """An untrained demo pool (library, library-student head, an expert per task): PoE's row and teachers."""
    from Demo import PROFILE as DEMO
    from tiny_demo import make_pool

    return make_pool(tmp_path / "pool", DEMO, experts=DEMO.hierarchy).root


def baselines_cli(argv, capsys):
    """Run_Baselines.py in this process: (exit status, stdout, stderr)."""
    import Run_Baselines
    from poe.cli import run

    try:
        code = run(Run_Baselines.main, argv)
    except SystemExit as exc:  # a bad flag: argparse's one error line and exit status
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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



# The demo pool that tests/test_end_to_end.py checks (1 epoch per stage, fp32), built once in this
# process; tests/test_torchrun.py builds the same under torchrun and compares the two.
DEMO_E2E_TASKS = ["rings", "disks", "stripes"]


def demo_e2e_argv(root: Path) -> list[str]:
    return ["--dataset", "demo", "--db", str(root / "pool"), "--pretrained_db", str(root / "pre"),
            "--epochs_oracle", "1", "--epochs_library", "1", "--epochs_expert", "1", "--tasks", *DEMO_E2E_TASKS,
            "--amp", "none"]  # fp32 everywhere: bf16 autocast (the demo's 'auto' on CPUs with bf16) moves the figures


@pytest.fixture(scope="session")
def demo_pool_alone(tmp_path_factory):
    """(root, argv): root/pool and root/pre built by Run_preprocessing.py in this process."""
    import Run_preprocessing
    from poe.cli import run

    root = tmp_path_factory.mktemp("e2e")
    argv = demo_e2e_argv(root)
    assert run(Run_preprocessing.main, argv) == 0
    return root, argv
