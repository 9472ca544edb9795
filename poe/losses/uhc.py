"""UHC, unifying heterogeneous classifiers (Vongkulbhisal, Vinayavekhin, Visentini-Scarzanella,
CVPR 2019), in the cross-entropy, direct back-propagation form the PoE authors' baseline uses.

Teacher i knows only its classes C_i, so it is compared with what the student says about C_i
alone: the student's softmax renormalised over C_i, q_l / Σ_{k∈C_i} q_k = softmax of the student's
logits restricted to C_i. KD (T², batch mean) per teacher, averaged over the teachers. No labels.
"""
import torch
import torch.nn as nn

from .constants import TEMPERATURE
from .soft import SoftLoss


class UHCLoss(nn.Module):
    """(1/n) Σ_i L_soft(s[:, C_i], t_i)."""

    def __init__(self, temperature: float = TEMPERATURE):
        super().__init__()
        self.soft = SoftLoss(temperature)

    def forward(self, student_logits, teacher_logits: list, positions: list):
        """student_logits (B, N); teacher_logits[i] (B, |C_i|); positions[i]: C_i's columns in the student."""
        return torch.stack([self.soft(student_logits[:, cols], z)
                            for z, cols in zip(teacher_logits, positions)]).mean()
