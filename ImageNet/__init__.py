"""ImageNet profile: ILSVRC-2012's 1000 classes in the standard folder layout
(DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG, as torchvision's ImageFolder expects).

Networks come pretrained from torchvision (IMAGENET1K_V1): Oracle WideResNet-101-2, library =
MobileNetV2 features[:-1] (320 ch); experts = 1×1 conv 320→80 + BN + ReLU6 + pool + dropout 0.2
+ FC, trained 20 epochs, SGD lr 0.01 ×0.1 at 10 and 15. Inputs: resize 256, random crop 224 +
flip for training, centre crop 224 for evaluation. Primitive tasks: the paper's four bird groups.
Images are decoded per batch by DataLoader workers (the set does not fit in memory).
"""
from pathlib import Path

from poe.errors import PoEError
from poe.folders import ClassFoldersDataset, FolderProfile, read_class_table
from poe.networks import MobileNetV2Architecture
from poe.profiles import Budget

WNIDS, CLASS_NAMES, HIERARCHY = read_class_table(Path(__file__).with_name("hierarchy.json"))


def find_root(data_root) -> Path | None:
    for candidate in (Path(data_root) / "imagenet", Path(data_root)):
        if (candidate / "train").is_dir() and (candidate / "val").is_dir():
            return candidate
    return None


def load(data_root, download=False):
    """(train, val), each listed when first used. Labels are the standard ids of the folders'
    wnids, so a copy holding only some classes (e.g. the birds) works too."""
    root = find_root(data_root)
    if root is None:
        raise PoEError(f"ImageNet not found: expected {Path(data_root)}/{{train,val}}/<wnid>/*.JPEG (the ImageFolder "
                       "layout; val sorted into class folders). It cannot be downloaded automatically: get "
                       "ILSVRC-2012 from image-net.org")
    class_ids = {w: i for i, w in enumerate(WNIDS)}
    return ClassFoldersDataset(root / "train", class_ids), ClassFoldersDataset(root / "val", class_ids)


PROFILE = FolderProfile(
    name="imagenet",
    title="ImageNet (ILSVRC-2012)",
    class_names=CLASS_NAMES,
    hierarchy=HIERARCHY,
    default_tasks=list(HIERARCHY),
    architecture=MobileNetV2Architecture(num_classes=len(CLASS_NAMES)),
    budgets={"expert": Budget(20, 0.01, (10, 15))},  # the Oracle and library come pretrained
    batch_size=512,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    crop_padding=0,
    image_size=224,
    load=load,
    data_hint="DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (ImageFolder layout)",
    wnids=WNIDS,
    resize=256,
    cache_views=1,  # one view of 1.28 M images' 320×7×7 features is ~45 GB of disk
)
