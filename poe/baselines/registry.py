"""The registry of the per-query baselines: one `Method` per name, registered by its family module
(scratch.py, transfer.py, distill.py) when the package is imported. `METHODS` is what the command line
offers, what poe.baselines.training.obtain dispatches on, and what tests patch. It imports no family,
so a family may call back into training (SD_Scratch trains its Scratch teachers through obtain)
without an import circle."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Method:
    name: str
    prepare: Callable             # (setup, query, name) -> training.Plan
    budget: str                   # "network" (whole WRN) | "head" (head on the frozen library)
    teachers: str | None = None   # None | "oracle-or-student" (CKD) | "experts" | "scratch"
    uses_library: bool = False    # PoE's library (Transfer, CKD) or its experts' (the *_CKD teachers)
    description: str = ""


METHODS: dict[str, Method] = {}  # in the order registered: the report's and --methods' order


def register(*methods: Method) -> None:
    for m in methods:
        METHODS[m.name] = m
