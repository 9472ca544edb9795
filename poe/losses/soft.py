"""L_soft: classic knowledge distillation (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015), as used by PoE for the library student and the experts."""
import torch.nn as nn
import torch.nn.functional as F

from .constants import TEMPERATURE


class SoftLoss(nn.Module):
    """KL(softmax(teacher/T) || softmax(student/T)) · T², averaged over the batch.

    The T² keeps gradient magnitudes comparable across temperatures.
    """

    def __init__(self, temperature: float = TEMPERATURE):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits):
        t = self.temperature
        log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * t * t
