"""The comparison study's accounting (issue 18): training time counted once, crossings read on a
validation split, PoE's costs from one pool, the break-even table, and the study sharded across
processes."""
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import types

import pytest
import torch

import poe.baselines.training as training
from CIFAR100 import PROFILE as CIFAR
from helpers import ROOT, SHARED, baselines_cli, make_pool
from Demo import PROFILE as DEMO
from poe import checkpoint
from poe.baselines import METHODS, study
from poe.baselines.query import Query
from poe.baselines.training import Setup
from poe.errors import PoEError
from poe.pool import Pool
from poe.preprocess import library_fingerprint
from poe.profiles import Budget
from poe.split import ValidationSplit

AUTHORS_CIFAR = SHARED / "reference" / "poe-authors" / "CIFAR100"


@pytest.fixture
def slow_teachers(monkeypatch):
    """A fake clock on which training a single-task Scratch teacher takes 1000 s more than it does."""
    clock = {"offset": 0.0}
    monkeypatch.setattr(training, "time", types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + clock["offset"]))
    scratch = METHODS["Scratch"]

    def slow_prepare(setup, query, method):
        clock["offset"] += 1000.0  # inside the teacher's obtain(), before its own training starts
        return scratch.prepare(setup, query, method)

    monkeypatch.setitem(METHODS, "Scratch", dataclasses.replace(scratch, prepare=slow_prepare))


def test_teachers_trained_inside_a_model_are_not_in_its_wall_time(small_demo, demo_pool, tmp_path, slow_teachers):
    """SD_Scratch obtains its single-task teachers itself when they are not stored: their wall time
    is theirs (each records it), not the student's too."""
    setup = Setup(profile=small_demo, pool=Pool(demo_pool, small_demo), data=small_demo.load(), out=tmp_path / "m",
                  budgets={"network": Budget(1, 0.1, ()), "head": Budget(1, 0.1, ())}, batch_size=64,
                  device=torch.device("cpu"), amp="none", seed=0, split=ValidationSplit(2, 0))
    _, meta = training.obtain(setup, "SD_Scratch", Query.of(["disks", "rings"], small_demo.hierarchy))
    assert meta["wall_s_this_process"] < 100 and meta["teachers_wall_s_this_process"] >= 2000
    for t in ("disks", "rings"):
        _, teacher = training.obtain(setup, "Scratch", Query.of([t], small_demo.hierarchy))  # stored: loaded
        assert teacher["wall_s_this_process"] >= 1000


def test_the_studys_training_time_counts_each_teacher_once(small_demo, demo_pool, tmp_path, capsys, slow_teachers):
    report = tmp_path / "study.json"
    code, _, err = baselines_cli(["--dataset", "demo", "--db", str(demo_pool), "--out", str(tmp_path / "models"),
                        "--queriedTask", "disks", "rings", "--methods", "SD_Scratch", "UHC_Scratch",
                        "--epochs_network", "1", "--amp", "none", "--json", str(report)], capsys)
    assert code == 0, err
    doc = json.loads(report.read_text())
    rows = doc["queries"][0]["methods"]
    assert sorted(doc["teachers"]) == ["disks", "rings"]
    for t in doc["teachers"].values():
        assert t["training_wall_s"] >= 1000
    for m in ("SD_Scratch", "UHC_Scratch"):  # their own training: seconds
        assert rows[m]["training_wall_s"] < 100, m
    # the study's total: each teacher once (2 × 1000 s) plus seconds of real training
    assert 2000 <= doc["training_wall_s"] < 2100
    # PoE's query time: a distribution of builds per query, the process's first build apart
    poe_row = doc["queries"][0]["poe"]
    assert len(poe_row["builds_ms"]) == study.BUILD_REPEATS >= 20
    assert poe_row["build_ms"] == pytest.approx(statistics.median(poe_row["builds_ms"]), abs=0.01)
    assert poe_row["build_p90_ms"] == pytest.approx(study.percentile(poe_row["builds_ms"], 90), abs=0.01)
    assert [f["tasks"] for f in doc["first_builds"]] == [["disks", "rings"]]


def test_a_model_stored_before_the_fix_has_its_teachers_found_by_their_dates(monkeypatch):
    """SD_Scratch models stored before obtain() recorded its teachers' share: a teacher saved while
    the student trained (within its wall time before its save date) was trained inside it."""
    student = {"date": "2026-11-30T00:10:00", "wall_s_this_process": 300.0}   # trained 00:05:00-00:10:00
    teachers = {"disks": {"date": "2026-11-30T00:06:00", "wall_s_this_process": 100.0},   # inside: trained by it
                "rings": {"date": "2026-11-30T00:04:00", "wall_s_this_process": 90.0}}    # before: loaded
    monkeypatch.setattr(study, "obtain", lambda setup, method, query: (None, teachers[query.tasks[0]]))
    setup, q = types.SimpleNamespace(profile=DEMO), Query.of(["disks", "rings"], DEMO.hierarchy)
    assert study.teachers_wall_s(setup, "SD_Scratch", q, student) == 100.0
    assert study.teachers_wall_s(setup, "SD_Scratch", q, {**student, "teachers_wall_s_this_process": 7.0}) == 7.0
    assert study.teachers_wall_s(setup, "SD_CKD", q, student) == 0.0  # no single-task teachers


def test_percentile_interpolates_between_order_statistics():
    values = list(range(20, 0, -1))  # 1..20, unsorted
    assert study.percentile(values, 50) == 10.5 == statistics.median(values)
    assert study.percentile(values, 90) == pytest.approx(18.1)
    assert study.percentile([7.0], 90) == 7.0


# -- PoE's costs from one pool, and the break-even table ----------------------------------------
def write_pool_with_records(root, student_seed=0):
    """A demo pool in our layout whose library is the front of a library student stored (with its
    Oracle) in root/pre, each with the wall time it recorded, and two experts extracted jointly."""
    arch = DEMO.architecture
    torch.manual_seed(student_seed)
    student = arch.student()
    pool = Pool(root / "pool", DEMO)
    library = arch.library()
    library.load_state_dict(arch.split_student(student.state_dict())[0])
    pool.save_library(library, fingerprint=library_fingerprint(library))
    joint = {"views": 5, "wall_s": {"cache_this_process_s": 300.0, "training_and_scoring_this_process_s": 60.0}}
    pool.save_expert("disks", arch.expert(3), extraction=joint)
    pool.save_expert("rings", arch.expert(3), extraction=dict(joint))
    pre = root / "pre"
    checkpoint.atomic_save(checkpoint.make("library_student", student, dataset="demo",
                                           wall_s={"this_process_s": 100.0, "training_s": 90.0}),
                           pre / "library_student.pt")
    # a resumed Oracle: its last process saw part of its epochs (the larger figure counts)
    checkpoint.atomic_save(checkpoint.make("oracle", arch.oracle(), dataset="demo",
                                           wall_s={"this_process_s": 50.0, "training_s": 55.0}), pre / "oracle.pt")
    return pool, pre


def test_poe_costs_are_the_pools_whole_preprocessing_from_its_own_records(tmp_path):
    pool, pre = write_pool_with_records(tmp_path)
    costs = study.poe_costs(pool, pre)
    assert {s: c["seconds"] for s, c in costs["stages"].items()} == {"oracle": 55.0, "library_student": 100.0,
                                                                       "experts": 360.0}  # one joint run
    assert costs["total_s"] == 515.0 and costs["recorded"]
    # another pool's library student (another front) is not this pool's cost: not recorded, no total
    _, other = write_pool_with_records(tmp_path / "other", student_seed=1)
    costs = study.poe_costs(pool, other)
    assert costs["stages"]["library_student"]["seconds"] is None and costs["stages"]["oracle"]["seconds"] is None
    assert "not this pool's library" in costs["stages"]["oracle"]["source"]
    assert costs["total_s"] is None and not costs["recorded"]
    # the authors' published pool records nothing
    authors = Pool(AUTHORS_CIFAR, CIFAR) if AUTHORS_CIFAR.is_dir() else None
    if authors is not None:
        costs = study.poe_costs(authors, tmp_path / "none")
        assert all(c["seconds"] is None for c in costs["stages"].values()) and not costs["recorded"]


def test_break_even_is_preprocessing_over_the_per_query_saving():
    summary = {"2": {"PoE": {"build_ms": 2000.0},  # a slow query (2 s), so that q shows in k
                     "Transfer": {"time_to_poe_accuracy_s": 32.0, "time_to_model_s": 38.0},
                     "Scratch": {"time_to_poe_accuracy_s": None, "time_to_model_s": 182.0}}}
    rows = study.break_even({"total_s": 900.0}, summary, ["Transfer", "Scratch"])
    transfer, scratch = rows
    assert transfer["queries_vs_reaching"] == 30 and transfer["queries_vs_model"] == 25  # ⌈900/30⌉, ⌈900/36⌉
    assert scratch["queries_vs_reaching"] is None and scratch["queries_vs_model"] == 5   # never reached PoE
    # a pool without a recorded cost gets no break-even at all
    assert all(r["queries_vs_reaching"] is None and r["queries_vs_model"] is None
               for r in study.break_even({"total_s": None}, summary, ["Transfer", "Scratch"]))


# -- the validation split: held out of training, the curves and the crossing read on it ---------
def test_crossing_is_the_first_validation_epoch_reaching_poe_and_the_ratio_uses_its_time(monkeypatch):
    """The curve is read on validation, never on the test set; the ratio divides the crossing
    epoch's time (getting ready + the epochs up to it) by PoE's median query time."""
    history = [{"epoch": 1, "seconds": 10.0, "val_top1_pct": 50.0, "test_top1_pct": 80.0},
               {"epoch": 2, "seconds": 10.0, "val_top1_pct": 61.0, "test_top1_pct": 60.0},
               {"epoch": 3, "seconds": 10.0, "val_top1_pct": 58.0, "test_top1_pct": 90.0},
               {"epoch": 4, "seconds": 10.0, "val_top1_pct": 70.0, "test_top1_pct": 70.0}]
    meta = {"history": history, "setup_s": 5.0, "train_s": 40.0, "time_to_model_s": 45.0, "teachers_s": 0.0}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    monkeypatch.setattr(study, "obtain", lambda setup, method, query: (model, meta))
    setup = types.SimpleNamespace(read_on="val", poe_target="val", accuracy=lambda m, q: 42.0,
                                  profile=types.SimpleNamespace(input_shape=(3, 4, 4)))
    poe = {"accuracy_pct": 75.0, "val_accuracy_pct": 60.0, "build_ms": 25.0}
    row = study.method_row(setup, "Transfer", None, poe)
    assert row["epoch_reaching_poe"] == 2 and row["time_to_poe_accuracy_s"] == 25.0  # 5 + 10 + 10
    assert row["ratio_to_poe_query_time"] == 1000.0  # 25 s / 25 ms
    assert row["accuracy_pct"] == 42.0  # the final accuracy: the test set's, last epoch
    # a pool whose experts learnt the validation images: PoE's test accuracy is the line to reach
    setup.poe_target = "test"
    row = study.method_row(setup, "Transfer", None, poe)
    assert row["epoch_reaching_poe"] is None and row["ratio_lower_bound"] == 1800.0  # 45 s / 25 ms


def test_baselines_train_without_the_validation_split_which_is_the_pools(tmp_path):
    """The split is drawn on the whole training set per class, as the pool's stages draw it: a
    query's training and validation images are disjoint, together its training images, and its
    validation images are exactly the pool's split of its classes."""
    train, test = DEMO.load()
    split = ValidationSplit(12, 3)
    setup = Setup(profile=DEMO, pool=None, data=(train, test), out=tmp_path, budgets={}, batch_size=64,
                  device=torch.device("cpu"), amp="none", seed=0, split=split)
    q = Query.of(["rings", "disks"], DEMO.hierarchy)
    fit_on, val = setup.subset(q, "train"), setup.subset(q, "val")
    assert len(val) == 12 * 6 and len(fit_on) + len(val) == len(q.subset(train))
    rows = {bytes(x.numpy()) for x in fit_on.images}
    assert not rows & {bytes(x.numpy()) for x in val.images}
    _, pools_val = split.apply(train)  # what Run_preprocessing.py holds out with the same flags
    assert torch.equal(val.images, q.subset(pools_val).images) and torch.equal(val.labels, q.subset(pools_val).labels)
    assert setup.read_on == "val" and setup.train_loader(q).data is fit_on


def test_the_split_is_the_pools_own_where_its_experts_record_one(tmp_path):
    train, _ = DEMO.load()
    recorded = ValidationSplit(10, 4).describe(train)
    pool = make_pool(tmp_path / "pool", DEMO)
    for t in ("disks", "rings"):
        pool.save_expert(t, DEMO.architecture.expert(3), validation=recorded)
    split, info = study.validation_split(pool, ["disks", "rings"], train)
    assert (split.per_class, split.seed) == (10, 4) and info["poe_trained_on_val"] is False
    with pytest.raises(PoEError, match="validation split"):
        study.validation_split(pool, ["disks"], train, per_class=20, seed=4)
    # a pool recording none: one is drawn (a tenth of the smallest class by default), and PoE learnt it
    split, info = study.validation_split(make_pool(tmp_path / "plain", DEMO), ["disks"], train)
    assert (split.per_class, split.seed) == (12, 0) and info["poe_trained_on_val"] is True


# -- the study sharded across processes ----------------------------------------------------------
TIMES = {"time_s", "time_to_model_s", "setup_s", "train_s", "teachers_s", "training_wall_s",
         "teachers_training_wall_s", "time_to_poe_accuracy_s", "ratio_to_poe_query_time", "ratio_lower_bound",
         "build_ms", "build_p90_ms", "builds_ms", "seconds", "notes"}


def without_times(x):
    """A result with every wall-time figure left out: what two runs of the same study must share."""
    if isinstance(x, dict):
        return {k: without_times(v) for k, v in x.items() if k not in TIMES}
    if isinstance(x, list):
        return [without_times(v) for v in x]
    return x


@pytest.mark.slow
def test_two_processes_share_the_queries_and_merge_one_processs_result(tmp_path):
    """torchrun with 2 CPU processes: each takes every other query (and half the single-task teachers),
    writes its share, and the first merges them into the report one process writes: the same queries
    in the same order, the same accuracies, curves, crossings, sizes and teachers (bitwise: each
    process trains with one thread, as the single process does); only the times differ."""
    worker = ROOT / "tests" / "baselines_worker.py"
    pool = make_pool(tmp_path / "pool", DEMO, experts=DEMO.hierarchy).root
    common = ["--dataset", "demo", "--db", str(pool), "--tasks", "disks", "rings", "stripes", "--sizes", "1", "2",
              "--methods", "Transfer", "CKD", "SD_Scratch", "--teacher", "library-student", "--epochs_network", "1",
              "--epochs_head", "2", "--cache_views", "1", "--amp", "none", "--threads", "1"]
    docs = {}
    for name, launcher in (("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2"])):
        report = tmp_path / f"{name}.json"
        proc = subprocess.run([*launcher, str(worker), *common, "--out", str(tmp_path / name), "--json", str(report)],
                              capture_output=True, text=True, cwd=ROOT, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        docs[name] = json.loads(report.read_text())
    one, two = docs["one"], docs["two"]
    assert two["settings"]["processes"] == 2 and one["settings"]["processes"] == 1
    assert len(two["shares_wall_s"]) == 2 and len(two["first_builds"]) == 2  # each process's first build, apart
    assert sorted((tmp_path / "two" / "shares").glob("*.json")) and not (tmp_path / "one" / "shares").exists()
    assert [q["tasks"] for q in two["queries"]] == [q["tasks"] for q in one["queries"]]
    assert len(one["queries"]) == 6
    assert without_times(two["queries"]) == without_times(one["queries"])
    assert without_times(two["summary"]) == without_times(one["summary"])
    assert without_times(two["teachers"]) == without_times(one["teachers"])
    assert two["poe_costs"] == one["poe_costs"] and two["methods"] == one["methods"]
    # the per-query scatter plot (PoE against Transfer and CKD) beside the curves' plot
    assert (tmp_path / "two_scatter.png").read_bytes()[:4] == b"\x89PNG"
    # every model trained once, by one of the two processes
    assert len(list((tmp_path / "two" / "Scratch").glob("*.pt"))) == 3


def test_models_stored_before_init_and_split_existed_keep_their_files(tmp_path):
    """--init authors --val_per_class 0 is what every stored model had: their signatures (hence their
    files) are unchanged; PyTorch's init or a split make other models."""
    def sig(**kw):
        setup = Setup(profile=DEMO, pool=None, data=DEMO.load(), out=tmp_path, budgets={"network": Budget(2, 0.1, ())},
                      batch_size=64, device=torch.device("cpu"), amp="none", seed=0, **kw)
        return training.signature(setup, "Scratch", Query.of(["disks"], DEMO.hierarchy))

    assert set(sig(init="authors")) == {"method", "dataset", "tasks", "seed", "budget"}
    assert sig(init="torch")["init"] == "torch" and "validation" not in sig(init="torch")
    assert sig(init="authors", split=ValidationSplit(12, 0))["validation"]["per_class"] == 12
