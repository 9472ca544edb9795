"""A query of the comparison study: its tasks, their classes in sorted global order, and the
query-only data with labels remapped to output columns (as the authors' `subdataset` does)."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from ..data import ArrayDataset
from ..errors import PoEError


@dataclass(frozen=True)
class Query:
    tasks: tuple[str, ...]
    classes: tuple[int, ...]                  # sorted union of the tasks' classes: output column j = classes[j]
    positions: tuple[tuple[int, ...], ...]    # per task: its classes' columns (the task's classes sorted)

    @classmethod
    def of(cls, tasks, hierarchy: dict[str, list[int]]) -> "Query":
        tasks = tuple(tasks)
        owned = [c for t in tasks for c in hierarchy[t]]
        if len(set(owned)) != len(owned):
            raise PoEError(f"the tasks {', '.join(tasks)} share classes; a query's tasks must be disjoint")
        classes = tuple(sorted(owned))
        column = {c: j for j, c in enumerate(classes)}
        return cls(tasks, classes, tuple(tuple(column[c] for c in sorted(hierarchy[t])) for t in tasks))

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def key(self) -> str:
        """File-name part: the tasks in the given order."""
        return "+".join(self.tasks)

    def remap(self, labels: torch.Tensor) -> torch.Tensor:
        """Global class ids (all in the query) -> output columns 0..N-1."""
        lookup = torch.full((max(self.classes) + 1,), -1, dtype=torch.long)
        lookup[list(self.classes)] = torch.arange(len(self.classes))
        out = lookup[labels]
        if (out < 0).any():
            raise ValueError("labels outside the query's classes")
        return out

    def subset(self, data: ArrayDataset) -> ArrayDataset:
        """Only the queried classes' images, labels remapped to output columns."""
        part = data.subset(self.classes)
        return ArrayDataset(part.images, self.remap(part.labels))


def study_queries(tasks: list[str], sizes, per_size: int | None, seed: int) -> list[tuple[str, ...]]:
    """Every combination of `tasks` of each size in `sizes`, or a seeded sample of `per_size` of them
    per size (the same seed gives the same sample)."""
    out = []
    for n in sizes:
        combos = list(itertools.combinations(tasks, n))
        if per_size is not None and per_size < len(combos):
            combos = sorted(random.Random(f"{seed}:{n}").sample(combos, per_size), key=combos.index)
        out += combos
    return out
