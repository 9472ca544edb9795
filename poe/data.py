"""In-memory image datasets and a fast batch loader with CIFAR-style augmentation.

CIFAR-100 and the demo fit in memory as uint8 (50,000×3×32×32 = 150 MB), so augmentation runs
on whole batches as tensor ops instead of per-image PIL transforms — much cheaper on 2 cores.
Folder datasets (Tiny-ImageNet, ImageNet) use torchvision's DataLoader instead; the training
loop only needs an iterable of (images, labels) with an optional `set_epoch`.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import ALONE, World, shard
from .errors import PoEError


@dataclass
class ArrayDataset:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, class_ids) -> "ArrayDataset":
        """Only the images whose label is in `class_ids`."""
        mask = torch.isin(self.labels, torch.as_tensor(list(class_ids)))
        return ArrayDataset(self.images[mask], self.labels[mask])

    @classmethod
    def from_hwc(cls, images: np.ndarray, labels) -> "ArrayDataset":
        chw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return cls(chw, torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float().div_(255) - mean) / std


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad`, take a random crop of the original size, flip half (per image).

    Same as torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip on each image.
    """
    return crop_flip(images, pad, draw_crop_flip(len(images), pad, generator))


def draw_crop_flip(b: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The random part of random_crop_flip for b images: (dy, dx, flip), each (b,)."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return dy, dx, flip


def crop_flip(images: torch.Tensor, pad: int, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Apply drawn (dy, dx, flip) to (B, C, H, W) images."""
    dy, dx, flip = params
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (B, W)
    rows = torch.arange(h) + dy[:, None]  # (B, H)
    batch = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class ArrayLoader:
    """Batches of (normalised float images, labels) from an ArrayDataset.

    Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch is
    the same whether a run was interrupted and resumed or not. With `world` (several processes
    training one model, poe.distributed) every process draws the whole epoch's order and every
    global batch's crops and flips, and keeps its own contiguous part of each global batch: the
    parts joined in rank order are exactly the one-process batch. A last batch with fewer images
    than processes is left out (a process may not train on nothing).
    """

    def __init__(self, data: ArrayDataset, batch_size: int, mean, std, *, train: bool,
                 pad: int = 4, seed: int = 0, world: World = ALONE):
        self.data, self.batch_size, self.mean, self.std = data, batch_size, mean, std
        self.train, self.pad, self.seed, self.epoch, self.world = train, pad, seed, 0, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.data)
        if self.world.size > 1 and 0 < n % self.batch_size < self.world.size:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch)
        n = len(self.data)
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if len(idx) < self.world.size:
                break
            params = draw_crop_flip(len(idx), self.pad, gen) if self.train else None
            part = shard(len(idx), self.world)
            idx = idx[part]
            images = self.data.images[idx]
            if self.train:
                images = crop_flip(images, self.pad, tuple(p[part] for p in params))
            yield normalize(images, self.mean, self.std), self.data.labels[idx]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of (run seed, epoch): shuffling and augmentation of every loader, so an
    epoch is the same whether a run was resumed or not."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _find_cifar_folder(root: Path) -> Path | None:
    for candidate in (root / "cifar-100-python", root):
        if all((candidate / name).is_file() for name in ("train", "test", "meta")):
            return candidate
    return None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as exc:  # truncated or foreign file
        raise PoEError(f"cannot read CIFAR-100 file {path}: {exc.__class__.__name__}: {exc}") from None


def load_cifar100(root: str | Path, download: bool = False):
    """Read CIFAR-100's python layout under `root` (no md5 check: copies may differ byte-wise).

    Returns (train, test, fine_label_names).
    """
    root = Path(root)
    folder = _find_cifar_folder(root)
    if folder is None and download:
        import torchvision  # only for its downloader

        try:
            torchvision.datasets.CIFAR100(str(root), train=True, download=True)
        except Exception as exc:
            raise PoEError(f"could not download CIFAR-100 into {root}: {exc}") from None
        folder = _find_cifar_folder(root)
    if folder is None:
        raise PoEError(
            f"CIFAR-100 not found: expected {root / 'cifar-100-python'}/{{train,test,meta}} "
            "(the official 'python version'); pass --data_root DIR, or --download with a network")
    meta = _unpickle(folder / "meta")
    splits = []
    for name in ("train", "test"):
        d = _unpickle(folder / name)
        try:
            images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d["fine_labels"], dtype=np.int64)
        except (KeyError, ValueError) as exc:
            raise PoEError(f"{folder / name} is not a CIFAR-100 split: {exc}") from None
        splits.append(ArrayDataset(torch.from_numpy(images.copy()), torch.from_numpy(labels)))
    return splits[0], splits[1], list(meta["fine_label_names"])
