"""A preprocessing run's settings and the data they name: the dataset, the stages' budgets and
batch, device, precision and seed, the validation split and the splits scores are read on, and how
the experts are extracted (feature cache or live). It holds no pool: the stages (poe.preprocess,
poe.extract) are given the pools they write, so one run can fill several (Table 6's three).

It also does what every stage does with those settings: load the images once, make the stages'
loaders, their resume signatures and stored budgets, and score models (scores are reported, never
used to pick a checkpoint)."""
from __future__ import annotations

import torch

from . import distributed
from .errors import PoEError
from .evaluate import expert_logits, predict
from .metrics import OWN_CLASS_KEYS, accuracy_pct
from .profiles import Budget, Profile
from .split import ValidationSplit


class RunSettings:
    def __init__(self, profile: Profile, *, data_root, download: bool, batch_size: int, budgets: dict[str, Budget],
                 device: torch.device, amp: str, seed: int, weights: dict[str, str] | None = None,
                 expert_source: str = "cache", cache_views: int | None = None, cache_dtype: str = "float16",
                 validation: ValidationSplit = ValidationSplit(), score_on: tuple[str, ...] | None = None,
                 cache_seed: int | None = None):
        self.profile = profile
        # The validation split (poe.split) is held out of every stage's training images. Scores are
        # read on `score_on`: "val" alone while settings are being compared, the test set only for
        # what is reported.
        self.validation = validation
        self.score_on = tuple(score_on or (("val", "test") if validation else ("test",)))
        if "val" in self.score_on and not validation:
            raise PoEError("scoring on the validation split needs one: pass --val_per_class N")
        if not self.score_on or set(self.score_on) - {"val", "test"}:
            raise PoEError(f"--score_on takes val and/or test, got {' '.join(self.score_on)}")
        # Experts: "cache" trains them from stored library features + teacher logits of
        # `cache_views` augmented views (poe.extract); "live" recomputes both every batch (the paper's code).
        if expert_source not in ("cache", "live"):
            raise PoEError(f"expert source must be 'cache' or 'live', got {expert_source!r}")
        self.expert_source, self.cache_dtype = expert_source, cache_dtype
        self.cache_views = profile.cache_views if cache_views is None else cache_views
        self.weights = weights or {}  # pretrained architectures: kind -> local weights file
        self.data_root, self.download = data_root, download
        self.batch_size, self.budgets = batch_size, budgets
        self.device, self.amp, self.seed = device, amp, seed
        # The cached views' augmentation seed: the run's, unless set apart so that runs differing only
        # in the experts' seed (initialisation, batch order) share one cache.
        self.cache_seed = seed if cache_seed is None else cache_seed
        self._data = self._val = self._split_meta = None

    # -- data (loaded once, only if some stage trains) ------------------------------------------
    @property
    def data(self):
        """(training images minus the validation split, test images)."""
        if self._data is None:
            train, test = self.profile.load(self.data_root, self.download)
            self._split_meta = self.validation.describe(train)
            train, self._val = self.validation.apply(train)
            self._data = (train, test)
        return self._data

    @property
    def val(self):
        """The held-out validation images (None without a split)."""
        if not self.validation:
            return None
        self.data  # loads and splits
        return self._val

    @property
    def split_meta(self) -> dict | None:
        """What stored models record of the split (poe.split.ValidationSplit.describe)."""
        if not self.validation:
            return None
        self.data
        return self._split_meta

    def eval_set(self, split: str):
        return self.val if split == "val" else self.data[1]

    def stage_batch_size(self, stage: str) -> int:
        """A stage's batch: its budget's where the budget names one (e.g. --budget cpu), else the run's."""
        return self.budgets[stage].batch_size or self.batch_size

    def train_loader(self, stage: str, world: distributed.World = distributed.ALONE, seed: int | None = None):
        """`world`: the processes training the stage's model together, each reading its shard."""
        return self.profile.train_loader(self.data[0], self.stage_batch_size(stage),
                                         self.seed if seed is None else seed, world)

    def test_loader(self):
        return self.profile.eval_loader(self.data[1])

    # -- what a stage's resume file and stored models record of it ---------------------------------
    def signature(self, stage: str, **extra) -> dict:
        """What a stage's resume file must match: another signature is another run (poe.train.fit)."""
        signature = {"stage": stage, "dataset": self.profile.name, **self.budget_meta(stage), "seed": self.seed, **extra}
        if self.validation:  # without a split the signature stays as before: older resume files still match
            signature["validation"] = self.split_meta
        return signature

    def budget_meta(self, stage: str) -> dict:
        return self.budgets[stage].meta(self.stage_batch_size(stage))

    # -- scores (reported, never used to pick a checkpoint) -------------------------------------------
    def _top1(self, model, split: str = "test") -> float:
        loader = self.profile.eval_loader(self.eval_set(split))
        logits, labels = predict(model, loader, self.device, self.amp, desc=split)
        return accuracy_pct(logits.argmax(1), labels)

    def own_class_metrics(self, library, experts) -> dict[str, dict[str, float]]:
        """Each expert's top-1 on its own classes, on every split of `score_on` (stored as metrics)."""
        out = {t: {} for t in experts}
        for split in self.score_on:
            for t, acc in self._own_class_accuracy(library, experts, split).items():
                out[t][OWN_CLASS_KEYS[split]] = acc
        return out

    def _own_class_accuracy(self, library, experts, split: str = "test") -> dict[str, float]:
        hierarchy = self.profile.hierarchy
        classes = sorted(c for t in experts for c in hierarchy[t])
        loader = self.profile.eval_loader(self.eval_set(split).subset(classes))
        logits, labels = expert_logits(library, dict(experts), loader, self.device, self.amp, desc=split)
        scores = {}
        for t in experts:
            ids = torch.tensor(hierarchy[t])
            mask = torch.isin(labels, ids)
            pred = ids[logits[t][mask].argmax(1)]
            scores[t] = accuracy_pct(pred, labels[mask])
        return scores
