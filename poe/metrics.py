"""Metrics of a task model: accuracy, cross-expert errors, parameters, FLOPs."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


OWN_CLASS_KEYS = {"test": "own_classes_top1_pct", "val": "own_classes_val_top1_pct"}


def describe_scores(metrics: dict) -> str:
    """'81.20% (val), 79.40% (test)' from an expert's stored metrics."""
    return ", ".join(f"{metrics[key]:.2f}% ({split})" for split, key in (("val", OWN_CLASS_KEYS["val"]),
                                                                          ("test", OWN_CLASS_KEYS["test"]))
                     if key in metrics)


def accuracy_pct(pred: torch.Tensor, target: torch.Tensor) -> float:
    return 100.0 * (pred == target).float().mean().item() if len(target) else float("nan")


def error_breakdown(pred: torch.Tensor, target: torch.Tensor, class_to_task: dict[int, str]) -> dict:
    """Count errors, and cross-expert errors: wrong predictions whose predicted class belongs to a
    different primitive task than the true class (Table 6 of the paper)."""
    wrong = pred != target
    errors = int(wrong.sum())
    cross = sum(class_to_task[p] != class_to_task[t]
                for p, t in zip(pred[wrong].tolist(), target[wrong].tolist()))
    return {"errors": errors, "cross_expert_errors": int(cross),
            "cross_expert_pct": 100.0 * cross / errors if errors else 0.0}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input, as torch.utils.flop_counter counts them
    (a multiply-add = 2 FLOPs; convolutions and matmuls, which dominate)."""
    param = next(model.parameters())
    x = torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())
