"""Feature cache: the frozen library's features and the teacher's logits of V augmented views of
the training set, computed once and reused by every expert and every epoch.

Training an expert only needs, per image, library(x) and teacher(x) — both frozen. The paper's
recipe recomputes them for every batch of every epoch (of every expert, in the authors' code):
100 epochs of Oracle forwards. Here view k is epoch k of the profile's own training loader (same
shuffling, crops and flips, same batch size), pushed once through the library and the teacher and
stored row by row. Epoch e of expert training then reads view e mod V: for e < V its batches are
exactly the live loader's batches of epoch e; later epochs reshuffle the view's rows with a
generator seeded by (seed, e), so batches differ from epoch to epoch as before. Every epoch still
visits every training image once (the same number of sample visits); what changes is that with
V < epochs an image is seen in at most V distinct augmentations instead of one per epoch.

Storage, one folder per (library, teacher, data, augmentation, dtype) key under the cache root:
    <root>/<dataset>-<key hash>/key.json
    <root>/<dataset>-<key hash>/seed<S>-view<k>/{features.bin, logits.bin, meta.json}
features.bin is an (N, C, H, W) float16 array (bfloat16/float32 on request), logits.bin an (N,
classes) float32 array; both are read through numpy memmaps, so only the pages in use occupy RAM.
meta.json is written last: a view without it is incomplete and is rebuilt. A different library or
teacher (weights fingerprints), dataset or augmentation gives a different key, so a stale cache is
never read. CIFAR-100: 50,000×32×16×16 float16 = 819 MB + 20 MB of logits per view.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import epoch_generator
from .errors import PoEError
from .evaluate import autocast
from .files import atomic_write_text

CACHE_DTYPES = {"float16": (np.float16, torch.float16), "bfloat16": (np.int16, torch.bfloat16),
                "float32": (np.float32, torch.float32)}
FORMAT_VERSION = 1


def data_fingerprint(data) -> str:
    """Hash of a training set: pixel and label bytes for in-memory sets, the file list for folder sets."""
    h = hashlib.blake2b(digest_size=8)
    if hasattr(data, "images") and hasattr(data, "labels"):
        h.update(data.images.contiguous().numpy().tobytes())
        h.update(data.labels.contiguous().numpy().tobytes())
    elif hasattr(data, "samples"):
        h.update(repr(list(data.samples)).encode())
    else:
        h.update(f"{type(data).__name__}:{len(data)}".encode())
    return h.hexdigest()


def bytes_per_view(num_images: int, feature_shape, num_classes: int, dtype: str = "float16") -> int:
    itemsize = np.dtype(CACHE_DTYPES[dtype][0]).itemsize
    return num_images * (int(np.prod(feature_shape)) * itemsize + num_classes * 4)


def check_disk_space(folder: Path, view_bytes: int, views: int) -> None:
    """The memmaps are sparse files: a full disk would kill the process mid-write (SIGBUS), so
    refuse up front when `views` views of `view_bytes` do not fit."""
    free, need = shutil.disk_usage(folder).free, view_bytes * views
    if need > free:
        raise PoEError(f"the feature cache needs {need / 1e9:.1f} GB ({views} view(s) of {view_bytes / 1e9:.1f} GB) "
                       f"in {folder.parent}, but only {free / 1e9:.1f} GB are free there; use fewer --cache_views, "
                       "--cache_dir on a larger disk, or --expert_source live (no cache)")


class CachedView:
    """One stored view: memmapped features (N, C, H, W) and teacher logits (N, K), in loader order."""

    def __init__(self, folder: Path):
        self.folder = folder
        with open(folder / "meta.json") as f:
            self.meta = json.load(f)
        np_dtype, self.torch_dtype = CACHE_DTYPES[self.meta["dtype"]]
        n, shape, k = self.meta["num_images"], tuple(self.meta["feature_shape"]), self.meta["num_classes"]
        try:  # copy-on-write maps: writable views for torch, the files are never modified
            self._features = np.memmap(folder / "features.bin", np_dtype, "c", shape=(n, *shape))
            self._logits = np.memmap(folder / "logits.bin", np.float32, "c", shape=(n, k))
        except (OSError, ValueError) as exc:
            raise PoEError(f"feature cache {folder} is damaged ({exc}); delete the folder to rebuild it") from None
        self.features = torch.from_numpy(self._features).view(self.torch_dtype)
        self.logits = torch.from_numpy(self._logits)

    def __len__(self) -> int:
        return self.features.shape[0]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (features, logits) of `rows` (sorted rows read the files in order)."""
        if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # a contiguous slice: no gather
            a, b = int(rows[0]), int(rows[-1]) + 1
            return self.features[a:b].float(), self.logits[a:b].clone()
        return self.features.index_select(0, rows).float(), self.logits.index_select(0, rows)


class FeatureCache:
    """The views of one key; `ensure(k)` builds view k if missing."""

    def __init__(self, root: str | Path, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.key = key
        self.folder = Path(root) / f"{key.get('dataset', 'data')}-{digest}"

    def view_folder(self, seed: int, k: int) -> Path:
        return self.folder / f"seed{seed}-view{k}"

    def has_view(self, seed: int, k: int) -> bool:
        return (self.view_folder(seed, k) / "meta.json").is_file()

    def ensure(self, seed: int, k: int, loader, library, teacher, teacher_from_features: bool, *,
               device, amp: str = "none", dtype: str = "float16", num_images: int,
               views_to_build: int = 1) -> CachedView:
        """Open view k, computing it first if absent. `loader` yields the training batches of
        view k; `teacher` maps images (or, with teacher_from_features, the library's features) to
        logits. Both run frozen, in eval mode. Before writing, the disk must hold `views_to_build`
        views (this one and those still to come), else a clear error, not a crash mid-write."""
        folder = self.view_folder(seed, k)
        if not self.has_view(seed, k):
            self._build(folder, loader, library, teacher, teacher_from_features, device, amp, dtype, num_images,
                        desc=f"feature cache view {k}", views_to_build=views_to_build)
        view = CachedView(folder)
        if len(view) != num_images:
            raise PoEError(f"feature cache {folder} holds {len(view)} images, the training set {num_images}; "
                           "delete the folder to rebuild it")
        return view

    @torch.no_grad()
    def _build(self, folder, loader, library, teacher, teacher_from_features, device, amp, dtype, num_images, desc,
               views_to_build=1):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "key.json", json.dumps(self.key, indent=1, sort_keys=True) + "\n")
        np_dtype, torch_dtype = CACHE_DTYPES[dtype]
        library.eval()
        teacher.eval()
        features = logits = None
        tmp = {name: folder / f".{name}.bin.{os.getpid()}.tmp" for name in ("features", "logits")}  # one per builder
        row, tic = 0, time.perf_counter()
        try:
            for x, _ in tqdm(loader, desc=desc, leave=False):
                x = x.to(device, non_blocking=True)
                with autocast(device, amp):
                    f = library(x)
                    z = teacher(f) if teacher_from_features else teacher(x)
                f, z = f.float(), z.float()
                if features is None:
                    check_disk_space(folder, bytes_per_view(num_images, f.shape[1:], z.shape[1], dtype), views_to_build)
                    features = np.memmap(tmp["features"], np_dtype, "w+", shape=(num_images, *f.shape[1:]))
                    logits = np.memmap(tmp["logits"], np.float32, "w+", shape=(num_images, z.shape[1]))
                stored = f.to(torch_dtype)
                if not torch.isfinite(stored).all():
                    raise PoEError(f"library features exceed the {dtype} range (max |x| = {f.abs().max():.3g}); "
                                   "use --cache_dtype bfloat16 or float32")
                b = len(f)
                features[row:row + b] = stored.cpu().view(torch.int16).numpy() if dtype == "bfloat16" \
                    else stored.cpu().numpy()
                logits[row:row + b] = z.cpu().numpy()
                row += b
            if row != num_images:
                raise PoEError(f"the training loader gave {row} images, expected {num_images}")
            features.flush()
            logits.flush()
            shape, k = list(features.shape[1:]), logits.shape[1]
            del features, logits
            os.replace(tmp["features"], folder / "features.bin")
            os.replace(tmp["logits"], folder / "logits.bin")
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)
        meta = {"num_images": num_images, "feature_shape": shape, "num_classes": k, "dtype": dtype,
                "seconds": round(time.perf_counter() - tic, 2), "key": self.key}
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


class CachedLoader:
    """(features, teacher logits) batches over cached views, for the training loop (`fit`).

    Epoch e reads view e mod V. For e < V the rows come in stored order, i.e. the live loader's
    batches of epoch e; from e = V on they are reshuffled per epoch (generator seeded by seed, e).
    Each batch's rows are read in ascending order (a batch is a set: BatchNorm statistics and the
    mean loss do not depend on the order inside it).
    """

    def __init__(self, views: list[CachedView], batch_size: int, seed: int = 0):
        if not views:
            raise ValueError("no cached views")
        self.views, self.batch_size, self.seed, self.epoch = views, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.views[0]) + self.batch_size - 1) // self.batch_size

    def batch_rows(self):
        """(view index, sorted rows) of each batch of this epoch."""
        k = self.epoch % len(self.views)
        n = len(self.views[k])
        if self.epoch < len(self.views):
            order = torch.arange(n)
        else:
            gen = epoch_generator(self.seed, self.epoch)
            order = torch.randperm(n, generator=gen)
        for start in range(0, n, self.batch_size):
            yield k, order[start:start + self.batch_size].sort()[0]

    def __iter__(self):
        for k, rows in self.batch_rows():
            yield self.views[k].batch(rows)
