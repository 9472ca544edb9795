"""The comparison study's reported numbers against values computed by hand from small fixtures: the
time at which a method's curve crosses PoE's accuracy and its ratio to PoE's query time, the per-n(Q)
means, PoE's query time measured cold (the cache of folded experts emptied before every timed
build), and the feature cache's time charged in full to both head methods."""
import contextlib
import json
import statistics
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import poe.feature_cache
import poe.train
import Run_Baselines
from Demo import PROFILE as DEMO
from poe.baselines import study
from poe.baselines.query import Query
from poe.baselines.training import Setup, obtain
from poe.cli import run
from poe.profiles import Budget
from poe.realtime import CACHE
from helpers import make_pool


def history(setup_s, seconds, accuracies):
    """A stored baseline's metadata: its epochs' seconds and accuracies (logged both as validation and
    test accuracy, wherever the study reads its curves)."""
    epochs = [{"epoch": i + 1, "seconds": s, "test_top1_pct": a, "val_top1_pct": a}
              for i, (s, a) in enumerate(zip(seconds, accuracies))]
    return {"setup_s": setup_s, "history": epochs, "train_s": sum(seconds), "time_to_model_s": setup_s + sum(seconds),
            "teachers_s": 0.0}


def row_for(monkeypatch, meta, poe):
    """study.method_row for a fake stored model with `meta`."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 6))
    monkeypatch.setattr(study, "obtain", lambda setup, method, query: (model, meta))
    setup = SimpleNamespace(profile=DEMO, accuracy=lambda m, q, *part: 50.0, read_on="test", poe_target="test")
    return study.method_row(setup, "Transfer", Query.of(["rings", "disks"], DEMO.hierarchy), poe)


def test_the_crossing_epochs_time_and_its_ratio_to_poes_query_time(monkeypatch):
    meta = history(2.0, [1.5, 1.5, 1.5], [40.0, 60.0, 80.0])
    assert [(p["epoch"], p["time_s"]) for p in study.curve(meta)] == [(1, 3.5), (2, 5.0), (3, 6.5)]
    # PoE: 55 % in 20 ms. The curve first reaches 55 % after epoch 2, 2.0 + 1.5 + 1.5 = 5.0 s in.
    row = row_for(monkeypatch, meta, {"accuracy_pct": 55.0, "build_ms": 20.0})
    assert row["epoch_reaching_poe"] == 2 and row["time_to_poe_accuracy_s"] == 5.0
    assert row["ratio_to_poe_query_time"] == 250.0 and row["ratio_lower_bound"] is None  # 5.0 s / 0.020 s
    assert row["time_to_model_s"] == 6.5
    equal = row_for(monkeypatch, meta, {"accuracy_pct": 60.0, "build_ms": 20.0})  # reaching = equal or more
    assert equal["epoch_reaching_poe"] == 2
    never = row_for(monkeypatch, meta, {"accuracy_pct": 90.0, "build_ms": 20.0})
    assert never["time_to_poe_accuracy_s"] is None and never["ratio_to_poe_query_time"] is None
    assert never["ratio_lower_bound"] == 325.0  # the whole budget, 6.5 s, over 0.020 s


def poe_result(accuracy, build_ms):
    return {"accuracy_pct": accuracy, "params": 100, "flops": 1000, "build_ms": build_ms,
            "builds_ms": [build_ms] * 3}


def method(accuracy, time_to_model, reached_s=None, ratio=None, bound=None):
    return {"accuracy_pct": accuracy, "params": 10, "flops": 20, "time_to_model_s": time_to_model, "teachers_s": 0.0,
            "time_to_poe_accuracy_s": reached_s, "ratio_to_poe_query_time": ratio, "ratio_lower_bound": bound}


def test_the_per_size_means(monkeypatch):
    results = [{"n": 2, "poe": poe_result(80.0, 10.0), "methods": {"Transfer": method(60.0, 8.0, 5.0, 500.0)}},
               {"n": 3, "poe": poe_result(50.0, 40.0), "methods": {"Transfer": method(45.0, 9.0, bound=225.0)}},
               {"n": 2, "poe": poe_result(70.0, 20.0), "methods": {"Transfer": method(50.0, 6.0, bound=300.0)}}]
    out = study.summary(results, ["Transfer"])
    assert list(out) == ["2", "3"] and out["2"]["queries"] == 2 and out["3"]["queries"] == 1
    two = out["2"]
    assert two["PoE"]["accuracy_pct"] == 75.0 and two["PoE"]["build_ms"] == 15.0
    t = two["Transfer"]
    assert t["accuracy_pct"] == 55.0 and t["time_to_model_s"] == 7.0
    # the crossing's time and ratio: over the one query that reached PoE's accuracy, not both
    assert t["reached"] == 1 and t["time_to_poe_accuracy_s"] == 5.0 and t["ratio_to_poe_query_time"] == 500.0
    assert t["ratio_lower_bound"] == 300.0
    three = out["3"]
    assert three["PoE"]["accuracy_pct"] == 50.0 and three["Transfer"]["reached"] == 0
    assert three["Transfer"]["time_to_poe_accuracy_s"] is None and three["Transfer"]["ratio_lower_bound"] == 225.0


def test_poes_query_time_is_the_median_of_cold_builds_and_the_ratio_uses_it(small_demo, tmp_path, monkeypatch, capsys):
    pool = make_pool(tmp_path / "pool", DEMO, experts=["rings", "disks"])
    builds = []  # (pieces in the cache when the build began, its milliseconds)
    build = study.build_task_model

    def watched_build(*args, **kwargs):
        pieces = len(CACHE.items)
        model, ms = build(*args, **kwargs)
        builds.append((pieces, ms))
        return model, ms

    monkeypatch.setattr(study, "build_task_model", watched_build)
    report = tmp_path / "study.json"
    assert run(Run_Baselines.main, ["--dataset", "demo", "--db", str(pool.root), "--out", str(tmp_path / "models"),
                                    "--queriedTask", "rings", "disks", "--methods", "Transfer", "--teacher",
                                    "library-student", "--epochs_head", "1", "--cache_views", "1", "--amp", "none",
                                    "--json", str(report)]) == 0, capsys.readouterr().err
    assert len(builds) >= 4 and all(pieces == 0 for pieces, _ in builds), builds  # every build read the files
    doc = json.loads(report.read_text())
    q = doc["queries"][0]
    # the process's first build (one-off costs) is not one of the timed ones
    assert q["poe"]["build_ms"] == pytest.approx(statistics.median(ms for _, ms in builds[1:]), abs=0.006)
    row, poe_s = q["methods"]["Transfer"], q["poe"]["build_ms"] / 1000
    if row["time_to_poe_accuracy_s"] is not None:
        assert row["ratio_to_poe_query_time"] == round(row["time_to_poe_accuracy_s"] / poe_s, 1)
    else:
        assert row["ratio_lower_bound"] == round(row["time_to_model_s"] / poe_s, 1)


def test_the_feature_caches_time_is_charged_in_full_to_both_head_methods(small_demo, tmp_path, monkeypatch):
    """Transfer builds the query's cache, CKD reuses it: both count its whole build time, as if each
    had built it (measured by the views themselves; slowed here so that it dominates)."""
    autocast = poe.feature_cache.autocast

    @contextlib.contextmanager
    def slow_autocast(device, amp):
        time.sleep(0.05)
        with autocast(device, amp):
            yield

    monkeypatch.setattr(poe.feature_cache, "autocast", slow_autocast)
    pool = make_pool(tmp_path / "pool", DEMO, experts=["rings", "disks"])
    setup = Setup(profile=DEMO, pool=pool, data=DEMO.load(), out=tmp_path / "models",
                  budgets={"network": Budget(1, 0.1, ()), "head": Budget(2, 0.1, ())}, batch_size=16,
                  device=torch.device("cpu"), amp="none", seed=0, teacher="library-student", cache_views=2)
    query = Query.of(["rings", "disks"], DEMO.hierarchy)
    transfer, ckd = (obtain(setup, m, query)[1] for m in ("Transfer", "CKD"))
    views = sorted((tmp_path / "models" / "feature_cache").glob("*/seed0-view*/meta.json"))
    assert len(views) == 2
    build_s = sum(json.loads(v.read_text())["seconds"] for v in views)
    assert build_s >= 0.05 * 2 * 2  # 2 views of at least 2 batches, each slowed by 0.05 s
    assert transfer["setup_s"] >= build_s - 0.01 and ckd["setup_s"] >= build_s - 0.01
    assert ckd["time_to_model_s"] == pytest.approx(ckd["setup_s"] + ckd["train_s"], abs=0.02)
