"""Every checkpoint this project reads is read with torch.load(weights_only=True): a file holding a
pickled object (which could run any function while it is unpickled) is refused with one clear
error, and its payload never runs. Each way a checkpoint is read is tried: the pool's library,
student head and experts, the stored Oracle, a resume file, a stored baseline, and the service."""
import os

import pytest
import torch
import torch.nn as nn

import Run_Service
from Demo import PROFILE as DEMO
from poe.baselines.model import load as load_baseline
from poe.cli import run
from poe.errors import PoEError
from poe.profiles import Budget
from poe.train import fit
from helpers import make_pool, preprocessor


class Payload:
    """Unpickling it calls os.mkdir(marker): as harmless as it is visible. A malicious file would
    call something else."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def plant(path, marker, kind):
    """A checkpoint of our format whose metadata carries the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "poe", "kind": kind, "state_dict": {}, "meta": {"note": Payload(marker)}}, path)


def read_oracle(pool):
    preprocessor(pool, DEMO).oracle()


def read_resume(pool):
    fit(nn.Linear(2, 2), lambda x, y: x.sum(), [], Budget(1, 0.1, ()), resume_path=pool.root / "experts.resume.pt",
        signature={}, device=torch.device("cpu"))


READERS = {  # what is planted where, and the call that reads it
    "library": ("library.pt", "library", lambda pool: pool.load_library()),
    "student head": ("student_head.pt", "student_head", lambda pool: pool.load_student_head()),
    "expert": ("experts/disks.pt", "expert", lambda pool: pool.load_expert("disks")),
    "oracle": ("pre/oracle.pt", "oracle", read_oracle),
    "resume file": ("experts.resume.pt", None, read_resume),
    "baseline": ("baseline.pt", "baseline", lambda pool: load_baseline(pool.root / "baseline.pt", DEMO)),
}


@pytest.mark.parametrize("what", list(READERS))
def test_a_pickled_object_is_refused_and_never_run(what, tmp_path):
    name, kind, read = READERS[what]
    pool = make_pool(tmp_path / "pool", DEMO, experts=["disks"])
    marker = tmp_path / "payload-ran"
    plant(pool.root / name, marker, kind)
    with pytest.raises(PoEError, match="cannot read checkpoint"):
        read(pool)
    assert not marker.exists(), "the pickled payload ran"


def test_the_service_refuses_a_pickled_expert_in_one_line(tmp_path, capsys):
    pool = make_pool(tmp_path / "pool", DEMO, experts=["disks", "rings"])
    marker = tmp_path / "payload-ran"
    plant(pool.expert_path("rings"), marker, "expert")
    for fuse in ([], ["--no-fuse"]):
        assert run(Run_Service.main, ["--dataset", "demo", "--db", str(pool.root), "--queriedTask", "disks", "rings",
                                      "--no-eval", *fuse]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "cannot read checkpoint" in err[0] and "rings.pt" in err[0], err
    assert not marker.exists(), "the pickled payload ran"
