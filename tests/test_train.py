import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from poe.errors import PoEError
from poe.profiles import Budget
from poe.train import fit


class Batches:
    """A tiny deterministic loader: epoch e always gives the same batches."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for _ in range(3):
            x = torch.randn(8, 4, generator=g)
            yield x, (x.sum(1) > 0).long()


def _train(tmp_path, epochs, budget, name="r.pt"):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    hist = fit(model, lambda x, y: F.cross_entropy(model(x), y), Batches(), budget.with_epochs(budget.epochs),
               resume_path=tmp_path / name, signature={"s": 1}, device=torch.device("cpu"), desc="t")
    return model, hist


def test_scheduler_steps_after_each_epoch(tmp_path):
    _, hist = _train(tmp_path, 4, Budget(4, 0.1, (2, 3)))
    assert [round(h["lr"], 6) for h in hist] == [0.1, 0.01, 0.001, 0.001]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    budget = Budget(4, 0.1, (2,))
    full, _ = _train(tmp_path, 4, budget, "full.pt")
    # An interrupted run: 2 epochs, its resume file kept; then the 4-epoch command again.
    part_budget = Budget(2, 0.1, (2,))
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    fit(model, lambda x, y: F.cross_entropy(model(x), y), Batches(), part_budget,
        resume_path=tmp_path / "resume.pt", signature={"s": 1}, device=torch.device("cpu"))
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert state["epoch"] == 1
    resumed, hist = _train(tmp_path, 4, budget, "resume.pt")
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert torch.allclose(resumed.weight, full.weight, atol=1e-6)


def test_resume_with_other_settings_is_refused(tmp_path):
    _train(tmp_path, 1, Budget(1, 0.1, ()), "x.pt")
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    with pytest.raises(PoEError, match="other settings"):
        fit(model, lambda x, y: F.cross_entropy(model(x), y), Batches(), Budget(1, 0.1, ()),
            resume_path=tmp_path / "x.pt", signature={"s": 2}, device=torch.device("cpu"))


def test_budget_scaling_keeps_milestones_proportional():
    assert Budget(200, 0.1, (80, 160)).with_epochs(10).milestones == (4, 8)
    assert Budget(100, 0.1, (40, 80)).with_epochs(5).milestones == (2, 4)
    assert Budget(100, 0.1, (40, 80)).with_epochs(1).milestones == ()
