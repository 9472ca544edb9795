"""The whole pipeline on the demo dataset at a minimal budget: preprocessing, service, export."""
import json
import subprocess
import sys

import pytest
import torch

import Run_preprocessing
import Run_Service
from poe.cli import run

TASKS = ["rings", "disks", "stripes"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    argv = ["--dataset", "demo", "--db", str(root / "pool"), "--pretrained_db", str(root / "pre"),
            "--epochs_oracle", "1", "--epochs_library", "1", "--epochs_expert", "1", "--tasks", *TASKS]
    assert run(Run_preprocessing.main, argv) == 0
    return root, argv


def test_preprocessing_fills_the_db_and_is_skipped_when_rerun(built, capsys):
    root, argv = built
    assert (root / "pre" / "oracle.pt").is_file() and (root / "pre" / "library_student.pt").is_file()
    assert not list(root.rglob("*.resume.pt")), "resume files are removed once a stage is done"
    manifest = json.loads((root / "pool" / "manifest.json").read_text())
    assert sorted(manifest["experts"]) == sorted(TASKS)
    assert manifest["experts"]["rings"]["loss"] == "soft+scale" and manifest["experts"]["rings"]["teacher"] == "oracle"
    expert = torch.load(root / "pool" / "experts" / "rings.pt", weights_only=True)
    assert expert["meta"]["budget"]["epochs"] == 1 and expert["meta"]["dataset"] == "demo"
    capsys.readouterr()
    assert run(Run_preprocessing.main, argv) == 0
    out = capsys.readouterr().out
    assert "already in the pool: rings, disks, stripes" in out and "epoch" not in out


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
    assert report["num_classes"] == 9 and report["images"] == 9 * 40 and 0 <= report["accuracy_pct"] <= 100
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
