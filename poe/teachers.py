"""The experts' teachers: what `--teacher` names.

- oracle: the Oracle's logits (the paper's).
- oracle-flip: the Oracle's logits averaged over the image and its horizontal mirror, a cheap
  test-time augmentation that makes a short-trained Oracle a steadier teacher (an option, measured
  in results/pool_ablation_cifar100.md; not the paper's).
- library-student: the library student's own head on the library's features (no Oracle needed).
"""
from __future__ import annotations

import torch
import torch.nn as nn

TEACHERS = ("oracle", "oracle-flip", "library-student")
ORACLE_TEACHERS = ("oracle", "oracle-flip")  # those that need the Oracle


class FlipAveraged(nn.Module):
    """A model whose logits are averaged over the input and its left-right mirror."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model(x) + self.model(x.flip(3)))


def oracle_teacher(kind: str, oracle: nn.Module) -> nn.Module:
    """The image-reading teacher of an Oracle-based kind."""
    return FlipAveraged(oracle).eval() if kind == "oracle-flip" else oracle
