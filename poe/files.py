"""Writing files atomically: the content goes to a temporary file beside the target, which is then
renamed over it, so a reader never sees a half-written file and a failed write (a full disk, a
vanished folder) leaves the old file and no temporary one. Every file the project writes goes
through `atomic_write`: texts and bytes here, checkpoints by poe.checkpoint.atomic_save."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import PoEError


def atomic_write(path: str | Path, fill: Callable[[int, str], None]) -> None:
    """`fill(fd, tmp)` writes the content into the temporary file, given both as an open descriptor
    and as a path (it closes the descriptor); the file then replaces `path`. A failure to write
    becomes one PoEError line."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fill(fd, tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # the old file stays, and no temporary file is left
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        # RuntimeError: torch.save's zip writer reports a full disk so
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, PoEError):
            raise PoEError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def fill(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    atomic_write(path, fill)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
