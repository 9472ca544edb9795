"""Consolidation: the task model for a query = library once, the queried experts side by side,
their logits placed in sorted global class order. No training: this is the realtime step."""
from __future__ import annotations

import torch
import torch.nn as nn


class TaskModel(nn.Module):
    """library -> [expert_1 | ... | expert_n] -> logits over the union of the tasks' classes.

    Output column j is class `class_ids[j]`, with class_ids sorted ascending whatever order the
    tasks were given in.
    """

    def __init__(self, library: nn.Module, experts: list[nn.Module], expert_classes: list[list[int]],
                 tasks: list[str] | None = None):
        super().__init__()
        if len(experts) != len(expert_classes):
            raise ValueError("one class list per expert")
        self.library = library
        self.experts = nn.ModuleList(experts)
        concatenated = torch.tensor([c for classes in expert_classes for c in classes], dtype=torch.long)
        if len(set(concatenated.tolist())) != len(concatenated):
            raise ValueError("experts' class lists overlap")
        order = torch.argsort(concatenated)
        self.register_buffer("order", order, persistent=False)             # concat position of each sorted class
        self.register_buffer("class_ids", concatenated[order], persistent=False)
        self.tasks = list(tasks) if tasks else [f"expert{i}" for i in range(len(experts))]
        self.expert_classes = [list(c) for c in expert_classes]

    def forward(self, x):
        features = self.library(x)
        logits = torch.cat([expert(features) for expert in self.experts], dim=1)  # (B, sum n_i)
        return logits[:, self.order]                                                # (B, classes sorted)


def consolidate(library: nn.Module, experts: dict[str, nn.Module], hierarchy: dict[str, list[int]]) -> TaskModel:
    """TaskModel for the experts given (task name -> expert), in the given order."""
    tasks = list(experts)
    return TaskModel(library, [experts[t] for t in tasks], [hierarchy[t] for t in tasks], tasks).eval()
