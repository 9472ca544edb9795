"""Expert extraction from the feature cache: all requested experts — every task, and every loss
variant when asked — trained jointly in one pass over cached library features and teacher logits.

Per expert this is the paper's training: the same loss (L_soft, L_scale or L_soft + 0.3·L_scale on
the teacher's logits of its classes), SGD with the same schedule (`poe.train.fit`), the same
batches of 512 drawn from the whole training set, every image once per epoch. The differences are
where the inputs come from (the cache: V stored augmented views, see poe.feature_cache) and that
N experts run as one grouped network (poe.networks.grouped), which is exact. Each expert's initial
weights depend only on (seed, task), so an expert starts the same whether it is trained alone,
with other tasks, or once per loss variant (Table 6 then compares losses from the same start).
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
from .teachers import ORACLE_TEACHERS, oracle_teacher
from .train import fit, frozen


@dataclass(frozen=True)
class Member:
    """One expert of the joint run: trained with loss `kind` for `task`, saved into `pool`."""

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


def cache_key(pre, library_fp: str, teacher_kind: str, teacher_fp: str, dtype: str) -> dict:
    p = pre.profile
    return {"format": 1, "dataset": p.name, "data": data_fingerprint(pre.data[0]), "library": library_fp,
            "teacher": f"{teacher_kind}:{teacher_fp}", "batch_size": pre.stage_batch_size("expert"), "dtype": dtype,
            "augment": {"crop_padding": p.crop_padding, "image_size": p.image_size, "mean": list(p.mean),
                        "std": list(p.std)}}


def build_views(pre, library, teacher, teacher_from_features: bool, key: dict, views: int, cache_dir, dtype: str):
    """The first `views` views of the training set in the cache (computed where missing). Under
    torchrun the missing views are divided among the ranks (view k by rank k mod size); then every
    rank reads all of them."""
    if len({json.dumps(k, sort_keys=True) for k in distributed.gather(key)}) > 1:
        # Each rank would read its own cache folder, and find the views of the others missing.
        raise PoEError("the processes hold different libraries or teachers (their feature-cache keys differ): "
                       "every rank must train the experts on the same library and teacher")
    cache = FeatureCache(cache_dir, key)
    train = pre.data[0]
    world = distributed.world()
    seed = pre.cache_seed  # the views' augmentation draws (the run's seed unless --cache_seed says otherwise)
    missing = distributed.broadcast([k for k in range(views) if not cache.has_view(seed, k)])  # rank 0's list
    todo = distributed.mine(missing, world)
    missing = len(todo)
    for k in todo:
        loader = pre.train_loader("expert", seed=seed)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(k)  # view k = the live loader's epoch k: same order, crops and flips
        with frozen(library, teacher):
            cache.ensure(seed, k, loader, library, teacher, teacher_from_features, device=pre.device,
                         amp=pre.amp, dtype=dtype, num_images=len(train), views_to_build=missing)
        missing -= 1
    distributed.barrier()  # every view written before anyone reads them
    out = [cache.ensure(seed, k, None, None, None, False, device=pre.device, dtype=dtype, num_images=len(train))
           for k in range(views)]
    size = sum(bytes_per_view(len(v), v.meta["feature_shape"], v.meta["num_classes"], dtype) for v in out)
    print(f"[experts] feature cache: {views} view(s), {size / 1e9:.2f} GB in {cache.folder} "
          f"(reused while library and teacher are unchanged; delete it to free the space)")
    return out


def train_from_cache(pre, members: list[Member], teacher_kind: str, oracle_fn, *, views: int = DEFAULT_VIEWS,
                     cache_dir: str | Path, cache_dtype: str = "float16",
                     layout: str = "auto") -> dict[tuple[str, str], float]:
    """Train every member jointly over the cached views; save each into its pool. Under torchrun the
    members are divided among the ranks (the cache's views too, see build_views): each rank trains
    its share jointly and saves those experts; the pools' manifests are updated under their lock.

    Returns {(kind, task): accuracy on the test images of the task's classes}, of all members."""
    if not members:
        return {}
    if cache_dtype not in CACHE_DTYPES:
        raise PoEError(f"unknown cache dtype {cache_dtype!r}; choose from {', '.join(CACHE_DTYPES)}")
    if views < 1:
        raise PoEError(f"--cache_views must be at least 1, got {views}")
    for m in members:
        if m.kind not in EXPERT_LOSSES:
            raise PoEError(f"unknown expert loss {m.kind!r}; choose from {', '.join(EXPERT_LOSSES)}")
    budget = pre.budgets["expert"]
    library = pre.pool.load_library().to(pre.device)
    fingerprint = library_fingerprint(library)
    for pool in {m.pool.root: m.pool for m in members}.values():
        if pool.root != pre.pool.root and library_fingerprint(pool.load_library()) != fingerprint:
            raise PoEError(f"{pool.root} holds another library than {pre.pool.root}; import the same library first")

    if teacher_kind in ORACLE_TEACHERS:
        teacher, from_features = oracle_teacher(teacher_kind, oracle_fn()), False
    else:
        teacher, from_features = pre.pool.load_student_head().to(pre.device), True
    views = min(views, budget.epochs)  # a view no epoch reads is never computed
    key = cache_key(pre, fingerprint, teacher_kind, library_fingerprint(teacher), cache_dtype)
    tic = time.perf_counter()
    cached = build_views(pre, library, teacher, from_features, key, views, cache_dir, cache_dtype)
    cache_s = time.perf_counter() - tic
    del teacher  # not needed any more: training reads the cache
    world = distributed.world()
    mine = distributed.mine(members, world)
    scores = _train_members(pre, mine, cached, teacher_kind, library, fingerprint, views, cache_dtype, layout,
                            world, tic, cache_s) if mine else {}
    everyone = {key: acc for part in distributed.gather(scores) for key, acc in part.items()}
    for m in members:
        if (m.kind, m.task) not in scores:  # trained by another rank, which prints nothing itself
            print(f"[experts] {m.kind} {m.task}: {everyone[(m.kind, m.task)]:.2f}% on its own classes -> "
                  f"{m.pool.expert_path(m.task)} (another process)")
    return everyone


def _train_members(pre, members, cached, teacher_kind, library, fingerprint, views, cache_dtype, layout, world,
                   tic, cache_s) -> dict[tuple[str, str], float]:
    arch, hierarchy, budget = pre.profile.architecture, pre.profile.hierarchy, pre.budgets["expert"]
    experts = [initial_expert(arch, len(hierarchy[m.task]), pre.seed, m.task) for m in members]
    joint = JointExperts(experts, layout, pre.device)
    columns = [torch.tensor(hierarchy[m.task], device=pre.device) for m in members]
    losses = {kind: ExpertLoss(kind, temperature=TEMPERATURE, alpha=ALPHA) for kind in {m.kind for m in members}}
    several_kinds = len(losses) > 1
    names = [f"{m.kind}/{m.task}" if several_kinds else m.task for m in members]

    def batch_loss(features, teacher_logits):  # one forward of all experts, one loss per expert
        outputs = joint(features)
        return {name: losses[m.kind](out, teacher_logits[:, cols])
                for name, m, out, cols in zip(names, members, outputs, columns)}

    resume = members[0].pool.root / f"experts.cache{rank_suffix(world)}.resume.pt"
    signature = pre._signature("expert", members=names, teacher=teacher_kind, library=fingerprint, source="cache",
                               views=views, cache_seed=pre.cache_seed, cache_dtype=cache_dtype, layout=joint.layout)
    history = fit(joint, batch_loss, CachedLoader(cached, pre.stage_batch_size("expert"), pre.seed), budget, resume_path=resume,
                  signature=signature, device=pre.device, amp=pre.amp,
                  desc=f"{len(members)} experts (cached, joint)",
                  history_path=resume.parent / f"experts{rank_suffix(world)}.history.csv")

    trained = joint.experts([lambda t=m.task: arch.expert(len(hierarchy[t])) for m in members])
    metrics = {}
    for kind in sorted({m.kind for m in members}):
        mine = {m.task: e.to(pre.device) for m, e in zip(members, trained) if m.kind == kind}
        metrics.update({(kind, t): m for t, m in pre.own_class_metrics(library, mine).items()})
    scores = {key: m[OWN_CLASS_KEYS[pre.score_on[0]]] for key, m in metrics.items()}
    extraction = {"source": "cache", "views": views, "cache_dtype": cache_dtype, "joint_experts": len(members),
                  "wall_s": {"cache_this_process_s": round(cache_s, 1),
                             "training_and_scoring_this_process_s": round(time.perf_counter() - tic - cache_s, 1)},
                  "layout": joint.layout}
    for m, name, expert in zip(members, names, trained):
        per_task = [{k: v for k, v in h.items() if k in ("epoch", "lr", "seconds", f"loss/{name}", "loss")}
                    for h in history]
        m.pool.save_expert(m.task, expert.cpu(), loss=m.kind, teacher=teacher_kind, library=fingerprint,
                           budget=pre._budget_meta("expert"), history=per_task, extraction=extraction,
                           metrics=metrics[(m.kind, m.task)], validation=pre.split_meta)
        print(f"[experts] {m.kind} {m.task}: {describe_scores(metrics[(m.kind, m.task)])} on its own classes -> "
              f"{m.pool.expert_path(m.task)}")
    resume.unlink(missing_ok=True)
    return scores
