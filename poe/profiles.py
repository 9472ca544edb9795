"""Dataset profiles: what is particular to a dataset, and the registry `--dataset` reads.

A profile folder (CIFAR100/, Demo/, ...) exposes `PROFILE`, a `Profile` saying: its classes and
primitive tasks (hierarchy), the paper's default tasks, networks, training budgets, how to load
its data and how to batch it. Everything else (training, consolidation, the pool, metrics) is
shared code in this package.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .data import ArrayLoader
from .distributed import ALONE, World
from .errors import PoEError
from .task_file import read_task_file

# --dataset name -> profile package (a folder at the project root).
REGISTRY = {"cifar100": "CIFAR100", "demo": "Demo", "tinyimagenet": "TinyImageNet", "imagenet": "ImageNet"}
DEFAULT_CACHE_VIEWS = 10  # augmented views in the expert feature cache, unless a profile says otherwise


@dataclass(frozen=True)
class Budget:
    """SGD schedule of one stage: `epochs`, learning rate, ×`gamma` at each milestone epoch
    (schedule "step", the paper's) or cosine annealing to 0 over the epochs ("cosine");
    `batch_size` None = the profile's."""

    epochs: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1
    schedule: str = "step"
    batch_size: int | None = None

    def with_epochs(self, epochs: int) -> "Budget":
        """The same schedule squeezed or stretched to `epochs` (milestones scaled in proportion)."""
        if epochs == self.epochs:
            return self
        if epochs < 1:
            raise PoEError(f"epochs must be at least 1, got {epochs}")
        milestones = tuple(sorted({max(1, round(m * epochs / self.epochs)) for m in self.milestones}))
        return dataclasses.replace(self, epochs=epochs, milestones=tuple(m for m in milestones if m < epochs))

    def with_lr(self, lr: float | None) -> "Budget":
        return self if lr is None else dataclasses.replace(self, lr=lr)

    def meta(self, batch_size: int) -> dict:
        """The schedule as stored models record it (and resume signatures hold it), with the batch
        size it ran at (`batch_size`: this budget's own, or the run's where it names none)."""
        return {"epochs": self.epochs, "lr": self.lr, "schedule": self.schedule, "milestones": list(self.milestones),
                "gamma": self.gamma, "batch_size": batch_size}


@dataclass(frozen=True)
class BudgetPreset:
    """A named training budget (`--budget NAME`): the stages' schedules and, where it pays, another
    architecture (e.g. a smaller Oracle that teaches better per CPU-hour). "paper" is the profile's own."""

    description: str
    budgets: dict[str, Budget]
    architecture: object = None        # None: the profile's
    cache_views: int | None = None     # default views of the expert feature cache; None: the profile's
    amp_default: str | None = None     # default --amp; None: the profile's
    val_per_class: int | None = None   # default validation hold-out per class (poe.split); None: the profile's


@dataclass
class Profile:
    name: str                          # the --dataset value
    title: str
    class_names: list[str]             # index = global class id
    hierarchy: dict[str, list[int]]    # primitive task -> sorted class ids
    default_tasks: list[str]           # the paper's tasks
    architecture: object               # see poe.networks
    budgets: dict[str, Budget]         # "oracle", "library", "expert"
    batch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_padding: int
    image_size: int                    # square input side the networks take
    load: Callable                     # (data_root, download) -> (train, test)
    data_hint: str                     # one line: where the data goes
    authors_files: dict[str, str] = field(default_factory=dict)  # authors' published layout
    task_aliases: dict[str, str] = field(default_factory=dict)
    amp_default: str = "none"
    wnids: list[str] = field(default_factory=list)  # ImageNet synset ids of the classes, where they have them
    cache_views: int = DEFAULT_CACHE_VIEWS  # default views of the expert feature cache (poe.extract)
    budget_presets: dict[str, BudgetPreset] = field(default_factory=dict)  # --budget NAME besides "paper"
    val_per_class: int = 0             # default validation hold-out per class (poe.split); 0: none

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_loader(self, data, batch_size: int, seed: int = 0, world: World = ALONE):
        """`world`: the processes training one model together, each reading its shard (poe.distributed)."""
        return ArrayLoader(data, batch_size, self.mean, self.std, train=True,
                           pad=self.crop_padding, seed=seed, world=world)

    def eval_loader(self, data, batch_size: int = 500):
        return ArrayLoader(data, batch_size, self.mean, self.std, train=False)

    def resolve_task(self, name: str) -> str:
        name = self.task_aliases.get(name, name)
        if name not in self.hierarchy:
            raise PoEError(f"unknown task {name!r} for {self.name}; valid tasks: {', '.join(self.hierarchy)}")
        return name

    def resolve_tasks(self, names, what: str = "task list") -> list[str]:
        if not names:
            raise PoEError(f"empty {what}: name at least one of {', '.join(self.hierarchy)}")
        tasks = [self.resolve_task(n) for n in names]
        dupes = sorted({t for t in tasks if tasks.count(t) > 1})
        if dupes:
            raise PoEError(f"{what} names {', '.join(dupes)} more than once")
        return tasks

    def budget_names(self) -> list[str]:
        return ["paper", *self.budget_presets]

    def with_budget(self, name: str) -> "Profile":
        """This profile with the named budget's schedules (and architecture, if it has one)."""
        if name == "paper":
            return self
        if name not in self.budget_presets:
            raise PoEError(f"{self.name} has no budget {name!r}; choose from {', '.join(self.budget_names())}")
        preset = self.budget_presets[name]
        return dataclasses.replace(self, budgets={**self.budgets, **preset.budgets},
                                   architecture=preset.architecture or self.architecture,
                                   cache_views=preset.cache_views or self.cache_views,
                                   amp_default=preset.amp_default or self.amp_default,
                                   val_per_class=self.val_per_class if preset.val_per_class is None
                                   else preset.val_per_class)

    def pool_description(self) -> dict | None:
        """What a pool built with this profile must record to be read without it (the classes, tasks, image
        size and statistics of a profile built from an image folder: poe/folder_profile.py); None here."""
        return None

    def with_task_file(self, path) -> "Profile":
        """This profile with the user's own primitive tasks from `path` (see poe/task_file.py) added
        to its hierarchy; they become the default tasks."""
        tasks = read_task_file(path, self.class_names, self.wnids, self.hierarchy)
        return dataclasses.replace(self, hierarchy={**self.hierarchy, **tasks}, default_tasks=list(tasks))


def read_hierarchy(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    with open(path) as f:
        d = json.load(f)
    return d["class_names"], {k: sorted(v) for k, v in d["tasks"].items()}


def get_profile(name: str) -> Profile:
    if name not in REGISTRY:
        raise PoEError(f"unknown dataset {name!r}; choose from {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name]).PROFILE
