"""Reads Tiny-ImageNet as downloaded (tiny-imagenet-200.zip, unpacked), with no re-organisation:

    tiny-imagenet-200/wnids.txt                          the 200 class wnids, one per line
    tiny-imagenet-200/train/<wnid>/images/*.JPEG         500 training images per class
    tiny-imagenet-200/val/images/val_<i>.JPEG            10,000 validation images (the test set here)
    tiny-imagenet-200/val/val_annotations.txt            <file> <wnid> <box x0 y0 x1 y1>, tab-separated

Class id = position of the wnid in sorted order, as an ImageFolder over train/ gives (and as the
PoE authors' code had it). The val labels come from val_annotations.txt, so the val folder needs
no sorting into class folders (the authors' code needed that done by hand).
"""
from __future__ import annotations

from pathlib import Path

from poe.errors import PoEError
from poe.folders import IMAGE_SUFFIXES, LazyArrayDataset

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
SIZE = 64


def find_root(data_root) -> Path | None:
    for candidate in (Path(data_root) / FOLDER, Path(data_root)):
        if (candidate / "wnids.txt").is_file():
            return candidate
    return None


def read_wnids(root: Path, expected: list[str]) -> list[str]:
    """wnids.txt, checked against the profile's list; returns the wnids in class-id (sorted) order."""
    path = root / "wnids.txt"
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise PoEError(f"{path} lists a wnid more than once")
    unknown = sorted(set(wnids) - set(expected))
    missing = sorted(set(expected) - set(wnids))
    if unknown or missing:
        detail = f"unknown {', '.join(unknown[:3])}" if unknown else f"missing {', '.join(missing[:3])}"
        raise PoEError(f"{path} is not Tiny-ImageNet's list of {len(expected)} wnids ({len(wnids)} lines; {detail})")
    return sorted(wnids)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def train_files(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for class_id, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise PoEError(f"missing folder {folder} (Tiny-ImageNet's train/<wnid>/images/)")
        images = _images_in(folder)
        if not images:
            raise PoEError(f"no images in {folder}")
        paths += images
        labels += [class_id] * len(images)
    return paths, labels


def val_files(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise PoEError(f"missing {annotations} (it gives each val image's class)")
    class_id = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or not fields[0].strip() or fields[1].strip() not in class_id:
            raise PoEError(f"{annotations} line {number} is malformed (expected '<file>\\t<wnid>\\t...' "
                           f"with one of wnids.txt's wnids): {line.strip()[:80]!r}")
        path = root / "val" / "images" / fields[0].strip()
        if not path.is_file():
            raise PoEError(f"{annotations} line {number} names {path}, which is missing")
        paths.append(path)
        labels.append(class_id[fields[1].strip()])
    if not paths:
        raise PoEError(f"{annotations} lists no images")
    return paths, labels


def download(data_root: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive  # only for its downloader

    try:
        download_and_extract_archive(URL, str(data_root))
    except Exception as exc:
        raise PoEError(f"could not download Tiny-ImageNet into {data_root}: {exc}") from None


def load(data_root, expected_wnids: list[str], download_if_missing: bool = False):
    """(train, val) as LazyArrayDatasets: decoded into memory when first used."""
    root = find_root(data_root)
    if root is None and download_if_missing:
        download(Path(data_root))
        root = find_root(data_root)
    if root is None:
        raise PoEError(f"Tiny-ImageNet not found: expected {Path(data_root) / FOLDER}/{{wnids.txt,train/,val/}} "
                       "(tiny-imagenet-200.zip unpacked as is); pass --data_root DIR, or --download with a network")
    wnids = read_wnids(root, expected_wnids)
    train = LazyArrayDataset(*train_files(root, wnids), SIZE, "Tiny-ImageNet train")
    val = LazyArrayDataset(*val_files(root, wnids), SIZE, "Tiny-ImageNet val")
    return train, val
