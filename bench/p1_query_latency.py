#!/usr/bin/env python
"""P1: query latency — from a query (n(Q) primitive tasks) to a model ready to run, for n(Q)=1..5.

Targets at n(Q)=5: <= 5 ms warm, <= 50 ms from disk.

  warm       the service process has answered queries before: the folded library and experts are
             in its in-process cache (poe.realtime); the query only checks the files and concatenates.
  from disk  the cache is emptied before every query: the library and experts are read from their
             checkpoint files (torch.load, weights_only=True) and folded; torch is already imported
             and the files are in the OS page cache.
  plain      the sequential TaskModel read from disk (Run_Service.py --no-fuse), for comparison.

    python bench/p1_query_latency.py                # the authors' pool when ../shared is present
    python bench/p1_query_latency.py --threads 1 --repeats 50
"""
import common
from poe.realtime import CACHE
from poe.service import build_task_model


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    common.setup(args)
    repeats = args.repeats or (3 if args.quick else 30)
    pool, source = common.cifar_pool(args.quick)
    sizes = (1, 2) if args.quick else (1, 2, 3, 4, 5)
    rows, figures = [], {}
    for n in sizes:
        tasks = common.TASKS[:n]

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
        build_task_model(pool, tasks)
        rows.append([n, ms["warm"], ms["from disk"], ms["plain"]])
        figures[n] = ms
    table = common.markdown_table(["n(Q)", "warm (ms)", "from disk (ms)", "plain TaskModel from disk (ms)"], rows)
    n5 = figures.get(5)
    notes = [f"pool: {source}; medians of {repeats} interleaved repeats."]
    if n5:
        notes.append(f"n(Q)=5: warm {n5['warm']:.2f} ms (target <= 5), from disk {n5['from disk']:.2f} ms "
                     f"(target <= 50).")
    common.finish(args, "P1 query latency (query -> model ready)", table, notes,
                  {"pool": source, "repeats": repeats, "ms": figures})


if __name__ == "__main__":
    main()
