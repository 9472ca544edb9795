"""The pool ablation's report (poe/ablation.py) and the logit offset/scale measurement
(poe/logit_scale.py), on hand-made inputs whose answers are known."""
import json

import pytest
import torch
import torch.nn as nn

from poe import ablation
from poe.logit_scale import logit_statistics, pooled
from helpers import make_pool, tiny_profile


class ClassIndexTeacher(nn.Module):
    """Logit of class c = c, for every image: its offset and scale on a task are known."""

    def __init__(self, num_classes):
        super().__init__()
        self.register_buffer("ids", torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x):
        return self.ids.expand(len(x), -1)


def test_logit_statistics_read_the_teacher_columns_of_each_task(tmp_path):
    profile = tiny_profile(n_train=48, n_test=48)
    tasks = profile.default_tasks[:2]
    pool = make_pool(tmp_path / "pool", profile, experts=tasks)
    stats = logit_statistics(pool, tasks, profile.load()[1], ClassIndexTeacher(profile.num_classes), False)
    for t in tasks:
        ids = torch.tensor(profile.hierarchy[t], dtype=torch.float32)
        assert stats[t]["teacher"]["offset"]["mean"] == pytest.approx(ids.mean().item())
        assert stats[t]["teacher"]["scale"]["mean"] == pytest.approx(ids.std().item())
        assert stats[t]["images"] == sum(int(c in profile.hierarchy[t]) for c in profile.load()[1].labels.tolist())


def test_an_expert_with_twice_the_logits_has_twice_the_scale(tmp_path):
    profile = tiny_profile(n_train=48, n_test=48)
    task = profile.default_tasks[0]
    test = profile.load()[1]
    teacher = ClassIndexTeacher(profile.num_classes)
    pool = make_pool(tmp_path / "a", profile, experts=[task])
    before = logit_statistics(pool, [task], test, teacher, False)[task]["expert"]
    expert = pool.load_expert(task)
    fc = [m for m in expert.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        fc.weight.mul_(2)
        fc.bias.mul_(2)
    pool.save_expert(task, expert)
    after = logit_statistics(pool, [task], test, teacher, False)[task]["expert"]
    assert after["scale"]["mean"] == pytest.approx(2 * before["scale"]["mean"], rel=1e-4)
    assert after["offset"]["mean"] == pytest.approx(2 * before["offset"]["mean"], rel=1e-4, abs=1e-5)


def test_pooled_spread_is_the_spread_of_the_experts_mean_offsets():
    stats = {t: {who: {"offset": {"mean": m, "std": 0.0}, "scale": {"mean": 1.0, "std": 0.0}}
                 for who in ("expert", "teacher")} for t, m in (("a", 1.0), ("b", 3.0))}
    p = pooled(stats)
    assert p["expert"]["offset"] == 2.0
    assert p["expert"]["offset_spread_across_experts"] == pytest.approx(torch.tensor([1.0, 3.0]).std().item())


def _cell(tmp_path, name, acc, epochs=10):
    db = tmp_path / name
    db.mkdir()
    entry = {"budget": {"epochs": epochs, "milestones": [4, 8], "batch_size": 512}, "teacher": "oracle",
             "loss": "soft+scale", "extraction": {"views": 1, "wall_s": {"cache_this_process_s": 60.0,
                                                                           "training_and_scoring_this_process_s": 120.0}},
             "history": [{"seconds": 12.0}]}
    (db / "manifest.json").write_text(json.dumps({"library": {"source": "DB_PoE/cifar100/library.pt"},
                                                  "experts": {"x": entry}}))
    return {"label": name, "db": str(db), "split": "val", "accuracy_pct": {"2": acc[0], "5": acc[1]},
            "cross_expert_pct": {"2": 20.0, "5": 50.0}, "own_class_pct": {"x": 80.0, "y": 70.0}}


def test_the_ablation_summary_measures_each_cell_against_base_and_the_seed_noise(tmp_path):
    rows = [_cell(tmp_path, "base", (70.0, 60.0)), _cell(tmp_path, "seed1", (70.5, 59.5)),
            _cell(tmp_path, "e30", (74.0, 65.0), epochs=30), _cell(tmp_path, "v2", (70.6, 60.2))]
    doc = ablation.summarise({"rows": rows})
    cells = {c["cell"]: c for c in doc["cells"]}
    assert doc["seed_spread_pct"] == {"2": 0.5, "5": 0.5}
    assert cells["e30"]["delta_accuracy_pct"] == {"2": 4.0, "5": 5.0} and cells["e30"]["beyond_noise"]
    assert cells["v2"]["beyond_noise"] is False  # a mean gap of 0.4 < twice the seeds' 0.5
    assert cells["e30"]["epochs"] == 30 and cells["e30"]["training_s"] == 120.0
    assert cells["base"]["own_class_mean_pct"] == 75.0
    text = ablation.markdown(doc)
    assert "+4.50 (beyond noise)" in text and "+0.40 (within noise)" in text



def test_the_teacher_row_reads_each_task_s_own_columns_of_the_teacher():
    from poe.teacher_ceiling import teacher_task_logits

    profile = tiny_profile(n_train=48, n_test=48)
    tasks = profile.default_tasks[:2]
    logits, labels = teacher_task_logits(ClassIndexTeacher(profile.num_classes), profile, tasks, profile.load()[1])
    classes = sorted(c for t in tasks for c in profile.hierarchy[t])
    assert torch.isin(labels, torch.tensor(classes)).all() and len(labels) > 0  # the tasks' images only
    for t in tasks:
        assert logits[t].shape == (len(labels), len(profile.hierarchy[t]))
        assert (logits[t] == torch.tensor(profile.hierarchy[t], dtype=torch.float32)).all()


def _one_hot_logits(hierarchy, tasks, labels, answer):
    """Per-task logits of a teacher whose full logits are 10 at class `answer(label)`, 0 elsewhere."""
    full = torch.zeros(len(labels), 1 + max(c for t in tasks for c in hierarchy[t]))
    full[torch.arange(len(labels)), torch.tensor([answer(int(y)) for y in labels])] = 10.0
    return {t: full[:, hierarchy[t]] for t in tasks}


def test_the_teacher_row_is_scored_as_table6_scores_a_pool():
    from poe.teacher_ceiling import score_logits

    hierarchy = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    tasks = list(hierarchy)
    labels = torch.tensor([0, 1, 2, 3, 4, 5] * 4)
    right = score_logits(_one_hot_logits(hierarchy, tasks, labels, lambda y: y), labels, hierarchy, tasks, (2, 3))
    assert right["accuracy_pct"] == {"2": 100.0, "3": 100.0} and set(right["own_class_pct"].values()) == {100.0}
    # every image answered with the first class of the next task: in every query of 3 the answer lies in
    # another queried task (0 %, all errors cross-expert); each task alone sees zeros and picks its first class
    nxt = {0: 2, 1: 2, 2: 4, 3: 4, 4: 0, 5: 0}
    wrong = score_logits(_one_hot_logits(hierarchy, tasks, labels, nxt.get), labels, hierarchy, tasks, (2, 3))
    assert wrong["accuracy_pct"]["3"] == 0.0 and wrong["cross_expert_pct"]["3"] == 100.0
    assert set(wrong["own_class_pct"].values()) == {50.0}
