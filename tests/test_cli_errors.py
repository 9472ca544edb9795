"""Bad input: one clear `error:` line on stderr, a non-zero exit, nothing half-written."""
import re
import subprocess
import sys

import pytest
import torch

import Run_Baselines
import Run_preprocessing
import Run_Service
import Run_Table6
from helpers import ROOT, make_pool
from Demo import PROFILE
from poe.cli import run
from poe.pool import Pool


@pytest.fixture
def pool_dir(tmp_path):
    """A demo pool with random-init library and experts (no training needed for these tests)."""
    return make_pool(tmp_path / "pool", PROFILE, experts=("disks", "rings")).root


def service(argv, capsys):
    code = run(Run_Service.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unknown_task_lists_the_valid_ones(pool_dir, capsys):
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "dragons"], capsys)
    line = one_error_line(err)
    assert code == 2 and "dragons" in line and "disks" in line and "blobs" in line


def test_duplicate_and_empty_queries(pool_dir, capsys):
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "disks", "disks"], capsys)
    assert code == 2 and "more than once" in one_error_line(err)
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask"], capsys)
    assert code == 2 and "empty" in one_error_line(err)


def test_task_without_expert_says_how_to_build_it(pool_dir, capsys, tmp_path):
    report = tmp_path / "r.json"
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "disks", "blobs",
                            "--json", str(report)], capsys)
    line = one_error_line(err)
    assert code == 2 and "blobs" in line and "Run_preprocessing.py" in line and "--tasks blobs" in line
    assert not report.exists()


@pytest.mark.parametrize("damage, message", [
    ("missing", "no library in"),
    ("truncated", "truncated"),
    ("foreign", "not a PoE checkpoint"),
    ("wrong_shape", "wrong shapes"),
    ("wrong_kind", "expected 'expert'"),
])
def test_bad_checkpoints(pool_dir, capsys, damage, message):
    path = pool_dir / "experts" / "disks.pt"
    if damage == "missing":
        path = pool_dir / "library.pt"
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "foreign":
        torch.save({"weights": [1, 2, 3]}, path)
    elif damage == "wrong_shape":
        torch.save(PROFILE.architecture.expert(7).state_dict(), path)  # a plain state_dict, 7 classes
    elif damage == "wrong_kind":
        Pool(pool_dir, PROFILE)._save(path, "library", PROFILE.architecture.library(), {})
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "disks", "rings",
                            "--no-eval"], capsys)
    assert code == 2 and message in one_error_line(err)


def test_missing_data(capsys, tmp_path):
    code = run(Run_preprocessing.main, ["--dataset", "cifar100", "--data_root", str(tmp_path),
                                        "--db", str(tmp_path / "pool"), "--pretrained_db", str(tmp_path / "pre")])
    err = capsys.readouterr().err
    assert code == 2 and "CIFAR-100 not found" in one_error_line(err)
    assert not (tmp_path / "pre" / "oracle.pt").exists()


def test_list_works_without_data_and_marks_experts(pool_dir, capsys):
    code, out, _ = service(["--dataset", "demo", "--db", str(pool_dir), "--list"], capsys)
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == list(PROFILE.hierarchy)
    assert lines[0].split()[1] == "expert" and lines[1].split()[1] == "no-expert"


def test_cifar_list_without_data(capsys, tmp_path):
    code, out, _ = service(["--dataset", "cifar100", "--db", str(tmp_path), "--list"], capsys)
    assert code == 0 and len(out.splitlines()) == 20 and "medium-sized_mammals" in out


@pytest.mark.slow  # a subprocess
def test_entry_point_exit_status_and_stderr(pool_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "Run_Service.py"), "--dataset", "demo", "--db", str(pool_dir),
                           "--queriedTask", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and one_error_line(proc.stderr).startswith("error: unknown task")


@pytest.mark.parametrize("tool, flag", [(Run_preprocessing, "--epochs_oracle"), (Run_preprocessing, "--epochs_library"),
                                        (Run_preprocessing, "--epochs_expert"), (Run_preprocessing, "--batch_size"),
                                        (Run_Table6, "--epochs_expert"), (Run_Table6, "--batch_size"),
                                        (Run_preprocessing, "--cache_views"), (Run_Baselines, "--epochs_network"),
                                        (Run_Baselines, "--epochs_head"), (Run_Baselines, "--batch_size"),
                                        (Run_Baselines, "--cache_views"), (Run_Baselines, "--queries")])
def test_zero_budgets_are_refused_not_read_as_the_default(tool, flag, capsys, tmp_path):
    """0 once meant "the profile's default" and ran the full budget; now every count must be >= 1.
    (No data under --data_root: were the flag accepted, the run would stop on the missing data.)"""
    for value in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as exit_info:
            run(tool.main, ["--dataset", "cifar100", "--data_root", str(tmp_path), "--db", str(tmp_path / "pool"),
                            "--pretrained_db", str(tmp_path / "pre"), flag, value])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert exit_info.value.code == 2 and len(errors) == 1, err
        message = f"expected a whole number, got {value!r}" if value == "two" else \
            f"must be at least 1, got {value!r} (leave the flag out for the default)"
        assert re.search(rf"error: argument {flag}(/\S+)?: {re.escape(message)}( \(see .* --help\))?$", errors[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("flag", ["--json", "--export"])
def test_unwritable_output_paths(pool_dir, capsys, tmp_path, flag):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "disks", "rings", "--no-eval"]
    for target, message in ((a_file / "out", "is a file, not a folder"), (tmp_path, "is a folder"),
                            ("/proc/poe-test/out", "cannot write")):
        code, _, err = service([*base, flag, str(target)], capsys)
        assert code == 2 and message in one_error_line(err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "pool"]  # nothing half-written


def test_unwritable_pool_folders(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for flag in ("--db", "--pretrained_db", "--cache_dir"):
        argv = ["--dataset", "demo", "--db", str(tmp_path / "pool"), "--pretrained_db", str(tmp_path / "pre"),
                flag, str(a_file / "sub")]
        code = run(Run_preprocessing.main, argv)
        assert code == 2 and f"{flag} {a_file / 'sub'}" in one_error_line(capsys.readouterr().err)
    code = run(Run_Table6.main, ["--dataset", "demo", "--db", str(tmp_path), "--markdown", str(a_file / "t.md")])
    assert code == 2 and "--markdown" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device, message", [("cuda", "no CUDA GPU"), ("cuda:3", "no CUDA GPU"),
                                             ("banana", "not a device name")])
def test_device_this_machine_lacks(pool_dir, capsys, device, message):
    code, _, err = service(["--dataset", "demo", "--db", str(pool_dir), "--queriedTask", "disks", "--no-eval",
                            "--device", device], capsys)
    assert code == 2 and message in one_error_line(err)


def test_damaged_manifest(pool_dir, capsys):
    (pool_dir / "manifest.json").write_text('{"experts": {"disks": ')  # cut off mid-write by another tool
    code = run(Run_preprocessing.main, ["--dataset", "demo", "--db", str(pool_dir), "--pretrained_db",
                                        str(pool_dir.parent / "pre"), "--tasks", "disks"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "manifest.json is damaged" in line and "delete it" in line
    assert not (pool_dir / ".poe-writer.lock").exists()  # the lock is given back on the way out


@pytest.mark.parametrize("tool, flags", [
    (Run_preprocessing, ["--lr_oracle", "-0.1"]),
    (Run_preprocessing, ["--lr_expert", "nan"]),
    (Run_preprocessing, ["--threads", "-2"]),
    (Run_preprocessing, ["--epochs_library", "0"]),
    (Run_preprocessing, ["--batch_size", "0"]),
    (Run_preprocessing, ["--cache_views", "0"]),
    (Run_Table6, ["--lr_expert", "-1"]),
    (Run_Table6, ["--epochs_expert", "-3"]),
    (Run_Service, ["--threads", "0"]),
    (Run_Baselines, ["--val_per_class", "-1"]),
    (Run_Baselines, ["--sizes", "0"]),
    (Run_Baselines, ["--threads", "0"]),
])
def test_numeric_flags_out_of_range(tool, flags, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        run(tool.main, ["--dataset", "demo", "--db", str(tmp_path / "pool"), *flags])
    line = one_error_line(capsys.readouterr().err)
    assert exit_.value.code == 2 and flags[0] in line and flags[1] in line
    assert not (tmp_path / "pool").exists()


def test_baselines_bad_input_is_one_line(pool_dir, capsys, tmp_path):
    """Run_Baselines.py like the others: a bad flag or query is one `error:` line and exit status 2,
    before anything is trained or written."""
    out = tmp_path / "models"
    for argv, message in [
        (["--queriedTask", "dragons"], "unknown task"),
        (["--queriedTask", "disks", "blobs"], "has no expert for blobs"),
        (["--sizes", "9"], "--sizes must lie in"),
        (["--methods", "Nope"], "invalid choice: 'Nope'"),
        (["--epochs_head", "two"], "expected a whole number, got 'two'"),
        (["--queriedTask", "disks", "--export", str(tmp_path / "m.pt2")], "exactly one --methods"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ]:
        try:
            code = run(Run_Baselines.main, ["--dataset", "demo", "--db", str(pool_dir), "--out", str(out), *argv])
        except SystemExit as exit_:  # argparse's refusals
            code = exit_.code
        assert code == 2 and message in one_error_line(capsys.readouterr().err), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]  # nothing written
