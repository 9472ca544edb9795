"""Checkpoint files: written atomically, read with weights_only=True and clear errors.

Our files are dicts {"format": "poe", "kind", "state_dict", "meta"} so a model can be rebuilt
and checked (dataset, architecture, classes) from the file alone; the authors' files are plain
state_dicts.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import torch
import torch.nn as nn

from .errors import PoEError
from .files import atomic_write

FORMAT = "poe"


def atomic_save(obj, path: str | Path) -> None:
    """torch.save, written atomically (poe.files)."""
    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        torch.save(obj, tmp)  # by path: torch's zip writer opens the file itself

    atomic_write(path, fill)


def read(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise PoEError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise PoEError(f"cannot read checkpoint {path} (truncated, or not a PyTorch file): {first}") from None


def make(kind: str, model: nn.Module, half: bool = False, **meta) -> dict:
    """`half`: floating tensors stored as float16 (half the file; round the model first with
    `round_to_half` so that what is scored is what is stored)."""
    meta.setdefault("date", datetime.datetime.now().isoformat(timespec="seconds"))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        meta["stored_dtype"] = "float16"
    return {"format": FORMAT, "kind": kind, "state_dict": state, "meta": meta}


@torch.no_grad()
def round_to_half(model: nn.Module) -> nn.Module:
    """Round every floating parameter and buffer to float16 precision in place (dtype unchanged)."""
    for value in model.state_dict().values():
        if value.is_floating_point():
            value.copy_(value.half())
    return model


def state_and_meta(obj, path, kind: str) -> tuple[dict, dict]:
    """Accept our checkpoint dict of the right kind, or a plain state_dict (authors' layout)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("kind") != kind:
            raise PoEError(f"{path} holds a {obj.get('kind')!r} checkpoint, expected {kind!r}")
        return obj["state_dict"], obj.get("meta", {})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise PoEError(f"{path} is not a PoE checkpoint or a state_dict")


def load_into(model: nn.Module, state: dict, path, what: str) -> nn.Module:
    """strict load with one readable line on mismatch (missing/unexpected keys, wrong shapes)."""
    check_fits(model, state, path, what)
    model.load_state_dict(state, strict=True)
    return model


def check_fits(model: nn.Module, state: dict, path, what: str) -> None:
    """One readable error line unless `state` has exactly the keys and shapes of model's state_dict."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if items:
                parts.append(f"{label}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}")
        raise PoEError(f"{path} does not fit the {what}: " + "; ".join(parts))
