#!/usr/bin/env python
"""How many cached views? Expert accuracy after E epochs trained from V cached views, V <= E.

With V = E every epoch reads a fresh view: the very batches of the live (recompute-per-batch)
path, so that row is the paper's training. Smaller V reuses views (epoch e reads view e mod V,
rows reshuffled), trading augmentation variety for V/E of the teacher's cost. All runs share one
cache, so the views are computed once. Setting: the authors' library frozen, their library
student as the teacher, the six experts, L_soft + 0.3 L_scale, real CIFAR-100.

    python bench/views_study.py --epochs 10 --views 1 3 10
"""
import shutil
import tempfile
import time
from pathlib import Path

import common
from p4_extraction import preprocessor, tiny_profile


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--views", type=int, nargs="+", default=[1, 3, 10])
    args = p.parse_args(argv)
    common.setup(args)
    real = (common.DATA_ROOT / "cifar-100-python" / "train").is_file() and not args.quick
    source, source_name = common.cifar_pool(args.quick)
    profile = common.PROFILE if real else tiny_profile(64)
    epochs, views = (2, [1, 2]) if args.quick else (args.epochs, sorted(args.views))
    if max(views) > epochs:
        raise SystemExit(f"every V must be <= --epochs ({epochs})")
    work = Path(tempfile.mkdtemp(prefix="poe-bench-views-"))
    rows, figures = [], {}
    try:
        for v in sorted(views, reverse=True):  # the largest first: it builds every view the others read
            pre = preprocessor(profile, work / f"V{v}", source, "cache", epochs=epochs, views=v)
            pre.cache_dir = work / "cache"
            tic = time.perf_counter()
            scores = pre.experts(common.TASKS, "soft+scale", "library-student", None)
            mean = sum(scores.values()) / len(scores)
            figures[v] = {"scores": scores, "mean_acc": mean, "seconds": time.perf_counter() - tic}
            rows.append([v, "yes (= live batches)" if v == epochs else "no", mean,
                         *[scores[t] for t in common.TASKS]])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows.sort(key=lambda r: r[0])
    table = common.markdown_table(["views V", "fresh view every epoch", "mean", *common.TASKS], rows)
    notes = [f"{epochs} expert epochs, batch {profile.batch_size}; accuracy (%) of each expert on the test images "
             f"of its own classes; library and teacher: {source_name}."]
    common.finish(args, f"Expert accuracy vs cached views ({epochs} epochs)", table, notes, {"epochs": epochs,
                                                                                          "views": figures})


if __name__ == "__main__":
    main()
