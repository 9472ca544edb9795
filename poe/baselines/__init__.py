"""The seven per-query training baselines of the PoE paper's comparison (the authors' CIFAR-100 and
Tiny-ImageNet code; specified in shared/spec/baselines.md), one small file per family:

  scratch.py   Scratch                  whole WRN from random init, CE with labels
  transfer.py  Transfer, CKD            new head on PoE's frozen library (from the feature cache)
  distill.py   SD_*, UHC_*              whole WRN from random init, distilled from n teachers
                                        (_Scratch: single-task Scratch models; _CKD: PoE's experts)

All train with the one loop (poe.train.fit) on the queried classes' images only and are stored
like the pool's models (poe.baselines.model). The study that races them against PoE is
poe.baselines.study; the command line is Run_Baselines.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import distill, scratch, transfer


@dataclass(frozen=True)
class Method:
    name: str
    prepare: Callable             # (setup, query, name) -> training.Plan
    budget: str                   # "network" (whole WRN) | "head" (head on the frozen library)
    teachers: str | None = None   # None | "oracle-or-student" (CKD) | "experts" | "scratch"
    uses_library: bool = False    # PoE's library (Transfer, CKD) or its experts' (the *_CKD teachers)
    description: str = ""


METHODS = {m.name: m for m in [
    Method("Scratch", scratch.prepare, "network", description="whole WRN, random init, CE with labels"),
    Method("Transfer", transfer.prepare, "head", uses_library=True,
           description="new head on the frozen library, CE with labels"),
    Method("CKD", transfer.prepare, "head", teachers="oracle-or-student", uses_library=True,
           description="new head on the frozen library, L_soft + 0.3·L_scale to the teacher's query logits"),
    Method("SD_Scratch", distill.prepare, "network", teachers="scratch",
           description="whole WRN, zero-padded KD from single-task Scratch teachers"),
    Method("SD_CKD", distill.prepare, "network", teachers="experts", uses_library=True,
           description="whole WRN, zero-padded KD from PoE's experts"),
    Method("UHC_Scratch", distill.prepare, "network", teachers="scratch",
           description="whole WRN, UHC KD from single-task Scratch teachers"),
    Method("UHC_CKD", distill.prepare, "network", teachers="experts", uses_library=True,
           description="whole WRN, UHC KD from PoE's experts"),
]}

__all__ = ["METHODS", "Method"]
