"""The task model every baseline trains, and how it is stored.

As in the authors' baselines: a WRN front of the library's shape (conv1 + block1 + block2; random
and trained for Scratch/SD/UHC, PoE's frozen library for Transfer/CKD) and ONE dense head whose
block3 is 16·n(Q) channels wide (the expert width times n(Q)), with an FC over the query's N classes
— where PoE runs n separate 16-channel experts. Output column j is class `class_ids[j]`.

Stored like the pool's models: a checkpoint dict (poe.checkpoint; atomic, weights_only) whose
metadata (method, tasks, classes, budget, per-epoch history, times) rebuilds and describes it.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoint
from ..errors import PoEError
from ..networks import WRNArchitecture, WRNHead
from .query import Query


class QueryModel(nn.Module):
    """front -> head -> logits over the query's classes in sorted global order."""

    def __init__(self, front: nn.Module, head: nn.Module, query: Query):
        super().__init__()
        self.front, self.head = front, head
        self.tasks = list(query.tasks)
        self.expert_classes = [[query.classes[j] for j in cols] for cols in query.positions]
        self.register_buffer("class_ids", torch.tensor(query.classes), persistent=False)

    def forward(self, x):
        return self.head(self.front(x))


def wrn_architecture(profile) -> WRNArchitecture:
    arch = profile.architecture
    if not isinstance(arch, WRNArchitecture):
        raise PoEError(f"the baselines are the authors' WRN ones (CIFAR-100, Tiny-ImageNet); {profile.name}'s "
                       "networks are not WRNs (the authors published no baseline for ImageNet)")
    return arch


INITS = ("torch", "authors")


def initialise(module: nn.Module, init: str) -> nn.Module:
    """The new weights of a baseline. "authors": the WRN code's, conv ~ N(0, sqrt(2 / (k·k·out)))
    (what poe.networks builds). "torch": PyTorch's default of each layer (conv and linear
    kaiming-uniform with a = sqrt(5), about 2.4 times smaller conv weights), what a plain model
    gets. Every conv here feeds a BatchNorm, so the scale of its weights sets its effective learning
    rate (lr / |w|²); weight decay brings large weights down only over thousands of steps, and a
    short budget has hundreds: Transfer's head from the authors' init trained about 10 points
    worse in 10 epochs (results/baselines_cifar100.md)."""
    if init not in INITS:
        raise PoEError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if init == "torch":
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                m.reset_parameters()
    return module


def new_head(profile, query: Query, init: str = "torch") -> WRNHead:
    """block3 at expert width × n(Q) + BN + FC(N), randomly initialised."""
    arch = wrn_architecture(profile)
    c = arch.student_cfg
    head = WRNHead(c.library_channels, arch.expert_width * query.n, len(query.classes), c.blocks_per_group)
    return initialise(head, init)


def new_network(profile, query: Query, init: str = "torch") -> QueryModel:
    """A whole small WRN from random initialisation (Scratch, SD, UHC students)."""
    return QueryModel(initialise(wrn_architecture(profile).library(), init), new_head(profile, query, init), query)


def save(path: Path, model: QueryModel, profile, method: str, query: Query, **meta) -> None:
    checkpoint.atomic_save(checkpoint.make("baseline", model, dataset=profile.name, method=method,
                                           tasks=list(query.tasks), classes=list(query.classes),
                                           head_width=model.head.bn1.num_features, **meta), path)


def load(path: Path, profile) -> tuple[QueryModel, dict]:
    """A stored baseline and its metadata, checked against the profile."""
    state, meta = checkpoint.state_and_meta(checkpoint.read(path), path, "baseline")
    if meta.get("dataset") != profile.name:
        raise PoEError(f"{path} is a baseline for {meta.get('dataset')!r}, not {profile.name!r}")
    query = Query.of(meta["tasks"], profile.hierarchy)
    if list(query.classes) != list(meta["classes"]):
        raise PoEError(f"{path} was trained for classes {meta['classes']}, but its tasks now have {list(query.classes)}")
    model = new_network(profile, query)
    checkpoint.load_into(model, state, path, f"{meta.get('method')} model for {query.key}")
    return model.eval(), meta
