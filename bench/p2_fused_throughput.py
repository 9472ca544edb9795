#!/usr/bin/env python
"""P2: fused vs sequential task model for n(Q)=5 — images per second at batch 1 and batch 256.

Targets: fused >= 2x sequential at batch 1, >= 1.3x at batch 256. Both models are built by the
service (Run_Service.py default vs --no-fuse) and checked to give the same logits first.

    python bench/p2_fused_throughput.py
    python bench/p2_fused_throughput.py --threads 1 --repeats 20
"""
import torch

import common
from poe.service import build_task_model


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    common.setup(args)
    pool, source = common.cifar_pool(args.quick)
    tasks = common.TASKS[:5]
    fused, _ = build_task_model(pool, tasks)
    plain, _ = build_task_model(pool, tasks, fuse=False)
    batches = (1, 8) if args.quick else (1, 256)
    images, image_source = common.test_images(plain.class_ids.tolist(), max(batches), args.quick)
    with torch.inference_mode():
        diff = (fused(images) - plain(images)).abs().max().item()
    rows, figures = [], {"max_abs_logit_diff": diff}
    for b in batches:
        x = images[:b]
        repeats = args.repeats or (3 if args.quick else (200 if b == 1 else 15))

        def run(model):
            def call():
                with torch.inference_mode():
                    model(x)
            return call

        s = common.interleaved({"sequential": run(plain), "fused": run(fused)}, repeats)
        ips = {k: b / v for k, v in s.items()}
        rows.append([b, ips["sequential"], ips["fused"], f"{ips['fused'] / ips['sequential']:.2f}x"])
        figures[b] = {"images_per_s": ips, "speedup": ips["fused"] / ips["sequential"], "repeats": repeats}
    table = common.markdown_table(["batch", "sequential (img/s)", "fused (img/s)", "fused / sequential"], rows)
    notes = [f"pool: {source}; inputs: {image_source}; n(Q)=5 ({', '.join(tasks)}); medians of interleaved "
             f"repeats; max |fused - sequential| logit difference {diff:.2e}."]
    common.finish(args, "P2 fused vs sequential task model (n(Q)=5)", table, notes, figures)


if __name__ == "__main__":
    main()
