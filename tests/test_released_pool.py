"""The CIFAR-100 pool the repository ships (DB_pretrained/cifar100, DB_PoE/cifar100; made by
`--budget cpu`, results/pipeline_cifar100.md): complete, consistent, compact, and answering queries
with the accuracy the result file reports."""
import json
import subprocess

import pytest
import torch

import Run_Service
from CIFAR100 import PROFILE
from helpers import ROOT
from poe.cli import run
from poe.pool import Pool
from poe.preprocess import Preprocessor, library_fingerprint

POOL, PRETRAINED = ROOT / "DB_PoE" / "cifar100", ROOT / "DB_pretrained" / "cifar100"
RESULT = ROOT / "results" / "pipeline_cifar100_query.json"  # Run_Service.py --json of QUERY, when released
QUERY = ["people", "vehicles_1", "vehicles_2"]

pytestmark = pytest.mark.skipif(not (POOL / "manifest.json").is_file(),
                                reason=f"no released pool in {POOL} (it is committed with the repository)")


def test_the_pool_is_complete_and_its_experts_belong_to_its_library():
    pool = Pool(POOL, PROFILE)
    manifest = pool.manifest()
    fingerprint = library_fingerprint(pool.load_library())
    assert manifest["library"]["fingerprint"] == fingerprint
    assert sorted(pool.experts_available()) == sorted(PROFILE.default_tasks)
    for task in PROFILE.default_tasks:
        entry = manifest["experts"][task]
        assert entry["library"] == fingerprint and entry["loss"] == "soft+scale" and entry["teacher"] == "oracle"
        pool.load_expert(task)  # strict load, class list checked
    pool.load_student_head()


def test_the_oracle_loads_with_its_own_shape_under_the_default_budget():
    pre = Preprocessor(PROFILE, Pool(POOL, PROFILE), PRETRAINED, data_root=None, download=False, batch_size=512,
                       budgets=PROFILE.budgets, device=torch.device("cpu"), amp="none", seed=0)
    oracle = pre.oracle()  # the paper's profile says WRN-40-4; the checkpoint says WRN-16-4
    assert sum(p.numel() for p in oracle.parameters()) == sum(
        p.numel() for p in PROFILE.with_budget("cpu").architecture.oracle().parameters())


def test_the_released_files_are_compact():
    tracked = subprocess.run(["git", "ls-files", "DB_PoE/cifar100", "DB_pretrained/cifar100"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert sum((ROOT / f).stat().st_size for f in tracked) < 12e6


def test_the_service_answers_from_it_with_the_reported_accuracy(cifar_root, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert run(Run_Service.main, ["--dataset", "cifar100", "--data_root", str(cifar_root), "--queriedTask", *QUERY,
                                  "--json", str(report)]) == 0
    got = json.loads(report.read_text())
    expected = json.loads(RESULT.read_text())
    assert got["tasks"] == expected["tasks"] and got["images"] == expected["images"] == 1500
    # Another CPU's kernels may round differently and flip a borderline image or two.
    assert got["accuracy_pct"] == pytest.approx(expected["accuracy_pct"], abs=0.2)


def test_the_released_pool_is_what_the_cpu_budget_builds():
    """Read from the files' own metadata: `Run_preprocessing.py --budget cpu` on this pool has
    nothing to do (the same Oracle and student budgets, the experts' budget, cached views and
    validation split), so one command reproduces it."""
    preset = PROFILE.with_budget("cpu")
    pre = Preprocessor(preset, Pool(POOL, preset), PRETRAINED, data_root=None, download=False, batch_size=512,
                       budgets=preset.budgets, device=torch.device("cpu"), amp="none", seed=0)
    for name, stage in (("oracle", "oracle"), ("library_student", "library")):
        meta = torch.load(PRETRAINED / f"{name}.pt", weights_only=True)["meta"]
        assert {k: meta["budget"][k] for k in ("epochs", "lr", "schedule", "batch_size")} == \
            {k: pre._budget_meta(stage)[k] for k in ("epochs", "lr", "schedule", "batch_size")}
    for task in PROFILE.default_tasks:
        entry = pre.pool.manifest()["experts"][task]
        assert entry["budget"] == pre._budget_meta("expert")
        assert entry["extraction"]["views"] == preset.cache_views
        assert (entry.get("validation") or {}).get("per_class", 0) == preset.val_per_class
