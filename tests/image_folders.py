"""Small generated image folders in the real datasets' layouts (no downloads in tests)."""
from pathlib import Path

import numpy as np
from PIL import Image


def colour(class_id: int) -> tuple[int, int, int]:
    """A distinct colour per class, so decoded pixels can be checked against the label; kept
    within 30..225 so the ±20 noise is never clipped (the image mean stays the colour)."""
    return (30 + class_id * 5 % 196, 225 - class_id * 3 % 196, 30 + class_id * 37 % 196)


def write_image(path: Path, class_id: int, size: int, seed: int = 0, mode: str = "RGB") -> None:
    """A noisy image of the class colour (noise so that networks see some texture)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour(class_id)) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert(mode) if mode != "RGB" else image).save(path, quality=95)


def make_tiny_imagenet(root: Path, wnids: list[str], train_per_class: int = 1, val_classes=None,
                       val_per_class: int = 1) -> Path:
    """tiny-imagenet-200/ as in the official zip: wnids.txt (not sorted), train/<wnid>/images/,
    val/images/ + val/val_annotations.txt. Images are flat-coloured noise (see colour())."""
    folder = root / "tiny-imagenet-200"
    order = list(reversed(wnids))  # wnids.txt is not in sorted order in the real file either
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(order) + "\n")
    class_id = {w: i for i, w in enumerate(sorted(wnids))}
    for wnid in wnids:
        for i in range(train_per_class):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", class_id[wnid], 64, seed=i)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines, n = [], 0
    for wnid in (val_classes if val_classes is not None else wnids):
        for i in range(val_per_class):
            write_image(folder / "val" / "images" / f"val_{n}.JPEG", class_id[wnid], 64, seed=100 + i)
            lines.append(f"val_{n}.JPEG\t{wnid}\t0\t0\t63\t63")
            n += 1
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_image_folder(root: Path, wnids_by_id: dict[int, str], train_per_class: int, val_per_class: int,
                      size: tuple[int, int] = (80, 60)) -> Path:
    """ImageNet's ImageFolder layout: root/{train,val}/<wnid>/*.JPEG, non-square images."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for class_id, wnid in wnids_by_id.items():
            for i in range(count):
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(i)
                pixels = np.clip(np.array(colour(class_id)) + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    return root
