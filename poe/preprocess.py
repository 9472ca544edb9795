"""Preprocessing: Oracle -> library student -> library + experts, stored in the model DB.

Each stage is skipped when its result is already in the DB (unless forced) and resumes from its
last epoch after an interruption. Called by Run_preprocessing.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint, distributed
from .errors import PoEError
from .evaluate import expert_logits, predict
from .distributed import rank_suffix
from .extract import Member, initial_expert, train_from_cache
from .losses import ALPHA, TEMPERATURE, ExpertLoss, SoftLoss
from .metrics import OWN_CLASS_KEYS, accuracy_pct, describe_scores
from .pool import Pool, library_fingerprint
from .profiles import Budget, Profile
from .split import ValidationSplit
from .stage_summary import describe_stored
# Old home of these names: tests still import them from here.
from .stage_summary import stored_summary, summary_lines, summary_markdown  # noqa: F401
from .teachers import ORACLE_TEACHERS, oracle_teacher
from .train import fit, frozen

class LibraryStudentTeacher(nn.Module):
    """The library student used as the experts' teacher: library + its own classifier head."""

    def __init__(self, library: nn.Module, head: nn.Module):
        super().__init__()
        self.library, self.head = library, head

    def forward(self, x):
        return self.head(self.library(x))


class Preprocessor:
    """Holds the run's settings; each method is one stage."""

    def __init__(self, profile: Profile, pool: Pool, pretrained_dir: Path, *, data_root, download: bool,
                 batch_size: int, budgets: dict[str, Budget], device: torch.device, amp: str, seed: int,
                 weights: dict[str, str] | None = None, expert_source: str = "cache",
                 cache_views: int | None = None, cache_dir: str | Path | None = None, cache_dtype: str = "float16",
                 validation: ValidationSplit = ValidationSplit(), score_on: tuple[str, ...] | None = None,
                 cache_seed: int | None = None):
        self.profile, self.pool, self.pretrained_dir = profile, pool, Path(pretrained_dir)
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
        self.cache_dir = Path(cache_dir) if cache_dir else pool.root / "feature_cache"
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

    def _signature(self, stage: str, **extra) -> dict:
        signature = {"stage": stage, "dataset": self.profile.name, **self._budget_meta(stage), "seed": self.seed, **extra}
        if self.validation:  # without a split the signature stays as before: older resume files still match
            signature["validation"] = self.split_meta
        return signature

    def _budget_meta(self, stage: str) -> dict:
        return self.budgets[stage].meta(self.stage_batch_size(stage))

    # -- stage 1: Oracle -------------------------------------------------------------------------
    def oracle(self, force: bool = False) -> nn.Module:
        arch = self.profile.architecture
        if getattr(arch, "pretrained", False):  # e.g. ImageNet: torchvision's weights, not trained here
            return arch.load_pretrained("oracle", self.weights.get("oracle"), self.download).to(self.device).eval()
        path = self.pretrained_dir / "oracle.pt"
        resume = self.pretrained_dir / "oracle.resume.pt"
        if path.is_file() and not force:
            state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, "oracle")
            model = arch.oracle(meta.get("config"))  # the checkpoint's own shape (e.g. --budget cpu's Oracle)
            checkpoint.load_into(model, state, path, "Oracle")
            print(f"[oracle] using {path} ({describe_stored(meta)})")
            return model.to(self.device, memory_format=torch.channels_last).eval()
        main = distributed.world().is_main
        if force and main:
            resume.unlink(missing_ok=True)
        torch.manual_seed(self.seed)
        model = arch.oracle()
        tic = time.perf_counter()
        net = distributed.wrap(model, self.device)  # DDP under torchrun (all ranks start from rank 0's weights)
        history = fit(net, lambda x, y: F.cross_entropy(net(x), y), self.train_loader("oracle", distributed.world()),
                      self.budgets["oracle"], resume_path=resume, signature=self._signature("oracle"),
                      device=self.device, amp=self.amp, desc="oracle", **self._logging("oracle", model))
        # Stored in half precision (WRN-40-4: 18 MB instead of 36); rounded first, so the score below
        # and every later stage see exactly the stored Oracle.
        checkpoint.round_to_half(model)
        if main:
            acc = self._top1(model)
            print(f"[oracle] test top-1 {acc:.2f}%")
            checkpoint.atomic_save(checkpoint.make("oracle", model, half=True, dataset=self.profile.name,
                                                   architecture=arch.describe()["oracle"],
                                                   config=arch.oracle_config(), budget=self._budget_meta("oracle"),
                                                   history=history, metrics=self._scores(model, acc),
                                                   validation=self.split_meta,
                                                   wall_s=self._wall(tic, history)), path)
            resume.unlink(missing_ok=True)
        distributed.barrier()  # the others read no file before rank 0 has written it
        return model.eval()

    # -- stage 2: library student -> library + student head ----------------------------------------
    def library(self, oracle_fn, force: bool = False) -> None:
        arch = self.profile.architecture
        path = self.pretrained_dir / "library_student.pt"
        resume = self.pretrained_dir / "library_student.resume.pt"
        student = arch.student()
        main = distributed.world().is_main
        if path.is_file() and not force:
            state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, "library_student")
            checkpoint.load_into(student, state, path, "library student")
            print(f"[library] using the library student {path} ({describe_stored(meta)})")
            acc = meta.get("metrics", {}).get("test_top1_pct")
        elif getattr(arch, "pretrained", False):
            student = arch.load_pretrained("student", self.weights.get("student"), self.download)
            acc = None  # not scored here: the weights' publisher reports it
        else:
            if force and main:
                resume.unlink(missing_ok=True)
            oracle = oracle_fn()
            torch.manual_seed(self.seed + 1)
            student = arch.student()
            kd = SoftLoss(temperature=TEMPERATURE)
            tic = time.perf_counter()
            net = distributed.wrap(student, self.device)

            def batch_loss(x, y):  # labels unused: the student learns from the Oracle alone
                with frozen(oracle):
                    target = oracle(x)
                return kd(net(x), target)

            history = fit(net, batch_loss, self.train_loader("library", distributed.world()), self.budgets["library"],
                          resume_path=resume, signature=self._signature("library"), device=self.device, amp=self.amp,
                          desc="library student", **self._logging("library_student", student))
            acc = None
            if main:
                acc = self._top1(student)
                print(f"[library] library student test top-1 {acc:.2f}%")
                checkpoint.atomic_save(checkpoint.make("library_student", student, dataset=self.profile.name,
                                                       architecture=arch.describe()["library"],
                                                       budget=self._budget_meta("library"), history=history,
                                                       metrics=self._scores(student, acc),
                                                       validation=self.split_meta,
                                                       wall_s=self._wall(tic, history)), path)
                resume.unlink(missing_ok=True)
        library_state, head_state = arch.split_student(student.state_dict())
        library = arch.library()
        library.load_state_dict(library_state)
        head = arch.student_head()
        head.load_state_dict(head_state)
        meta = {"architecture": arch.describe()["library"], "student_test_top1_pct": acc,
                "fingerprint": library_fingerprint(library)}
        def save():
            self.pool.save_student_head(head, **meta)
            self.pool.save_library(library, **meta)
            print(f"[library] saved to {self.pool.library_path}")

        distributed.main_writes(save)

    def import_library(self, source: Pool) -> None:
        """Take the library (and the student's head, if there) from another pool, e.g. the authors'."""
        def save():
            library = source.load_library()
            meta = {"source": str(source.library_path), "fingerprint": library_fingerprint(library)}
            if source.student_head_path.is_file():
                self.pool.save_student_head(source.load_student_head(), **meta)
            self.pool.save_library(library, **meta)
            print(f"[library] imported {source.library_path} into {self.pool.library_path}")

        distributed.main_writes(save)

    # -- stage 3: experts ---------------------------------------------------------------------------
    def stale_or_missing(self, tasks: list[str], loss_kind: str, teacher_kind: str) -> list[str]:
        """Tasks whose expert is absent, or was trained on another library / loss / teacher."""
        manifest = self.pool.manifest()  # read once
        fingerprint = (manifest.get("library") or {}).get("fingerprint")
        entries = manifest.get("experts", {})
        todo = []
        for t in tasks:
            e = entries.get(t)
            if not self.pool.has_expert(t) or e is None or e.get("library") != fingerprint \
                    or e.get("loss") != loss_kind or e.get("teacher") != teacher_kind \
                    or (e.get("validation") or None) != self.split_meta:
                todo.append(t)
        return todo

    def train_expert_pools(self, jobs: dict[str, tuple[Pool, list[str]]], teacher_kind: str,
                           oracle_fn) -> dict[str, dict[str, float]]:
        """Train, in ONE joint pass over the feature cache, the experts of several pools: `jobs` maps a
        loss kind (soft | scale | soft+scale) to (pool to save into, tasks). Every pool must hold this
        Preprocessor's library. Returns {kind: {task: accuracy on the task's own test classes}}."""
        members = [Member(kind, t, pool) for kind, (pool, tasks) in jobs.items() for t in tasks]
        scores = train_from_cache(self, members, teacher_kind, oracle_fn, views=self.cache_views,
                                  cache_dir=self.cache_dir, cache_dtype=self.cache_dtype)
        return {kind: {t: scores[(kind, t)] for t in tasks} for kind, (_, tasks) in jobs.items()}

    def experts(self, tasks: list[str], loss_kind: str, teacher_kind: str, oracle_fn) -> dict[str, float]:
        """Train and save the experts of `tasks`; under torchrun the tasks are divided among the ranks,
        each training and saving its own. Returns every task's score on its own classes."""
        if self.expert_source == "cache":
            return self.train_expert_pools({loss_kind: (self.pool, tasks)}, teacher_kind, oracle_fn)[loss_kind]
        world = distributed.world()
        scores = self._live_experts(distributed.mine(tasks), loss_kind, teacher_kind, oracle_fn, world) \
            if distributed.mine(tasks) else {}
        return {t: s for part in distributed.gather(scores) for t, s in part.items()}

    def _live_experts(self, tasks: list[str], loss_kind: str, teacher_kind: str, oracle_fn, world) -> dict[str, float]:
        arch, hierarchy = self.profile.architecture, self.profile.hierarchy
        library = self.pool.load_library().to(self.device)
        fingerprint = library_fingerprint(library)
        if teacher_kind in ORACLE_TEACHERS:
            teacher = oracle_teacher(teacher_kind, oracle_fn())
            teacher_from_features = None
        else:
            head = self.pool.load_student_head().to(self.device)
            teacher = LibraryStudentTeacher(library, head)
            teacher_from_features = head  # the teacher shares the library: reuse its features
        # Initial weights depend only on (seed, task): the same as the cached path's (poe.extract).
        experts = nn.ModuleDict({t: initial_expert(arch, len(hierarchy[t]), self.seed, t) for t in tasks})
        columns = {t: torch.tensor(hierarchy[t], device=self.device) for t in tasks}
        loss_fn = ExpertLoss(loss_kind, temperature=TEMPERATURE, alpha=ALPHA)

        def batch_loss(x, y):  # labels unused: every expert sees the whole training set
            with frozen(library, teacher):
                features = library(x)
                logits = teacher_from_features(features) if teacher_from_features is not None else teacher(x)
            return {t: loss_fn(experts[t](features), logits[:, columns[t]]) for t in tasks}

        resume = self.pool.root / f"experts{rank_suffix(world)}.resume.pt"
        signature = self._signature("expert", tasks=tasks, loss=loss_kind, teacher=teacher_kind, library=fingerprint)
        history = fit(experts, batch_loss, self.train_loader("expert"), self.budgets["expert"], resume_path=resume,
                      signature=signature, device=self.device, amp=self.amp, desc=f"{len(tasks)} experts",
                      history_path=self.pool.root / f"experts{rank_suffix(world)}.history.csv")
        metrics = self.own_class_metrics(library, experts)
        scores = {t: m[OWN_CLASS_KEYS[self.score_on[0]]] for t, m in metrics.items()}
        for t in tasks:
            per_task = [{k: v for k, v in h.items() if k in ("epoch", "lr", "seconds", f"loss/{t}", "loss")}
                        for h in history]
            self.pool.save_expert(t, experts[t].cpu(), loss=loss_kind, teacher=teacher_kind, library=fingerprint,
                                  budget=self._budget_meta("expert"), history=per_task, metrics=metrics[t],
                                  validation=self.split_meta)
            print(f"[experts] {t}: {describe_scores(metrics[t])} on its own classes -> {self.pool.expert_path(t)}")
        resume.unlink(missing_ok=True)
        return scores

    # -- scores (reported, never used to pick a checkpoint) -------------------------------------------
    @staticmethod
    def _wall(tic: float, history: list[dict]) -> dict:
        """A stage's wall time in this process (training, per-epoch test passes, saving) and the sum of
        its epochs' training seconds (all epochs, also those before a resume)."""
        return {"this_process_s": round(time.perf_counter() - tic, 1),
                "training_s": round(sum(h["seconds"] for h in history), 1)}

    def _logging(self, name: str, model) -> dict:
        """fit()'s per-epoch history CSV beside the stage's checkpoint, with test top-1 logged for the
        record (one pass over the test set per epoch; the last epoch's weights are kept whatever it says)."""
        return {"history_path": self.pretrained_dir / f"{name}.history.csv",
                "evaluate": lambda: {"test_top1_pct": self._top1(model)}}

    def _top1(self, model, split: str = "test") -> float:
        loader = self.profile.eval_loader(self.eval_set(split))
        logits, labels = predict(model, loader, self.device, self.amp, desc=split)
        return accuracy_pct(logits.argmax(1), labels)

    def _scores(self, model, test_acc: float) -> dict:
        """A stage's stored metrics: test top-1 (already computed), and validation top-1 with a split."""
        scores = {"test_top1_pct": test_acc}
        if self.validation:
            scores["val_top1_pct"] = self._top1(model, "val")
            print(f"validation top-1 {scores['val_top1_pct']:.2f}%")
        return scores

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
