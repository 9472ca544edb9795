import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from poe.errors import PoEError
from poe.profiles import Budget
from poe.train import fit


class Batches:
    """A tiny deterministic loader: epoch e always gives the same 3 batches."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, e):
        self.epoch = e

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for _ in range(3):
            x = torch.randn(8, 4, generator=g)
            yield x, (x.sum(1) > 0).long()


def net():
    """Parameters and buffers (BatchNorm running statistics): resuming must restore both."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train(tmp_path, budget, name="r.pt", before_batch=None, signature=None):
    """Train a fresh net() with `fit`; before_batch(), if given, runs inside the loss of every batch."""
    model = net()

    def batch_loss(x, y):
        if before_batch is not None:
            before_batch()
        return F.cross_entropy(model(x), y)

    hist = fit(model, batch_loss, Batches(), budget, resume_path=tmp_path / name,
               signature=signature or {"s": 1}, device=torch.device("cpu"), desc="t")
    return model, hist


def test_scheduler_steps_after_each_epoch(tmp_path):
    _, hist = _train(tmp_path, Budget(4, 0.1, (2, 3)))
    # Logged: the rate each epoch trained with. Milestone 2 = the drop takes effect from epoch 3.
    assert [round(h["lr"], 6) for h in hist] == [0.1, 0.1, 0.01, 0.001]


def test_a_run_interrupted_mid_epoch_resumes_to_exactly_the_uninterrupted_run(tmp_path):
    """Interrupted inside the loss of the 2nd batch of epoch 3 (so after 2 finished epochs), with
    both LR drops (after epochs 3 and 4) still ahead: the rerun must end where one uninterrupted
    run ends — every parameter, every buffer, the per-epoch LR and loss history."""
    budget = Budget(5, 0.1, (3, 4))
    full, full_hist = _train(tmp_path, budget, "full.pt")

    calls = []

    def interrupt_at_batch_8():
        calls.append(1)
        if len(calls) == 8:  # 3 batches per epoch: batch 2 of epoch 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, budget, "resume.pt", before_batch=interrupt_at_batch_8)
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["epoch"] == 1  # 0-based: 2 epochs kept

    resumed, hist = _train(tmp_path, budget, "resume.pt")
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5]
    assert [h["lr"] for h in hist] == [h["lr"] for h in full_hist]
    assert [round(h["lr"], 6) for h in hist] == [0.1, 0.1, 0.1, 0.01, 0.001]  # the rate each epoch trained with
    assert [h["loss"] for h in hist] == [h["loss"] for h in full_hist]
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert "1.running_mean" in full_state and "1.num_batches_tracked" in full_state
    assert list(resumed_state) == list(full_state)
    for name, value in full_state.items():
        assert torch.equal(resumed_state[name], value), name


def test_resume_with_other_settings_is_refused(tmp_path):
    _train(tmp_path, Budget(1, 0.1, ()), "x.pt")
    with pytest.raises(PoEError, match="other settings"):
        _train(tmp_path, Budget(1, 0.1, ()), "x.pt", signature={"s": 2})


def test_budget_scaling_keeps_milestones_proportional():
    assert Budget(200, 0.1, (80, 160)).with_epochs(10).milestones == (4, 8)
    assert Budget(100, 0.1, (40, 80)).with_epochs(5).milestones == (2, 4)
    assert Budget(100, 0.1, (40, 80)).with_epochs(1).milestones == ()
