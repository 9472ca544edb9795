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


def fit(model: nn.Module, batch_loss, loader, budget: Budget, *, resume_path: str | Path,
        signature: dict, device: torch.device, amp: str = "none", desc: str = "train") -> list[dict]:
    """Train `model` for `budget.epochs` epochs; returns one metrics dict per epoch."""
    resume_path = Path(resume_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=budget.lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(budget.milestones), budget.gamma)
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
    model.to(device)
    for epoch in range(start, budget.epochs):
        model.train()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sums, batches, tic = {}, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{budget.epochs}", leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
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
            bar.set_postfix(loss=f"{total.item():.4f}")
        scheduler.step()  # after the epoch: LR drops take effect at the milestone epochs exactly
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.perf_counter() - tic, 2),
                  **{f"loss/{k}" if len(sums) > 1 else "loss": v / max(batches, 1) for k, v in sums.items()}}
        history.append(record)
        mean_loss = sum(v for k, v in record.items() if k.startswith("loss")) / max(len(sums), 1)
        tqdm.write(f"{desc} epoch {epoch + 1}/{budget.epochs}: loss {mean_loss:.4f}, {record['seconds']:.1f}s")
        checkpoint.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "lr_scheduler": scheduler.state_dict(), "epoch": epoch,
                                "signature": signature, "history": history}, resume_path)
    return history


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Teacher/library: eval mode (BN statistics fixed) and no gradients while used."""
    for m in modules:
        m.eval()
        m.requires_grad_(False)
    with torch.no_grad():
        yield
