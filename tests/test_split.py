"""The validation split (poe/split.py): a seeded, class-stratified hold-out that is never trained on,
recorded in what is stored, and never silently mixed with another split."""
from pathlib import Path

import pytest
import torch

import Run_Table6
from poe.cli import run
from poe.errors import PoEError
from poe.pool import Pool
from poe.split import ValidationSplit, check_same, recorded_split
from helpers import preprocessor, tiny_profile


def labels(per_class=20, classes=5):
    return torch.arange(per_class * classes) % classes


def test_the_hold_out_is_stratified_disjoint_and_complete():
    y = labels()
    kept, held = ValidationSplit(4, seed=0).indices(y)
    assert torch.bincount(y[held]).tolist() == [4] * 5  # the same number of every class
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(y)))


def test_the_hold_out_is_seeded():
    y = labels()
    a = ValidationSplit(4, seed=0).indices(y)[1]
    assert torch.equal(a, ValidationSplit(4, seed=0).indices(y)[1])
    assert not torch.equal(a, ValidationSplit(4, seed=1).indices(y)[1])


def test_a_class_hold_out_does_not_depend_on_the_other_classes():
    y = labels()
    held = ValidationSplit(4, seed=0).indices(y)[1]
    class0 = held[y[held] == 0]
    fewer = y[y != 4]  # classes 0-3 in the same order, class 4 gone: rows renumbered
    held_fewer = ValidationSplit(4, seed=0).indices(fewer)[1]
    # the same class-0 images held out: the same ranks among class 0's rows (every 5th, then every 4th)
    assert torch.equal(held_fewer[fewer[held_fewer] == 0] // 4, class0 // 5)


def test_a_class_too_small_to_hold_out_is_refused():
    with pytest.raises(PoEError, match="too few"):
        ValidationSplit(20, seed=0).indices(labels(per_class=20))


def test_the_preprocessor_never_trains_on_the_validation_images(tmp_path):
    profile = tiny_profile(n_train=96)
    pre = preprocessor(__import__("poe.pool", fromlist=["Pool"]).Pool(tmp_path / "pool", profile), profile,
                       validation=ValidationSplit(1, seed=0))
    full = profile.load()[0]
    train, val = pre.data[0], pre.val
    assert len(train) + len(val) == len(full) and len(val) == profile.num_classes
    rows = {bytes(x.numpy()) for x in train.images}
    assert not any(bytes(x.numpy()) in rows for x in val.images)
    assert pre.split_meta["images"] == profile.num_classes and pre.split_meta["per_class"] == 1
    batch_images = sum(len(x) for x, _ in pre.train_loader("expert"))
    assert batch_images == len(train)  # what the stages iterate over is the training part only


def test_experts_record_the_split_and_are_retrained_under_another(tmp_path):
    from poe.pool import Pool

    profile = tiny_profile(n_train=96)
    pool = Pool(tmp_path / "pool", profile)
    pre = preprocessor(pool, profile, epochs=1, validation=ValidationSplit(1, seed=0), score_on=("val",))
    pre.library(pre.oracle)
    tasks = profile.default_tasks[:2]
    pre.experts(tasks, "soft+scale", "library-student", pre.oracle)
    entries = pool.manifest()["experts"]
    assert all(entries[t]["validation"] == pre.split_meta for t in tasks)
    assert all(set(entries[t]["metrics"]) == {"own_classes_val_top1_pct"} for t in tasks)  # no test read
    assert pre.stale_or_missing(tasks, "soft+scale", "library-student") == []
    other = preprocessor(pool, profile, epochs=1, validation=ValidationSplit(1, seed=1))
    assert other.stale_or_missing(tasks, "soft+scale", "library-student") == tasks
    none = preprocessor(pool, profile, epochs=1)
    assert none.stale_or_missing(tasks, "soft+scale", "library-student") == tasks


def test_scoring_on_validation_needs_a_split():
    profile = tiny_profile()
    with pytest.raises(PoEError, match="needs one"):
        preprocessor(Pool(Path("unused"), profile), profile, score_on=("val",))


def test_a_pool_mixing_splits_or_scored_with_another_is_refused():
    a, b = {"per_class": 1, "seed": 0}, {"per_class": 1, "seed": 1}
    with pytest.raises(PoEError, match="different validation splits"):
        recorded_split({"x": {"validation": a}, "y": {"validation": b}}, ["x", "y"], "pool")
    assert recorded_split({"x": {"validation": a}, "y": {"validation": a}}, ["x", "y"], "pool") == a
    check_same(a, dict(a), "pool")
    with pytest.raises(PoEError, match="seed 0, not 1 per class, seed 1"):
        check_same(a, b, "pool")
    with pytest.raises(PoEError, match="none"):
        check_same(None, a, "pool")


def test_table6_scores_a_pool_on_its_own_split_only(tmp_path, monkeypatch, capsys):
    """--score_on val reads the split the pool records; a pool without one, or another split asked
    for, is one error line."""
    from Demo import PROFILE as DEMO
    from poe.pool import Pool

    profile = tiny_profile(n_train=96)
    monkeypatch.setattr(DEMO, "load", profile.load)
    pool = Pool(tmp_path / "pool", DEMO)
    pre = preprocessor(pool, DEMO, epochs=1, validation=ValidationSplit(1, seed=0), score_on=("val",))
    pre.library(pre.oracle)
    tasks = DEMO.default_tasks[:2]
    pre.experts(tasks, "soft+scale", "library-student", pre.oracle)
    out = tmp_path / "t6.json"
    common = ["--dataset", "demo", "--db", str(pool.root), "--tasks", *tasks, "--amp", "none"]
    assert run(Run_Table6.main, [*common, "--score_on", "val", "test", "--json", str(out)]) == 0
    import json
    rows = json.loads(out.read_text())["rows"]
    assert [r["split"] for r in rows] == ["val", "test"]
    assert rows[0]["images"] == 2 * 3 and rows[1]["images"] == len(profile.load()[1].subset(
        [c for t in tasks for c in DEMO.hierarchy[t]]))
    assert run(Run_Table6.main, [*common, "--score_on", "val", "--val_per_class", "1", "--val_seed", "5"]) == 2
    assert "seed 0, not 1 per class, seed 5" in capsys.readouterr().err
    bare = Pool(tmp_path / "bare", DEMO)
    plain = preprocessor(bare, DEMO, epochs=1)
    plain.library(plain.oracle)
    plain.experts(tasks, "soft+scale", "library-student", plain.oracle)
    assert run(Run_Table6.main, ["--dataset", "demo", "--db", str(bare.root), "--tasks", *tasks,
                                 "--score_on", "val"]) == 2
    assert "records no validation split" in capsys.readouterr().err
