"""Losses, one per file. `ExpertLoss` is the loss an expert is trained with (and the CKD baseline's);
SDLoss and UHCLoss distil several single-task teachers into one student (the SD_*/UHC_* baselines)."""
import torch.nn as nn

from .constants import ALPHA, TEMPERATURE
from .scale import ScaleLoss
from .sd import SDLoss
from .soft import SoftLoss
from .uhc import UHCLoss

EXPERT_LOSSES = ("soft", "scale", "soft+scale")


class ExpertLoss(nn.Module):
    """soft: L_soft; scale: L_scale; soft+scale: L_soft + alpha·L_scale (the paper's default)."""

    def __init__(self, kind: str = "soft+scale", temperature: float = TEMPERATURE, alpha: float = ALPHA):
        super().__init__()
        if kind not in EXPERT_LOSSES:
            raise ValueError(f"unknown expert loss {kind!r}; choose from {', '.join(EXPERT_LOSSES)}")
        self.kind, self.alpha = kind, alpha
        self.soft, self.scale = SoftLoss(temperature), ScaleLoss()

    def forward(self, student_logits, teacher_logits):
        if self.kind == "soft":
            return self.soft(student_logits, teacher_logits)
        if self.kind == "scale":
            return self.scale(student_logits, teacher_logits)
        return self.soft(student_logits, teacher_logits) + self.alpha * self.scale(student_logits, teacher_logits)


__all__ = ["SoftLoss", "ScaleLoss", "ExpertLoss", "EXPERT_LOSSES", "SDLoss", "UHCLoss", "TEMPERATURE", "ALPHA"]
