"""The comparison study: for each query, PoE's task model (built from the pool, no training) against
each baseline trained for that query — accuracy, size, and the wall time to a ready model.

Per method and query: the final-epoch accuracy on the test images of the queried classes, params,
FLOPs, time to model (getting ready — teacher loading, feature cache — plus the training epochs;
the per-epoch evaluation passes are not counted), the per-epoch curve against that time, read on
the validation split (held out of every baseline's training images; reported, never used to pick
weights), and the first time the curve reaches PoE's accuracy on the same images, or None ("not
within budget").

PoE's query time is a distribution: BUILD_REPEATS builds from the files per query, each with the
in-process cache of folded experts emptied; the first build of the process (which pays one-off
costs: lazy imports, first kernels) is timed and shown apart. PoE's one-off cost is the pool's whole
preprocessing (Oracle, library student, experts), read from that pool's own metadata, or "not
recorded" (the authors' published pool): never a figure from another pool.

`compare` runs the whole study (Run_Baselines.py parses the flags and writes what it returns):
the single-task teachers first, then the queries, divided among torchrun's processes when there
are several, and the report's document.
"""
from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from .. import distributed
from ..errors import PoEError
from ..metrics import count_flops, count_params
from ..files import atomic_write_text
from ..paths import PROJECT_ROOT
from ..realtime import CACHE
from ..service import build_task_model, describe, evaluate_task_model
from ..split import ValidationSplit, check_same, recorded_split
from .query import Query, study_queries
from .report import speedups
from .training import Setup, obtain

BUILD_REPEATS = 20


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    v = sorted(values)
    if not v:
        raise ValueError("no values")
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def poe_builds(setup: Setup, query: Query, repeats: int = BUILD_REPEATS):
    """PoE's task model and the milliseconds of `repeats` builds, each with the in-process cache of
    folded experts emptied (read from the files, as a first query is)."""
    times = []
    for _ in range(repeats):
        CACHE.clear()
        model, ms = build_task_model(setup.pool, list(query.tasks))
        times.append(ms)
    return model, times


def first_build(setup: Setup, query: Query) -> dict:
    """The process's first build, timed: it pays one-off costs (lazy imports, first kernels) that no
    query of a running service pays, so it is shown apart, not mixed into the distribution."""
    CACHE.clear()
    _, ms = build_task_model(setup.pool, list(query.tasks))
    return {"tasks": list(query.tasks), "build_ms": round(ms, 2)}


def poe_row(setup: Setup, query: Query) -> dict:
    model, times = poe_builds(setup, query)
    parts = setup.query_parts(query)
    scores = evaluate_task_model(model, setup.profile, parts["test"], setup.device, setup.amp)
    info = describe(model, setup.profile, setup.profile.input_shape)
    row = {"accuracy_pct": scores["accuracy_pct"], "images": scores["images"], "params": info["params"],
           "flops": info["flops"], "build_ms": round(statistics.median(times), 2),
           "build_p90_ms": round(percentile(times, 90), 2), "builds_ms": [round(t, 2) for t in times]}
    if parts["val"] is not None:
        val = evaluate_task_model(model, setup.profile, parts["val"], setup.device, setup.amp)
        row.update(val_accuracy_pct=val["accuracy_pct"], val_images=val["images"])
    return row


def poe_target(setup: Setup, poe: dict) -> float:
    """PoE's accuracy the baselines' curves must reach: on the validation split, like the curves; or
    on the test set where PoE's experts were trained on the split's images (`setup.poe_target`
    "test"), or without a split (the curves are then read on the test set too)."""
    if setup.read_on == "val" and setup.poe_target == "val":
        return poe["val_accuracy_pct"]
    return poe["accuracy_pct"]


def curve(meta: dict) -> list[dict]:
    """(epoch, seconds since the start of getting ready, accuracy) after every epoch; the accuracy on
    the validation split (`val_top1_pct`), or on the test set for models trained without one."""
    t, out = meta["setup_s"], []
    for h in meta["history"]:
        t += h["seconds"]
        out.append({"epoch": h["epoch"], "time_s": round(t, 2),
                    **{k: h[k] for k in ("val_top1_pct", "test_top1_pct") if h.get(k) is not None}})
    return out


def first_reaching(points: list[dict], accuracy: float, key: str = "val_top1_pct") -> dict | None:
    """The first epoch whose `key` accuracy reaches `accuracy` (None: none did)."""
    return next((p for p in points if p.get(key) is not None and p[key] >= accuracy), None)


def teachers_wall_s(setup: Setup, method: str, query: Query, meta: dict) -> float | None:
    """The wall time of the single-task teachers trained inside this model's training, as recorded
    (`teachers_wall_s_this_process`); for a model stored before that record existed, the recorded
    wall time of each of its teachers whose save date falls within this model's training (from its
    own save date back by its wall time)."""
    from .registry import METHODS
    if meta.get("teachers_wall_s_this_process") is not None:
        return meta["teachers_wall_s_this_process"]
    if METHODS[method].teachers != "scratch" or meta.get("wall_s_this_process") is None or not meta.get("date"):
        return 0.0
    end = datetime.datetime.fromisoformat(meta["date"])
    start = end - datetime.timedelta(seconds=meta["wall_s_this_process"] + 1)
    nested = 0.0
    for t in query.tasks:
        _, tmeta = obtain(setup, "Scratch", Query.of([t], setup.profile.hierarchy))
        if tmeta.get("date") and start <= datetime.datetime.fromisoformat(tmeta["date"]) <= end:
            nested += tmeta.get("wall_s_this_process") or 0.0
    return round(nested, 1)


def method_row(setup: Setup, method: str, query: Query, poe: dict) -> dict:
    model, meta = obtain(setup, method, query)
    nested = teachers_wall_s(setup, method, query, meta)
    own_wall = None if meta.get("wall_s_this_process") is None else \
        round(meta["wall_s_this_process"] - (0.0 if "teachers_wall_s_this_process" in meta else nested), 1)
    points = curve(meta)
    key = f"{setup.read_on}_top1_pct"
    reached = first_reaching(points, poe_target(setup, poe), key)
    poe_s = poe["build_ms"] / 1000
    return {"accuracy_pct": setup.accuracy(model, query), "params": count_params(model),
            "flops": count_flops(model, setup.profile.input_shape), "epochs": len(meta["history"]),
            "time_to_model_s": meta["time_to_model_s"], "setup_s": meta["setup_s"], "train_s": meta["train_s"],
            "teachers_s": meta["teachers_s"], "curve": points,
            "training_wall_s": own_wall,  # when it was trained (a rerun loads it)
            # teachers trained inside it: their own records count them (not added again)
            "teachers_training_wall_s": nested,
            "time_to_poe_accuracy_s": reached["time_s"] if reached else None,
            "epoch_reaching_poe": reached["epoch"] if reached else None,
            # the crossing epoch's time over PoE's median query time
            "ratio_to_poe_query_time": round(reached["time_s"] / poe_s, 1) if reached else None,
            "ratio_lower_bound": None if reached else round(meta["time_to_model_s"] / poe_s, 1),
            "notes": meta.get("notes", {})}


# -- PoE's one-off cost: the pool's own preprocessing -----------------------------------------------
def _stage_seconds(meta: dict) -> float | None:
    """A stage's wall time from its checkpoint's record: this process's wall time, or the sum of its
    epochs where the stage was resumed (the larger: a resumed stage's last process saw only part)."""
    wall = meta.get("wall_s") or {}
    values = [v for v in (wall.get("this_process_s"), wall.get("training_s")) if v is not None]
    return max(values) if values else None


def expert_runs(pool) -> tuple[float | None, str]:
    """The experts' training time from the pool's manifest, each joint extraction run counted once."""
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
    if not runs:
        return None, "not recorded in the pool's manifest"
    return (round(sum(s for s, _ in runs.values()), 1),
            f"the pool's manifest, {len(runs)} extraction run(s): " + "; ".join(", ".join(t) for _, t in runs.values()))


def poe_costs(pool, pretrained_dir: Path | None) -> dict:
    """The pool's whole preprocessing, each stage from this pool's own records: the experts from its
    manifest; the library student and the Oracle from the pretrained folder's checkpoints, counted
    only when that library student's front is this pool's library (same fingerprint). A stage with
    no record is None ("not recorded") and so is the total: no figure from another pool stands in."""
    from .. import checkpoint
    from ..pool import library_fingerprint

    stages = {}
    seconds, source = expert_runs(pool)
    stages["experts"] = {"seconds": seconds, "source": source}
    library = (pool.manifest().get("library") or {})
    fingerprint = library.get("fingerprint")
    folder = Path(pretrained_dir) if pretrained_dir else None
    student_path = folder / "library_student.pt" if folder else None
    if pool.layout != "poe":
        for stage in ("library_student", "oracle"):
            stages[stage] = {"seconds": None, "source": "not recorded: the authors' published pool records no costs"}
    elif student_path is None or not student_path.is_file():
        note = f"not recorded: no {student_path} beside this pool (pass --pretrained_db)" if student_path else \
            "not recorded"
        stages["library_student"] = {"seconds": None, "source": note}
        stages["oracle"] = {"seconds": None, "source": note}
    else:
        state, meta = checkpoint.state_and_meta(checkpoint.read(student_path), student_path, "library_student")
        arch = pool.profile.architecture
        lib = arch.library()
        lib.load_state_dict(arch.split_student(state)[0])
        if fingerprint is None or library_fingerprint(lib) != fingerprint:
            why = (f"not recorded: {student_path}'s front is not this pool's library"
                   + (f" (the pool's library came from {library['source']})" if library.get("source") else ""))
            stages["library_student"] = {"seconds": None, "source": why}
            stages["oracle"] = {"seconds": None, "source": why}
        else:
            stages["library_student"] = {"seconds": _stage_seconds(meta), "source": f"{student_path} (its wall_s)"}
            oracle_path = folder / "oracle.pt"
            if oracle_path.is_file():
                _, ometa = checkpoint.state_and_meta(checkpoint.read(oracle_path), oracle_path, "oracle")
                stages["oracle"] = {"seconds": _stage_seconds(ometa), "source": f"{oracle_path} (its wall_s)"}
            else:
                stages["oracle"] = {"seconds": None, "source": f"not recorded: no {oracle_path}"}
    order = ("oracle", "library_student", "experts")
    values = [stages[s]["seconds"] for s in order]
    total = round(sum(values), 1) if all(v is not None for v in values) else None
    return {"stages": {s: stages[s] for s in order}, "total_s": total, "recorded": total is not None,
            "pool": str(pool.root)}


def break_even(costs: dict, summary: dict, methods: list[str]) -> list[dict]:
    """How many queries PoE needs before its whole preprocessing has paid off against each method:
    PoE costs P + k·q for k queries, the method k·B, so PoE is cheaper from k = P / (B − q) on.
    B is the method's time to PoE's accuracy (mean over the queries that reached it) and, apart,
    its time to a model (the whole budget). None where P is not recorded or the method never reached."""
    rows = []
    P = costs.get("total_s")
    for n, entry in summary.items():
        q = entry["PoE"]["build_ms"] / 1000
        for m in methods:
            e = entry[m]
            row = {"n": n, "method": m, "poe_query_s": q, "preprocessing_s": P,
                   "time_to_poe_accuracy_s": e["time_to_poe_accuracy_s"], "time_to_model_s": e["time_to_model_s"]}
            for key, b in (("queries_vs_reaching", e["time_to_poe_accuracy_s"]),
                           ("queries_vs_model", e["time_to_model_s"])):
                row[key] = None if P is None or b is None or b <= q else math.ceil(P / (b - q))
            rows.append(row)
    return rows


def training_wall_s(results: list[dict], teachers: dict) -> float:
    """The recorded wall time of training every model the study reports (single-task teachers
    included, each once; per-epoch evaluation passes too), whichever run trained them."""
    rows = [r for q in results for r in q["methods"].values()] + list(teachers.values())
    return round(sum(r.get("training_wall_s") or 0.0 for r in rows), 1)


def study_query_count(n_tasks: int, sizes) -> int:
    """How many queries the n(Q) sizes make of `n_tasks` tasks (56 for six tasks and n(Q) = 2..5)."""
    return sum(len(list(itertools.combinations(range(n_tasks), n))) for n in sizes)


def run(setup: Setup, queries: list[tuple[str, ...]], methods: list[str]) -> tuple[list[dict], dict | None]:
    """One entry per query (PoE's row and every method's), and the process's first build (None
    without queries)."""
    out = []
    first = first_build(setup, Query.of(queries[0], setup.profile.hierarchy)) if queries else None
    for tasks in queries:
        query = Query.of(tasks, setup.profile.hierarchy)
        tic = time.perf_counter()
        poe = poe_row(setup, query)
        extra = f", {poe['val_accuracy_pct']:.2f} % on validation" if "val_accuracy_pct" in poe else ""
        print(f"[PoE] {query.key}: {poe['accuracy_pct']:.2f} % on test{extra}; query time median "
              f"{poe['build_ms']:.1f} ms, p90 {poe['build_p90_ms']:.1f} ms ({len(poe['builds_ms'])} builds)")
        rows = {}
        for m in methods:
            rows[m] = method_row(setup, m, query, poe)
            r = rows[m]
            reach = f"PoE's accuracy at {r['time_to_poe_accuracy_s']:.1f} s" if r["time_to_poe_accuracy_s"] is not None \
                else "PoE's accuracy not within budget"
            print(f"[{m}] {query.key}: {r['accuracy_pct']:.2f} % after {r['time_to_model_s']:.1f} s; {reach}")
        out.append({"tasks": list(query.tasks), "n": query.n, "classes": list(query.classes), "poe": poe,
                    "methods": rows, "seconds": round(time.perf_counter() - tic, 1)})
    return out, first


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _std(values):
    """The sample standard deviation (None with fewer than two values)."""
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else None


def summary(results: list[dict], methods: list[str]) -> dict:
    """Per n(Q): PoE's and each method's means (accuracy also its standard deviation over the
    queries); PoE's query time as the median and p90 of all its builds for that n(Q); the ratio to
    PoE's query time averaged over the queries that reached PoE's accuracy, with how many did."""
    out = {}
    for n in sorted({r["n"] for r in results}):
        group = [r for r in results if r["n"] == n]
        builds = [t for r in group for t in r["poe"]["builds_ms"]]
        poe = {k: _mean(r["poe"].get(k) for r in group) for k in ("accuracy_pct", "val_accuracy_pct", "params", "flops")}
        poe.update(accuracy_std=_std(r["poe"]["accuracy_pct"] for r in group),
                   build_ms=statistics.median(builds), build_p90_ms=percentile(builds, 90), builds=len(builds))
        entry = {"queries": len(group), "PoE": poe}
        for m in methods:
            rows = [r["methods"][m] for r in group]
            reached = [x for x in rows if x["time_to_poe_accuracy_s"] is not None]
            entry[m] = {k: _mean(x[k] for x in rows) for k in ("accuracy_pct", "params", "flops", "time_to_model_s",
                                                              "teachers_s")}
            entry[m].update(accuracy_std=_std(x["accuracy_pct"] for x in rows),
                            reached=len(reached), time_to_poe_accuracy_s=_mean(x["time_to_poe_accuracy_s"] for x in reached),
                            ratio_to_poe_query_time=_mean(x["ratio_to_poe_query_time"] for x in reached),
                            ratio_lower_bound=min((x["ratio_lower_bound"] for x in rows if x["ratio_lower_bound"]),
                                                  default=None))
        out[str(n)] = entry
    return out


# -- the study end to end ------------------------------------------------------------------------
def select_queries(profile, queried: list[str] | None, tasks: list[str] | None, sizes, per_size: int | None,
                   seed: int) -> tuple[list[tuple[str, ...]], str]:
    """The study's queries and what the report says of them: the one `queried`, or the combinations
    of `tasks` (default: the profile's) for each n(Q) in `sizes`, or a seeded sample of `per_size`
    of them per n(Q)."""
    if queried:
        query = tuple(profile.resolve_tasks(queried, "--queriedTask"))
        return [query], f"one query, {' + '.join(query)}"
    tasks = profile.resolve_tasks(tasks or profile.default_tasks, "--tasks")
    sizes = sorted(set(sizes))
    if not sizes or min(sizes) < 1 or max(sizes) > len(tasks):
        raise PoEError(f"--sizes must lie in 1..{len(tasks)} (the number of --tasks)")
    queries = study_queries(tasks, sizes, per_size, seed)
    note = (f"{len(queries)} of the {study_query_count(len(tasks), sizes)} combinations of {len(tasks)} tasks "
            f"({', '.join(tasks)}) for n(Q) = {', '.join(map(str, sizes))}"
            + (f", a seeded sample of {per_size} per n(Q) (--query_seed {seed})" if per_size else ""))
    return queries, note


def require_experts(pool, queries: list[tuple[str, ...]]) -> None:
    """PoE's row needs an expert in the pool for every queried task."""
    missing = [t for t in sorted({t for q in queries for t in q}) if not pool.has_expert(t)]
    if missing:
        raise PoEError(f"the pool {pool.root} has no expert for {', '.join(missing)} (PoE's row needs them); "
                       f"build with python Run_preprocessing.py --dataset {pool.profile.name}, or pass --db")


def validation_split(pool, tasks: list[str], train, per_class: int | None = None,
                     seed: int = 0) -> tuple[ValidationSplit, dict]:
    """The split the curves are read on, and what the report says of it. A pool whose experts record
    a split gives it (PoE never trained on those images; `per_class` given must match it); otherwise
    one of `per_class` images per class (default: a tenth of the smallest class) is drawn here,
    seeded and stratified by poe.split, and the pool's experts were trained on its images."""
    recorded = recorded_split(pool.manifest().get("experts", {}), tasks, str(pool.root))
    if recorded:
        split = ValidationSplit.from_meta(recorded)
        if per_class is not None:
            check_same(recorded, ValidationSplit(per_class, seed).describe(train), f"the pool {pool.root}")
        check_same(recorded, split.describe(train), f"the pool {pool.root}")  # the same images, not only N
        return split, {"source": "the pool's own split, recorded with its experts", "poe_trained_on_val": False}
    if per_class is None:
        per_class = max(1, int(torch.bincount(train.labels).min()) // 10)
    split = ValidationSplit(per_class, seed)
    if not split:
        return split, {"source": "none (--val_per_class 0): curves read on the test set", "poe_trained_on_val": None}
    return split, {"source": "drawn here (the pool records none); its experts and library were trained on these images",
                   "poe_trained_on_val": True}


def curve_target(wanted: str, split: ValidationSplit, split_info: dict) -> str:
    """Which accuracy of PoE the curves must reach ("val" or "test", Setup.poe_target): `wanted`, or
    for "auto" the validation accuracy unless PoE's experts learnt the split's images. Without a
    split, "test". Notes in `split_info` when PoE's validation accuracy is read on images it learnt."""
    target = wanted if wanted != "auto" else ("test" if split_info["poe_trained_on_val"] else "val")
    if not split:
        return "test"
    if target == "val" and split_info["poe_trained_on_val"]:
        split_info["source"] += " (--poe_target val: PoE's validation accuracy is read on images it learnt)"
    return target


def default_out_dir(profile) -> Path:
    """Where trained baselines are stored by default."""
    return PROJECT_ROOT / "DB_baselines" / profile.name


def shown_path(path: Path) -> str:
    """A path as the report shows it: relative to the project when inside it (no machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def compare(setup: Setup, queries: list[tuple[str, ...]], methods: list[str], *, command: str, note: str,
            split_info: dict, started: float) -> dict | None:
    """The whole study: the single-task Scratch teachers, then every query (PoE's row and each
    method's), divided among torchrun's processes when there are several; returns the report's
    document (poe.baselines.report), on the first process only (None on the others).
    `command`: the command line shown; `note`: what the queries are; `started`: the command's
    perf_counter() at its start, for its wall time."""
    profile, split = setup.profile, setup.split
    world = distributed.world()
    all_tasks = sorted({t for q in queries for t in q})
    print(f"Baselines vs PoE, {profile.title}: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}"
          + (f" shared among {world.size} processes" if world.size > 1 else "")
          + f", methods {', '.join(methods)}; network {setup.budgets['network'].epochs} epochs, head "
          f"{setup.budgets['head'].epochs} epochs, batch {setup.batch_size}, device {setup.device}, amp {setup.amp}; "
          f"pool {setup.pool.root}; models in {setup.out}; validation split: {split.per_class} per class, seed "
          f"{split.seed} ({split_info['source']})")

    # The single-task teachers of *_Scratch are shared by every query holding their task: trained
    # first, divided among the processes, so that no two train the same one.
    scratch_tasks = all_tasks if {"SD_Scratch", "UHC_Scratch"} & set(methods) else []
    for t in distributed.mine(scratch_tasks, world):
        obtain(setup, "Scratch", Query.of([t], profile.hierarchy))
    distributed.barrier()
    results, first = run(setup, distributed.mine(queries, world), methods)
    share = {"rank": world.rank, "size": world.size, "results": results, "first_build": first,
             "wall_s": round(time.perf_counter() - started, 1)}
    if world.size > 1:  # each process writes its share; the first merges them once all are written
        key = hashlib.sha256(command.encode()).hexdigest()[:10]
        atomic_write_text(share_path(setup, key, world.rank, world.size), json.dumps(share, indent=1) + "\n")
        distributed.barrier()
        if not world.is_main:
            return None
        shares = [json.loads(share_path(setup, key, r, world.size).read_text()) for r in range(world.size)]
    else:
        shares = [share]
    results = merge(queries, shares)
    teachers = {}
    for t in scratch_tasks:
        model, meta = obtain(setup, "Scratch", Query.of([t], profile.hierarchy))
        teachers[t] = {"accuracy_pct": setup.accuracy(model, Query.of([t], profile.hierarchy)),
                       "time_to_model_s": meta["time_to_model_s"], "training_wall_s": meta.get("wall_s_this_process")}
    device = setup.device
    settings = {"device": str(device), "amp": setup.amp, "batch_size": setup.batch_size, "seed": setup.seed,
                "init": setup.init, "teacher": setup.teacher, "pool": str(setup.pool.root),
                "out": shown_path(setup.out), "queries_note": note, "queries": len(queries), "processes": world.size,
                "head_source": setup.head_source, "cache_views": min(setup.cache_views, setup.budgets["head"].epochs),
                "network": setup.budget_meta("network"), "head": setup.budget_meta("head"),
                "validation": {"per_class": split.per_class, "seed": split.seed,
                               "images": split.per_class * len({c for q in results for c in q["classes"]}),
                               **split_info,
                               "curves_read_on": setup.read_on, "poe_target": setup.poe_target},
                "machine": f"{platform.machine()} with {os.cpu_count()} CPU core(s), torch threads "
                           f"{torch.get_num_threads()}" if device.type == "cpu" else str(device)}
    totals = summary(results, methods)
    costs = poe_costs(setup.pool, setup.pretrained_dir)
    return {"dataset": profile.name, "title": profile.title, "command": command, "settings": settings,
            "methods": methods, "speedups": speedups(setup, methods),
            "poe_costs": costs, "first_builds": [s["first_build"] for s in shares if s["first_build"]],
            "queries": results, "summary": totals, "break_even": break_even(costs, totals, methods),
            "teachers": teachers, "shares_wall_s": [s["wall_s"] for s in shares],
            "wall_s": round(time.perf_counter() - started, 1), "training_wall_s": training_wall_s(results, teachers)}


def share_path(setup: Setup, command_key: str, rank: int, size: int) -> Path:
    """Where process `rank` of `size` writes its share of the study's results."""
    return setup.out / "shares" / f"{command_key}-rank{rank}of{size}.json"


def merge(queries: list[tuple], shares: list[dict]) -> list[dict]:
    """The processes' results in the study's query order (process r took queries r, r + size, ...)."""
    by_tasks = {tuple(r["tasks"]): r for s in shares for r in s["results"]}
    if sorted(by_tasks) != sorted(tuple(q) for q in queries):
        raise PoEError("the processes' shares do not hold every query once: rerun the same command")
    return [by_tasks[tuple(q)] for q in queries]
