"""The seven per-query training baselines of the PoE paper's comparison (the authors' CIFAR-100 and
Tiny-ImageNet code; specified in shared/spec/baselines.md), one small file per family:

  scratch.py   Scratch                  whole WRN from random init, CE with labels
  transfer.py  Transfer, CKD            new head on PoE's frozen library (from the feature cache)
  distill.py   SD_*, UHC_*              whole WRN from random init, distilled from n teachers
                                        (_Scratch: single-task Scratch models; _CKD: PoE's experts)

All train with the one loop (poe.train.fit) on the queried classes' images only and are stored
like the pool's models (poe.baselines.model). The study that races them against PoE is
poe.baselines.study; the methods' registry is poe.baselines.registry, their schedules
poe.baselines.schedules; the command line is Run_Baselines.py.
"""
# Each family registers its methods when imported; this order is the registry's (the paper's table's).
from . import scratch, transfer, distill  # noqa: F401,I001
from .registry import METHODS, Method

__all__ = ["METHODS", "Method", "distill", "scratch", "transfer"]
