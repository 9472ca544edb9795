#!/usr/bin/env python
"""P1: query latency — from a query (n(Q) primitive tasks) to a model ready to run, for n(Q)=1..5.

Targets at n(Q)=5: <= 5 ms warm, <= 50 ms from disk.

  warm       the service process has answered queries before: the folded library and experts are
             in its in-process cache (poe.realtime); the query only checks the files and concatenates.
  from disk  the cache is emptied before every query: the library and experts are read from their
             checkpoint files (torch.load, weights_only=True) and folded; torch is already imported
             and the files are in the OS page cache.
  plain      the sequential TaskModel read from disk (Run_Service.py --no-fuse), for comparison.

A second table does the same for an ImageNet pool (MobileNetV2 library, the four bird experts;
random weights), n(Q)=1..4 (--skip_imagenet leaves it out).

    python bench/p1_query_latency.py                # the authors' pool when ../shared is present
    python bench/p1_query_latency.py --threads 1 --repeats 50
"""
import common
from poe.realtime import CACHE
from poe.service import build_task_model


def latencies(pool, task_list, sizes, repeats) -> tuple[list[list], dict]:
    """Rows [n(Q), warm ms, from-disk ms, plain ms] for queries of the first n tasks."""
    rows, figures = [], {}
    for n in sizes:
        tasks = task_list[:n]

        def warm():
            build_task_model(pool, tasks)

        def from_disk():
            CACHE.clear()
            build_task_model(pool, tasks)

        def plain():
            build_task_model(pool, tasks, fuse=False)

        build_task_model(pool, tasks)  # fills the cache once for the warm runs
        ms = {k: 1000 * v for k, v in common.interleaved({"warm": warm, "from disk": from_disk, "plain": plain},
                                                            repeats).items()}
        rows.append([n, ms["warm"], ms["from disk"], ms["plain"]])
        figures[n] = ms
    return rows, figures


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--skip_imagenet", action="store_true", help="only the CIFAR-100 pool")
    args = p.parse_args(argv)
    common.setup(args)
    repeats = args.repeats or (3 if args.quick else 30)
    pool, source = common.cifar_pool(args.quick)
    rows, figures = latencies(pool, common.TASKS, (1, 2) if args.quick else (1, 2, 3, 4, 5), repeats)
    headers = ["n(Q)", "warm (ms)", "from disk (ms)", "plain TaskModel from disk (ms)"]
    table = common.markdown_table(headers, rows)
    n5 = figures.get(5)
    notes = [f"pool: {source}; medians of {repeats} interleaved repeats."]
    if n5:
        notes.append(f"n(Q)=5: warm {n5['warm']:.2f} ms (target <= 5), from disk {n5['from disk']:.2f} ms "
                     f"(target <= 50).")
    result = {"pool": source, "repeats": repeats, "ms": figures}
    if not args.skip_imagenet:
        im_repeats = args.repeats or (3 if args.quick else 10)
        im_rows, result["imagenet_ms"] = latencies(common.imagenet_pool(64 if args.quick else 224),
                                                   common.IMAGENET_TASKS, (1, 2) if args.quick else (1, 2, 3, 4),
                                                   im_repeats)
        table += "\n\nImageNet pool (MobileNetV2 library, random weights):\n\n" + common.markdown_table(headers, im_rows)
        notes.append(f"ImageNet pool: the first n of {', '.join(common.IMAGENET_TASKS)}; medians of {im_repeats} "
                     "interleaved repeats.")
    common.finish(args, "P1 query latency (query -> model ready)", table, notes, result)


if __name__ == "__main__":
    main()
