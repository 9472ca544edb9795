"""The comparison study: for each query, PoE's task model (built from the pool, no training) against
each baseline trained for that query — accuracy, size, and the wall time to a ready model.

Per method and query: the final-epoch accuracy on the test images of the queried classes, params,
FLOPs, time to model (getting ready — teacher loading, feature cache — plus the training epochs;
the per-epoch test passes are not counted), the per-epoch test curve against that time (reported,
never used to pick weights), and the first time the curve reaches PoE's accuracy on the same
query, or None ("not within budget"). PoE's query time is measured from the files (the in-process
cache of folded experts emptied first; median of 3, after one untimed warm-up build); its one-off
cost (the experts' extraction) is read from the pool's metadata and also spread over the queries
of the study's n(Q).
"""
from __future__ import annotations

import itertools
import json
import time

from ..metrics import count_flops, count_params
from ..realtime import CACHE
from ..service import build_task_model, describe, evaluate_task_model
from . import METHODS
from .query import Query
from .training import Setup, obtain


BUILD_REPEATS = 3


def poe_build(setup: Setup, query: Query):
    """PoE's task model and its query time: the median of BUILD_REPEATS builds, each with the
    in-process cache of folded experts emptied (read from the files, as a first query is; the slower
    PoE time, in the baselines' favour) in a process already warm (`warm_up`)."""
    times = []
    for _ in range(BUILD_REPEATS):
        CACHE.clear()
        model, ms = build_task_model(setup.pool, list(query.tasks))
        times.append(ms)
    return model, sorted(times)[len(times) // 2]


def warm_up(setup: Setup, query: Query) -> None:
    """One untimed build: the process's first build pays one-off costs (lazy imports, first kernels)
    that no query of a running service pays; counting them would time the interpreter, not PoE."""
    CACHE.clear()
    build_task_model(setup.pool, list(query.tasks))


def poe_row(setup: Setup, query: Query) -> dict:
    model, build_ms = poe_build(setup, query)
    scores = evaluate_task_model(model, setup.profile, setup.data[1], setup.device, setup.amp)
    info = describe(model, setup.profile, setup.profile.input_shape)
    return {"accuracy_pct": scores["accuracy_pct"], "images": scores["images"], "params": info["params"],
            "flops": info["flops"], "build_ms": round(build_ms, 2)}


def curve(meta: dict) -> list[dict]:
    """(epoch, seconds since the start of getting ready, test top-1) after every epoch."""
    t, out = meta["setup_s"], []
    for h in meta["history"]:
        t += h["seconds"]
        out.append({"epoch": h["epoch"], "time_s": round(t, 2), "test_top1_pct": h.get("test_top1_pct")})
    return out


def first_reaching(points: list[dict], accuracy: float) -> dict | None:
    return next((p for p in points if p["test_top1_pct"] is not None and p["test_top1_pct"] >= accuracy), None)


def method_row(setup: Setup, method: str, query: Query, poe: dict) -> dict:
    model, meta = obtain(setup, method, query)
    points = curve(meta)
    reached = first_reaching(points, poe["accuracy_pct"])
    poe_s = poe["build_ms"] / 1000
    return {"accuracy_pct": setup.accuracy(model, query), "params": count_params(model),
            "flops": count_flops(model, setup.profile.input_shape), "epochs": len(meta["history"]),
            "time_to_model_s": meta["time_to_model_s"], "setup_s": meta["setup_s"], "train_s": meta["train_s"],
            "teachers_s": meta["teachers_s"], "curve": points,
            "training_wall_s": meta.get("wall_s_this_process"),  # when it was trained (a rerun loads it)
            # teachers trained inside it: their own records count them (not added again)
            "teachers_training_wall_s": meta.get("teachers_wall_s_this_process"),
            "time_to_poe_accuracy_s": reached["time_s"] if reached else None,
            "epoch_reaching_poe": reached["epoch"] if reached else None,
            "ratio_to_poe_query_time": round(reached["time_s"] / poe_s, 1) if reached else None,
            "ratio_lower_bound": None if reached else round(meta["time_to_model_s"] / poe_s, 1),
            "notes": meta.get("notes", {})}


def poe_one_off(pool, n_queries: int, given_s: float | None = None) -> dict:
    """The experts' extraction time from the pool's metadata (each joint extraction run once), or the
    figure given by the user where the pool has none (the authors' published pool), and that cost
    spread over the study's queries."""
    runs = {}
    for task, entry in pool.manifest().get("experts", {}).items():
        ext = entry.get("extraction")
        if ext:  # cached joint extraction: its feature cache + training
            seconds = sum(ext.get("wall_s", {}).values())
        elif entry.get("history"):
            seconds = sum(h.get("seconds", 0) for h in entry["history"])
        else:
            continue
        # experts trained jointly share one run: the same extraction record, or the same epoch times
        run_key = ext or [h.get("seconds") for h in entry["history"]]
        runs.setdefault(json.dumps(run_key, sort_keys=True, default=str), [seconds, []])[1].append(task)
    if runs:
        total, source = sum(s for s, _ in runs.values()), "the pool's metadata"
        source += f" ({len(runs)} extraction run(s): " + "; ".join(", ".join(t) for _, t in runs.values()) + ")"
    elif given_s is not None:
        total, source = given_s, "given with --extraction_seconds (not in the pool's metadata)"
    else:
        return {"seconds": None, "source": "not recorded: the pool's metadata has no extraction time "
                "(the authors' published pool); pass --extraction_seconds S to state one", "queries": n_queries}
    return {"seconds": round(total, 1), "source": source, "queries": n_queries,
            "per_query_s": round(total / n_queries, 2) if n_queries else None}


def training_wall_s(results: list[dict], teachers: dict) -> float:
    """The recorded wall time of training every model the study reports (single-task teachers
    included, per-epoch test passes too), whichever run trained them."""
    rows = [r for q in results for r in q["methods"].values()] + list(teachers.values())
    return round(sum(r.get("training_wall_s") or 0.0 for r in rows), 1)


def study_query_count(n_tasks: int, sizes) -> int:
    """How many queries the n(Q) sizes make of `n_tasks` tasks (56 for six tasks and n(Q) = 2..5)."""
    return sum(len(list(itertools.combinations(range(n_tasks), n))) for n in sizes)


def run(setup: Setup, queries: list[tuple[str, ...]], methods: list[str]) -> list[dict]:
    """One entry per query: PoE's row and every method's."""
    out = []
    if queries:
        warm_up(setup, Query.of(queries[0], setup.profile.hierarchy))
    for tasks in queries:
        query = Query.of(tasks, setup.profile.hierarchy)
        tic = time.perf_counter()
        poe = poe_row(setup, query)
        print(f"[PoE] {query.key}: {poe['accuracy_pct']:.2f} % in {poe['build_ms']:.1f} ms")
        rows = {}
        for m in methods:
            rows[m] = method_row(setup, m, query, poe)
            r = rows[m]
            reach = f"PoE's accuracy at {r['time_to_poe_accuracy_s']:.1f} s" if r["time_to_poe_accuracy_s"] is not None \
                else "PoE's accuracy not within budget"
            print(f"[{m}] {query.key}: {r['accuracy_pct']:.2f} % after {r['time_to_model_s']:.1f} s; {reach}")
        out.append({"tasks": list(query.tasks), "n": query.n, "classes": list(query.classes), "poe": poe,
                    "methods": rows, "seconds": round(time.perf_counter() - tic, 1)})
    return out


def summary(results: list[dict], methods: list[str]) -> dict:
    """Per n(Q): PoE's means and each method's means over the queries of that size; the ratio to PoE's
    query time averaged over the queries that reached PoE's accuracy, with how many did."""
    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    out = {}
    for n in sorted({r["n"] for r in results}):
        group = [r for r in results if r["n"] == n]
        entry = {"queries": len(group),
                 "PoE": {k: mean(r["poe"][k] for r in group) for k in ("accuracy_pct", "params", "flops", "build_ms")}}
        for m in methods:
            rows = [r["methods"][m] for r in group]
            reached = [x for x in rows if x["time_to_poe_accuracy_s"] is not None]
            entry[m] = {k: mean(x[k] for x in rows) for k in ("accuracy_pct", "params", "flops", "time_to_model_s",
                                                             "teachers_s")}
            entry[m].update(reached=len(reached), time_to_poe_accuracy_s=mean(x["time_to_poe_accuracy_s"] for x in reached),
                            ratio_to_poe_query_time=mean(x["ratio_to_poe_query_time"] for x in reached),
                            ratio_lower_bound=min((x["ratio_lower_bound"] for x in rows if x["ratio_lower_bound"]),
                                                  default=None))
        out[str(n)] = entry
    return out
