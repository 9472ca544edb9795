import math

import pytest
import torch

from poe.losses import EXPERT_LOSSES, ExpertLoss, ScaleLoss, SoftLoss


def softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_soft_loss_matches_hand_computed_kl():
    s, t, T = [1.0, 2.0, 3.0], [3.0, 0.0, 1.0], 4.0
    p_t, p_s = softmax([x / T for x in t]), softmax([x / T for x in s])
    expected = sum(a * math.log(a / b) for a, b in zip(p_t, p_s)) * T * T
    got = SoftLoss(T)(torch.tensor([s]), torch.tensor([t]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_loss_is_batch_mean_and_zero_on_equal_logits():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    b = torch.tensor([[3.0, 0.0, 1.0], [0.5, -1.0, 2.0]])
    first = SoftLoss(4.0)(a[:1], b[:1])
    assert SoftLoss(4.0)(a, b).item() == pytest.approx(first.item() / 2, rel=1e-5)
    assert SoftLoss(4.0)(a[1:], b[1:]).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_loss_ignores_shift_but_scale_loss_does_not():
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]])
    assert SoftLoss(4.0)(s + 10, t).item() == pytest.approx(0.0, abs=1e-5)
    assert ScaleLoss()(s + 10, t).item() == pytest.approx(10.0)


def test_scale_loss_is_mean_absolute_difference():
    s = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    t = torch.tensor([[2.0, 2.0], [0.0, 1.0]])
    assert ScaleLoss()(s, t).item() == pytest.approx((1 + 4 + 0 + 3) / 4)


def test_expert_loss_combines_with_alpha():
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 0.0, 1.0]])
    soft, scale = SoftLoss(4.0)(s, t).item(), ScaleLoss()(s, t).item()
    assert ExpertLoss("soft")(s, t).item() == pytest.approx(soft)
    assert ExpertLoss("scale")(s, t).item() == pytest.approx(scale)
    assert ExpertLoss("soft+scale", alpha=0.3)(s, t).item() == pytest.approx(soft + 0.3 * scale)
    assert set(EXPERT_LOSSES) == {"soft", "scale", "soft+scale"}
    with pytest.raises(ValueError):
        ExpertLoss("hard")
