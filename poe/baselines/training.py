"""What every baseline shares: the study's settings (`Setup`), the one training loop
(`poe.train.fit`) with the per-epoch test curve, and the store of trained models.

A family module (scratch.py, transfer.py, distill.py) turns (setup, query) into a `Plan`: the
model, the part of it the optimiser trains, the batch loss, the loader, the budget, and how long
getting ready took (teachers' passes and feature caches included; the single-task teachers'
own training is counted apart in `teachers_s`). `obtain` trains the plan once and stores the
result; a later run with the same settings loads it and only evaluates.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import checkpoint
from ..data import ArrayDataset
from ..errors import PoEError
from ..evaluate import predict
from ..metrics import accuracy_pct
from ..pool import Pool, library_fingerprint
from ..profiles import Budget
from ..split import ValidationSplit
from ..train import fit
from . import model as store
from .query import Query


@dataclass
class Plan:
    model: nn.Module            # the whole task model (QueryModel): evaluated and stored
    trained: nn.Module          # what the optimiser updates (the model, or its head only)
    batch_loss: Callable
    loader: object
    budget: Budget
    setup_s: float              # getting ready before the first epoch (teacher loading, feature cache)
    teachers_s: float = 0.0     # single-task teachers' own training, reported apart
    notes: dict = field(default_factory=dict)  # speed-ups and sources, for the report


@dataclass
class Setup:
    profile: object
    pool: Pool                  # the PoE pool: its library (Transfer, CKD) and experts (*_CKD teachers)
    data: tuple                 # (train, test) ArrayDatasets
    out: Path                   # where trained baselines are stored
    budgets: dict[str, Budget]  # "network" (Scratch, SD, UHC, single-task teachers), "head" (Transfer, CKD)
    batch_size: int
    device: torch.device
    amp: str
    seed: int
    teacher: str = "library-student"   # CKD's: "oracle" | "library-student"
    pretrained_dir: Path | None = None  # oracle.pt for teacher "oracle"
    head_source: str = "cache"          # Transfer/CKD: "cache" (library features stored) | "live"
    cache_views: int = 5
    cache_dtype: str = "float16"
    split: ValidationSplit = ValidationSplit()  # held out of the training images: the crossings are read on it
    poe_target: str = "val"     # PoE's accuracy the curves must reach: on the split ("val") or the test set
    init: str = "torch"         # new weights: PyTorch's default, or the authors' WRN init (poe.baselines.model)
    _memo: dict = field(default_factory=dict)

    # -- data ----------------------------------------------------------------------------------
    PARTS = {0: "train", 1: "test", "train": "train", "test": "test", "val": "val"}

    def query_parts(self, query: Query) -> dict:
        """The query's classes' images with their global labels: "train" (training images minus the
        validation split), "val" (the split; None without one), "test". The split is drawn per class
        with the class's global id (poe.split), so a query's part is exactly the pool's split of its
        classes; only the query's images are read (folder datasets decode no other class)."""
        key = ("parts", query.classes)
        if key not in self._memo:
            train = self.data[0].subset(query.classes)
            parts = {"train": train, "val": None, "test": self.data[1].subset(query.classes)}
            if self.split:
                kept, held = self.split.indices(train.labels)
                images, labels = train.images, train.labels
                parts.update(train=ArrayDataset(images[kept], labels[kept]), val=ArrayDataset(images[held], labels[held]))
            self._memo[key] = parts
        return self._memo[key]

    def split_meta(self) -> dict | None:
        if "split_meta" not in self._memo:
            self._memo["split_meta"] = self.split.describe(self.data[0])
        return self._memo["split_meta"]

    def subset(self, query: Query, part):
        """The query's images of `part` ("train", "val", "test"; 0 and 1 are "train" and "test"),
        labels remapped to the query's output columns."""
        part = self.PARTS[part]
        key = ("subset", query.classes, part)
        if key not in self._memo:
            data = self.query_parts(query)[part]
            if data is None:
                raise PoEError("no validation split: pass --val_per_class N (N > 0)")
            self._memo[key] = query.subset(data)
        return self._memo[key]

    def train_loader(self, query: Query):
        """The query's training images (never the validation split), augmented."""
        return self.profile.train_loader(self.subset(query, "train"), self.batch_size, self.seed)

    @property
    def read_on(self) -> str:
        """Where the per-epoch curves (and the crossings) are read: "val" with a split, else "test"."""
        return "val" if self.split else "test"

    def accuracy(self, model: nn.Module, query: Query, part="test") -> float:
        """Top-1 over the query's N outputs on the `part` images of its classes."""
        logits, labels = predict(model, self.profile.eval_loader(self.subset(query, part)), self.device, self.amp)
        return accuracy_pct(logits.argmax(1), labels)

    # -- shared networks (loaded once) -----------------------------------------------------------
    def library(self) -> nn.Module:
        if "library" not in self._memo:
            self._memo["library"] = self.pool.load_library().to(self.device, memory_format=torch.channels_last)
        return self._memo["library"]

    def library_fingerprint(self) -> str:
        if "library_fp" not in self._memo:
            self._memo["library_fp"] = library_fingerprint(self.pool.load_library())
        return self._memo["library_fp"]

    def seeded(self, *parts):
        """A random-number context whose seed depends only on (seed, parts): a model starts the same
        whatever was trained before it."""
        digest = hashlib.sha256(":".join(map(str, (self.seed, *parts))).encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:4], "little"))

    def budget_meta(self, kind: str) -> dict:
        return self.budgets[kind].meta(self.batch_size)


def signature(setup: Setup, method: str, query: Query) -> dict:
    """What a stored model depends on: a different signature is another model (another file)."""
    from .registry import METHODS
    spec = METHODS[method]
    sig = {"method": method, "dataset": setup.profile.name, "tasks": list(query.tasks), "seed": setup.seed,
           "budget": setup.budget_meta(spec.budget)}
    # Both absent for the authors' init and no split, so that the models stored before either existed
    # are found again with --init authors --val_per_class 0.
    if setup.init != "authors":
        sig["init"] = setup.init
    if setup.split:  # trained without the held-out images: another split is another model
        sig["validation"] = setup.split_meta()
    if spec.uses_library:
        sig["library"] = setup.library_fingerprint()
        sig["source"] = setup.head_source if spec.budget == "head" else "live"
        if spec.budget == "head" and setup.head_source == "cache":
            sig["cache"] = {"views": min(setup.cache_views, setup.budgets["head"].epochs), "dtype": setup.cache_dtype}
    if method == "CKD":
        sig["teacher"] = setup.teacher
    if spec.teachers == "experts":
        sig["experts"] = {t: _file_stamp(setup.pool.expert_path(t)) for t in query.tasks}
    return sig


def _file_stamp(path: Path) -> str:
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    return h[:16]


def model_path(setup: Setup, method: str, query: Query) -> Path:
    sig = json.dumps(signature(setup, method, query), sort_keys=True)
    return setup.out / method / f"{query.key}-{hashlib.sha256(sig.encode()).hexdigest()[:10]}.pt"


def obtain(setup: Setup, method: str, query: Query) -> tuple[nn.Module, dict]:
    """The trained `method` model for `query` and its metadata: loaded when stored, else trained
    with fit() (per-epoch accuracy on the validation split logged, or on the test set without one;
    never used to pick the weights: the last epoch's are kept) and stored.

    `wall_s_this_process` is the wall time of training this model alone: the wall time of models
    trained inside it (teachers) is recorded by them and subtracted here
    (`teachers_wall_s_this_process`)."""
    from .registry import METHODS
    path = model_path(setup, method, query)
    if path.is_file():
        model, meta = store.load(path, setup.profile)
        print(f"[{method}] {query.key}: stored model {path}")
        return model.to(setup.device), meta
    tic = time.perf_counter()
    nested_before = setup._memo.get("obtain_wall_s", 0.0)
    plan = METHODS[method].prepare(setup, query, method)
    resume = path.with_suffix(".resume.pt")
    history = fit(plan.trained, plan.batch_loss, plan.loader, plan.budget, resume_path=resume,
                  signature=signature(setup, method, query), device=setup.device, amp=setup.amp,
                  desc=f"{method} {query.key}", history_path=path.with_suffix(".history.csv"),
                  evaluate=lambda: {f"{setup.read_on}_top1_pct": setup.accuracy(plan.model, query, setup.read_on)})
    train_s = sum(h["seconds"] for h in history)
    # Models trained inside this one (the single-task teachers of *_Scratch, trained by prepare) record
    # their own wall time; this model's excludes it, so a sum over the stored models counts each once.
    wall = time.perf_counter() - tic
    nested = setup._memo.get("obtain_wall_s", 0.0) - nested_before
    setup._memo["obtain_wall_s"] = nested_before + wall
    meta = {"budget": setup.budget_meta(METHODS[method].budget), "history": history,
            "setup_s": round(plan.setup_s, 2), "train_s": round(train_s, 2),
            "time_to_model_s": round(plan.setup_s + train_s, 2), "teachers_s": round(plan.teachers_s, 2),
            "wall_s_this_process": round(wall - nested, 1), "teachers_wall_s_this_process": round(nested, 1),
            "notes": plan.notes, "signature": signature(setup, method, query)}
    store.save(path, plan.model, setup.profile, method, query, **meta)
    resume.unlink(missing_ok=True)
    return plan.model.eval(), meta


def load_oracle(setup: Setup) -> nn.Module:
    """CKD's teacher "oracle": the Oracle checkpoint of the pretrained DB (never trained here)."""
    path = Path(setup.pretrained_dir or ".") / "oracle.pt"
    if not path.is_file():
        raise PoEError(f"no Oracle checkpoint at {path}: pass --pretrained_db, or --teacher library-student "
                       "(the authors' published pool has no Oracle)")
    state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, "oracle")
    oracle = setup.profile.architecture.oracle(meta.get("config"))
    checkpoint.load_into(oracle, state, path, "Oracle")
    return oracle.float().to(setup.device, memory_format=torch.channels_last).eval()
