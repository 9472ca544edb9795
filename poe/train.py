"""The one training loop every stage uses (Oracle, library student, experts).

A stage supplies the module to train and `batch_loss(x, y)`, which returns a scalar loss or a
dict of named losses that are summed (experts trained together: each expert's loss touches only
its own weights, so one SGD over the sum equals training each on the same batches). SGD with
momentum 0.9 and weight decay 5e-4; the LR scheduler steps once after each epoch. After every
epoch a resume checkpoint is written atomically; rerunning the same command continues from it.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from . import checkpoint, distributed
from .errors import PoEError
from .evaluate import autocast
from .history import plot, write_csv
from .profiles import Budget

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


def pick_device(name: str = "auto") -> torch.device:
    """--device: 'auto' (a GPU when present), or a device this machine has (one clear error if not)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PoEError(f"--device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PoEError(f"--device {name}: this machine has no CUDA GPU that PyTorch can use; "
                           "use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise PoEError(f"--device {name}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise PoEError(f"--device {name}: this machine has no Apple GPU (MPS); use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise PoEError(f"--device {name}: not supported here; use auto, cpu, cuda or cuda:N")
    return device


def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_amp(name: str, device: torch.device) -> str:
    """'auto': bf16 where the hardware computes it fast (recent GPUs, CPUs with bf16 units)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if cpu_has_bf16() else "none"


def make_scheduler(optimizer, budget: Budget):
    """The budget's per-epoch schedule: steps ×gamma at the milestones (the paper's), or cosine."""
    if budget.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=budget.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(budget.milestones), budget.gamma)


def fit(model: nn.Module, batch_loss, loader, budget: Budget, *, resume_path: str | Path,
        signature: dict, device: torch.device, amp: str = "none", desc: str = "train",
        history_path: str | Path | None = None, evaluate=None) -> list[dict]:
    """Train `model` for `budget.epochs` epochs; returns one metrics dict per epoch.

    `history_path`: a CSV (and, with matplotlib, a PNG beside it) rewritten after every epoch.
    `evaluate()`: called after every epoch, returns metrics to log (e.g. test top-1) — for the
    record only; the checkpoint kept is always the last epoch's.

    Several processes (`model` from poe.distributed.wrap, i.e. inside DDP; `loader` sharded): each
    rank's loss is weighted by its share of the global batch, so DDP's gradient average is the
    gradient of the global batch's mean loss; logged losses are all-reduced the same way. Rank 0
    alone prints, evaluates and writes the resume checkpoint and the history; every rank resumes
    from the same file."""
    resume_path = Path(resume_path)
    shared = distributed.is_data_parallel(model)
    world = distributed.world() if shared else distributed.ALONE
    net, model = model, distributed.unwrap(model)  # net: what batch_loss calls; model: what is saved
    optimizer = torch.optim.SGD(model.parameters(), lr=budget.lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    scheduler = make_scheduler(optimizer, budget)
    history, start = [], 0
    if resume_path.is_file():
        state = checkpoint.read(resume_path)
        if state.get("signature") != signature:
            raise PoEError(f"{resume_path} is an interrupted run with other settings "
                           f"({state.get('signature')}); rerun with those settings, or delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        history, start = list(state["history"]), state["epoch"] + 1
        print(f"{desc}: resuming after epoch {start}/{budget.epochs} from {resume_path}")
    if shared and len(set(distributed.gather(start))) > 1:
        raise PoEError(f"the processes see different resume files {resume_path}: put the run's folders on a "
                       "filesystem every node shares")
    # channels-last: the layout oneDNN and cuDNN convolve fastest (bench/p5_oracle_choice.py times it so).
    if not shared:  # (distributed.wrap did it before DDP took the parameters)
        model.to(device, memory_format=torch.channels_last)
    for epoch in range(start, budget.epochs):
        net.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        sums, batches, images, tic = {}, 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{budget.epochs}", leave=False, disable=not world.is_main)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                losses = batch_loss(x, y)
            if not isinstance(losses, dict):
                losses = {"loss": losses}
            total = sum(losses.values())
            # This rank's share of the global batch: DDP averages gradients over the ranks, so scaled
            # by size * share they sum to the gradient of the global batch's mean loss.
            share = len(y) / distributed.all_sum([len(y)]).item() if shared else 1.0
            optimizer.zero_grad(set_to_none=True)
            (total * (share * world.size) if shared else total).backward()
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item() * share
            batches += 1
            images += len(y)
            bar.set_postfix(loss=f"{total.item():.4f}")
        scheduler.step()  # after the epoch: LR drops take effect at the milestone epochs exactly
        if shared:  # the global batch's losses and the images all ranks read
            totals = distributed.all_sum([*sums.values(), images]).tolist()
            sums, images = dict(zip(sums, totals[:-1])), int(totals[-1])
        seconds = time.perf_counter() - tic
        losses = {f"loss/{k}" if len(sums) > 1 else "loss": v / max(batches, 1) for k, v in sums.items()}
        mean_loss = sum(losses.values()) / max(len(losses), 1)
        record = {"epoch": epoch + 1, "lr": lr, **losses,
                  "seconds": round(seconds, 2), "images_per_s": round(images / max(seconds, 1e-9), 1)}
        scores = ""
        if evaluate is not None and world.is_main:  # the others go on and wait for rank 0 at the next step
            metrics = evaluate()
            record.update(metrics)
            scores = "".join(f", {k} {v:.2f}" for k, v in metrics.items())
            net.train()
        history.append(record)
        if not world.is_main:
            continue
        tqdm.write(f"{desc} epoch {epoch + 1}/{budget.epochs}: lr {lr:.4g}, loss {mean_loss:.4f}, "
                   f"{record['seconds']:.1f}s, {record['images_per_s']:.0f} img/s{scores}")
        checkpoint.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "lr_scheduler": scheduler.state_dict(), "epoch": epoch,
                                "signature": signature, "history": history}, resume_path)
        if history_path is not None:
            write_history(history, history_path, desc)
    if shared:
        distributed.sync_from_main(model)  # rank 0's BatchNorm statistics: the model it saves, on every rank
    return history


def write_history(history: list[dict], csv_path: str | Path, title: str = "") -> None:
    """The per-epoch CSV, and its plot beside it (same name, .png) where matplotlib is installed."""
    csv_path = Path(csv_path)
    write_csv(history, csv_path)
    plot(history, csv_path.with_suffix(".png"), title)


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Teacher/library: eval mode (BN statistics fixed) and no gradients while used."""
    for m in modules:
        m.eval()
        m.requires_grad_(False)
    with torch.no_grad():
        yield
