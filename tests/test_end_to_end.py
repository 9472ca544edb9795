"""The whole pipeline on the demo dataset at a minimal budget: preprocessing, service, export, and
accuracies a correct pipeline reaches at that budget."""
import json
import re
import subprocess
import sys

import pytest
import torch

import Run_preprocessing
import Run_Service
from helpers import DEMO_E2E_TASKS as TASKS, EXPERTS_FLOOR, ORACLE_FLOOR, QUERY_FLOOR  # the floors: why, there
from poe.cli import run



@pytest.fixture
def built(demo_pool_alone):  # conftest.py: built once, shared with tests/test_torchrun.py
    return demo_pool_alone


@pytest.mark.slow  # trains the whole pool (Oracle, library student, experts)
def test_preprocessing_fills_the_db_and_is_skipped_when_rerun(built, capsys):
    root, argv = built
    assert (root / "pre" / "oracle.pt").is_file() and (root / "pre" / "library_student.pt").is_file()
    assert not list(root.rglob("*.resume.pt")), "resume files are removed once a stage is done"
    manifest = json.loads((root / "pool" / "manifest.json").read_text())
    assert sorted(manifest["experts"]) == sorted(TASKS)
    assert manifest["experts"]["rings"]["loss"] == "soft+scale" and manifest["experts"]["rings"]["teacher"] == "oracle"
    expert = torch.load(root / "pool" / "experts" / "rings.pt", weights_only=True)
    assert expert["meta"]["budget"]["epochs"] == 1 and expert["meta"]["dataset"] == "demo"
    oracle = torch.load(root / "pre" / "oracle.pt", weights_only=True)["meta"]
    assert oracle["metrics"]["test_top1_pct"] >= ORACLE_FLOOR
    own = [manifest["experts"][t]["metrics"]["own_classes_top1_pct"] for t in TASKS]
    assert sum(own) / len(own) >= EXPERTS_FLOOR, own
    capsys.readouterr()
    assert run(Run_preprocessing.main, argv) == 0
    out = capsys.readouterr().out
    assert "already in the pool: rings, disks, stripes" in out and not re.search(r"epoch \d+/\d+:", out)  # no training


@pytest.mark.slow  # a subprocess runs the export
def test_service_reports_and_exports_a_standalone_model(built, capsys, tmp_path):
    root, _ = built
    report_path, model_path = tmp_path / "report.json", tmp_path / "model.pt2"
    code = run(Run_Service.main, ["--dataset", "demo", "--db", str(root / "pool"), "--queriedTask", *TASKS,
                                  "--json", str(report_path), "--export", str(model_path)])
    out = capsys.readouterr().out
    assert code == 0 and "accuracy" in out and "build time" in out
    report = json.loads(report_path.read_text())
    for key in ("tasks", "num_classes", "accuracy_pct", "cross_expert_pct", "params", "flops", "build_ms"):
        assert key in report
    assert report["num_classes"] == 9 and report["images"] == 9 * 40 and report["accuracy_pct"] >= QUERY_FLOOR
    assert report["class_ids"] == sorted(report["class_ids"]) and report["flops"] > 0

    # Plain PyTorch, none of this project's code, loads and runs the export.
    script = ("import json, sys, torch\n"
              "extra = {'poe_classes.json': ''}\n"
              "m = torch.export.load(sys.argv[1], extra_files=extra).module()\n"
              "info = json.loads(extra['poe_classes.json'])\n"
              "print(json.dumps({'shape': list(m(torch.zeros(5, 3, 32, 32)).shape), 'ids': info['class_ids'],"
              " 'names': info['class_names']}))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(model_path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["shape"] == [5, 9] and loaded["ids"] == report["class_ids"]
    assert loaded["names"] == report["class_names"]
