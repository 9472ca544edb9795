"""Multi-teacher distillation into a whole small WRN from random initialisation, without labels,
on the queried classes' images: SD (zero-padded teachers, poe.losses.sd) and UHC (student
renormalised over each teacher's classes, poe.losses.uhc).

Teachers, one per queried task:
  *_CKD      PoE's library + the task's expert from the pool. All n run as PoE's own task model for
             the query (library once per batch, the experts side by side): teacher i's logits are
             the model's columns of task i.
  *_Scratch  single-task Scratch models (n(Q) = 1), trained by the study itself once per task and
             reused by every query holding it and by both SD_Scratch and UHC_Scratch; their own
             training time is reported apart (`teachers_s`), not in the student's time to model.
"""
from __future__ import annotations

import time

import torch

from ..losses import TEMPERATURE, SDLoss, UHCLoss
from ..service import build_task_model
from ..train import frozen
from .model import new_network
from .query import Query
from .registry import Method, register
from .training import Plan, Setup, obtain


def prepare(setup: Setup, query: Query, method: str) -> Plan:
    kind, source = method.split("_")  # "SD" | "UHC", "CKD" | "Scratch"
    teachers_s = 0.0
    if source == "Scratch":
        singles = []
        for t in query.tasks:  # obtained (trained or loaded) before the clock of this student starts
            model, meta = obtain(setup, "Scratch", Query.of([t], setup.profile.hierarchy))
            singles.append(model)
            teachers_s += meta["time_to_model_s"]
    tic = time.perf_counter()
    positions = [torch.tensor(cols, device=setup.device) for cols in query.positions]
    if source == "CKD":
        poe_model, _ = build_task_model(setup.pool, list(query.tasks))
        poe_model = poe_model.to(setup.device)
        assert poe_model.class_ids.tolist() == list(query.classes)

        def teacher_logits(x):  # one pass: library once, all n experts
            z = poe_model(x)
            return [z[:, cols] for cols in positions]
        teachers = [poe_model]
        speedup = "the n teachers as PoE's task model: library once per batch for all experts"
    else:
        def teacher_logits(x):
            return [m(x) for m in singles]
        teachers = singles
        speedup = "single-task teachers trained once per task, shared by every query and by SD/UHC_Scratch"
    loss = SDLoss(TEMPERATURE) if kind == "SD" else UHCLoss(TEMPERATURE)
    setup.seeded(method, query.key)
    student = new_network(setup.profile, query, setup.init)

    def batch_loss(x, y):  # labels unused
        with frozen(*teachers):
            z = teacher_logits(x)
        return loss(student(x), z, positions)

    loader = setup.train_loader(query)
    return Plan(model=student, trained=student, batch_loss=batch_loss, loader=loader,
                budget=setup.budgets["network"], setup_s=time.perf_counter() - tic, teachers_s=teachers_s,
                notes={"data": f"{len(loader.data)} training images of the {len(query.classes)} queried classes",
                       "teachers": f"{source} ({', '.join(query.tasks)})", "speed-up": speedup})


register(
    Method("SD_Scratch", prepare, "network", teachers="scratch",
           description="whole WRN, zero-padded KD from single-task Scratch teachers"),
    Method("SD_CKD", prepare, "network", teachers="experts", uses_library=True,
           description="whole WRN, zero-padded KD from PoE's experts"),
    Method("UHC_Scratch", prepare, "network", teachers="scratch",
           description="whole WRN, UHC KD from single-task Scratch teachers"),
    Method("UHC_CKD", prepare, "network", teachers="experts", uses_library=True,
           description="whole WRN, UHC KD from PoE's experts"),
)
