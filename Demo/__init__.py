"""Demo profile: a small synthetic, hierarchical 32×32 dataset generated offline in seconds
(see synthetic.py), so the whole pipeline runs anywhere in minutes. Its numbers only show that
the pipeline works; they say nothing about CIFAR-100.

The networks are the CIFAR-100 ones (WRN-16-1 library, 16-channel experts) with a smaller
Oracle (WRN-16-2) and short budgets, so preprocessing takes a few minutes on 2 CPU cores.
"""
from functools import lru_cache

from poe.data import ArrayDataset
from poe.networks import WRNArchitecture, WRNConfig
from poe.profiles import Budget, Profile

from .synthetic import make_demo

SEED = 0


@lru_cache(maxsize=1)
def _generated():
    return make_demo(SEED)


def load(data_root=None, download=False):
    """The data is generated, not read: `data_root` is ignored."""
    d = _generated()
    return ArrayDataset.from_hwc(d["train_x"], d["train_y"]), ArrayDataset.from_hwc(d["test_x"], d["test_y"])


_names = make_demo(SEED, train_per_class=1, test_per_class=1)  # names and hierarchy only: instant
CLASS_NAMES, HIERARCHY = _names["class_names"], _names["hierarchy"]

PROFILE = Profile(
    name="demo",
    title="Demo (synthetic shapes)",
    class_names=CLASS_NAMES,
    hierarchy=HIERARCHY,
    default_tasks=list(HIERARCHY),
    architecture=WRNArchitecture(oracle=WRNConfig(16, 2), student=WRNConfig(16, 1),
                                 expert_width=16, num_classes=len(CLASS_NAMES)),
    # Sized so README's first command runs in about 5 minutes on 2 CPU cores (bf16 autocast).
    budgets={"oracle": Budget(6, 0.1, (4, 5)), "library": Budget(6, 0.1, (4, 5)),
             "expert": Budget(5, 0.1, (3, 4))},
    batch_size=128,
    mean=(0.3930, 0.3812, 0.3771),  # of the generated training set (seed 0)
    std=(0.2106, 0.2025, 0.2002),
    crop_padding=4,
    image_size=32,
    load=load,
    data_hint="nothing: the demo data is generated in memory",
    amp_default="auto",
)
