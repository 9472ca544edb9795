"""Evaluation: run a model over a loader; score every combination of tasks from the experts'
logits computed once (what Table 6 and the faithfulness tests need)."""
from __future__ import annotations

import contextlib
import itertools

import torch
from tqdm import tqdm

from .metrics import accuracy_pct, error_breakdown


def autocast(device: torch.device | str, amp: str):
    """bf16 autocast when asked ('bf16'), else a no-op context."""
    if amp == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model, loader, device="cpu", amp="none", desc=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of `model` over `loader`, model in eval mode."""
    model.eval()
    outs, labels = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        with autocast(device, amp):
            outs.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


@torch.no_grad()
def expert_logits(library, experts: dict, loader, device="cpu", amp="none", desc=None):
    """Each expert's logits on every image of `loader`, the library run once per batch.

    Returns ({task: (N, n_task) logits}, labels (N,))."""
    library.eval()
    for e in experts.values():
        e.eval()
    outs = {t: [] for t in experts}
    labels = []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=desc is None):
        with autocast(device, amp):
            features = library(x.to(device))
            for t, e in experts.items():
                outs[t].append(e(features).float().cpu())
        labels.append(y)
    return {t: torch.cat(v) for t, v in outs.items()}, torch.cat(labels)


def score_combination(logits: dict, labels: torch.Tensor, hierarchy: dict, tasks) -> dict:
    """Accuracy and cross-expert errors of the task model for `tasks`, on the images of their
    classes — the same argmax the consolidated model makes over its sorted class columns."""
    classes = torch.tensor(sorted(c for t in tasks for c in hierarchy[t]))
    mask = torch.isin(labels, classes)
    z = torch.cat([logits[t][mask] for t in tasks], dim=1)
    concat_ids = torch.tensor([c for t in tasks for c in hierarchy[t]])
    pred = concat_ids[z.argmax(dim=1)]
    target = labels[mask]
    class_to_task = {c: t for t in tasks for c in hierarchy[t]}
    return {"tasks": list(tasks), "images": int(mask.sum()), "accuracy_pct": accuracy_pct(pred, target),
            **error_breakdown(pred, target, class_to_task)}


def score_all_combinations(logits: dict, labels: torch.Tensor, hierarchy: dict, tasks, sizes) -> dict:
    """For each n in `sizes`: the mean, over every n-subset of `tasks`, of accuracy and of the
    cross-expert share of errors. Returns {n: {"combinations", "accuracy_pct", "cross_expert_pct"}}."""
    summary = {}
    for n in sizes:
        scores = [score_combination(logits, labels, hierarchy, combo)
                  for combo in itertools.combinations(tasks, n)]
        if not scores:
            continue
        summary[n] = {
            "combinations": len(scores),
            "accuracy_pct": sum(s["accuracy_pct"] for s in scores) / len(scores),
            "cross_expert_pct": sum(s["cross_expert_pct"] for s in scores) / len(scores),
        }
    return summary
