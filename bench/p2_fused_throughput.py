#!/usr/bin/env python
"""P2: fused vs sequential task model for n(Q)=5 — images per second at batch 1 and batch 256.

Targets: fused >= 2x sequential at batch 1, >= 1.3x at batch 256. Both models are built by the
service (Run_Service.py default vs --no-fuse) and checked to give the same logits first. Batch 1 is
timed two ways: in steady state (runs of 20 calls per model, interleaved; what a service answering
a stream of single images sees) and alternating single calls (each model then starts with the
other's data in the CPU caches, which costs the faster model relatively more). A second
table does the same for an ImageNet pool (MobileNetV2 library, 1x1-conv experts; random weights,
random 224x224 images), n(Q)=4 bird tasks, batch 1 and 32 (--skip_imagenet leaves it out).

    python bench/p2_fused_throughput.py
    python bench/p2_fused_throughput.py --threads 1 --repeats 20
"""
import torch

import common
from poe.service import build_task_model

BLOCK = 20  # calls per run in the steady-state measurement of single images


def compare(pool, tasks, images, batches, args, repeats_for):
    """Rows [batch, sequential img/s, fused img/s, ratio] and figures, for the service's two forms."""
    fused, _ = build_task_model(pool, tasks)
    plain, _ = build_task_model(pool, tasks, fuse=False)
    with torch.inference_mode():
        expected = plain(images[:8])
        diff = (fused(images[:8]) - expected).abs().max().item()
    rows, figures = [], {"max_abs_logit_diff": diff, "max_abs_logit": expected.abs().max().item()}
    for b in batches:
        x = images[:b]

        def run(model):
            def call():
                with torch.inference_mode():
                    model(x)
            return call

        # Single images: runs of BLOCK calls per model (steady state, as a service answering a
        # stream of requests), and single calls alternating between the two models (each then
        # starts with the other's data in the CPU caches). Large batches: single calls.
        ways = [("steady", BLOCK), ("alternating", 1)] if b == 1 else [("", 1)]
        for way, block in ways:
            repeats = args.repeats or repeats_for(b, block)
            s = common.interleaved({"sequential": run(plain), "fused": run(fused)}, repeats, block=block)
            ips = {k: b / v for k, v in s.items()}
            label = f"{b} ({way})" if way else b
            rows.append([label, ips["sequential"], ips["fused"], f"{ips['fused'] / ips['sequential']:.2f}x"])
            figures[f"{b} {way}".strip()] = {"images_per_s": ips, "speedup": ips["fused"] / ips["sequential"],
                                              "repeats": repeats, "block": block}
    figures["batch1_parts_ms"] = parts(plain, fused, images[:1], args.repeats or repeats_for(1, BLOCK))
    return rows, figures


def parts(plain, fused, x, repeats):
    """Milliseconds per single image of each part: the library (plain / fused) and the experts
    (plain, one after the other / fused heads), in steady state like the whole models."""
    with torch.inference_mode():
        plain_features, fused_features = plain.library(x), fused.library(x)

        def call(fn):
            def timed():
                with torch.inference_mode():
                    fn()
            return timed

        s = common.interleaved({
            "library_sequential": call(lambda: plain.library(x)), "library_fused": call(lambda: fused.library(x)),
            "experts_sequential": call(lambda: [e(plain_features) for e in plain.experts]),
            "experts_fused": call(lambda: fused.heads(fused_features))}, repeats, block=BLOCK)
    return {k: 1000 * v for k, v in s.items()}


def main(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--skip_imagenet", action="store_true", help="only the CIFAR-100 pool")
    args = p.parse_args(argv)
    common.setup(args)
    pool, source = common.cifar_pool(args.quick)
    tasks = common.TASKS[:5]
    batches = (1, 8) if args.quick else (1, 256)
    class_ids = sorted(c for t in tasks for c in common.PROFILE.hierarchy[t])
    images, image_source = common.test_images(class_ids, max(batches), args.quick)
    rows, figures = compare(pool, tasks, images, batches, args,
                            lambda b, block: 3 if args.quick else (200 // block if b == 1 else 15))
    headers = ["batch", "sequential (img/s)", "fused (img/s)", "fused / sequential"]
    table = common.markdown_table(headers, rows)
    ms = figures["batch1_parts_ms"]
    notes = [f"pool: {source}; inputs: {image_source}; n(Q)=5 ({', '.join(tasks)}); medians of interleaved "
             f"repeats; max |fused - sequential| logit difference {figures['max_abs_logit_diff']:.2e}.",
             f"Batch 1 by part (ms): library {ms['library_sequential']:.3f} sequential / {ms['library_fused']:.3f} "
             f"fused; experts {ms['experts_sequential']:.3f} sequential / {ms['experts_fused']:.3f} fused."]
    if not args.skip_imagenet:
        size = 64 if args.quick else 224
        batches = (1, 2) if args.quick else (1, 32)
        x = torch.randn(max(batches), 3, size, size, generator=torch.Generator().manual_seed(0))
        im_rows, figures["imagenet"] = compare(common.imagenet_pool(size), common.IMAGENET_TASKS, x, batches, args,
                                               lambda b, block: 3 if args.quick else (40 // block if b == 1 else 8))
        table += "\n\nImageNet pool (MobileNetV2 library, random weights), n(Q)=4:\n\n" + \
            common.markdown_table(headers, im_rows)
        im = figures["imagenet"]
        notes.append(f"ImageNet pool: {', '.join(common.IMAGENET_TASKS)}; BatchNorm statistics calibrated on "
                     f"random {size}x{size} images, which are also the inputs; max |fused - sequential| logit difference "
                     f"{im['max_abs_logit_diff']:.2e} (logits up to {im['max_abs_logit']:.2g}).")
    common.finish(args, "P2 fused vs sequential task model (n(Q)=5)", table, notes, figures)


if __name__ == "__main__":
    main()
