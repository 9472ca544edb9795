"""Networks of a PoE pool. An `Architecture` says how to build each model a profile needs:

  oracle()           the big model (all classes)
  student()          the library student (all classes), distilled from the Oracle
  library()          the front of the student, shared by every expert
  student_head()     the rest of the student (its classifier), kept to use the student as teacher
  expert(n)          an expert head for a task of n classes, on the library's features
  split_student(sd)  the student's state_dict -> (library state, head state)

An architecture whose Oracle and student come pretrained (ImageNet: MobileNetV2Architecture) sets
`pretrained = True` and provides load_pretrained(kind, path, download); preprocessing then loads
them instead of training them.
"""
from __future__ import annotations

import dataclasses

from .wrn import WideResNet, WRNConfig, WRNHead, WRNLibrary, split_state_dict
from .mobilenet import MobileNetV2Architecture


class WRNArchitecture:
    """WRN Oracle, WRN library student, expert = block3 at `expert_width` + BN + FC."""

    def __init__(self, oracle: WRNConfig, student: WRNConfig, expert_width: int, num_classes: int):
        self.oracle_cfg, self.student_cfg = oracle, student
        self.expert_width, self.num_classes = expert_width, num_classes

    def oracle(self, config: dict | None = None):
        """The Oracle of this architecture, or of `config` (as `oracle_config()` saved it in a checkpoint:
        an Oracle trained under another budget, e.g. --budget cpu's smaller one, loads without it)."""
        return WideResNet(WRNConfig(**config) if config else self.oracle_cfg, self.num_classes)

    def oracle_config(self) -> dict:
        return dataclasses.asdict(self.oracle_cfg)

    def student(self):
        return WideResNet(self.student_cfg, self.num_classes)

    def library(self):
        return WRNLibrary(self.student_cfg)

    def student_head(self):
        c = self.student_cfg
        return WRNHead(c.library_channels, c.widths[3], self.num_classes, c.blocks_per_group)

    def expert(self, num_classes: int):
        c = self.student_cfg
        return WRNHead(c.library_channels, self.expert_width, num_classes, c.blocks_per_group)

    def split_student(self, state: dict):
        return split_state_dict(state)

    def describe(self) -> dict:
        def wrn(c):
            return f"WRN-{c.depth}-{c.widen}" + (f" (stem stride {c.stem_stride})" if c.stem_stride != 1 else "")
        return {"oracle": wrn(self.oracle_cfg), "library": wrn(self.student_cfg) + " conv1+block1+block2",
                "expert": f"block3 width {self.expert_width} + BN + FC"}


__all__ = ["WRNArchitecture", "MobileNetV2Architecture", "WRNConfig", "WideResNet", "WRNLibrary", "WRNHead"]
