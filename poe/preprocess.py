"""Preprocessing: Oracle -> library student -> library + experts, stored in the model DB.

Each stage is skipped when its result is already in the DB (unless forced) and resumes from its
last epoch after an interruption. Called by Run_preprocessing.py. The run's settings and data are
poe.run_settings's; the expert stage is poe.extract's.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint, distributed
from .extract import stale_or_missing, train_experts
from .losses import TEMPERATURE, SoftLoss
from .pool import Pool, library_fingerprint
from .profiles import Profile
from .run_settings import RunSettings
from .stage_summary import describe_stored
# Old home of these names: tests still import them from here.
from .stage_summary import stored_summary, summary_lines, summary_markdown  # noqa: F401
from .train import fit, frozen


def stored_oracle(profile: Profile, pretrained_dir: Path, device: torch.device, *,
                  weights: dict[str, str] | None = None, download: bool = False) -> nn.Module:
    """The Oracle a run reads without training it: a pretrained architecture's published weights
    (e.g. ImageNet's, torchvision's), else oracle.pt of the pretrained DB (PoEError when absent)."""
    arch = profile.architecture
    if getattr(arch, "pretrained", False):
        return arch.load_pretrained("oracle", (weights or {}).get("oracle"), download).to(device).eval()
    path = Path(pretrained_dir) / "oracle.pt"
    state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, "oracle")
    model = arch.oracle(meta.get("config"))  # the checkpoint's own shape (e.g. --budget cpu's Oracle)
    checkpoint.load_into(model, state, path, "Oracle")
    print(f"[oracle] using {path} ({describe_stored(meta)})")
    return model.to(device, memory_format=torch.channels_last).eval()


def import_library(source: Pool, into: Pool) -> None:
    """Copy the library (and the library student's head, if there) of `source`, e.g. the authors'
    pool, into the pool `into` (rank 0 writes under torchrun)."""
    def save():
        library = source.load_library()
        meta = {"source": str(source.library_path), "fingerprint": library_fingerprint(library)}
        if source.student_head_path.is_file():
            into.save_student_head(source.load_student_head(), **meta)
        into.save_library(library, **meta)
        print(f"[library] imported {source.library_path} into {into.library_path}")

    distributed.main_writes(save)


class Preprocessor(RunSettings):
    """A run's settings (poe.run_settings) writing into a pool (library and experts) and a
    pretrained DB (Oracle and library student); each method is one stage. `settings`: RunSettings's;
    `cache_dir`: the experts' feature cache, by default the pool's feature_cache/."""

    def __init__(self, profile: Profile, pool: Pool, pretrained_dir: Path, *, cache_dir: str | Path | None = None,
                 **settings):
        super().__init__(profile, **settings)
        self.pool, self.pretrained_dir = pool, Path(pretrained_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else pool.root / "feature_cache"

    # The names these had before they were RunSettings' public methods (the tests use them).
    _signature = RunSettings.signature
    _budget_meta = RunSettings.budget_meta

    # -- stage 1: Oracle -------------------------------------------------------------------------
    def oracle(self, force: bool = False) -> nn.Module:
        arch = self.profile.architecture
        path = self.pretrained_dir / "oracle.pt"
        resume = self.pretrained_dir / "oracle.resume.pt"
        # A pretrained architecture's Oracle (e.g. ImageNet's) is torchvision's, never trained here.
        if getattr(arch, "pretrained", False) or (path.is_file() and not force):
            return stored_oracle(self.profile, self.pretrained_dir, self.device, weights=self.weights,
                                 download=self.download)
        main = distributed.world().is_main
        if force and main:
            resume.unlink(missing_ok=True)
        torch.manual_seed(self.seed)
        model = arch.oracle()
        tic = time.perf_counter()
        net = distributed.wrap(model, self.device)  # DDP under torchrun (all ranks start from rank 0's weights)
        history = fit(net, lambda x, y: F.cross_entropy(net(x), y), self.train_loader("oracle", distributed.world()),
                      self.budgets["oracle"], resume_path=resume, signature=self.signature("oracle"),
                      device=self.device, amp=self.amp, desc="oracle", **self._logging("oracle", model))
        # Stored in half precision (WRN-40-4: 18 MB instead of 36); rounded first, so the score below
        # and every later stage see exactly the stored Oracle.
        checkpoint.round_to_half(model)
        if main:
            acc = self._top1(model)
            print(f"[oracle] test top-1 {acc:.2f}%")
            checkpoint.atomic_save(checkpoint.make("oracle", model, half=True, dataset=self.profile.name,
                                                   architecture=arch.describe()["oracle"],
                                                   config=arch.oracle_config(), budget=self.budget_meta("oracle"),
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
                          resume_path=resume, signature=self.signature("library"), device=self.device, amp=self.amp,
                          desc="library student", **self._logging("library_student", student))
            acc = None
            if main:
                acc = self._top1(student)
                print(f"[library] library student test top-1 {acc:.2f}%")
                checkpoint.atomic_save(checkpoint.make("library_student", student, dataset=self.profile.name,
                                                       architecture=arch.describe()["library"],
                                                       budget=self.budget_meta("library"), history=history,
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
        import_library(source, self.pool)

    # -- stage 3: experts (poe.extract) ----------------------------------------------------------------
    def stale_or_missing(self, tasks: list[str], loss_kind: str, teacher_kind: str) -> list[str]:
        """Tasks whose expert is absent, or was trained on another library / loss / teacher / split."""
        return stale_or_missing(self.pool, tasks, loss_kind, teacher_kind, self.split_meta)

    def experts(self, tasks: list[str], loss_kind: str, teacher_kind: str, oracle_fn) -> dict[str, float]:
        """Train and save the experts of `tasks`; under torchrun the tasks are divided among the ranks,
        each training and saving its own. Returns every task's score on its own classes."""
        return self.train_expert_pools({loss_kind: (self.pool, tasks)}, teacher_kind, oracle_fn)[loss_kind]

    def train_expert_pools(self, jobs: dict[str, tuple[Pool, list[str]]], teacher_kind: str,
                           oracle_fn) -> dict[str, dict[str, float]]:
        """Train the experts of several pools: `jobs` maps a loss kind (soft | scale | soft+scale) to
        (pool to save into, tasks); from the feature cache in ONE joint pass, or live, one pass per
        loss (expert_source; poe.extract.train_experts). Every pool must hold the same library.
        Returns {kind: {task: accuracy on the task's own classes}}."""
        return train_experts(self, jobs, teacher_kind, oracle_fn, cache_dir=self.cache_dir)

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

    def _scores(self, model, test_acc: float) -> dict:
        """A stage's stored metrics: test top-1 (already computed), and validation top-1 with a split."""
        scores = {"test_top1_pct": test_acc}
        if self.validation:
            scores["val_top1_pct"] = self._top1(model, "val")
            print(f"validation top-1 {scores['val_top1_pct']:.2f}%")
        return scores
