"""Realtime queries: the folded library and experts of a pool kept in memory between queries.

Answering a query needs no training, but reading checkpoints (`torch.load(weights_only=True)`)
and folding BatchNorms cost milliseconds per file, while concatenating already-folded experts
costs microseconds. So the service keeps, per process, each library and expert in its folded form
(poe.fused), keyed by file path, modification time and size: a warm query only stats the files
and concatenates; a file replaced on disk (a retrained expert) is read again. Task models built
from the cache share the folded library module and weight tensors read-only: a model copies its
library module the first time it is converted (.to(device), .double(), .train(); see
FusedTaskModel), so converting one query's model leaves the cache and other models alone.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch.nn as nn

from .fused import FusedTaskModel, compatible, fold_expert, fuse_library
from .pool import Pool


class PieceCache:
    """LRU of built pieces keyed by (what, file path, inode, mtime, size)."""

    def __init__(self, capacity: int = 512):
        self.capacity, self.items, self.lock = capacity, OrderedDict(), threading.Lock()
        self.hits = self.misses = 0

    def get(self, tag, path: Path, build):
        try:
            st = os.stat(path)
        except OSError:  # missing: the loader raises the pool's own clear error
            return build()
        key = (tag, os.path.abspath(path), st.st_ino, st.st_mtime_ns, st.st_size)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                self.hits += 1
                return self.items[key]
        value = build()  # outside the lock: reading a file must not block other queries' hits
        with self.lock:
            self.misses += 1
            self.items[key] = value
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.hits = self.misses = 0


CACHE = PieceCache()


def read_and_fold_expert(pool: Pool, task: str):
    """The expert's folded form straight from its checkpoint (no module built and filled)."""
    state, template = pool.expert_state(task)
    return fold_expert(template, pool.profile.hierarchy[task], state)


def fused_task_model(pool: Pool, tasks: list[str], cache: PieceCache = CACHE) -> nn.Module | None:
    """The fused task model for `tasks` from the cache (reading what is missing), or None when
    the pool's networks cannot fuse (networks poe.fused does not know): then use the plain TaskModel."""
    hierarchy = pool.profile.hierarchy
    library = cache.get(("library", pool.profile.name), pool.library_path,
                        lambda: fuse_library(pool.load_library(), copy_library=False))
    if library is None:
        return None
    experts = [cache.get(("expert", pool.profile.name, tuple(hierarchy[t])), pool.expert_path(t),
                         lambda task=t: read_and_fold_expert(pool, task)) for t in tasks]
    if not compatible(experts):
        return None
    return FusedTaskModel(library, experts, tasks, shared_library=True).eval()

