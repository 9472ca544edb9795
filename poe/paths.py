"""Where the project keeps its model DBs by default. Light on purpose (no torch): every command
line tool imports it, a query included, to learn a folder name."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_pool_dir(profile) -> Path:
    """The pool (library and experts) of a dataset: DB_PoE/<dataset>."""
    return PROJECT_ROOT / "DB_PoE" / profile.name


def default_pretrained_dir(profile) -> Path:
    """The Oracle and the library student of a dataset: DB_pretrained/<dataset>."""
    return PROJECT_ROOT / "DB_pretrained" / profile.name
