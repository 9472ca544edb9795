#!/usr/bin/env python
"""P5: which Oracle for a CPU budget — training, inference and distillation speed of candidate WRNs.

Times, interleaved and side by side: one SGD step of each candidate Oracle (what the Oracle stage
costs), its inference (what the feature cache costs per view), and one distillation step of the
WRN-16-1 library student under it (Oracle forward + student step: the library stage), all with
channels-last tensors and bf16 autocast where the CPU has bf16 units, as `--budget cpu` trains.
Prints images/s, the ratio to WRN-40-4 (the paper's Oracle) and the minutes one CIFAR-100 epoch
(50,000 images) would take.

    python bench/p5_oracle_choice.py
"""
import torch
import torch.nn.functional as F

import common
from poe.evaluate import autocast
from poe.losses import SoftLoss
from poe.networks import WideResNet, WRNConfig
from poe.train import pick_amp

CANDIDATES = [(40, 4), (28, 4), (16, 4), (16, 2)]


def main(argv=None):
    args = common.parser(__doc__).parse_args(argv)
    common.setup(args)
    amp = pick_amp("auto", torch.device("cpu"))
    batch = 8 if args.quick else 128
    candidates = CANDIDATES[-2:] if args.quick else CANDIDATES
    repeats = args.repeats or (2 if args.quick else 5)
    cl = torch.channels_last
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=cl)
    y = torch.randint(0, 100, (batch,))
    student = WideResNet(WRNConfig(16, 1), 100).to(memory_format=cl)
    student_opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    kd = SoftLoss(temperature=4.0)
    nets = {f"WRN-{d}-{w}": WideResNet(WRNConfig(d, w), 100).to(memory_format=cl) for d, w in candidates}
    opts = {name: torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) for name, net in nets.items()}

    def train_step(name):
        def call():
            net = nets[name].train()
            with autocast("cpu", amp):
                loss = F.cross_entropy(net(x), y)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
        return call

    def inference(name):
        def call():
            with torch.inference_mode(), autocast("cpu", amp):
                nets[name].eval()(x)
        return call

    def distill_step(name):
        def call():
            with torch.no_grad(), autocast("cpu", amp):
                target = nets[name].eval()(x)
            with autocast("cpu", amp):
                loss = kd(student.train()(x), target)
            student_opt.zero_grad()
            loss.backward()
            student_opt.step()
        return call

    figures = {}
    for what, make in (("train", train_step), ("inference", inference), ("distill WRN-16-1", distill_step)):
        seconds = common.interleaved({name: make(name) for name in nets}, repeats, warmup=1)
        figures[what] = {name: batch / s for name, s in seconds.items()}
    reference = figures["train"].get("WRN-40-4") and "WRN-40-4"
    rows = []
    for name in nets:
        row = [name, f"{sum(p.numel() for p in nets[name].parameters()) / 1e6:.2f} M"]
        for what in figures:
            ips = figures[what][name]
            ratio = f" ({ips / figures[what][reference]:.1f}x)" if reference else ""
            row.append(f"{ips:.0f}{ratio}")
        row.append(f"{50_000 / figures['train'][name] / 60:.1f} + {50_000 / figures['distill WRN-16-1'][name] / 60:.1f}")
        rows.append(row)
    table = common.markdown_table(["Oracle", "params", "train img/s", "inference img/s",
                                   "distillation img/s (student WRN-16-1)",
                                   "minutes per CIFAR-100 epoch: Oracle + student"], rows)
    notes = [f"batch {batch}, amp {amp}, channels-last; medians of {repeats} interleaved repeats"
             + ("; ratios vs WRN-40-4." if reference else ".")]
    common.finish(args, "P5 Oracle choice for a CPU budget", table, notes,
                  {"images_per_s": figures, "batch": batch, "amp": amp})


if __name__ == "__main__":
    main()
