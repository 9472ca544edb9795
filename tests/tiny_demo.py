"""The demo profile on a few random images, for tests that run the real stages quickly: the
networks, losses, loaders and pool are the real ones, the data tiny."""
import dataclasses

import torch

from Demo import PROFILE as DEMO
from poe.data import ArrayDataset
from poe.pool import Pool
from poe.preprocess import Preprocessor
from poe.profiles import Budget


def tiny_profile(n_train=48, n_test=24, data_seed=0):
    g = torch.Generator().manual_seed(data_seed)
    c = DEMO.num_classes
    train = ArrayDataset(torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8),
                         torch.arange(n_train) % c)
    test = ArrayDataset(torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8),
                        torch.arange(n_test) % c)
    return dataclasses.replace(DEMO, load=lambda root=None, download=False: (train, test), batch_size=16)


def make_pool(root, profile, experts=()):
    """A pool holding a random-init library and library-student head, and a random-init expert for
    each task in `experts` (seeded: the same every call). No training: for tests that need a pool's
    files, not its skill."""
    torch.manual_seed(1)
    pool = Pool(root, profile)
    arch = profile.architecture
    pool.save_library(arch.library())
    pool.save_student_head(arch.student_head())
    for task in experts:
        pool.save_expert(task, arch.expert(len(profile.hierarchy[task])))
    return pool


def preprocessor(pool, profile, epochs=2, **kw):
    """Expert budget: `epochs` epochs, lr 0.1, ×0.1 after epoch 1; the other stages 1 epoch."""
    budgets = {"oracle": Budget(1, 0.1, ()), "library": Budget(1, 0.1, ()), "expert": Budget(epochs, 0.1, (1,))}
    return Preprocessor(profile, pool, pool.root / "pre", data_root=None, download=False,
                        batch_size=profile.batch_size, budgets=budgets, device=torch.device("cpu"), amp="none",
                        seed=3, **kw)
