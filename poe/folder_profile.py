"""`--dataset folder --data_root DIR`: a profile built at run time from your own images.

The folder is read as poe/image_folder.py says (DIR/train/<class>/*, or DIR/train/<task>/<class>/*,
and DIR/val/<class>/*). What the profile takes from it:

- classes: the class folders' names, sorted (class id = position, as torchvision's ImageFolder
  numbers them); primitive tasks from the task folders and/or `--task_file`. A class is in one
  task at most; a class in no task is allowed (the Oracle and library learn it, no expert answers
  for it) and said.
- networks, by image size (`--image_size` overrides; else the median shorter side of the
  training images): about 32 px -> 32×32 and CIFAR-100's WRNs and budgets; about 64 px, and larger
  images resized to it, -> 64×64 and Tiny-ImageNet's WRNs (stride-2 stem) and budgets;
  `--image_size` 96-512 -> the ImageNet profile's MobileNetV2 library, whose Oracle
  (WideResNet-101-2) and library student (MobileNetV2) you train on your classes and give with
  `--weights oracle=PATH student=PATH`. `--budget cpu` is CIFAR-100's CPU budget for both WRN sizes.
- normalisation: the training images' per-channel mean and std.

A pool built from a folder is self-describing: its manifest holds the class names, tasks, image
size, network family, statistics and a fingerprint of the training images (Profile.pool_description,
written with every manifest update). A later run with `--db POOL` takes the profile from there, so
the service and the server answer without the training folder (the val folder only to score);
a training folder that is not the one the pool was built from is refused.

The Oracle and the library student of a folder pool live in POOL/pretrained/ unless
`--pretrained_db` says otherwise (Table 6's pools in POOL/table6/, baselines in POOL/baselines/),
so each folder's pool holds everything built from it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PoEError
from .image_folder import FolderImages, MissingSplit, Split, channel_stats, scan_split, typical_side
from .networks import MobileNetV2Architecture, WRNArchitecture, WRNConfig
from .paths import PROJECT_ROOT
from .profiles import Profile, get_profile
from .subset import with_num_classes

NAME = "folder"
DESCRIPTION_KEY = "dataset_description"  # in the pool's manifest.json
FORMAT = 1
HINT = "DIR/train/<class>/<images> (or DIR/train/<task>/<class>/<images>) and DIR/val/<class>/<images>"
WRN_SIZES = {32: "cifar100", 64: "tinyimagenet"}  # image side -> the profile whose WRNs and budgets it borrows
MOBILENET_SIDES = (96, 512)
# What the tools build beside a folder pool, unless a flag names another place: inside the pool's folder, so
# that two image folders never share (and silently reuse) an Oracle, Table 6's pools or trained baselines.
INSIDE_POOL = {"pretrained_db": "pretrained", "out_db": "table6", "out": "baselines"}


class UserWeightsMobileNetV2(MobileNetV2Architecture):
    """The ImageNet profile's networks for a folder's own classes: the Oracle and the library
    student cannot be torchvision's ImageNet weights (other classes), so they come from --weights."""

    def load_pretrained(self, kind, path=None, download=False):
        if not path:
            raise PoEError(f"--dataset folder at --image_size {MOBILENET_SIDES[0]}+ uses MobileNetV2, whose Oracle and "
                           f"library student you provide trained on these {self.num_classes} classes: --weights "
                           f"oracle=PATH student=PATH (torchvision {self.names['oracle']} and {self.names['student']} "
                           f"state_dicts with {self.num_classes} outputs); or --image_size 64 to train WRNs here")
        return super().load_pretrained(kind, path, download=False)


@dataclass
class ImageFolderProfile(Profile):
    family: str = "cifar100"                     # whose networks: cifar100, tinyimagenet or imagenet
    source: dict = field(default_factory=dict)   # folder name, layout, training images and their fingerprint

    def pool_description(self) -> dict:
        return {"format": FORMAT, "kind": "image folder", "class_names": list(self.class_names),
                "tasks": dict(self.hierarchy), "default_tasks": list(self.default_tasks),
                "image_size": self.image_size, "family": self.family, "mean": list(self.mean),
                "std": list(self.std), "source": dict(self.source)}


class FolderReader:
    """The profile's `load`: (train, val) of a folder, decoded when first used and kept per folder.
    A split's class folders must be among the profile's classes (`origin` says where those came from)."""

    def __init__(self, class_names: list[str], size: int, origin: str):
        self.class_ids = {name: i for i, name in enumerate(class_names)}
        self.size, self.origin = size, origin
        self.splits: dict[Path, tuple] = {}

    def keep(self, root: Path, train, val) -> None:
        self.splits[Path(root).resolve()] = (train, val)

    def __call__(self, data_root, download=False):
        root = Path(data_root).resolve()
        if root not in self.splits:
            self.splits[root] = self.read(Path(data_root))
        return self.splits[root]

    def images(self, split: Split, what: str) -> FolderImages:
        unknown = sorted(set(split.classes) - set(self.class_ids))
        if unknown:
            raise PoEError(f"class {unknown[0]!r} in {split.root} is absent from {self.origin}"
                           + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        return FolderImages(*split.files_and_labels(self.class_ids), self.size, what)

    def read(self, root: Path):
        train_dir, val_dir = root / "train", root / "val"
        train = self.images(scan_split(train_dir), "training images") if train_dir.exists() else \
            MissingSplit(f"no training images: {train_dir} is missing ({HINT})")
        if not val_dir.exists():
            raise PoEError(f"no test images: {val_dir} is missing ({val_dir}/<class>/<images>; Run_Service.py answers "
                           "without them with --no-eval)")
        return train, self.images(scan_split(val_dir), "test images")


# -- the profile from a folder or from a pool's description -------------------------------------------
def choose_size(typical: int, explicit: int | None) -> int:
    """The input side: `explicit` (--image_size) if given, else by the images' typical shorter side."""
    if explicit is not None:
        if explicit in WRN_SIZES or MOBILENET_SIDES[0] <= explicit <= MOBILENET_SIDES[1]:
            return explicit
        raise PoEError(f"--image_size {explicit}: use 32 (CIFAR-100's WRNs), 64 (Tiny-ImageNet's WRNs) or "
                       f"{MOBILENET_SIDES[0]}-{MOBILENET_SIDES[1]} (MobileNetV2 with your pretrained --weights)")
    if typical <= 48:
        return 32
    if typical > 96:
        print(f"[folder] the training images are about {typical} px: resized to 64×64 for Tiny-ImageNet's WRNs "
              f"(--image_size {MOBILENET_SIDES[0]}-{MOBILENET_SIDES[1]} uses MobileNetV2 with your --weights instead)")
    return 64


def _family(size: int) -> str:
    return WRN_SIZES.get(size, "imagenet")


def make_profile(*, class_names, hierarchy, default_tasks, size, mean, std, source, load) -> ImageFolderProfile:
    """The folder's profile: classes, tasks and statistics as given, networks and budgets borrowed
    from the dataset of its image size (see the module's docstring)."""
    family, k = _family(size), len(class_names)
    base = get_profile(family)
    presets, crop_padding, cache_views = {}, base.crop_padding, base.cache_views
    if family == "imagenet":
        architecture = UserWeightsMobileNetV2(num_classes=k)
        crop_padding = size // 8  # zero-pad and crop: the decoded array's augmentation, as for the WRNs
    else:
        architecture = with_num_classes(base.architecture, k)
        cpu = get_profile("cifar100").budget_presets["cpu"]
        oracle = dataclasses.replace(cpu.architecture.oracle_cfg, stem_stride=architecture.student_cfg.stem_stride)
        presets["cpu"] = dataclasses.replace(
            cpu, description="CIFAR-100's CPU budget: Oracle WRN-16-4 15 epochs, library student 20, experts 30 "
                             "(bf16 where the CPU has it); no validation split unless --val_per_class asks",
            # not CIFAR-100's 50 images a class: a folder's classes may hold fewer; --val_per_class sets one
            val_per_class=None,
            architecture=WRNArchitecture(oracle=oracle, student=architecture.student_cfg,
                                         expert_width=architecture.expert_width, num_classes=k))
    return ImageFolderProfile(
        name=NAME, title=f"image folder {source['folder']} ({k} classes, {size}×{size})",
        class_names=list(class_names), hierarchy={t: sorted(ids) for t, ids in hierarchy.items()},
        default_tasks=list(default_tasks), architecture=architecture, budgets=dict(base.budgets),
        batch_size=base.batch_size, mean=tuple(mean), std=tuple(std), crop_padding=crop_padding, image_size=size,
        load=load, data_hint=HINT, amp_default=base.amp_default, cache_views=cache_views, budget_presets=presets,
        family=family, source=dict(source))


def profile_from_folder(root: Path, image_size: int | None) -> ImageFolderProfile:
    """Scan DIR/train and DIR/val, choose the networks, decode both splits once (every unreadable
    image found before any training) and compute the training images' statistics."""
    train_split, val_split = scan_split(root / "train"), scan_split(root / "val")
    names = sorted(train_split.classes)
    ids = {n: i for i, n in enumerate(names)}
    hierarchy = {task: sorted(ids[c] for c in classes) for task, classes in sorted(train_split.tasks.items())}
    paths = [p for n in names for p in train_split.classes[n]]
    typical = typical_side(paths)
    size = choose_size(typical, image_size)
    source = {"folder": root.resolve().name, "layout": "tasks" if train_split.tasks else "classes",
              "train_images": train_split.num_images, "fingerprint": train_split.fingerprint(), "typical_side": typical}
    reader = FolderReader(names, size, str(root / "train"))
    train, val = reader.images(train_split, "training images"), reader.images(val_split, "test images")
    mean, std = channel_stats(train.images)
    val.images  # decoded now: a bad test image stops the run before any training, not after it
    reader.keep(root, train, val)
    return make_profile(class_names=names, hierarchy=hierarchy, default_tasks=list(hierarchy), size=size,
                        mean=mean, std=std, source=source, load=reader)


def read_description(pool_dir: Path) -> dict | None:
    """The dataset description in a pool's manifest, or None (no manifest, or not a folder pool)."""
    path = Path(pool_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PoEError(f"{path} is damaged ({exc.__class__.__name__}: {exc})") from None
    description = manifest.get(DESCRIPTION_KEY) if isinstance(manifest, dict) else None
    if description is None:
        return None
    needed = ("class_names", "tasks", "default_tasks", "image_size", "mean", "std", "source")
    if not isinstance(description, dict) or description.get("format") != FORMAT or \
            any(k not in description for k in needed):
        raise PoEError(f"{path}: the pool's dataset description is damaged or of another version "
                       f"(format {description.get('format') if isinstance(description, dict) else '?'}, expected {FORMAT})")
    return description


def profile_from_description(description: dict, pool_dir: Path) -> ImageFolderProfile:
    d = description
    names = list(d["class_names"])
    return make_profile(class_names=names, hierarchy=d["tasks"], default_tasks=d["default_tasks"],
                        size=int(d["image_size"]), mean=d["mean"], std=d["std"], source=d["source"],
                        load=FolderReader(names, int(d["image_size"]), f"the classes of the pool {pool_dir}"))


def check_same_folder(split: Split, description: dict, pool_dir: Path) -> None:
    """Refuse a training folder other than the one the pool was built from."""
    source = description["source"]
    if split.fingerprint() == source["fingerprint"]:
        return
    here, there = set(split.classes), set(description["class_names"])
    if here != there:
        diff = sorted(here - there) or sorted(there - here)
        detail = (f"its classes differ ({'not in the pool' if here - there else 'missing here'}: "
                  f"{', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})")
    else:
        detail = (f"it has the pool's classes but other images ({split.num_images:,} here, "
                  f"{source['train_images']:,} when the pool was built, or some changed)")
    raise PoEError(f"the pool {pool_dir} was built from another image folder ({source['folder']!r}): {split.root}: "
                   f"{detail}; give that folder's --data_root, or another --db (and --pretrained_db) for this one")


# -- tasks ----------------------------------------------------------------------------------------------
def check_tasks(profile: ImageFolderProfile, announce: bool) -> None:
    """At least one task; no class in two tasks; classes in no task said (when `announce`)."""
    hierarchy, names = profile.hierarchy, profile.class_names
    if not hierarchy:
        raise PoEError("no primitive tasks: name them with --task_file FILE (lines 'task: class, class, ...') or "
                       "arrange the classes in task folders, train/<task>/<class>/")
    owner: dict[int, str] = {}
    for task, ids in hierarchy.items():
        for c in ids:
            if c in owner:
                raise PoEError(f"tasks {owner[c]} and {task} share the class {names[c]!r}: in a folder dataset a class "
                               "belongs to one task at most")
            owner[c] = task
    loose = [names[c] for c in range(len(names)) if c not in owner]
    if loose and announce:
        print(f"[folder] {len(loose)} of {len(names)} classes are in no task ({', '.join(loose[:5])}"
              f"{' ...' if len(loose) > 5 else ''}): the Oracle and the library learn them; no expert answers for them")


# -- the command line ---------------------------------------------------------------------------------
def _pool_dirs(args) -> list[Path]:
    """Pools a tool reads or writes, in order: --db (Run_Table6: each one), --library_from, the default."""
    db = getattr(args, "db", None)
    dirs = [Path(d) for d, _ in db] if isinstance(db, list) else [Path(db)] if db else []
    if getattr(args, "library_from", None):
        dirs.append(Path(args.library_from))
    return dirs or [PROJECT_ROOT / "DB_PoE" / NAME]


def folder_profile_from_args(args) -> ImageFolderProfile:
    """The profile of `--dataset folder`: from the pool's description where a pool built from a folder
    exists (the folder, if given, checked to be that one), else from --data_root. The tool's
    --pretrained_db, --out_db and --out, where it has them and they were not given, become folders
    inside the pool (INSIDE_POOL)."""
    if getattr(args, "restrict_to", None):
        raise PoEError("--restrict_to does not apply to --dataset folder: keep only the class folders you want")
    root = Path(args.data_root)
    pools = _pool_dirs(args)
    described = [(p, d) for p in pools if (d := read_description(p)) is not None]
    if described:
        pool_dir, description = described[0]
        for other, d in described[1:]:
            if d["source"]["fingerprint"] != description["source"]["fingerprint"]:
                raise PoEError(f"the pools {pool_dir} and {other} were built from different image folders")
        if args.image_size is not None and args.image_size != description["image_size"]:
            raise PoEError(f"the pool {pool_dir} was built for {description['image_size']}×{description['image_size']} "
                           f"images; leave out --image_size {args.image_size}")
        if (root / "train").exists():
            check_same_folder(scan_split(root / "train"), description, pool_dir)
        profile = profile_from_description(description, pool_dir)
    else:
        if not (root / "train").exists():
            raise PoEError(f"--dataset folder: no pool built from an image folder in {', '.join(map(str, pools))}, and "
                           f"no {root / 'train'} to build one from (expected {HINT.replace('DIR', str(root))})")
        profile = profile_from_folder(root, args.image_size)
    if args.task_file:
        profile = profile.with_task_file(args.task_file)
    check_tasks(profile, announce=not described or bool(args.task_file))
    for flag, folder in INSIDE_POOL.items():
        if hasattr(args, flag) and getattr(args, flag) is None:
            setattr(args, flag, str(pools[0] / folder))
    return profile
