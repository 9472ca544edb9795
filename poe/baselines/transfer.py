"""Head-only baselines on PoE's frozen library: a new 16·n(Q)-wide head over the query's classes.

Transfer: cross-entropy with the labels. CKD: no labels, PoE's expert loss L_soft + 0.3·L_scale
against the teacher's logits of the query's classes (Oracle or library student), i.e. one expert
for the whole query. Both use only the queried classes' images.

Like PoE's experts they train from the feature cache (poe.feature_cache): the library's features
and the teacher's logits of `cache_views` augmented views of the query's training images, computed
in ONE pass shared by Transfer and CKD; epoch e reads view e mod V. `head_source "live"` recomputes
the library every batch instead (to measure what the cache saves).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..feature_cache import CachedLoader, FeatureCache, data_fingerprint
from ..losses import ALPHA, TEMPERATURE, ExpertLoss
from ..train import frozen
from .model import QueryModel, new_head
from .query import Query
from .registry import Method, register
from .training import Plan, Setup, load_oracle


class LabelledCachedLoader(CachedLoader):
    """The cache's batches as (features, labels) for Transfer, or (features, teacher logits) for CKD."""

    def __init__(self, views, labels, batch_size, seed, with_labels: bool):
        super().__init__(views, batch_size, seed)
        self.labels, self.with_labels = labels, with_labels

    def __iter__(self):
        for k, rows in self.batch_rows():
            features, logits = self.views[k].batch(rows)
            yield features, (self.labels[k][rows] if self.with_labels else logits)


def ckd_loss(student_logits, teacher_logits, classes) -> torch.Tensor:
    """PoE's expert loss for the whole query: L_soft + 0.3·L_scale against the teacher's logits of
    the query's classes (`classes`: their global ids, sorted = the student's column order)."""
    return CKD_LOSS(student_logits, teacher_logits[:, classes])


CKD_LOSS = ExpertLoss("soft+scale", temperature=TEMPERATURE, alpha=ALPHA)


def teacher(setup: Setup) -> tuple[nn.Module, bool]:
    """CKD's teacher and whether it reads the library's features (the library student's head) or images."""
    if "teacher" not in setup._memo:
        if setup.teacher == "oracle":
            setup._memo["teacher"] = (load_oracle(setup), False)
        else:
            setup._memo["teacher"] = (setup.pool.load_student_head().to(setup.device), True)
    return setup._memo["teacher"]


def cached_views(setup: Setup, query: Query):
    """The query's cached views (built once, shared by Transfer and CKD), the labels of each view in
    row order, and the seconds building them took (from the views' own records)."""
    key = ("views", query.classes)
    if key not in setup._memo:
        library = setup.library()
        model, from_features = teacher(setup)
        train = setup.subset(query, "train")
        views = min(setup.cache_views, setup.budgets["head"].epochs)
        cache = FeatureCache(setup.out / "feature_cache", {
            "format": 1, "dataset": setup.profile.name, "data": data_fingerprint(train),
            "library": setup.library_fingerprint(), "teacher": setup.teacher, "batch_size": setup.batch_size,
            "dtype": setup.cache_dtype, "purpose": "baselines"})
        out, labels = [], []
        for k in range(views):
            loader = setup.train_loader(query)
            loader.set_epoch(k)  # view k = the live loader's epoch k: same order, crops and flips
            with frozen(library, model):
                out.append(cache.ensure(setup.seed, k, loader, library, model, from_features, device=setup.device,
                                        amp=setup.amp, dtype=setup.cache_dtype, num_images=len(train),
                                        views_to_build=views - k))
            labels.append(torch.cat([y for _, y in loader]))  # the rows' labels, in the view's order
        setup._memo[key] = (out, labels, sum(v.meta["seconds"] for v in out))
    return setup._memo[key]


def prepare(setup: Setup, query: Query, method: str) -> Plan:
    tic = time.perf_counter()
    library = setup.library()
    setup.seeded(method, query.key)
    head = new_head(setup.profile, query, setup.init)
    model = QueryModel(library, head, query)
    columns = torch.tensor(query.classes, device=setup.device)
    notes = {"data": f"{len(setup.subset(query, 'train'))} training images of the {len(query.classes)} queried classes",
             "teacher": setup.teacher if method == "CKD" else None}
    if setup.head_source == "cache":
        t0 = time.perf_counter()
        views, labels, build_s = cached_views(setup, query)
        waited = time.perf_counter() - t0  # replaced below by the views' own build time (as if built now)
        loader = LabelledCachedLoader(views, labels, setup.batch_size, setup.seed, with_labels=method != "CKD")
        if method == "CKD":
            batch_loss = lambda f, z: ckd_loss(head(f), z, columns)  # noqa: E731
        else:
            batch_loss = lambda f, y: F.cross_entropy(head(f), y)  # noqa: E731
        notes["speed-up"] = (f"library features (and teacher logits) cached: {len(views)} view(s) built in one pass "
                             f"shared by Transfer and CKD ({build_s:.1f} s, counted in full in each one's time)")
        setup_s = time.perf_counter() - tic - waited + build_s
    else:
        model_t, from_features = teacher(setup) if method == "CKD" else (None, False)

        def batch_loss(x, y):
            with frozen(library, *([model_t] if model_t is not None else [])):
                f = library(x)
                z = None if model_t is None else (model_t(f) if from_features else model_t(x))
            out = head(f)
            return F.cross_entropy(out, y) if z is None else ckd_loss(out, z, columns)

        loader = setup.train_loader(query)
        notes["speed-up"] = "none: the library (and teacher) recomputed every batch"
        setup_s = time.perf_counter() - tic
    return Plan(model=model, trained=head, batch_loss=batch_loss, loader=loader, budget=setup.budgets["head"],
                setup_s=setup_s, notes=notes)


register(
    Method("Transfer", prepare, "head", uses_library=True, description="new head on the frozen library, CE with labels"),
    Method("CKD", prepare, "head", teachers="oracle-or-student", uses_library=True,
           description="new head on the frozen library, L_soft + 0.3·L_scale to the teacher's query logits"),
)
