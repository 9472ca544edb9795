import itertools

import torch
import torch.nn as nn

from poe.consolidate import TaskModel, consolidate


class ConstantExpert(nn.Module):
    """Logit j = 100·class_id_j + sample mean: lets a test read back which class sits where."""

    def __init__(self, classes):
        super().__init__()
        self.register_buffer("ids", torch.tensor(classes, dtype=torch.float32))

    def forward(self, features):
        return self.ids[None, :] * 100 + features.mean(dim=(1, 2, 3))[:, None]


HIERARCHY = {"a": [7, 2, 40], "b": [1, 30], "c": [5, 13, 99, 0]}


def test_columns_are_sorted_global_class_ids_for_any_task_order():
    x = torch.randn(4, 3, 8, 8)
    for order in itertools.permutations(HIERARCHY):
        experts = {t: ConstantExpert(HIERARCHY[t]) for t in order}
        model = consolidate(nn.Identity(), experts, HIERARCHY)
        expected_ids = sorted(c for t in order for c in HIERARCHY[t])
        assert model.class_ids.tolist() == expected_ids
        out = model(x)
        assert out.shape == (4, len(expected_ids))
        read_back = torch.round((out - x.mean(dim=(1, 2, 3))[:, None]) / 100)
        assert read_back[0].tolist() == expected_ids
        assert isinstance(model.experts, nn.ModuleList) and model.tasks == list(order)


def test_overlapping_classes_are_rejected():
    try:
        TaskModel(nn.Identity(), [nn.Identity(), nn.Identity()], [[1, 2], [2, 3]])
    except ValueError:
        return
    raise AssertionError("overlap not detected")


def test_experts_move_and_save_with_the_model():
    model = consolidate(nn.Identity(), {t: ConstantExpert(HIERARCHY[t]) for t in HIERARCHY}, HIERARCHY)
    keys = model.state_dict().keys()
    assert any(k.startswith("experts.2.") for k in keys)
