"""The pool store: a write that fails half-way leaves the previous file intact and no temporary
file behind (checkpoints, the manifest, reports); a checkpoint from another dataset or with
another class list is refused."""
import dataclasses
import io
import os
import shutil

import pytest
import torch

import Run_Service
import poe.checkpoint
from Demo import PROFILE as DEMO
from CIFAR100 import PROFILE as CIFAR
from poe.cli import run
from poe.errors import PoEError
from poe.pool import Pool


def disk_full():
    return OSError(28, "No space left on device")


@pytest.fixture
def pool(tmp_path):
    torch.manual_seed(0)
    pool = Pool(tmp_path / "pool", DEMO)
    pool.save_library(DEMO.architecture.library())
    pool.save_expert("disks", DEMO.architecture.expert(3), loss="soft+scale")
    return pool


def snapshot(root):
    """Every file under root (hidden temporary files included) with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_checkpoint_write_that_fails_half_way_changes_nothing(pool, monkeypatch):
    before = snapshot(pool.root)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise disk_full()

    monkeypatch.setattr(poe.checkpoint.torch, "save", save_half_then_fail)
    with pytest.raises((OSError, PoEError), match="No space"):  # PoEError: one line from the CLIs
        pool.save_expert("disks", DEMO.architecture.expert(3), loss="soft")
    assert snapshot(pool.root) == before  # old expert and manifest intact, no temporary file
    monkeypatch.undo()
    assert pool.load_expert("disks") is not None


class HalfWrittenFile:
    """A file object whose write stores half of the data, then fails as a full disk would."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise disk_full()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def failing_text_writes(monkeypatch):
    """Every atomic text/bytes write (manifest, reports, plots) fails half-way."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfWrittenFile(real_fdopen(fd, *a, **k)))


def test_a_manifest_write_that_fails_half_way_leaves_the_old_manifest(pool, monkeypatch):
    manifest = (pool.root / "manifest.json").read_bytes()
    failing_text_writes(monkeypatch)
    with pytest.raises((OSError, PoEError), match="No space"):  # PoEError: one line from the CLIs
        pool.save_expert("rings", DEMO.architecture.expert(3))
    monkeypatch.undo()
    assert (pool.root / "manifest.json").read_bytes() == manifest
    assert not [p for p in pool.root.rglob("*") if p.name.endswith(".tmp")]


def test_a_report_write_that_fails_half_way_leaves_the_old_report(pool, tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.json"
    argv = ["--dataset", "demo", "--db", str(pool.root), "--queriedTask", "disks", "--no-eval", "--json", str(report)]
    assert run(Run_Service.main, argv) == 0
    old = report.read_bytes()
    failing_text_writes(monkeypatch)
    capsys.readouterr()
    assert run(Run_Service.main, argv) == 2  # one error line, no traceback
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert report.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool", "report.json"]


def test_a_checkpoint_from_another_dataset_is_refused(pool, tmp_path):
    """CIFAR-100's library has the demo's architecture (WRN-16-1 front): only its dataset tells them apart."""
    cifar = Pool(tmp_path / "cifar", CIFAR)
    cifar.save_library(CIFAR.architecture.library())
    shutil.copy(cifar.library_path, pool.library_path)
    with pytest.raises(PoEError, match="built for dataset 'cifar100', not 'demo'"):
        pool.load_library()


def test_an_expert_for_another_class_list_is_refused(pool, tmp_path):
    """A task redefined with other classes (e.g. by a task file) keeps its name and class count: the
    expert trained for the old classes must not answer for the new ones."""
    redefined = dataclasses.replace(DEMO, hierarchy={**DEMO.hierarchy, "disks": [0, 1, 5]})
    other = Pool(tmp_path / "other", redefined)
    other.save_expert("disks", redefined.architecture.expert(3))
    shutil.copy(other.expert_path("disks"), pool.expert_path("disks"))
    with pytest.raises(PoEError, match=r"trained for classes \[0, 1, 5\]"):
        pool.load_expert("disks")
    with pytest.raises(PoEError, match=r"trained for classes \[0, 1, 5\]"):
        pool.expert_state("disks")  # the fused service's way in
