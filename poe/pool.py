"""The pool store: one folder holding a library and its experts (the paper's model DB).

Our layout (DB_PoE/<dataset>/):
    library.pt             the library (front of the library student)
    student_head.pt        the rest of the library student (to use it as a teacher, or score it)
    experts/<task>.pt      one expert per primitive task
    manifest.json          what the folder holds, for people and scripts
The authors' published layout is recognised too (read-only):
    Library/library_<tag>.pt, Experts/expert_<task>.pt, student_for_library/classifier_<tag>.pt
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from . import checkpoint
from .errors import PoEError
from .files import atomic_write_text
from .lock import FolderLock

MANIFEST_LOCK = ".manifest.lock"  # held for a manifest update only (the writer lock is poe.lock's)


def library_fingerprint(library: nn.Module) -> str:
    """Short hash of the library's weights: experts record it, so an expert trained on another
    library is noticed instead of silently giving wrong logits."""
    h = hashlib.sha256()
    for key, value in sorted(library.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class Pool:
    def __init__(self, root: str | Path, profile):
        self.root, self.profile = Path(root), profile
        self.layout = "authors" if (self.root / "Library").is_dir() or (self.root / "Experts").is_dir() else "poe"
        self._expert_templates: dict[int, nn.Module] = {}  # see expert_state

    # -- where things are -------------------------------------------------------------------
    @property
    def library_path(self) -> Path:
        if self.layout == "authors":
            return self.root / self.profile.authors_files["library"]
        return self.root / "library.pt"

    @property
    def student_head_path(self) -> Path:
        if self.layout == "authors":
            return self.root / self.profile.authors_files["student_head"]
        return self.root / "student_head.pt"

    def expert_path(self, task: str) -> Path:
        if self.layout == "authors":
            return self.root / "Experts" / f"expert_{task}.pt"
        return self.root / "experts" / f"{task}.pt"

    def has_library(self) -> bool:
        return self.library_path.is_file()

    def has_expert(self, task: str) -> bool:
        return self.expert_path(task).is_file()

    def experts_available(self) -> list[str]:
        return [t for t in self.profile.hierarchy if self.has_expert(t)]

    # -- reading ----------------------------------------------------------------------------
    def _read(self, model: nn.Module, path: Path, kind: str, what: str) -> tuple[dict, dict]:
        """The checkpoint's (state_dict, meta), checked to fit `model` and this pool's dataset."""
        state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, kind)
        if meta.get("dataset", self.profile.name) != self.profile.name:
            raise PoEError(f"{path} was built for dataset {meta['dataset']!r}, not {self.profile.name!r}")
        checkpoint.check_fits(model, state, path, what)
        return state, meta

    def _load(self, model: nn.Module, path: Path, kind: str, what: str) -> tuple[nn.Module, dict]:
        state, meta = self._read(model, path, kind, what)
        model.load_state_dict(state, strict=True)
        return model.eval(), meta

    def load_library(self) -> nn.Module:
        if not self.has_library():
            raise PoEError(f"no library in {self.root} (expected {self.library_path}); "
                           f"build it with: python Run_preprocessing.py --dataset {self.profile.name}")
        return self._load(self.profile.architecture.library(), self.library_path, "library", "library")[0]

    def load_student_head(self) -> nn.Module:
        if not self.student_head_path.is_file():
            raise PoEError(f"no library-student classifier in {self.root} (expected {self.student_head_path})")
        arch = self.profile.architecture
        return self._load(arch.student_head(), self.student_head_path, "student_head", "library student's classifier")[0]

    def load_expert(self, task: str) -> nn.Module:
        model = self.profile.architecture.expert(len(self.profile.hierarchy[task]))
        model.load_state_dict(self._read_expert(task, model), strict=True)
        return model.eval()

    def expert_state(self, task: str) -> tuple[dict, nn.Module]:
        """(the expert's checked state_dict, an untrained expert of its shape) without building and
        filling a module per expert: the template is built once per class count and shared, so read
        it, never train or change it. For callers that want the weights (poe.realtime folds them)."""
        k = len(self.profile.hierarchy[task])
        if k not in self._expert_templates:
            self._expert_templates[k] = self.profile.architecture.expert(k).eval()
        template = self._expert_templates[k]
        return self._read_expert(task, template), template

    def _read_expert(self, task: str, model: nn.Module) -> dict:
        classes = self.profile.hierarchy[task]
        if not self.has_expert(task):
            raise PoEError(
                f"the pool {self.root} has no expert for {task!r}; build it with: python Run_preprocessing.py "
                f"--dataset {self.profile.name} --db {self.root} --tasks {task}")
        state, meta = self._read(model, self.expert_path(task), "expert",
                                 f"expert for {task!r} ({len(classes)} classes)")
        if "classes" in meta and list(meta["classes"]) != classes:
            raise PoEError(f"{self.expert_path(task)} was trained for classes {meta['classes']}, "
                           f"but {task!r} has classes {classes}")
        return state

    def manifest(self) -> dict:
        path = self.root / "manifest.json"
        if self.layout == "poe" and path.is_file():
            try:
                with open(path) as f:
                    m = json.load(f)
                if not isinstance(m, dict) or not isinstance(m.get("experts", {}), dict):
                    raise ValueError("not a manifest object")
                return m
            except (OSError, ValueError) as exc:  # ValueError: JSON syntax, bad UTF-8
                raise PoEError(f"{path} is damaged ({exc.__class__.__name__}: {exc}); it only lists what the folder "
                               "holds: delete it and rerun Run_preprocessing.py on this pool, which rebuilds it "
                               "(experts it no longer lists are retrained)") from None
        return {"dataset": self.profile.name, "layout": self.layout, "library": None, "experts": {}}

    # -- writing (our layout only) ----------------------------------------------------------
    def _writable(self) -> None:
        if self.layout != "poe":
            raise PoEError(f"{self.root} is in the authors' published layout, which is read-only here; "
                           "pass --db with a folder of your own")

    def _save(self, path: Path, kind: str, model: nn.Module, meta: dict) -> None:
        self._writable()
        checkpoint.atomic_save(checkpoint.make(kind, model, dataset=self.profile.name, **meta), path)

    def save_library(self, model: nn.Module, **meta) -> None:
        self._save(self.library_path, "library", model, meta)
        self._update_manifest(library={"file": "library.pt", **_plain(meta)})

    def save_student_head(self, model: nn.Module, **meta) -> None:
        self._save(self.student_head_path, "student_head", model, meta)

    def save_expert(self, task: str, model: nn.Module, **meta) -> None:
        meta = {"task": task, "classes": self.profile.hierarchy[task], **meta}
        self._save(self.expert_path(task), "expert", model, meta)
        entry = {"file": f"experts/{task}.pt", **_plain(meta)}
        self._update_manifest(expert=(task, entry))

    def _update_manifest(self, library=None, expert=None) -> None:
        """Read, change, write: under the manifest's own lock, since the ranks of a torchrun job save
        their experts (and so update this file) at the same time."""
        lock = FolderLock(self.root, MANIFEST_LOCK)
        while not lock.try_acquire():
            time.sleep(0.05)
        try:
            m = self.manifest()
            m["dataset"], m["layout"] = self.profile.name, "poe"
            description = self.profile.pool_description()
            if description is not None:  # a profile built at run time (image folders): the pool says what it is
                m["dataset_description"] = description
            if library is not None:
                m["library"] = library
            if expert is not None:
                m.setdefault("experts", {})[expert[0]] = expert[1]
            atomic_write_text(self.root / "manifest.json", json.dumps(m, indent=1, sort_keys=True) + "\n")
        finally:
            lock.release()


def _plain(meta: dict) -> dict:
    """Manifest entries: JSON-able metadata only."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
