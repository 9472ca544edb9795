#!/usr/bin/env python
"""P4: expert extraction — cached + joint (the default, poe/extract.py) vs recompute-per-batch
(--expert_source live: library and teacher run on every batch, as in the paper's code), for the
same recipe. Target: >= 20x less time; accuracy of both after the same budget within 0.5 point.

(A) accuracy and wall time, on the real CIFAR-100 training set: the authors' library frozen, their
    library student as the teacher (no trained Oracle is published), the six experts, L_soft +
    0.3 L_scale, a short budget (default 2 epochs; the cache then holds 2 views, so both paths see
    the very same batches). Both runs use the project's real code paths (Preprocessor.experts).
(B) the paper's teacher, the Oracle WRN-40-4 (random weights: speed does not depend on them), on a
    slice of the training set: seconds per image for a live epoch, for building a cache view and
    for a cached epoch; projected to the paper's budget (50,000 images, 100 epochs, 10 views) and
    to the authors' schedule (each expert trained on its own: teacher rerun per expert).

    python bench/p4_extraction.py                        # (A) + (B), tens of minutes on 2 CPU cores
    python bench/p4_extraction.py --epochs 2 --oracle_images 2048
"""
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import common
from poe import checkpoint
from poe.data import ArrayDataset
from poe.networks import WRNArchitecture, WRNConfig
from poe.pool import Pool
from poe.preprocess import Preprocessor


def preprocessor(profile, root: Path, source: Pool, source_kind: str, *, epochs: int, views: int = 1,
                 pretrained: Path | None = None) -> Preprocessor:
    pool = Pool(root, profile)
    pre = Preprocessor(profile, pool, pretrained or root / "pretrained", data_root=common.DATA_ROOT, download=False,
                       batch_size=profile.batch_size,
                       budgets={**profile.budgets, "expert": profile.budgets["expert"].with_epochs(epochs)},
                       device=torch.device("cpu"), amp="none", seed=0, expert_source=source_kind,
                       cache_views=views)
    pre.import_library(source)
    return pre


def run(pre: Preprocessor, tasks, teacher: str, oracle_fn=None) -> dict:
    tic = time.perf_counter()
    scores = pre.experts(tasks, "soft+scale", teacher, oracle_fn)
    wall = time.perf_counter() - tic
    meta = torch.load(pre.pool.expert_path(tasks[0]), weights_only=True)["meta"]
    epochs = [h["seconds"] for h in meta["history"]]
    build = sum(json.loads(p.read_text())["seconds"] for p in pre.cache_dir.glob("*/seed*-view*/meta.json")) \
        if pre.expert_source == "cache" else 0.0
    return {"wall_s": wall, "epoch_s": epochs, "build_s": build, "scores": scores,
            "mean_acc": sum(scores.values()) / len(scores)}


def tiny_profile(n: int):
    """--quick: a few random images and a small Oracle, to check the script in seconds."""
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 100)
    arch = WRNArchitecture(oracle=WRNConfig(16, 1), student=WRNConfig(16, 1), expert_width=16, num_classes=100)
    return dataclasses.replace(common.PROFILE, load=lambda root=None, download=False: (data, data), batch_size=32,
                               architecture=arch)


def slice_profile(profile, n: int):
    """The profile with only the first n training images (part B's timing slice)."""
    train, test = profile.load(common.DATA_ROOT)
    part = ArrayDataset(train.images[:n], train.labels[:n])
    return dataclasses.replace(profile, load=lambda root=None, download=False: (part, test))


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=2, help="(A) expert epochs of both runs (default 2)")
    p.add_argument("--oracle_images", type=int, default=2048, help="(B) training images timed with the Oracle")
    p.add_argument("--skip_a", action="store_true", help="only part B")
    args = p.parse_args(argv)
    common.setup(args)
    real = (common.DATA_ROOT / "cifar-100-python" / "train").is_file() and not args.quick
    source, source_name = common.cifar_pool(args.quick)
    profile = common.PROFILE if real else tiny_profile(64)
    work = Path(tempfile.mkdtemp(prefix="poe-bench-p4-"))  # pools and caches (GBs): removed at the end
    try:
        measure(args, real, source, source_name, profile, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, real, source, source_name, profile, work):
    tasks = common.TASKS
    figures, rows, notes = {}, [], []

    if not args.skip_a:  # (A)
        epochs = 1 if args.quick else args.epochs
        live = run(preprocessor(profile, work / "A-live", source, "live", epochs=epochs), tasks, "library-student")
        cached = run(preprocessor(profile, work / "A-cached", source, "cache", epochs=epochs, views=epochs),
                     tasks, "library-student")
        figures["A"] = {"epochs": epochs, "live": live, "cached": cached}
        for name, r in (("recompute per batch (live)", live), (f"cached ({epochs} views) + joint", cached)):
            rows.append([f"A: {name}", "library student", epochs, r["build_s"], sum(r["epoch_s"]), r["wall_s"],
                         r["mean_acc"]])
        notes.append(f"(A) {len(tasks)} experts, {epochs} epochs, batch {profile.batch_size}, "
                     f"{'CIFAR-100 train (50,000 images)' if real else 'random images (--quick)'}; library and "
                     f"teacher: {source_name}. Wall-time ratio live / cached: {live['wall_s'] / cached['wall_s']:.2f}x "
                     f"(training epochs only: {sum(live['epoch_s']) / max(sum(cached['epoch_s']), 1e-9):.2f}x). "
                     f"Mean own-class accuracy: live {live['mean_acc']:.2f} %, cached {cached['mean_acc']:.2f} % "
                     f"(difference {cached['mean_acc'] - live['mean_acc']:+.2f} pt; target within 0.5).")

    # (B) the Oracle as teacher, on a slice of the training set
    n = 64 if args.quick else args.oracle_images
    sliced = slice_profile(profile, n) if real else tiny_profile(n)
    pretrained = work / "B-oracle"
    torch.manual_seed(0)
    oracle = sliced.architecture.oracle()
    checkpoint.atomic_save(checkpoint.make("oracle", oracle, dataset=sliced.name), pretrained / "oracle.pt")
    b_live_pre = preprocessor(sliced, work / "B-live", source, "live", epochs=1, pretrained=pretrained)
    b_live = run(b_live_pre, tasks, "oracle", b_live_pre.oracle)
    b_cached_pre = preprocessor(sliced, work / "B-cached", source, "cache", epochs=1, pretrained=pretrained)
    b_cached = run(b_cached_pre, tasks, "oracle", b_cached_pre.oracle)
    per_image = {"live_epoch": b_live["epoch_s"][0] / n, "view_build": b_cached["build_s"] / n,
                 "cached_epoch": b_cached["epoch_s"][0] / n}
    images, paper_epochs, views = 50_000, 100, 10
    live_full = paper_epochs * images * per_image["live_epoch"]
    cached_full = views * images * per_image["view_build"] + paper_epochs * images * per_image["cached_epoch"]
    # The authors' code trains each expert on its own: library + Oracle rerun per expert per batch.
    teacher_share = per_image["view_build"]  # library + Oracle forward per image
    authors_full = paper_epochs * images * (len(tasks) * teacher_share +
                                            (per_image["live_epoch"] - teacher_share))
    figures["B"] = {"images": n, "seconds_per_image": per_image, "projected_s": {
        "live": live_full, "cached": cached_full, "authors_one_expert_at_a_time": authors_full}}
    oracle_name = f"Oracle {sliced.architecture.describe()['oracle']} (random weights)"
    rows.append(["B: recompute per batch (live), per image", oracle_name, 1, 0.0,
                 1000 * per_image["live_epoch"], "", ""])
    rows.append(["B: cached + joint, per image", oracle_name, 1, 1000 * per_image["view_build"],
                 1000 * per_image["cached_epoch"], "", ""])
    notes.append(f"(B) rows in milliseconds per training image ({n} images timed). Projected to the paper's "
                 f"budget (50,000 images, 100 epochs; cache of {views} views): live {live_full / 3600:.1f} h, "
                 f"cached {cached_full / 3600:.1f} h -> {live_full / cached_full:.1f}x less time; the authors' "
                 f"schedule (each expert alone, teacher rerun per expert) {authors_full / 3600:.1f} h -> "
                 f"{authors_full / cached_full:.1f}x.")
    table = common.markdown_table(["run", "teacher", "epochs", "cache build (s)", "training epochs (s)",
                                   "wall (s)", "mean own-class acc (%)"], rows)
    common.finish(args, "P4 expert extraction: cached + joint vs recompute per batch", table, notes, figures)


if __name__ == "__main__":
    main()
