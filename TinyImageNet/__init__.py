"""Tiny-ImageNet profile: 200 classes of 64×64 images, read as downloaded (see reader.py).

Networks (key-compatible with the PoE authors' published Tiny checkpoints): Oracle WRN-16-10 and
library student WRN-16-2, both with a stride-2 first convolution (64×64 -> 32×32, then the CIFAR
layout); library = conv1+block1+block2 (64 ch @ 16×16); expert = block3 64→16 + BN + FC.
Primitive tasks: the authors' 34 groups; the paper's six by default. Settings as for CIFAR-100
(batch 512, SGD lr 0.1; Oracle/library 200 epochs ×0.1 at 80/160, experts 100 epochs ×0.1 at
40/80); random crop 64 pad 8 + flip, ImageNet mean/std.
"""
from pathlib import Path

from poe.folders import read_class_table
from poe.networks import WRNArchitecture, WRNConfig
from poe.profiles import Budget, Profile

from . import reader

WNIDS, CLASS_NAMES, HIERARCHY = read_class_table(Path(__file__).with_name("hierarchy.json"))


def load(data_root, download=False):
    return reader.load(data_root, WNIDS, download)


PROFILE = Profile(
    name="tinyimagenet",
    title="Tiny-ImageNet",
    class_names=CLASS_NAMES,
    hierarchy=HIERARCHY,
    default_tasks=["arachnid", "canine", "feline", "bird", "ungulate", "vertebrate_etc"],
    task_aliases={"baririer": "barrier"},  # the authors' spelling
    architecture=WRNArchitecture(oracle=WRNConfig(16, 10, stem_stride=2), student=WRNConfig(16, 2, stem_stride=2),
                                 expert_width=16, num_classes=len(CLASS_NAMES)),
    budgets={"oracle": Budget(200, 0.1, (80, 160)), "library": Budget(200, 0.1, (80, 160)),
             "expert": Budget(100, 0.1, (40, 80))},
    batch_size=512,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    crop_padding=8,
    image_size=64,
    load=load,
    data_hint="DIR/tiny-imagenet-200/{wnids.txt,train/,val/} (tiny-imagenet-200.zip unpacked as is)",
    authors_files={"library": "Library/library_TinyImageNet.pt",
                   "student_head": "student_for_library/classifier_TinyImageNet.pt"},
    wnids=WNIDS,
)
