#!/usr/bin/env python
"""P3: the task model for n(Q)=5 vs the Oracle (WRN-40-4, all 100 classes), images/s at batch 256.

Target: task model >= 40x the Oracle's throughput. The Oracle has random weights (no trained
CIFAR-100 Oracle is published; its speed does not depend on its weights).

    python bench/p3_vs_oracle.py
"""
import torch

import common
from poe.metrics import count_flops, count_params
from poe.service import build_task_model


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    common.setup(args)
    pool, source = common.cifar_pool(args.quick)
    tasks = common.TASKS[:5]
    fused, _ = build_task_model(pool, tasks)
    plain, _ = build_task_model(pool, tasks, fuse=False)
    torch.manual_seed(0)
    oracle = common.PROFILE.architecture.oracle().eval()
    batch = 8 if args.quick else 256
    x, image_source = common.test_images(plain.class_ids.tolist(), batch, args.quick)
    repeats = args.repeats or (2 if args.quick else 7)

    def run(model):
        def call():
            with torch.inference_mode():
                model(x)
        return call

    s = common.interleaved({"oracle": run(oracle), "sequential": run(plain), "fused": run(fused)}, repeats, warmup=1)
    ips = {k: batch / v for k, v in s.items()}
    shape = common.PROFILE.input_shape
    flops = {"oracle": count_flops(oracle, shape), "task model": count_flops(plain, shape)}
    params = {"oracle": count_params(oracle), "task model": count_params(plain)}
    rows = [["Oracle WRN-40-4 (100 classes)", params["oracle"], flops["oracle"] / 1e6, ips["oracle"], "1.00x"],
            ["task model, sequential (25 classes)", params["task model"], flops["task model"] / 1e6,
             ips["sequential"], f"{ips['sequential'] / ips['oracle']:.1f}x"],
            ["task model, fused (25 classes)", params["task model"], flops["task model"] / 1e6, ips["fused"],
             f"{ips['fused'] / ips['oracle']:.1f}x"]]
    table = common.markdown_table(["model", "params", "MFLOPs/image", "img/s (batch %d)" % batch, "vs Oracle"], rows)
    notes = [f"pool: {source}; inputs: {image_source}; medians of {repeats} interleaved repeats. "
             f"FLOPs ratio Oracle / task model: {flops['oracle'] / flops['task model']:.1f}x."]
    common.finish(args, "P3 task model (n(Q)=5) vs Oracle", table, notes,
                  {"images_per_s": ips, "flops": flops, "params": params, "batch": batch,
                   "speedup_fused": ips["fused"] / ips["oracle"], "speedup_sequential": ips["sequential"] / ips["oracle"]})


if __name__ == "__main__":
    main()
