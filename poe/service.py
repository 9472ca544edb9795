"""The service: answer a query (a set of primitive tasks) with a task model, and report on it."""
from __future__ import annotations

import json
import time
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from .consolidate import TaskModel, consolidate
from .errors import MissingExpert, PoEError
from .evaluate import predict
from .fused import FusedTaskModel
from .metrics import accuracy_pct, count_flops, count_params, error_breakdown
from .pool import Pool
from .realtime import fused_task_model


def check_query(pool: Pool, tasks: list[str]) -> None:
    """A query the pool can answer: every task has an expert (MissingExpert names all that do
    not), and no two tasks share classes."""
    missing = [t for t in tasks if not pool.has_expert(t)]
    if missing:
        raise MissingExpert(
            f"the pool {pool.root} has no expert for {', '.join(missing)}; build with: python "
            f"Run_preprocessing.py --dataset {pool.profile.name} --db {pool.root} --tasks {' '.join(missing)}")
    hierarchy = pool.profile.hierarchy
    for i, a in enumerate(tasks):  # user-defined tasks (--task_file) may share classes with others
        for b in tasks[i + 1:]:
            if set(hierarchy[a]) & set(hierarchy[b]):
                raise PoEError(f"tasks {a} and {b} share classes; a query's tasks must be disjoint")


def build_task_model(pool: Pool, tasks: list[str], fuse: bool = True) -> tuple[TaskModel, float]:
    """Load the library and the queried experts from the DB and consolidate them.

    fuse=True (default): the fused form (poe.fused; same logits, faster), built from the folded
    library and experts this process keeps in memory (poe.realtime), reading only what is not
    there yet; the plain TaskModel where the networks cannot fuse. fuse=False: the plain TaskModel,
    read from the files. Returns (model, milliseconds from query to model ready)."""
    tic = time.perf_counter()
    check_query(pool, tasks)  # before loading anything
    model = fused_task_model(pool, tasks) if fuse else None
    if model is None:
        library = pool.load_library()
        experts = {t: pool.load_expert(t) for t in tasks}
        model = consolidate(library, experts, pool.profile.hierarchy)
    return model, 1000.0 * (time.perf_counter() - tic)


def evaluate_task_model(model: TaskModel, profile, test, device="cpu", amp="none") -> dict:
    """Accuracy and cross-expert errors on the test images of the model's classes."""
    class_ids = model.class_ids.tolist()
    logits, labels = predict(model.to(device), profile.eval_loader(test.subset(class_ids)), device, amp,
                             desc="evaluating")
    pred = model.class_ids.cpu()[logits.argmax(1)]
    class_to_task = {c: t for t, classes in zip(model.tasks, model.expert_classes) for c in classes}
    return {"images": len(labels), "accuracy_pct": accuracy_pct(pred, labels),
            **error_breakdown(pred, labels, class_to_task)}


def query_report(pool: Pool, tasks: list[str], *, fuse: bool = True, test=None, device="cpu",
                 amp="none") -> tuple[TaskModel, dict]:
    """The service's answer to a query: (task model, report). The report (what `--json` writes and
    the server's POST /query returns): dataset, describe()'s fields, build_ms, and with `test`
    data, evaluate_task_model()'s."""
    profile = pool.profile
    model, build_ms = build_task_model(pool, tasks, fuse=fuse)
    report = {"dataset": profile.name, **describe(model, profile, profile.input_shape), "build_ms": build_ms}
    if test is not None:
        report.update(evaluate_task_model(model, profile, test, device, amp))
    return model, report


def describe(model: TaskModel, profile, input_shape) -> dict:
    """Classes, parameters and FLOPs. A fused model (of the profile's networks) reports those of
    the library and experts it computes, the paper's measure (its folded tensors run the same
    function with fewer operations); they are the sums of the pieces' counts, counted once per
    architecture and class count, so a report costs microseconds, not a FLOP-counting pass."""
    ids = model.class_ids.tolist()
    info = {"tasks": list(model.tasks), "num_classes": len(ids), "class_ids": ids,
            "class_names": [profile.class_names[c] for c in ids]}
    if isinstance(model, FusedTaskModel):
        pieces = [piece_counts(profile.architecture, tuple(input_shape))]
        pieces += [piece_counts(profile.architecture, tuple(input_shape), len(c)) for c in model.expert_classes]
        return {**info, "params": sum(p for p, _ in pieces), "flops": sum(f for _, f in pieces), "form": "fused"}
    return {**info, "params": count_params(model), "flops": count_flops(model, input_shape), "form": "plain"}


@lru_cache(maxsize=256)
def piece_counts(architecture, input_shape: tuple, expert_classes: int | None = None) -> tuple[int, int]:
    """(parameters, FLOPs per image) of the architecture's library (expert_classes=None) or of its
    expert for that many classes on the library's features. They depend on the shapes only, and
    add up: a task model's counts are the library's plus its experts' (tests/test_fused.py)."""
    library = architecture.library().eval()
    if expert_classes is None:
        return count_params(library), count_flops(library, input_shape)
    with torch.no_grad():
        features = tuple(library(torch.zeros(1, *input_shape)).shape[1:])
    expert = architecture.expert(expert_classes)
    return count_params(expert), count_flops(expert, features)


def export(model: TaskModel, profile, input_shape, path: str | Path) -> None:
    """A torch.export program (.pt2): plain `torch.export.load(path).module()` runs it, with no
    code of this project. Class ids/names ride along as the extra file 'poe_classes.json'."""
    path = Path(path)
    model = model.cpu().eval()
    example = (torch.zeros((2, *input_shape)),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    info = {"tasks": list(model.tasks), "class_ids": model.class_ids.tolist(),
            "class_names": [profile.class_names[c] for c in model.class_ids.tolist()],
            "input": {"shape": ["batch", *input_shape], "mean": list(profile.mean), "std": list(profile.std),
                      "pixels": "RGB scaled to [0, 1], then (x - mean) / std per channel",
                      "resize": f"an image of another size: PIL.ImageOps.fit(image, ({input_shape[-1]}, "
                                f"{input_shape[-2]}), PIL.Image.Resampling.BICUBIC) (centre crop, then resize)"},
            "output": "logits; column j is class class_ids[j]"}
    tmp = path.with_name(f".tmp-{path.name}")  # keeps the .pt2 ending torch.export expects
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # Said of every channels-last weight (not "contiguous", so not "complete" to the
            # packager); each is its own storage and is saved whole, as the round-trip test checks.
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            torch.export.save(program, tmp, extra_files={"poe_classes.json": json.dumps(info)})
        tmp.replace(path)
    except OSError as exc:
        raise PoEError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
