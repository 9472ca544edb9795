"""The losses the trainers really train with: every batch's loss, as each stage computes it, is
checked against the paper's formula written out here (not the project's loss classes), with
T = 4 and α = 0.3 — experts from the feature cache and from the live path, and the library
student, which learns from the Oracle's logits alone (no labels)."""
import pytest
import torch
import torch.nn.functional as F

import poe.extract
import poe.preprocess
from helpers import make_pool, preprocessor, tiny_profile

T, ALPHA = 4.0, 0.3
TASKS = ["disks", "rings"]


def kd(student, teacher, t):
    """KL(softmax(teacher/t) ‖ softmax(student/t)) · t², mean over the batch (Hinton et al.)."""
    p_teacher = F.softmax(teacher / t, dim=1)
    return (p_teacher * (F.log_softmax(teacher / t, dim=1) - F.log_softmax(student / t, dim=1))).sum(1).mean() * t * t


def paper_expert_loss(student, teacher, t=T, alpha=ALPHA):
    """L_soft + α·L_scale, L_scale = mean |student − teacher|."""
    return kd(student, teacher, t) + alpha * (student - teacher).abs().mean()


def loud_oracle(profile):
    """A random Oracle whose logits spread over several units (std ≈ 5): with logits near 0, KD·T²
    hardly depends on T, and the check could not tell T = 4 from another temperature."""
    torch.manual_seed(7)
    oracle = profile.architecture.oracle().eval()
    with torch.no_grad():
        oracle.fc.weight.mul_(200.0)
    return oracle


class Outputs:
    """Keeps the latest output of a module (forward hook), detached."""

    def __init__(self, module):
        self.value = None
        module.register_forward_hook(lambda m, args, out: setattr(self, "value", out))


def record_batches(monkeypatch, module, check):
    """Run `module`'s real `fit`; before it starts, watch the outputs of the model it trains (and of
    each of its children, e.g. the experts of the live path), then call check(model, x, y,
    returned_loss) after every batch."""
    real_fit = module.fit

    def fit(model, batch_loss, *args, **kwargs):
        for m in (model, *model.children()):
            m.outputs = Outputs(m)

        def checked(x, y):
            out = batch_loss(x, y)
            check(model, x, y, out)
            return out

        return real_fit(model, checked, *args, **kwargs)

    monkeypatch.setattr(module, "fit", fit)


def test_the_discriminating_power_of_these_checks():
    """With the loud Oracle's logits, another T or α changes the loss by far more than the 1e-4
    relative tolerance used below."""
    profile = tiny_profile()
    x = torch.randn(16, 3, 32, 32)
    teacher, student = loud_oracle(profile)(x).detach(), 0.1 * torch.randn(16, 24)
    assert teacher.std() > 2
    right = paper_expert_loss(student, teacher)
    for wrong in (paper_expert_loss(student, teacher, t=2.0), paper_expert_loss(student, teacher, t=5.0),
                  paper_expert_loss(student, teacher, alpha=0.25), kd(student, teacher, T)):
        assert abs(wrong - right) > 1e-2 * right


@pytest.mark.parametrize("source", ["cache", "live"])
def test_experts_train_with_l_soft_plus_0_3_l_scale_at_t_4_on_the_oracles_logits(tmp_path, monkeypatch, source):
    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    oracle = loud_oracle(profile)
    oracle_out = Outputs(oracle)
    hierarchy, seen = profile.hierarchy, []

    def check(model, x, y, returned):
        assert sorted(returned) == sorted(TASKS)  # one loss per expert
        for i, t in enumerate(TASKS):
            if source == "cache":  # x: cached library features; y: the teacher's cached logits
                student, teacher = model.outputs.value[i], y[:, hierarchy[t]]
            else:  # x: images; the teacher (the Oracle) ran on them in this batch
                student, teacher = model[t].outputs.value, oracle_out.value[:, hierarchy[t]]
            assert teacher.std() > 2  # the loud Oracle's logits, not labels or the library student's
            expected = paper_expert_loss(student.detach().float(), teacher.float())
            torch.testing.assert_close(returned[t].detach(), expected, rtol=1e-4, atol=0)
        seen.append(len(x))

    record_batches(monkeypatch, poe.extract, check)  # both sources train in poe.extract
    preprocessor(pool, profile, epochs=1, expert_source=source, cache_dtype="float32").experts(
        TASKS, "soft+scale", "oracle", lambda: oracle)
    assert seen == [16, 16, 16]  # every batch of the epoch was checked
    assert {pool.manifest()["experts"][t]["loss"] for t in TASKS} == {"soft+scale"}


def test_library_student_is_distilled_from_the_oracle_at_t_4_without_labels(tmp_path, monkeypatch):
    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    oracle = loud_oracle(profile)
    oracle_out, seen = Outputs(oracle), []

    def check(student, x, y, returned):
        expected = kd(student.outputs.value.detach(), oracle_out.value, T)
        torch.testing.assert_close(returned.detach(), expected, rtol=1e-4, atol=0)
        seen.append(len(x))

    record_batches(monkeypatch, poe.preprocess, check)
    preprocessor(pool, profile).library(lambda: oracle)
    assert seen == [16, 16, 16]  # every batch of the epoch was checked
