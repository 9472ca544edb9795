"""The per-query training baselines: their losses against hand-computed values, the query's data
and label remapping, and the comparison study end to end on the demo."""
import json
import math
import re

import pytest
import torch

from helpers import baselines_cli
from Demo import PROFILE as DEMO
from poe.baselines import METHODS
from poe.baselines.model import load as load_baseline
from poe.baselines.query import Query, study_queries
from poe.baselines.transfer import ckd_loss
from poe.data import ArrayDataset
from poe.errors import PoEError
from poe.losses import SDLoss, UHCLoss

T = 4.0


def softmax(v):
    e = [math.exp(x / T) for x in v]
    return [x / sum(e) for x in e]


def kl(q, p):
    return sum(a * math.log(a / b) for a, b in zip(q, p))


# A student over 4 classes; teacher A knows the classes in columns 0 and 2, teacher B those in 1 and 3.
S = [[1.0, 2.0, 0.0, -1.0], [0.5, -0.5, 1.5, 0.0]]
TA, TB = [[2.0, 0.0], [0.0, 1.0]], [[0.5, 1.5], [-1.0, 1.0]]
COLS = [[0, 2], [1, 3]]


def losses(fn):
    return fn(torch.tensor(S), [torch.tensor(TA), torch.tensor(TB)], [torch.tensor(c) for c in COLS]).item()


def test_sd_loss_pads_each_teacher_with_zeros_over_all_student_classes():
    expected = 0.0
    for t_rows, cols in ((TA, COLS[0]), (TB, COLS[1])):
        per_image = []
        for s, t in zip(S, t_rows):
            p = softmax(s)  # the student's softmax over ALL four classes
            q = [0.0] * 4   # the teacher's, zero-padded: outside its classes the target is 0
            for j, c in enumerate(cols):
                q[c] = softmax(t)[j]
            per_image.append(sum(a * math.log(a / b) for a, b in zip(q, p) if a > 0))
        expected += sum(per_image) / len(S) * T * T / 2  # batch mean, ×T², mean over the 2 teachers
    assert losses(SDLoss(T)) == pytest.approx(expected, rel=1e-5)


def test_uhc_loss_renormalises_the_student_over_each_teachers_classes():
    expected = sum(kl(softmax(t), softmax([s[c] for c in cols]))
                   for t_rows, cols in ((TA, COLS[0]), (TB, COLS[1])) for s, t in zip(S, t_rows))
    expected *= T * T / len(S) / 2
    assert losses(UHCLoss(T)) == pytest.approx(expected, rel=1e-5)
    # Renormalised: raising the student's logits of one teacher's classes together changes nothing
    # for UHC; SD, which compares with the softmax over all classes, sees it.
    shifted = torch.tensor(S)
    shifted[:, COLS[0]] += 3.0
    args = ([torch.tensor(TA), torch.tensor(TB)], [torch.tensor(c) for c in COLS])
    assert UHCLoss(T)(shifted, *args).item() == pytest.approx(losses(UHCLoss(T)), rel=1e-5)
    assert SDLoss(T)(shifted, *args).item() != pytest.approx(losses(SDLoss(T)), rel=1e-3)


def test_ckd_loss_is_the_expert_loss_on_the_querys_columns():
    student = [[0.3, -1.2]]                       # the query's classes 1 and 3, in that order
    teacher = [[9.0, 1.0, 7.0, -2.0, 5.0]]        # the teacher's logits over all five classes
    mine = [teacher[0][1], teacher[0][3]]
    expected = kl(softmax(mine), softmax(student[0])) * T * T \
        + 0.3 * (abs(0.3 - 1.0) + abs(-1.2 + 2.0)) / 2
    got = ckd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor([1, 3]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_query_classes_positions_and_label_remapping():
    hierarchy = {"A": [0, 4], "B": [2, 7], "C": [1, 4]}
    q = Query.of(["B", "A"], hierarchy)
    assert q.classes == (0, 2, 4, 7) and q.positions == ((1, 3), (0, 2)) and q.n == 2 and q.key == "B+A"
    assert q.remap(torch.tensor([7, 0, 4, 2])).tolist() == [3, 0, 2, 1]
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    data = ArrayDataset(images, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 7, 5]))
    part = q.subset(data)
    assert part.labels.tolist() == [0, 1, 2, 3, 3]                 # classes 0, 2, 4, 7, 7
    assert part.images[:, 0, 0, 0].tolist() == [0, 2, 4, 7, 8]    # the images that carry them
    with pytest.raises(PoEError, match="share classes"):
        Query.of(["A", "C"], hierarchy)
    with pytest.raises(ValueError):
        q.remap(torch.tensor([1]))


def test_study_queries_every_combination_or_a_seeded_sample():
    tasks = list("UVWXYZ")
    assert len(study_queries(tasks, [2, 3, 4, 5], None, 0)) == 56
    sample = study_queries(tasks, [2, 3, 4, 5], 2, 0)
    assert [len(q) for q in sample] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert sample == study_queries(tasks, [2, 3, 4, 5], 2, 0)
    assert len(set(sample)) == 8
    assert study_queries(tasks, [5], 10, 0) == study_queries(tasks, [5], None, 0)  # 6 < 10: all of them


# -- the study end to end on the demo -----------------------------------------------------------
def test_study_end_to_end_and_a_rerun_only_evaluates(small_demo, demo_pool, tmp_path, capsys):
    out, report = tmp_path / "models", tmp_path / "study.json"
    argv = ["--dataset", "demo", "--db", str(demo_pool), "--out", str(out), "--tasks", "disks", "rings", "stripes",
            "--sizes", "2", "3", "--queries", "1", "--teacher", "library-student", "--epochs_network", "2",
            "--epochs_head", "3", "--cache_views", "2", "--amp", "none", "--json", str(report),
            "--markdown", str(tmp_path / "study.md")]
    code, stdout, err = baselines_cli(argv, capsys)
    assert code == 0, err
    assert re.search(r"Scratch disks\+\w+ epoch 2/2:", stdout)  # fit's line after each epoch
    doc = json.loads(report.read_text())
    assert [q["n"] for q in doc["queries"]] == [2, 3] and doc["methods"] == list(METHODS)
    assert doc["poe_costs"]["recorded"] is False  # the test pool records no preprocessing cost
    for q in doc["queries"]:
        classes = sorted(c for t in q["tasks"] for c in DEMO.hierarchy[t])
        assert q["classes"] == classes and q["poe"]["images"] == len(DEMO.load()[1].subset(classes))
        for name, row in q["methods"].items():
            epochs = 3 if name in ("Transfer", "CKD") else 2
            assert [p["epoch"] for p in row["curve"]] == list(range(1, epochs + 1)), name
            times = [p["time_s"] for p in row["curve"]]
            assert times == sorted(times) and times[-1] == pytest.approx(row["time_to_model_s"], abs=0.02), name
            assert row["params"] > 0 and row["flops"] > 0 and 0 <= row["accuracy_pct"] <= 100
            # the curve is read on the validation split, the final accuracy on the test set
            assert all(0 <= p["val_top1_pct"] <= 100 and "test_top1_pct" not in p for p in row["curve"]), name
            if row["time_to_poe_accuracy_s"] is None:
                assert row["ratio_lower_bound"] > 0
            else:  # the pool's experts saw the split (it records none): PoE's test accuracy is the line
                reached = next(p for p in row["curve"] if p["val_top1_pct"] >= q["poe"]["accuracy_pct"])
                assert row["time_to_poe_accuracy_s"] == reached["time_s"]
            assert (row["teachers_s"] > 0) == name.endswith("_Scratch"), name
        # one dense head 16·n(Q) wide (Transfer) holds more weights than PoE's n 16-wide experts
        assert q["methods"]["Transfer"]["params"] > q["poe"]["params"]
    # the single-task teachers of *_Scratch: one per task, trained once, shared
    assert sorted(doc["teachers"]) == ["disks", "rings", "stripes"]
    assert len(list((out / "Scratch").glob("*.pt"))) == 3 + 2  # 3 teachers (n=1) + Scratch of 2 queries
    stored = sorted((out / "SD_CKD").glob("*.pt"))
    model, meta = load_baseline(stored[0], DEMO)
    raw = torch.load(stored[0], weights_only=True)
    assert raw["kind"] == "baseline" and meta["method"] == "SD_CKD" and len(meta["history"]) == 2
    assert model.head.bn1.num_features == 16 * len(meta["tasks"]) and model.class_ids.tolist() == meta["classes"]
    assert not list(out.rglob("*.resume.pt"))
    text = (tmp_path / "study.md").read_text()
    for needed in ("Command: `python Run_Baselines.py", "Wall time", "Budget:", "## n(Q) = 2", "## n(Q) = 3",
                   "**PoE**", "÷ PoE's query time", "## Headline", "Speed-ups", "Preprocessing", "UHC_Scratch",
                   "## What this rests on"):
        assert needed in text, needed
    assert report.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    # a rerun loads every stored model: no training, the same accuracies
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    code, stdout, err = baselines_cli(argv, capsys)
    assert code == 0, err
    assert not re.search(r"epoch \d+/\d+:", stdout) and "stored model" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == mtimes
    again = json.loads(report.read_text())
    # the training wall time is the models' recorded one, not this rerun's (which trained nothing)
    assert again["training_wall_s"] == doc["training_wall_s"] >= sum(
        r["train_s"] for q in doc["queries"] for r in q["methods"].values()) > 0
    assert f"took {again['training_wall_s'] / 60:.1f} min" in (tmp_path / "study.md").read_text()
    for q1, q2 in zip(doc["queries"], again["queries"]):
        assert {m: r["accuracy_pct"] for m, r in q1["methods"].items()} == \
            {m: r["accuracy_pct"] for m, r in q2["methods"].items()}


def test_one_query_live_head_and_user_errors(small_demo, demo_pool, tmp_path, capsys):
    out, report = tmp_path / "models", tmp_path / "one.json"
    code, _, err = baselines_cli(["--dataset", "demo", "--db", str(demo_pool), "--out", str(out), "--queriedTask", "rings",
                        "disks", "--methods", "Transfer", "CKD", "--teacher", "library-student", "--epochs_head", "1",
                        "--head_source", "live", "--amp", "none", "--json", str(report)], capsys)
    assert code == 0, err
    doc = json.loads(report.read_text())
    assert list(doc["queries"][0]["methods"]) == ["Transfer", "CKD"] and not (out / "feature_cache").exists()
    assert "no feature cache" in " ".join(doc["speedups"])
    # a trained baseline exports like PoE's task model: a .pt2 that plain PyTorch runs, same logits
    program = tmp_path / "transfer.pt2"
    code, stdout, err = baselines_cli(["--dataset", "demo", "--db", str(demo_pool), "--out", str(out), "--queriedTask", "rings",
                             "disks", "--methods", "Transfer", "--teacher", "library-student", "--epochs_head", "1",
                             "--head_source", "live", "--amp", "none", "--export", str(program)], capsys)
    assert code == 0 and "stored model" in stdout, err
    stored, = (out / "Transfer").glob("*.pt")
    model, _ = load_baseline(stored, DEMO)
    x = torch.randn(3, *DEMO.input_shape)
    with torch.no_grad():
        assert torch.allclose(torch.export.load(str(program)).module()(x), model(x), atol=1e-5)
    for argv, message in [
        (["--queriedTask", "disks", "disks"], "more than once"),
        (["--queriedTask", "disks", "--methods", "CKD", "--pretrained_db", str(tmp_path / "none")], "needs"),
        (["--queriedTask", "disks", "--epochs_head", "0"], "at least 1"),
        (["--queriedTask", "disks", "--export", str(tmp_path / "m.pt2")], "exactly one --methods"),
        (["--sizes", "9"], "--sizes must lie in"),
        (["--queriedTask", "disks", "--db", str(tmp_path / "empty")], "has no expert for disks"),
    ]:
        code, _, err = baselines_cli(["--dataset", "demo", "--db", str(demo_pool), "--out", str(out), *argv], capsys)
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (argv, err)
    code, _, err = baselines_cli(["--dataset", "imagenet", "--queriedTask", "bird_passerine"], capsys)
    assert code == 2 and "not WRNs" in err


def test_the_registry_holds_the_seven_methods_in_the_paper_s_order():
    assert list(METHODS) == ["Scratch", "Transfer", "CKD", "SD_Scratch", "SD_CKD", "UHC_Scratch", "UHC_CKD"]
    assert [m.budget for m in METHODS.values()] == ["network", "head", "head"] + ["network"] * 4
    assert {m.name for m in METHODS.values() if m.teachers == "scratch"} == {"SD_Scratch", "UHC_Scratch"}
