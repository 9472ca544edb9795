"""Your own images: reading `--dataset folder`'s folders (the profile is poe/folder_profile.py).

Layout (torchvision's ImageFolder convention), one folder per class under each split:

    DIR/train/<class>/*.png|jpg|...            one level: classes only (tasks from --task_file)
    DIR/train/<task>/<class>/*                 two levels: the folders also say the primitive tasks
    DIR/val/<class>/*  (or val/<task>/<class>/*) the test images (only their class folders count)

A top-level folder holding image files is a class (images in its sub-folders count too); one
holding only folders is a task, each of its sub-folders a class. So both levels mix: a class
folder directly under train/ beside task folders is a class in no task. Every format Pillow opens
is read; other files (and hidden ones) are skipped.

Images are decoded once into one uint8 array (N, 3, S, S), as the Tiny-ImageNet reader does, and
reused every epoch: greyscale, palette, 16-bit and CMYK images become RGB, transparency is
composited onto black, EXIF rotations are applied, and an image that is not S×S is centre-cropped
to a square and resized to S×S (PIL.ImageOps.fit, bicubic) — the preprocessing an exported model's
client repeats (see poe.service.export).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from .errors import PoEError
from .folders import LazyArrayDataset
from .task_file import TASK_NAME


def image_extensions() -> frozenset[str]:
    """File endings of every format Pillow can open here (.png, .jpg, .jpeg, .bmp, .gif, .tif, .webp, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@dataclass
class Split:
    """One split of an image folder: its classes' image files and, in the two-level layout, its tasks."""

    root: Path
    classes: dict[str, list[Path]]                       # class name -> image files, sorted
    tasks: dict[str, list[str]] = field(default_factory=dict)  # task -> class names (two-level layout)

    @property
    def num_images(self) -> int:
        return sum(len(files) for files in self.classes.values())

    def files_and_labels(self, class_ids: dict[str, int]) -> tuple[list[Path], list[int]]:
        paths, labels = [], []
        for name in sorted(self.classes):
            paths += self.classes[name]
            labels += [class_ids[name]] * len(self.classes[name])
        return paths, labels

    def fingerprint(self) -> str:
        """Hash of what the split holds (each image's path below the split and its size): the same
        folder moved elsewhere keeps it; an image added, removed or changed in size changes it."""
        h = hashlib.blake2b(digest_size=8)
        for name in sorted(self.classes):
            for path in self.classes[name]:
                h.update(f"{name}\0{path.relative_to(self.root)}\0{path.stat().st_size}\n".encode())
        return h.hexdigest()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_below(folder: Path, extensions) -> list[Path]:
    """Image files in `folder` and its sub-folders, sorted (hidden files and folders skipped)."""
    found = []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in extensions]
    return sorted(found)


def scan_split(split: Path) -> Split:
    """The classes (and tasks) of `split`, checked; see the module's docstring for the layout."""
    extensions = image_extensions()
    if not split.is_dir():
        raise PoEError(f"missing folder {split} (expected {split}/<class>/<images>)")
    entries = sorted(p for p in split.iterdir() if _visible(p))
    loose = [p.name for p in entries if p.is_file() and p.suffix.lower() in extensions]
    if loose:
        raise PoEError(f"{split} holds images directly ({loose[0]}{', ...' if len(loose) > 1 else ''}); put each "
                       f"class in its own folder: {split}/<class>/")
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise PoEError(f"{split} is empty: expected one folder of images per class ({split}/<class>/) or per task "
                       f"and class ({split}/<task>/<class>/)")
    classes: dict[str, list[Path]] = {}
    where: dict[str, str] = {}   # class -> its folder below the split, for messages
    tasks: dict[str, list[str]] = {}

    def add_class(name: str, folder: Path, files: list[Path]) -> None:
        rel = str(folder.relative_to(split))
        if name in classes:
            raise PoEError(f"class {name!r} is in two places, {split.name}/{where[name]} and {split.name}/{rel}: "
                           "a class belongs to one task at most (two tasks may not share a class)")
        if not files:
            raise PoEError(f"class folder {folder} holds no images (formats Pillow opens: .png, .jpg, .bmp, .gif, "
                           ".tif, .webp, ...)")
        classes[name], where[name] = files, rel

    for folder in folders:
        direct = [p for p in folder.iterdir() if _visible(p)]
        if any(p.is_file() and p.suffix.lower() in extensions for p in direct):
            add_class(folder.name, folder, _images_below(folder, extensions))
            continue
        subfolders = sorted(p for p in direct if p.is_dir())
        if not subfolders:
            raise PoEError(f"class folder {folder} holds no images (formats Pillow opens: .png, .jpg, .bmp, .gif, "
                           ".tif, .webp, ...)")
        if not TASK_NAME.fullmatch(folder.name) or folder.name == "all":
            raise PoEError(f"{folder} holds folders, so it is read as a task, but {folder.name!r} is not a usable "
                           "task name (letters, digits, _ . -; not 'all')")
        tasks[folder.name] = []
        for sub in subfolders:
            add_class(sub.name, sub, _images_below(sub, extensions))
            tasks[folder.name].append(sub.name)
    return Split(split, classes, tasks)


# -- decoding -----------------------------------------------------------------------------------------
def _rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):  # 16-bit greyscale: keep the top 8 bits
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: Path, size: int) -> np.ndarray:
    """The image at `path` as (size, size, 3) uint8 RGB, or one error line naming the file."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (size, size))  # decode a large JPEG at a reduced scale (still >= size)
            image = _rgb(ImageOps.exif_transpose(image))
            if image.size != (size, size):
                image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
            return np.asarray(image)
    except Exception as exc:  # truncated, not an image, unreadable
        raise PoEError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from None


def image_side(path: Path) -> int:
    """The shorter side of the image at `path`, from its header (nothing decoded)."""
    try:
        with Image.open(path) as image:
            return min(image.size)
    except Exception as exc:
        raise PoEError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from None


def typical_side(paths: list[Path], sample: int = 256) -> int:
    """The median shorter side of up to `sample` images spread evenly over `paths`."""
    picked = paths[:: max(1, len(paths) // sample)][:sample]
    return int(np.median([image_side(p) for p in picked]))


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(num_images: int, size: int, what: str) -> None:
    """Say what the decoded array takes; refuse before decoding when it cannot fit."""
    need = num_images * 3 * size * size
    free = available_memory()
    if num_images >= 500:  # the first pass over a split, not a query's few test images
        print(f"[folder] decoding {num_images:,} {what} to {size}×{size} RGB: {need / 2**20:,.0f} MiB in memory "
              "(once; reused every epoch)", flush=True)
    if free is not None and need > 0.8 * free:
        raise PoEError(f"{num_images:,} {what} at {size}×{size} need {need / 2**30:.1f} GiB decoded, but only "
                       f"{free / 2**30:.1f} GiB of memory are available; use a smaller --image_size")


def decode(paths: list[Path], size: int, desc: str) -> torch.Tensor:
    """Decode `paths` into one (N, 3, size, size) uint8 tensor, with a progress bar."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = read_image(paths[i], size)

    # PIL releases the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(tqdm(pool.map(one, range(len(paths))), total=len(paths), desc=desc, unit="img", leave=False,
                  disable=len(paths) < 500))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, 3, H, W), pixels scaled to [0, 1]."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / 3
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


class FolderImages(LazyArrayDataset):
    """Image files of any size, decoded to size×size on first use (a subset taken before that
    decodes only its own images: a query's evaluation reads only its classes' test images)."""

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            check_memory(len(self.paths), self.size, self.desc)
            self._images = decode(self.paths, self.size, f"decoding {self.desc}")
        return self._images

    def subset(self, class_ids):
        if self._images is not None:
            return super().subset(class_ids)
        mask = torch.isin(self._labels, torch.as_tensor(list(class_ids)))
        keep = mask.nonzero().flatten().tolist()
        return FolderImages([self.paths[i] for i in keep], self._labels[mask], self.size, self.desc)


class MissingSplit:
    """Stands for a split the folder lacks; any use says so in one line (the service needs no train/)."""

    def __init__(self, message: str):
        self.message = message

    def __len__(self):
        raise PoEError(self.message)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise PoEError(self.message)
