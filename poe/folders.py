"""Image datasets read from folders of image files (Tiny-ImageNet, ImageNet).

Two ways to feed the one training loop, chosen by dataset size:

- Small images that fit in memory are decoded once into an `ArrayDataset` (`LazyArrayDataset`:
  decoded on first use, so a split nobody reads costs nothing). Tiny-ImageNet's training set is
  100,000 × 3×64×64 uint8 = 1.2 GB; after one decoding pass (about a minute on 2 cores) every
  epoch reuses poe.data's batch augmentation, with no JPEG decoding per epoch.
- ImageNet (1.28 M images, ~140 GB of JPEGs) does not fit: `FolderDataset` + `FolderLoader`
  decode each batch in DataLoader workers with per-image torchvision transforms. The loader keeps
  ArrayLoader's contract: iterable of (normalised float images, labels), `len`, `set_epoch`;
  the dataset has `subset(class_ids)` and `labels`.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .data import ArrayDataset, epoch_generator, normalize
from .distributed import ALONE, World, shard
from .errors import PoEError
from .profiles import Profile

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def read_class_table(path: Path) -> tuple[list[str], list[str], dict[str, list[int]]]:
    """A profile's class file: {"classes": [[wnid, name], ...] in class-id order, "tasks": {task: [ids]}}.

    Returns (wnids, names, tasks with sorted ids)."""
    with open(path) as f:
        d = json.load(f)
    wnids = [w for w, _ in d["classes"]]
    names = [n for _, n in d["classes"]]
    return wnids, names, {task: sorted(ids) for task, ids in d["tasks"].items()}


def read_rgb(path: Path) -> Image.Image:
    """The image at `path` as RGB (grayscale and CMYK JPEGs converted), or one clear error."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as exc:  # missing, truncated or not an image
        raise PoEError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from None


def decode_images(paths: list[Path], size: int, desc: str) -> torch.Tensor:
    """Decode `paths` (all size×size) into one uint8 tensor (N, 3, size, size)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        image = read_rgb(paths[i])
        if image.size != (size, size):
            raise PoEError(f"{paths[i]} is {image.size[0]}×{image.size[1]}, expected {size}×{size}")
        out[i] = np.asarray(image)

    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(decode, range(len(paths))), total=len(paths), desc=desc, leave=False,
                  disable=len(paths) < 1000))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class LazyArrayDataset(ArrayDataset):
    """An ArrayDataset of image files, decoded into memory the first time its pixels are needed.

    `subset` before that decodes only the chosen classes' images (the service evaluating a query
    reads a few hundred files, not the whole split)."""

    def __init__(self, paths: list[Path], labels, size: int, desc: str):
        self.paths, self.size, self.desc = list(paths), size, desc
        self._labels = torch.as_tensor(labels, dtype=torch.int64)
        self._images = None

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = decode_images(self.paths, self.size, f"decoding {self.desc}")
        return self._images

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    def subset(self, class_ids) -> ArrayDataset:
        mask = torch.isin(self._labels, torch.as_tensor(list(class_ids)))
        if self._images is not None:
            return ArrayDataset(self._images[mask], self._labels[mask])
        keep = mask.nonzero().flatten().tolist()
        return LazyArrayDataset([self.paths[i] for i in keep], self._labels[mask], self.size, self.desc)

    def __repr__(self) -> str:
        state = "decoded" if self._images is not None else "not decoded yet"
        return f"LazyArrayDataset({len(self)} images of {self.desc}, {state})"


def scan_class_folders(split: Path, class_ids: dict[str, int]) -> tuple[list[Path], list[int]]:
    """ImageFolder layout: split/<wnid>/**/<image>. Label = the wnid's global class id (so a
    folder holding only some classes still gets the standard ids)."""
    if not split.is_dir():
        raise PoEError(f"missing folder {split}")
    folders = sorted(d for d in split.iterdir() if d.is_dir())
    if not folders:
        raise PoEError(f"{split} has no class folders (expected one folder per wnid, e.g. {split}/n01440764/)")
    unknown = [d.name for d in folders if d.name not in class_ids]
    if unknown:
        raise PoEError(f"{split} has folders that are not class wnids of this dataset: {', '.join(unknown[:3])}"
                       f"{' …' if len(unknown) > 3 else ''}")
    paths, labels = [], []
    for folder in folders:
        for dirpath, _, names in sorted(os.walk(folder)):
            for name in sorted(names):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    paths.append(Path(dirpath) / name)
                    labels.append(class_ids[folder.name])
    if not paths:
        raise PoEError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {split}")
    return paths, labels


class FolderDataset(torch.utils.data.Dataset):
    """Image files and their labels; images are read when a loader asks for them."""

    def __init__(self, paths: list[Path], labels):
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, class_ids) -> "FolderDataset":
        mask = torch.isin(self.labels, torch.as_tensor(list(class_ids)))
        keep = mask.nonzero().flatten().tolist()
        return FolderDataset([self.paths[i] for i in keep], self.labels[mask])


class ClassFoldersDataset(FolderDataset):
    """A FolderDataset of a class-folder split (see scan_class_folders), listed when first needed:
    ImageNet's train/ holds 1.28 M files, and the service reads only val/."""

    def __init__(self, split: Path, class_ids: dict[str, int]):
        self.split, self.class_ids = Path(split), class_ids
        self._listing = None

    def _listed(self) -> tuple[list[Path], torch.Tensor]:
        if self._listing is None:
            paths, labels = scan_class_folders(self.split, self.class_ids)
            self._listing = paths, torch.as_tensor(labels, dtype=torch.int64)
        return self._listing

    @property
    def paths(self) -> list[Path]:
        return self._listed()[0]

    @property
    def labels(self) -> torch.Tensor:
        return self._listed()[1]


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, data: FolderDataset, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        return self.transform(read_rgb(self.data.paths[i])), self.data.labels[i]


def folder_transform(train: bool, resize: int, crop: int):
    """uint8 CHW crops: resize the short side to `resize`, then a random (train, + flip) or centre crop."""
    from torchvision.transforms import v2

    steps = [v2.Resize(resize, antialias=True)]
    steps += [v2.RandomCrop(crop), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(crop)]
    return v2.Compose([*steps, v2.PILToTensor()])


class FolderLoader:
    """Batches of (normalised float images, labels) decoded by DataLoader workers.

    Shuffling and the workers' augmentation seeds come from (seed, epoch), so with the same
    number of workers an epoch is the same whether the run was resumed or not. Images travel
    from the workers as uint8 and are normalised per batch (4× less inter-process traffic).
    With `world` (several processes, poe.distributed) each process reads its contiguous part of
    every global batch of the (seed, epoch) order; crops and flips are drawn by each process's
    workers (seeded by seed, epoch and rank), so they match a single process only in distribution."""

    def __init__(self, data: FolderDataset, batch_size: int, transform, mean, std, *, shuffle: bool,
                 seed: int = 0, workers: int = 0, world: World = ALONE):
        self.data, self.batch_size, self.transform = data, batch_size, transform
        self.mean, self.std, self.shuffle, self.seed, self.workers = mean, std, shuffle, seed, workers
        self.epoch, self.world = 0, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._shards()) if self.world.size > 1 else (len(self.data) + self.batch_size - 1) // self.batch_size

    def _shards(self) -> list[list[int]]:
        """This process's part of every global batch (a last batch smaller than the world is left out)."""
        n = len(self.data)
        order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        batches = [order[s:s + self.batch_size] for s in range(0, n, self.batch_size)]
        return [b[shard(len(b), self.world)].tolist() for b in batches if len(b) >= self.world.size]

    def __iter__(self):
        data = _Transformed(self.data, self.transform)
        common = {"num_workers": self.workers, "pin_memory": torch.cuda.is_available()}
        if self.world.size > 1:
            loader = torch.utils.data.DataLoader(
                data, batch_sampler=self._shards(),
                generator=epoch_generator(self.seed + 7919 * self.world.rank, self.epoch), **common)
        else:
            loader = torch.utils.data.DataLoader(data, batch_size=self.batch_size, shuffle=self.shuffle,
                                                 generator=epoch_generator(self.seed, self.epoch), **common)
        for images, labels in loader:
            yield normalize(images, self.mean, self.std), labels


@dataclass
class FolderProfile(Profile):
    """A profile whose images stay on disk and are decoded per batch (ImageNet).

    Training: resize the short side to `resize`, random crop `image_size` + flip; evaluation:
    the same resize and a centre crop."""

    resize: int = 256
    workers: int = min(8, os.cpu_count() or 1)  # DataLoader processes decoding JPEGs

    def train_loader(self, data, batch_size: int, seed: int = 0, world: World = ALONE):
        return FolderLoader(data, batch_size, folder_transform(True, self.resize, self.image_size),
                            self.mean, self.std, shuffle=True, seed=seed, workers=self.workers, world=world)

    def eval_loader(self, data, batch_size: int = 250):
        return FolderLoader(data, batch_size, folder_transform(False, self.resize, self.image_size),
                            self.mean, self.std, shuffle=False, workers=self.workers)
