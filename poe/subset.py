"""A dataset cut down to the classes of some of its primitive tasks (`--restrict_to TASK ...`).

The restricted profile is the same profile (networks, budgets, normalisation, reader) over fewer
classes: ids renumbered 0..K-1 in the original order, the networks' outputs K wide, the tasks whose
classes all survive kept. It makes like-for-like comparisons possible, e.g. CIFAR-100's six paper
tasks (30 classes) against the same 30 classes read from an image folder
(results/folder_vs_cifar100.sh). Its pools are named `<dataset>-<K>cls`, so that they are never
taken for the whole dataset's.
"""
from __future__ import annotations

import copy
import dataclasses

import torch

from .data import ArrayDataset
from .errors import PoEError


def with_num_classes(architecture, num_classes: int):
    """The same architecture with `num_classes` outputs for the Oracle and the library student."""
    if architecture is None:
        return None
    if getattr(architecture, "pretrained", False):
        raise PoEError("the networks of this dataset come pretrained for its classes; they cannot be "
                       "cut down to fewer classes")
    changed = copy.copy(architecture)
    changed.num_classes = num_classes
    return changed


def _relabelled(data, lookup: torch.Tensor, keep: list[int]):
    """`data` restricted to the classes `keep`, labels mapped through `lookup` (old id -> new id)."""
    part = data.subset(keep)
    if not hasattr(part, "images"):  # images decoded per batch (ImageNet's reader): not an in-memory set
        raise PoEError(f"--restrict_to needs a dataset held in memory, not a {type(part).__name__}")
    return ArrayDataset(part.images, lookup[part.labels])


def restrict_to_tasks(profile, tasks: list[str]):
    """`profile` over the classes of `tasks` only (see the module's docstring)."""
    tasks = profile.resolve_tasks(tasks, "--restrict_to")
    keep = sorted({c for t in tasks for c in profile.hierarchy[t]})
    new_id = {c: i for i, c in enumerate(keep)}
    lookup = torch.full((profile.num_classes,), -1, dtype=torch.int64)
    lookup[keep] = torch.arange(len(keep))
    hierarchy = {t: [new_id[c] for c in ids] for t, ids in profile.hierarchy.items() if set(ids) <= set(keep)}
    presets = {name: dataclasses.replace(p, architecture=with_num_classes(p.architecture, len(keep)))
               for name, p in profile.budget_presets.items()}
    base_load = profile.load

    def load(data_root, download=False):
        train, test = base_load(data_root, download)
        return _relabelled(train, lookup, keep), _relabelled(test, lookup, keep)

    return dataclasses.replace(
        profile, name=f"{profile.name}-{len(keep)}cls",
        title=f"{profile.title}, {len(keep)} classes ({', '.join(tasks)})",
        class_names=[profile.class_names[c] for c in keep], hierarchy=hierarchy, default_tasks=list(tasks),
        architecture=with_num_classes(profile.architecture, len(keep)), load=load,
        wnids=[profile.wnids[c] for c in keep] if profile.wnids else [],
        task_aliases={a: t for a, t in profile.task_aliases.items() if t in hierarchy},
        authors_files={}, budget_presets=presets)
