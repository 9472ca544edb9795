#!/usr/bin/env python
"""Write some CIFAR-100 tasks' images as PNG files in `--dataset folder`'s layout:

    OUT/train/<task>/<class>/<index>.png     every training image of the tasks' classes
    OUT/val/<task>/<class>/<index>.png       every test image of them (the test set is the val set)

<index> is the image's position in the official split. PNG is lossless, so the folder holds the
very pixels the cifar100 profile reads; the classes, sorted by name, get the same order as their
CIFAR-100 ids (the official class names are in alphabetical order), so a pool built from the
folder and one built by `--dataset cifar100 --restrict_to TASKS` number the classes alike.

    python tools/cifar100_to_png.py --data_root ../shared/data --out ../cifar30_png     # the six paper tasks

Keep OUT outside the repository. The folder is written under a temporary name and renamed when
complete, so a run that stops leaves no half-written folder; an existing OUT is left as it is.
"""
import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from CIFAR100 import PROFILE  # noqa: E402
from poe.cli import run  # noqa: E402
from poe.data import load_cifar100  # noqa: E402
from poe.errors import PoEError  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="folder holding cifar-100-python/")
    p.add_argument("--out", required=True, help="the folder to write (outside the repository)")
    p.add_argument("--tasks", nargs="+", default=PROFILE.default_tasks,
                   help="CIFAR-100 superclasses (default: the paper's six, 30 classes)")
    return p


def main(argv=None) -> None:
    args = get_args_parser().parse_args(argv)
    tasks = PROFILE.resolve_tasks(args.tasks, "--tasks")
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; left as it is (delete it to write it again)")
        return
    train, test, names = load_cifar100(args.data_root)
    if names != sorted(names):
        raise PoEError("CIFAR-100's class names are not in alphabetical order: the folder's class order would differ")
    task_of = {c: t for t in tasks for c in PROFILE.hierarchy[t]}
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    for split, data in (("train", train), ("val", test)):
        keep = [i for i, y in enumerate(data.labels.tolist()) if y in task_of]
        for c in task_of:
            (partial / split / task_of[c] / names[c]).mkdir(parents=True, exist_ok=True)
        images = data.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3)
        for i in tqdm(keep, desc=f"writing {split}", unit="img"):
            y = int(data.labels[i])
            Image.fromarray(images[i]).save(partial / split / task_of[y] / names[y] / f"{i:05d}.png")
        counts[split] = len(keep)
    partial.rename(out)
    print(f"wrote {out}: {counts['train']:,} training and {counts['val']:,} val images of {len(task_of)} classes "
          f"in {len(tasks)} tasks ({', '.join(tasks)})")


if __name__ == "__main__":
    raise SystemExit(run(main))
