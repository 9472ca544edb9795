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

from . import checkpoint
from .errors import PoEError
from .evaluate import autocast
from .history import plot, write_csv
from .profiles import Budget

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    record only; the checkpoint kept is always the last epoch's."""
    resume_path = Path(resume_path)
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
    # channels-last: the layout oneDNN and cuDNN convolve fastest (2-3x for WRNs on this CPU in bf16).
    model.to(device, memory_format=torch.channels_last)
    for epoch in range(start, budget.epochs):
        model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        sums, batches, images, tic = {}, 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{budget.epochs}", leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                losses = batch_loss(x, y)
            if not isinstance(losses, dict):
                losses = {"loss": losses}
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            batches += 1
            images += len(y)
            bar.set_postfix(loss=f"{total.item():.4f}")
        scheduler.step()  # after the epoch: LR drops take effect at the milestone epochs exactly
        seconds = time.perf_counter() - tic
        losses = {f"loss/{k}" if len(sums) > 1 else "loss": v / max(batches, 1) for k, v in sums.items()}
        mean_loss = sum(losses.values()) / max(len(losses), 1)
        record = {"epoch": epoch + 1, "lr": lr, **losses,
                  "seconds": round(seconds, 2), "images_per_s": round(images / max(seconds, 1e-9), 1)}
        scores = ""
        if evaluate is not None:
            metrics = evaluate()
            record.update(metrics)
            scores = "".join(f", {k} {v:.2f}" for k, v in metrics.items())
            model.train()
        history.append(record)
        tqdm.write(f"{desc} epoch {epoch + 1}/{budget.epochs}: lr {lr:.4g}, loss {mean_loss:.4f}, "
                   f"{record['seconds']:.1f}s, {record['images_per_s']:.0f} img/s{scores}")
        checkpoint.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "lr_scheduler": scheduler.state_dict(), "epoch": epoch,
                                "signature": signature, "history": history}, resume_path)
        if history_path is not None:
            write_history(history, history_path, desc)
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
