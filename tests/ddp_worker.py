"""What tests/test_distributed.py runs in each process, under torchrun or alone:

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py OUT      # 2 CPU processes (gloo)
    python tests/ddp_worker.py OUT                                          # 1 process

On a few real demo images: (1) a WRN-16-1 (the demo's library student, with BatchNorm) trained as
an Oracle by poe.train.fit for 2 epochs at a global batch of 64; (2) an interrupted run resumed to the same 2 epochs; (3) three
experts trained from the feature cache (tasks and views divided among the ranks), and (4) the same
experts trained live (tasks divided among the ranks). Rank 0 writes
OUT/result.pt; the experts go into the pool OUT/pool.
"""
import dataclasses
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from Demo import PROFILE as DEMO  # noqa: E402
from Demo.synthetic import make_demo  # noqa: E402
from poe import distributed  # noqa: E402
from poe.data import ArrayDataset  # noqa: E402
from poe.pool import Pool  # noqa: E402
from poe.preprocess import Preprocessor, library_fingerprint  # noqa: E402
from poe.profiles import Budget  # noqa: E402
from poe.train import fit  # noqa: E402

# Every file the project writes lands by os.replace (atomic writes, feature-cache views): logged per
# rank, so the test sees which rank wrote what.
WRITTEN = []
_replace = os.replace


def logged_replace(src, dst, *args, **kwargs):
    WRITTEN.append(str(dst))
    return _replace(src, dst, *args, **kwargs)


os.replace = logged_replace

BATCH = 64           # the global batch, whatever the number of processes
TRAIN_IMAGES = 149   # 64 + 64 + 21: the last batch splits unevenly (11 + 10) over 2 processes
BUDGET = Budget(2, 0.1, (1,))
TASKS = ["disks", "rings", "stripes"]


def small_demo():
    """The demo profile on 7 generated images per class (149 of them for training)."""
    d = make_demo(0, train_per_class=7, test_per_class=2)
    train = ArrayDataset.from_hwc(d["train_x"][:TRAIN_IMAGES], d["train_y"][:TRAIN_IMAGES])
    test = ArrayDataset.from_hwc(d["test_x"], d["test_y"])
    return dataclasses.replace(DEMO, load=lambda root=None, download=False: (train, test), batch_size=BATCH)


def initial_oracle(profile, seed=0):
    """A small WRN with the demo's 24 classes (the student network: 4x cheaper than the demo Oracle)."""
    torch.manual_seed(seed)
    return profile.architecture.student()


def train_oracle(profile, model, budget, resume_path, loss=None, history_path=None, world=None):
    """fit() as Preprocessor.oracle calls it; `loss(net, x, y)` replaces cross-entropy (tests)."""
    world = world or distributed.world()
    net = distributed.wrap(model, torch.device("cpu"))
    loader = profile.train_loader(profile.load()[0], BATCH, seed=0, world=world)
    batch_loss = (lambda x, y: loss(net, x, y)) if loss else (lambda x, y: F.cross_entropy(net(x), y))
    return fit(net, batch_loss, loader, budget, resume_path=resume_path, signature={"test": "ddp"},
               device=torch.device("cpu"), desc="oracle", history_path=history_path)


def experts(profile, root: Path, source: str = "cache", folder: str = "pool"):
    """Three experts into the pool root/<folder> (random library, student head as teacher), from the
    feature cache or live (library and teacher recomputed every batch)."""
    pool = Pool(root / folder, profile)

    def save():
        torch.manual_seed(1)
        pool.save_library(profile.architecture.library())
        pool.save_student_head(profile.architecture.student_head())

    distributed.main_writes(save)
    pre = Preprocessor(profile, pool, root / "pre", data_root=None, download=False, batch_size=BATCH,
                       budgets={**profile.budgets, "expert": Budget(2, 0.1, (1,))}, device=torch.device("cpu"),
                       amp="none", seed=3, expert_source=source, cache_views=2, cache_dtype="float32")
    return pre.experts(TASKS, "soft+scale", "library-student", None)


def main(out: Path) -> None:
    distributed.setup(torch.device("cpu"))
    world = distributed.world()
    torch.set_num_threads(1)
    profile = small_demo()
    model = initial_oracle(profile)
    history = train_oracle(profile, model, BUDGET, out / "full.resume.pt", history_path=out / "history.csv")
    models = distributed.gather(library_fingerprint(model))  # each rank's trained model, parameters and buffers
    # An interrupted run (1 of the 2 epochs, resume file kept), then the 2-epoch run resumed from it
    # with other initial weights, which the resume file must replace.
    train_oracle(profile, initial_oracle(profile), dataclasses.replace(BUDGET, epochs=1), out / "part.resume.pt")
    resumed = initial_oracle(profile, seed=5)
    train_oracle(profile, resumed, BUDGET, out / "part.resume.pt")
    scores = experts(profile, out)
    written = [[str(Path(p).relative_to(out)) for p in paths] for paths in distributed.gather(WRITTEN)]
    live_scores = experts(profile, out, source="live", folder="pool_live")
    if world.is_main:
        torch.save({"world_size": world.size, "oracle": model.state_dict(), "history": history,
                    "resumed": resumed.state_dict(), "expert_scores": scores,
                    "rank_models": models, "written": written,
                    "live_scores": live_scores}, out / "result.pt")


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    finally:
        distributed.cleanup()
