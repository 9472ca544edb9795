"""The comparison study's accounting (issue 18): training time counted once, crossings read on a
validation split, PoE's costs from one pool, the break-even table, and the study sharded across
processes."""
import dataclasses
import json
import time
import types

import pytest

import Run_Baselines
import poe.baselines.training as training
import poe.train
from conftest import shrink_demo
from Demo import PROFILE as DEMO
from poe.baselines import METHODS
from poe.cli import run
from tiny_demo import make_pool


@pytest.fixture
def small_demo(monkeypatch):
    """The demo with a sixth of its images; no per-epoch history files."""
    monkeypatch.setattr(poe.train, "write_history", lambda *args, **kwargs: None)
    return shrink_demo(monkeypatch)


@pytest.fixture
def demo_pool(tmp_path):
    return make_pool(tmp_path / "pool", DEMO, experts=DEMO.hierarchy).root


def cli(argv, capsys):
    code = run(Run_Baselines.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_single_task_teachers_training_is_counted_once(small_demo, demo_pool, tmp_path, capsys, monkeypatch):
    """SD_Scratch trains its single-task teachers inside its own obtain(); their wall time is theirs,
    not the student's too. A fake clock makes each teacher's training take 1000 s more than it does."""
    clock = {"offset": 0.0}
    monkeypatch.setattr(training, "time", types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + clock["offset"]))
    scratch = METHODS["Scratch"]

    def slow_prepare(setup, query, method):
        clock["offset"] += 1000.0  # inside the teacher's obtain(), before its own training starts
        return scratch.prepare(setup, query, method)

    monkeypatch.setitem(METHODS, "Scratch", dataclasses.replace(scratch, prepare=slow_prepare))
    report = tmp_path / "study.json"
    code, _, err = cli(["--dataset", "demo", "--db", str(demo_pool), "--out", str(tmp_path / "models"),
                        "--queriedTask", "disks", "rings", "--methods", "SD_Scratch", "UHC_Scratch",
                        "--epochs_network", "1", "--amp", "none", "--json", str(report)], capsys)
    assert code == 0, err
    doc = json.loads(report.read_text())
    rows = doc["queries"][0]["methods"]
    assert sorted(doc["teachers"]) == ["disks", "rings"]
    for t in doc["teachers"].values():
        assert t["training_wall_s"] >= 1000
    # SD_Scratch trained both teachers; its own training is seconds, and says what it left out
    assert rows["SD_Scratch"]["training_wall_s"] < 100
    assert rows["SD_Scratch"]["teachers_training_wall_s"] >= 2000
    assert rows["UHC_Scratch"]["training_wall_s"] < 100  # its teachers were stored: loaded
    # the study's total: each teacher once (2 × 1000 s) plus seconds of real training
    assert 2000 <= doc["training_wall_s"] < 2100
