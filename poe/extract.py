"""The expert stage: every requested expert trained and saved into its pool, from the feature cache
(the default) or live.

From the cache, all requested experts — every task, and every loss variant when asked — train
jointly in one pass over cached library features and teacher logits. Per expert this is the paper's
training: the same loss (L_soft, L_scale or L_soft + α·L_scale on the teacher's logits of its
classes), SGD with the same schedule (`poe.train.fit`), the same batches of 512 drawn from the whole
training set, every image once per epoch. The differences are where the inputs come from (the
cache: V stored augmented views, see poe.feature_cache) and that N experts run as one grouped
network (poe.networks.grouped), which is exact. Live (the paper's code), the library and the
teacher run on every batch, one pass per loss. Each expert's initial weights depend only on
(seed, task), so an expert starts the same whether it is trained alone, with other tasks, once per
loss variant (Table 6 then compares losses from the same start), from the cache or live. Both paths
end the same way: resume, fit, score on the experts' own classes, save with their history.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import distributed
from .distributed import rank_suffix
from .errors import PoEError
from .feature_cache import CACHE_DTYPES, CachedLoader, FeatureCache, bytes_per_view, data_fingerprint
from .losses import ALPHA, EXPERT_LOSSES, TEMPERATURE, ExpertLoss
from .metrics import OWN_CLASS_KEYS, describe_scores
from .networks.grouped import GroupedWRNHeads, head_shape
from .pool import Pool, library_fingerprint
from .profiles import DEFAULT_CACHE_VIEWS as DEFAULT_VIEWS
from .run_settings import RunSettings
from .teachers import ORACLE_TEACHERS, oracle_teacher
from .train import fit, frozen


@dataclass(frozen=True)
class Member:
    """One expert to train: with loss `kind` for `task`, saved into `pool`."""

    kind: str
    task: str
    pool: Pool


def initial_expert(arch, num_classes: int, seed: int, task: str) -> nn.Module:
    """An untrained expert whose weights depend only on (seed, task)."""
    task_seed = int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:4], "little")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task_seed)
        return arch.expert(num_classes)


class JointExperts(nn.Module):
    """N experts trained as one module over the same batches; forward -> one logits tensor each.

    layout "grouped": WRN heads stacked as grouped convolutions (poe.networks.grouped; exact).
    layout "separate": the experts side by side as separate modules, activations channels-last.
    "auto" picks grouped on GPUs (one kernel per layer for all experts) and separate on CPUs, where
    oneDNN's grouped-convolution backward is slow: measured on the 2-core EPYC used here, one
    training step of 6 experts at batch 512 took 1.0 s grouped vs 0.35 s separate channels-last
    (bench/p4_extraction.py reports the end-to-end effect). Other architectures are always separate.
    """

    def __init__(self, experts: list[nn.Module], layout: str = "auto", device: torch.device | str = "cpu"):
        super().__init__()
        if layout not in ("auto", "grouped", "separate"):
            raise ValueError(f"unknown layout {layout!r}")
        shapes = [head_shape(e) for e in experts]
        groupable = all(s is not None for s in shapes) and len({s[:4] for s in shapes}) == 1
        if layout == "auto":
            layout = "grouped" if torch.device(device).type == "cuda" else "separate"
        self.layout = layout if groupable else "separate"
        self.grouped = GroupedWRNHeads.from_heads(experts) if self.layout == "grouped" else None
        self.separate = None if self.grouped is not None else \
            nn.ModuleList(experts).to(memory_format=torch.channels_last)

    def forward(self, features) -> list[torch.Tensor]:
        if self.grouped is not None:
            return self.grouped.split(self.grouped(features))
        features = features.contiguous(memory_format=torch.channels_last)  # oneDNN's native layout
        return [e(features) for e in self.separate]

    def experts(self, factories) -> list[nn.Module]:
        """The trained experts as separate modules (`factories[i]()` builds an empty expert i)."""
        states = self.grouped.state_dicts() if self.grouped is not None else \
            [e.state_dict() for e in self.separate]
        out = []
        for factory, state in zip(factories, states):
            expert = factory()
            expert.load_state_dict(state)  # copies into standard (contiguous) tensors
            out.append(expert)
        return out


def stale_or_missing(pool: Pool, tasks: list[str], loss_kind: str, teacher_kind: str,
                     validation: dict | None) -> list[str]:
    """Tasks whose expert `pool` lacks, or holds trained on another library, loss, teacher or
    validation split (`validation`: what the run records of its split, None without one)."""
    manifest = pool.manifest()  # read once
    fingerprint = (manifest.get("library") or {}).get("fingerprint")
    entries = manifest.get("experts", {})
    todo = []
    for t in tasks:
        e = entries.get(t)
        if not pool.has_expert(t) or e is None or e.get("library") != fingerprint \
                or e.get("loss") != loss_kind or e.get("teacher") != teacher_kind \
                or (e.get("validation") or None) != validation:
            todo.append(t)
    return todo


def train_experts(run: RunSettings, jobs: dict[str, tuple[Pool, list[str]]], teacher_kind: str, oracle_fn, *,
                  cache_dir: str | Path, layout: str = "auto") -> dict[str, dict[str, float]]:
    """Train and save the experts of several pools: `jobs` maps a loss kind (soft | scale |
    soft+scale) to (the pool to save into, its tasks); every pool must hold the same library. From
    the feature cache in `cache_dir` (run.expert_source "cache"), all of them in ONE joint pass; live,
    one pass per loss kind. Under torchrun the experts are divided among the ranks, each training and
    saving its own. Returns {kind: {task: accuracy on the task's own classes}} (run.score_on's first
    split), of every expert."""
    members = [Member(kind, t, pool) for kind, (pool, tasks) in jobs.items() for t in tasks]
    if run.expert_source == "cache":
        scores = train_from_cache(run, members, teacher_kind, oracle_fn, views=run.cache_views, cache_dir=cache_dir,
                                  cache_dtype=run.cache_dtype, layout=layout)
    else:
        scores = {}
        for kind in jobs:
            scores.update(train_live(run, [m for m in members if m.kind == kind], teacher_kind, oracle_fn))
    return {kind: {t: scores[(kind, t)] for t in tasks} for kind, (_, tasks) in jobs.items()}


def _teacher(pool: Pool, teacher_kind: str, oracle_fn, device) -> tuple[nn.Module, bool]:
    """The experts' teacher and whether it reads the library's features (the library student's own
    head, so the library runs once for both) or images (the Oracle)."""
    if teacher_kind in ORACLE_TEACHERS:
        return oracle_teacher(teacher_kind, oracle_fn()), False
    return pool.load_student_head().to(device), True


def _names(members: list[Member]) -> list[str]:
    """Each member's name in the losses and the history: its task, or kind/task when several loss
    kinds train together."""
    several_kinds = len({m.kind for m in members}) > 1
    return [f"{m.kind}/{m.task}" if several_kinds else m.task for m in members]


# -- from the feature cache -------------------------------------------------------------------------
def cache_key(run: RunSettings, library_fp: str, teacher_kind: str, teacher_fp: str, dtype: str) -> dict:
    p = run.profile
    return {"format": 1, "dataset": p.name, "data": data_fingerprint(run.data[0]), "library": library_fp,
            "teacher": f"{teacher_kind}:{teacher_fp}", "batch_size": run.stage_batch_size("expert"), "dtype": dtype,
            "augment": {"crop_padding": p.crop_padding, "image_size": p.image_size, "mean": list(p.mean),
                        "std": list(p.std)}}


def build_views(run: RunSettings, library, teacher, teacher_from_features: bool, key: dict, views: int, cache_dir,
                dtype: str):
    """The first `views` views of the training set in the cache (computed where missing). Under
    torchrun the missing views are divided among the ranks (view k by rank k mod size); then every
    rank reads all of them."""
    if len({json.dumps(k, sort_keys=True) for k in distributed.gather(key)}) > 1:
        # Each rank would read its own cache folder, and find the views of the others missing.
        raise PoEError("the processes hold different libraries or teachers (their feature-cache keys differ): "
                       "every rank must train the experts on the same library and teacher")
    cache = FeatureCache(cache_dir, key)
    train = run.data[0]
    world = distributed.world()
    seed = run.cache_seed  # the views' augmentation draws (the run's seed unless --cache_seed says otherwise)
    missing = distributed.broadcast([k for k in range(views) if not cache.has_view(seed, k)])  # rank 0's list
    todo = distributed.mine(missing, world)
    missing = len(todo)
    for k in todo:
        loader = run.train_loader("expert", seed=seed)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(k)  # view k = the live loader's epoch k: same order, crops and flips
        with frozen(library, teacher):
            cache.ensure(seed, k, loader, library, teacher, teacher_from_features, device=run.device,
                         amp=run.amp, dtype=dtype, num_images=len(train), views_to_build=missing)
        missing -= 1
    distributed.barrier()  # every view written before anyone reads them
    out = [cache.ensure(seed, k, None, None, None, False, device=run.device, dtype=dtype, num_images=len(train))
           for k in range(views)]
    size = sum(bytes_per_view(len(v), v.meta["feature_shape"], v.meta["num_classes"], dtype) for v in out)
    print(f"[experts] feature cache: {views} view(s), {size / 1e9:.2f} GB in {cache.folder} "
          f"(reused while library and teacher are unchanged; delete it to free the space)")
    return out


def train_from_cache(run: RunSettings, members: list[Member], teacher_kind: str, oracle_fn, *,
                     views: int = DEFAULT_VIEWS, cache_dir: str | Path, cache_dtype: str = "float16",
                     layout: str = "auto") -> dict[tuple[str, str], float]:
    """Train every member jointly over the cached views; save each into its pool. The library (and
    the library student's head) are read from the first member's pool; every other pool must hold
    the same library. Under torchrun the members are divided among the ranks (the cache's views too,
    see build_views): each rank trains its share jointly and saves those experts; the pools'
    manifests are updated under their lock.

    Returns {(kind, task): accuracy on the images of the task's classes}, of all members."""
    if not members:
        return {}
    if cache_dtype not in CACHE_DTYPES:
        raise PoEError(f"unknown cache dtype {cache_dtype!r}; choose from {', '.join(CACHE_DTYPES)}")
    if views < 1:
        raise PoEError(f"--cache_views must be at least 1, got {views}")
    for m in members:
        if m.kind not in EXPERT_LOSSES:
            raise PoEError(f"unknown expert loss {m.kind!r}; choose from {', '.join(EXPERT_LOSSES)}")
    source = members[0].pool
    library = source.load_library().to(run.device)
    fingerprint = library_fingerprint(library)
    for pool in {m.pool.root: m.pool for m in members}.values():
        if pool.root != source.root and library_fingerprint(pool.load_library()) != fingerprint:
            raise PoEError(f"{pool.root} holds another library than {source.root}; import the same library first")

    teacher, from_features = _teacher(source, teacher_kind, oracle_fn, run.device)
    views = min(views, run.budgets["expert"].epochs)  # a view no epoch reads is never computed
    key = cache_key(run, fingerprint, teacher_kind, library_fingerprint(teacher), cache_dtype)
    tic = time.perf_counter()
    cached = build_views(run, library, teacher, from_features, key, views, cache_dir, cache_dtype)
    cache_s = time.perf_counter() - tic
    del teacher  # not needed any more: training reads the cache
    world = distributed.world()
    mine = distributed.mine(members, world)
    scores = _train_cached(run, mine, cached, teacher_kind, library, fingerprint, views, cache_dtype, layout,
                           world, tic, cache_s) if mine else {}
    everyone = {key: acc for part in distributed.gather(scores) for key, acc in part.items()}
    for m in members:
        if (m.kind, m.task) not in scores:  # trained by another rank, which prints nothing itself
            print(f"[experts] {m.kind} {m.task}: {everyone[(m.kind, m.task)]:.2f}% on its own classes -> "
                  f"{m.pool.expert_path(m.task)} (another process)")
    return everyone


def _train_cached(run, members, cached, teacher_kind, library, fingerprint, views, cache_dtype, layout, world,
                  tic, cache_s) -> dict[tuple[str, str], float]:
    arch, hierarchy = run.profile.architecture, run.profile.hierarchy
    experts = [initial_expert(arch, len(hierarchy[m.task]), run.seed, m.task) for m in members]
    joint = JointExperts(experts, layout, run.device)
    columns = [torch.tensor(hierarchy[m.task], device=run.device) for m in members]
    losses = {kind: ExpertLoss(kind, temperature=TEMPERATURE, alpha=ALPHA) for kind in {m.kind for m in members}}
    names = _names(members)

    def batch_loss(features, teacher_logits):  # one forward of all experts, one loss per expert
        outputs = joint(features)
        return {name: losses[m.kind](out, teacher_logits[:, cols])
                for name, m, out, cols in zip(names, members, outputs, columns)}

    signature = run.signature("expert", members=names, teacher=teacher_kind, library=fingerprint, source="cache",
                              views=views, cache_seed=run.cache_seed, cache_dtype=cache_dtype, layout=joint.layout)

    def extraction() -> dict:  # recorded with each expert, once it is trained and scored
        return {"source": "cache", "views": views, "cache_dtype": cache_dtype, "joint_experts": len(members),
                "wall_s": {"cache_this_process_s": round(cache_s, 1),
                           "training_and_scoring_this_process_s": round(time.perf_counter() - tic - cache_s, 1)},
                "layout": joint.layout}

    return _fit_score_save(
        run, members, joint, batch_loss, CachedLoader(cached, run.stage_batch_size("expert"), run.seed),
        resume_stem="experts.cache", world=world, signature=signature, desc=f"{len(members)} experts (cached, joint)",
        trained=lambda: joint.experts([lambda t=m.task: arch.expert(len(hierarchy[t])) for m in members]),
        library=library, fingerprint=fingerprint, teacher_kind=teacher_kind, extraction=extraction)


# -- live: library and teacher recomputed every batch -------------------------------------------------
def train_live(run: RunSettings, members: list[Member], teacher_kind: str, oracle_fn) -> dict[tuple[str, str], float]:
    """Train the members, all of one loss kind and one pool, in one pass over the images, the library
    and the teacher running on every batch; save each into the pool. Under torchrun the members are
    divided among the ranks, each training and saving its own.

    Returns {(kind, task): accuracy on the images of the task's classes}, of all members."""
    world = distributed.world()
    mine = distributed.mine(members, world)
    scores = _train_live(run, mine, teacher_kind, oracle_fn, world) if mine else {}
    return {key: acc for part in distributed.gather(scores) for key, acc in part.items()}


def _train_live(run, members, teacher_kind, oracle_fn, world) -> dict[tuple[str, str], float]:
    kind, pool = members[0].kind, members[0].pool
    arch, hierarchy = run.profile.architecture, run.profile.hierarchy
    library = pool.load_library().to(run.device)
    fingerprint = library_fingerprint(library)
    teacher, from_features = _teacher(pool, teacher_kind, oracle_fn, run.device)
    tasks = [m.task for m in members]
    experts = nn.ModuleDict({t: initial_expert(arch, len(hierarchy[t]), run.seed, t) for t in tasks})
    columns = {t: torch.tensor(hierarchy[t], device=run.device) for t in tasks}
    loss_fn = ExpertLoss(kind, temperature=TEMPERATURE, alpha=ALPHA)

    def batch_loss(x, y):  # labels unused: every expert sees the whole training set
        with frozen(library, teacher):
            features = library(x)
            logits = teacher(features) if from_features else teacher(x)
        return {t: loss_fn(experts[t](features), logits[:, columns[t]]) for t in tasks}

    signature = run.signature("expert", tasks=tasks, loss=kind, teacher=teacher_kind, library=fingerprint)
    return _fit_score_save(
        run, members, experts, batch_loss, run.train_loader("expert"), resume_stem="experts", world=world,
        signature=signature, desc=f"{len(tasks)} experts", trained=lambda: [experts[t] for t in tasks],
        library=library, fingerprint=fingerprint, teacher_kind=teacher_kind)


# -- the end both paths share ------------------------------------------------------------------------
def _fit_score_save(run: RunSettings, members: list[Member], model: nn.Module, batch_loss, loader, *,
                    resume_stem: str, world: distributed.World, signature: dict, desc: str, trained, library,
                    fingerprint: str, teacher_kind: str, extraction=None) -> dict[tuple[str, str], float]:
    """Train `model` (the members' experts, as one module) with fit(), resuming from
    <first pool>/<resume_stem>[.rankRofN].resume.pt; `trained()` then gives the members' experts as
    separate modules. Each is scored on its own classes and saved into its pool with its share of the
    history (and `extraction()`, what the cached path records), one line printed per expert.

    Returns {(kind, task): accuracy on run.score_on's first split}."""
    root = members[0].pool.root
    resume = root / f"{resume_stem}{rank_suffix(world)}.resume.pt"
    history = fit(model, batch_loss, loader, run.budgets["expert"], resume_path=resume, signature=signature,
                  device=run.device, amp=run.amp, desc=desc,
                  history_path=root / f"experts{rank_suffix(world)}.history.csv")
    experts = trained()
    metrics = {}
    for kind in sorted({m.kind for m in members}):
        mine = {m.task: e.to(run.device) for m, e in zip(members, experts) if m.kind == kind}
        metrics.update({(kind, t): m for t, m in run.own_class_metrics(library, mine).items()})
    scores = {key: m[OWN_CLASS_KEYS[run.score_on[0]]] for key, m in metrics.items()}
    recorded = {"extraction": extraction()} if extraction is not None else {}
    for m, name, expert in zip(members, _names(members), experts):
        per_task = [{k: v for k, v in h.items() if k in ("epoch", "lr", "seconds", f"loss/{name}", "loss")}
                    for h in history]
        m.pool.save_expert(m.task, expert.cpu(), loss=m.kind, teacher=teacher_kind, library=fingerprint,
                           budget=run.budget_meta("expert"), history=per_task, **recorded,
                           metrics=metrics[(m.kind, m.task)], validation=run.split_meta)
        print(f"[experts] {m.kind} {m.task}: {describe_scores(metrics[(m.kind, m.task)])} on its own classes -> "
              f"{m.pool.expert_path(m.task)}")
    resume.unlink(missing_ok=True)
    return scores
