"""Training history a person can follow: one CSV row per epoch (as timm's summary.csv) and a plot.

`fit()` rewrites both after every epoch (atomically), so a run in progress can be watched and an
interrupted one leaves a consistent file; a resumed run continues the same history.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .files import atomic_write_bytes, atomic_write_text

FIRST_COLUMNS = ("epoch", "lr", "loss", "seconds", "images_per_s")


def columns(history: list[dict]) -> list[str]:
    """epoch, lr, loss, seconds, images/s first, then the rest (per-expert losses, test scores) in
    the order they first appear."""
    seen = [c for c in FIRST_COLUMNS if any(c in row for row in history)]
    for row in history:
        seen += [k for k in row if k not in seen]
    return seen


def write_csv(history: list[dict], path: str | Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns(history), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(Path(path), out.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, plt, path) -> None:
    save_png(fig, path, dpi=90)
    plt.close(fig)


def save_png(fig, path, dpi: int = 120) -> str:
    """A matplotlib figure as a PNG at `path`, written atomically; returns the report's plot line."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buf.getvalue())
    return f"plot          : {path}"


def plot(history: list[dict], path: str | Path, title: str = "") -> bool:
    """Loss, learning rate and test scores (where logged) against epochs, as a PNG. Returns False,
    writing nothing, where matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return False
    epochs = [row["epoch"] for row in history]
    losses = [k for k in columns(history) if k == "loss" or k.startswith("loss/")]
    scores = [k for k in columns(history) if k.startswith("test_")]
    panels = 2 + bool(scores)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    for k in losses:
        axes[0].plot(epochs, [row.get(k) for row in history], label=k if len(losses) > 1 else None)
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    if len(losses) > 1:
        axes[0].legend(fontsize="x-small")
    axes[1].plot(epochs, [row["lr"] for row in history])
    axes[1].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    if scores:
        for k in scores:
            axes[2].plot(epochs, [row.get(k) for row in history], marker=".", label=k)
        axes[2].set(xlabel="epoch", ylabel="% (logged only, never used to pick a checkpoint)")
        axes[2].legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, plt, path)
    return True


def plot_stages(histories: dict[str, list[dict]], path: str | Path, title: str = "") -> bool:
    """Several stages side by side (e.g. Oracle and library student): training loss and logged test
    top-1 against epochs. False, writing nothing, without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, history in histories.items():
        epochs = [row["epoch"] for row in history]
        axes[0].plot(epochs, [row.get("loss") for row in history], label=label)
        if any("test_top1_pct" in row for row in history):
            axes[1].plot(epochs, [row.get("test_top1_pct") for row in history], marker=".", label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="test top-1 % (logged only)")
    for ax in axes:
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, plt, path)
    return True
