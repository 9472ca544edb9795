"""SD, "standard distillation" from several teachers with different class sets — the naive
multi-teacher baseline of the PoE paper's comparison (and of Vongkulbhisal et al., CVPR 2019).

Teacher i knows only the classes C_i of its task. Its softmax is zero-padded to the student's N
classes, so it asks for all probability mass on its own classes; the KL to the student's softmax
over all N outputs is averaged over the teachers. No labels.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .constants import TEMPERATURE


class SDLoss(nn.Module):
    """(1/n) Σ_i (T²/B) Σ_b Σ_{l∈C_i} π_il (log π_il − log σ(s_b/T)_l), π_i = σ(t_i/T) over C_i."""

    def __init__(self, temperature: float = TEMPERATURE):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits: list, positions: list):
        """student_logits (B, N); teacher_logits[i] (B, |C_i|); positions[i]: C_i's columns in the student."""
        t = self.temperature
        log_p = F.log_softmax(student_logits.float() / t, dim=1)                # (B, N)
        losses = []
        for z, cols in zip(teacher_logits, positions):
            log_q = F.log_softmax(z.float() / t, dim=1)                          # (B, |C_i|)
            # Outside C_i the padded target is 0 and so is its KL term: only C_i's columns count.
            kl = (log_q.exp() * (log_q - log_p[:, cols])).sum() / len(student_logits)
            losses.append(kl * t * t)
        return torch.stack(losses).mean()
