"""L_scale: PoE's logit-scale loss (Kim & Choi, SIGMOD 2021, Sec. 4).

Softmax is blind to a constant shift and only weakly tied to scale, so experts trained with
L_soft alone produce logits on unrelated scales; then the argmax over several experts' logits
(the consolidated task model) is decided by whichever expert happens to shout loudest. An L1 pull
on the raw logits pins every expert to the Oracle's logit scale.
"""
import torch.nn as nn
import torch.nn.functional as F


class ScaleLoss(nn.Module):
    """mean |student_logits − teacher_logits| over batch and classes."""

    def forward(self, student_logits, teacher_logits):
        return F.l1_loss(student_logits.float(), teacher_logits.float())
