"""The validation split: a seeded, class-stratified hold-out of the training images.

Settings picked by comparing runs (expert epochs, batch, teacher, ...) are read on it, never on the
test set. `ValidationSplit(per_class=50, seed=0)` holds out 50 images of every class (CIFAR-100:
5,000 of 50,000); every stage of a run trains on the rest. The split is recorded in what the run
stores (`describe`: per class, seed, image count and a digest of the held-out indices), so a pool
built with one split is neither silently extended nor scored with another (`check_same`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .errors import PoEError


@dataclass(frozen=True)
class ValidationSplit:
    per_class: int = 0  # 0: no hold-out, every training image is trained on
    seed: int = 0

    def __post_init__(self):
        if self.per_class < 0:
            raise PoEError(f"--val_per_class must be 0 or more, got {self.per_class}")

    def __bool__(self) -> bool:
        return self.per_class > 0

    def indices(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, held out) row indices, each sorted. Each class's rows are permuted by a generator
        seeded by (seed, class), so a class's hold-out does not depend on the other classes."""
        labels = torch.as_tensor(labels)
        held = []
        for c in torch.unique(labels).tolist():
            rows = torch.nonzero(labels == c).flatten()
            if len(rows) <= self.per_class:
                raise PoEError(f"class {c} has {len(rows)} training images: too few to hold out "
                               f"{self.per_class} for validation (--val_per_class)")
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + c)
            held.append(rows[torch.randperm(len(rows), generator=gen)[:self.per_class]])
        held = torch.cat(held).sort()[0] if held else torch.empty(0, dtype=torch.long)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        return torch.nonzero(keep).flatten(), held

    def apply(self, train):
        """(training part, validation part or None) of an in-memory training set."""
        if not self:
            return train, None
        kept, held = self.indices(train.labels)
        return _rows(train, kept), _rows(train, held)

    def describe(self, train) -> dict | None:
        """What a stored model records of the split it was trained with (None: no split)."""
        if not self:
            return None
        _, held = self.indices(train.labels)
        digest = hashlib.blake2b(held.numpy().tobytes(), digest_size=8).hexdigest()
        return {"per_class": self.per_class, "seed": self.seed, "images": len(held), "of": len(train.labels),
                "digest": digest}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "ValidationSplit":
        return cls() if not meta else cls(int(meta["per_class"]), int(meta["seed"]))


def _rows(data, rows: torch.Tensor):
    """The rows of an ArrayDataset-like set (images and labels indexed alike)."""
    return type(data)(data.images[rows], data.labels[rows])


def recorded_split(entries: dict, tasks, where: str) -> dict | None:
    """The one split the experts of `tasks` were trained with, from a manifest's entries; an error
    when they disagree (a pool mixing splits has no clean validation set)."""
    records = {repr(entries.get(t, {}).get("validation")): entries.get(t, {}).get("validation") for t in tasks}
    if len(records) > 1:
        raise PoEError(f"the experts in {where} were trained with different validation splits; "
                       "retrain them with one --val_per_class/--val_seed")
    return next(iter(records.values())) if records else None


def check_same(recorded: dict | None, wanted: dict | None, where: str) -> None:
    """Refuse to score or extend a pool with another split than the one it was trained with."""
    if (recorded or None) != (wanted or None):
        def say(m):
            return "none (all training images)" if not m else f"{m['per_class']} per class, seed {m['seed']}"
        raise PoEError(f"{where} was trained with validation split {say(recorded)}, not {say(wanted)}; "
                       "pass the same --val_per_class/--val_seed, or retrain")
