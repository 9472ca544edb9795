"""Scratch: a whole small WRN (front + 16·n(Q)-wide head) from random initialisation, trained with
cross-entropy on the labelled images of the queried classes only. With n(Q) = 1 it is also the
single-task teacher of SD_Scratch and UHC_Scratch."""
from __future__ import annotations

import time

import torch.nn.functional as F

from .model import new_network
from .query import Query
from .registry import Method, register
from .training import Plan, Setup


def prepare(setup: Setup, query: Query, method: str) -> Plan:
    tic = time.perf_counter()
    setup.seeded(method, query.key)
    model = new_network(setup.profile, query, setup.init)
    loader = setup.train_loader(query)
    return Plan(model=model, trained=model, batch_loss=lambda x, y: F.cross_entropy(model(x), y), loader=loader,
                budget=setup.budgets["network"], setup_s=time.perf_counter() - tic,
                notes={"data": f"{len(loader.data)} training images of the {len(query.classes)} queried classes"})


register(Method("Scratch", prepare, "network", description="whole WRN, random init, CE with labels"))
