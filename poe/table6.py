"""Table 6 of the paper: the share of a task model's errors that cross experts.

A cross-expert error is a wrong prediction whose predicted class belongs to another primitive task
of the query than the true class (poe.metrics.error_breakdown). For every n(Q) in 2..5 the figure is
the mean, over all n-subsets of the chosen tasks, of 100·cross-expert errors / all errors; the mean
accuracy is reported beside it. The study compares three pools built from the same library and
teacher that differ only in the experts' loss: L_soft only, L_scale only, L_soft + α·L_scale.
L_scale pins every expert to the teacher's logit scale, so experts trained apart can be compared by
argmax: the paper finds L_soft only crosses most and L_scale only least.

Each pool is scored from its experts' logits computed once (library run once per batch); every
combination is then scored by indexing those logits (poe.evaluate.score_all_combinations).
Run_Table6.py is the command-line tool.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .errors import PoEError
from .evaluate import expert_logits, score_all_combinations
from .extract import stale_or_missing, train_experts
from .history import save_png
from .losses import EXPERT_LOSSES
from .paths import PROJECT_ROOT
from .pool import Pool, library_fingerprint
from .preprocess import import_library, stored_oracle
from .profiles import Budget, Profile, get_profile
from .run_settings import RunSettings
from .split import ValidationSplit, check_same, recorded_split
from .teachers import ORACLE_TEACHERS

VARIANTS = EXPERT_LOSSES  # ("soft", "scale", "soft+scale"): one pool each
VARIANT_LABELS = {"soft": "L_soft only", "scale": "L_scale only", "soft+scale": "L_soft + L_scale"}
SIZES = (2, 3, 4, 5)

# The paper's Table 6: % cross-expert errors at n(Q) = 2, 3, 4, 5 over its six primitive tasks.
PAPER = {
    "cifar100": {"soft": (30.79, 44.83, 53.51, 59.56),
                 "scale": (20.98, 33.51, 42.13, 48.51),
                 "soft+scale": (24.71, 37.91, 46.51, 52.75)},
    "tinyimagenet": {"soft": (35.77, 51.33, 60.43, 66.47),
                     "scale": (22.05, 34.03, 42.15, 48.18),
                     "soft+scale": (25.59, 38.97, 47.45, 53.37)},
}


def default_root(profile: Profile) -> Path:
    return PROJECT_ROOT / "DB_PoE" / f"{profile.name}_table6"


def sizes_for(n_tasks: int) -> tuple[int, ...]:
    """The n(Q) of the study that `n_tasks` tasks allow (2..5, at most n_tasks)."""
    sizes = tuple(n for n in SIZES if n <= n_tasks)
    if not sizes:
        raise PoEError(f"the study needs at least {SIZES[0]} tasks (queries of n(Q) >= 2), got {n_tasks}")
    return sizes


def paper_rows(dataset: str) -> dict[str, dict[int, float]]:
    return {v: dict(zip(SIZES, values)) for v, values in PAPER.get(dataset, {}).items()}


# -- training: three pools sharing one library and one teacher ------------------------------------
def prepare_pools(profile: Profile, root: Path, tasks: list[str], *, library_source: Pool, teacher: str,
                  pretrained_dir: Path, data_root, download: bool, batch_size: int, expert_budget: Budget,
                  device: torch.device, amp: str, seed: int, force=(), cache_dir=None, **extraction) -> dict[str, Pool]:
    """Make `root/<variant>/` hold the library of `library_source` and an expert per task trained
    with that variant's loss; what is already there (same library, loss and teacher) is kept.
    `extraction`: RunSettings' expert_source / cache_views / cache_dtype / validation / score_on /
    cache_seed; the feature cache (`cache_dir`) defaults to `root/feature_cache`, one for the three pools."""
    source_fp = library_fingerprint(library_source.load_library())
    run = RunSettings(profile, data_root=data_root, download=download, batch_size=batch_size,
                      budgets={**profile.budgets, "expert": expert_budget}, device=device, amp=amp, seed=seed,
                      **extraction)
    pools, todo = {}, {}
    for variant in VARIANTS:
        pool = Pool(Path(root) / variant, profile)
        pool._writable()
        if not pool.has_library() or "library" in force:
            import_library(library_source, pool)
        elif library_fingerprint(pool.load_library()) != source_fp:
            raise PoEError(f"{pool.library_path} is another library than {library_source.library_path}; "
                           f"pass another --out_db, or --force library to replace it (its experts are retrained)")
        todo[variant] = tasks if "experts" in force else stale_or_missing(pool, tasks, variant, teacher,
                                                                          run.split_meta)
        kept = [t for t in tasks if t not in todo[variant]]
        if kept:
            print(f"[{variant}] already in {pool.root}: {', '.join(kept)}")
        pools[variant] = pool

    oracle_path = Path(pretrained_dir) / "oracle.pt"
    pretrained = getattr(profile.architecture, "pretrained", False)  # e.g. ImageNet: torchvision's Oracle
    if teacher in ORACLE_TEACHERS and any(todo.values()) and not pretrained and not oracle_path.is_file():
        # Run_preprocessing.py would train one (hours); for this study the teacher must already exist.
        raise PoEError(f"no Oracle checkpoint at {oracle_path}: build it with python Run_preprocessing.py "
                       f"--dataset {profile.name}, pass --pretrained_db, or use --teacher library-student")
    oracle_cache = {}

    def oracle():  # loaded once, shared by the three pools: the same teacher for every variant
        if "oracle" not in oracle_cache:
            oracle_cache["oracle"] = stored_oracle(profile, pretrained_dir, device, download=download)
        return oracle_cache["oracle"]

    jobs = {v: (pools[v], todo[v]) for v in VARIANTS if todo[v]}
    for variant, (_, variant_tasks) in jobs.items():
        print(f"[{variant}] training {len(variant_tasks)} experts with {VARIANT_LABELS[variant]}")
    if jobs:
        # From the feature cache (the default), all variants in one joint pass: library features and
        # teacher logits computed once for the three pools; live, one pass per variant.
        train_experts(run, jobs, teacher, oracle, cache_dir=cache_dir or Path(root) / "feature_cache")
    return pools


# -- evaluation ---------------------------------------------------------------------------------------
def pool_provenance(pool: Pool, tasks: list[str], library: torch.nn.Module) -> dict:
    """Loss and teacher the pool's experts were trained with (our layout's manifest; unknown for the
    authors'), after checking every expert was trained on this very library."""
    entries = pool.manifest().get("experts", {})
    fingerprint = library_fingerprint(library)
    for t in tasks:
        trained_on = entries.get(t, {}).get("library")
        if trained_on is not None and trained_on != fingerprint:
            raise PoEError(f"{pool.expert_path(t)} was trained on another library than {pool.library_path}; "
                           f"retrain it: python Run_preprocessing.py --dataset {pool.profile.name} --db {pool.root} "
                           f"--tasks {t} --force experts")

    def common(key):
        values = {entries.get(t, {}).get(key) for t in tasks}
        return values.pop() if len(values) == 1 else "mixed"

    return {"loss": common("loss"), "teacher": common("teacher")}


def default_label(pool: Pool, loss) -> str:
    if pool.layout == "authors":
        return f"authors' experts ({pool.root.name})"
    if loss in VARIANT_LABELS:
        return f"{VARIANT_LABELS[loss]} ({pool.root.name})"
    return pool.root.name


def validation_images(pool: Pool, tasks: list[str], train, wanted: dict | None, asked: int | None):
    """The validation images the pool's experts were held out from (their recorded split). A pool
    that records none was trained on every training image: scoring it on a 'validation' split would
    score it on images it saw, so that is refused."""
    recorded = recorded_split(pool.manifest().get("experts", {}), tasks, str(pool.root))
    if not recorded:
        raise PoEError(f"{pool.root} records no validation split (its experts saw every training image): "
                       "score it with --score_on test")
    if asked is not None or wanted is not None:
        check_same(recorded, wanted, str(pool.root))
    split = ValidationSplit.from_meta(recorded)
    if split.describe(train)["digest"] != recorded["digest"]:
        raise PoEError(f"{pool.root}'s validation split does not match these training images (another copy "
                       "of the dataset?)")
    return split.apply(train)[1]


def evaluate_pool(pool: Pool, tasks: list[str], test, *, label: str | None = None, device="cpu",
                  amp="none", split: str = "test", tag: bool = False) -> dict:
    """One row of the table: mean cross-expert share and accuracy per n(Q) over all combinations,
    on `test` (the test set, or the pool's validation split: `split` says which; `tag` adds it to
    the label)."""
    profile = pool.profile
    missing = [t for t in tasks if not pool.has_expert(t)]
    if missing:
        raise PoEError(f"the pool {pool.root} has no expert for {', '.join(missing)}; build with: python "
                       f"Run_Table6.py --dataset {profile.name} (training mode), or python Run_preprocessing.py "
                       f"--dataset {profile.name} --db {pool.root} --tasks {' '.join(missing)}")
    tic = time.perf_counter()
    library = pool.load_library()
    provenance = pool_provenance(pool, tasks, library)
    experts = {t: pool.load_expert(t).to(device) for t in tasks}
    classes = sorted(c for t in tasks for c in profile.hierarchy[t])
    label = (label or default_label(pool, provenance["loss"])) + (f" [{split}]" if tag else "")
    logits, labels = expert_logits(library.to(device), experts, profile.eval_loader(test.subset(classes)),
                                   device, amp, desc=f"logits: {label}")
    summary = score_all_combinations(logits, labels, profile.hierarchy, tasks, sizes_for(len(tasks)))
    own = {}  # each expert alone on its own classes' images (the n(Q)=1 query)
    for t in tasks:
        ids = torch.tensor(profile.hierarchy[t])
        mask = torch.isin(labels, ids)
        own[t] = 100.0 * (ids[logits[t][mask].argmax(1)] == labels[mask]).float().mean().item()
    return {"label": label, "db": str(pool.root), "layout": pool.layout, "split": split, **provenance,
            "own_class_pct": own,
            "cross_expert_pct": {str(n): s["cross_expert_pct"] for n, s in summary.items()},
            "accuracy_pct": {str(n): s["accuracy_pct"] for n, s in summary.items()},
            "combinations": {str(n): s["combinations"] for n, s in summary.items()},
            "images": len(labels), "eval_seconds": round(time.perf_counter() - tic, 2)}


def shape_check(rows: list[dict]) -> dict | None:
    """The paper's ordering, when one row of each variant is present: L_soft only crosses most and
    L_scale only least, at every n(Q)."""
    by_loss = {}
    for r in rows:
        by_loss.setdefault(r.get("loss"), []).append(r)
    if any(len(by_loss.get(v, [])) != 1 for v in VARIANTS):
        return None
    ce = {v: by_loss[v][0]["cross_expert_pct"] for v in VARIANTS}
    ns = ce["soft"].keys()
    return {"soft_highest": all(ce["soft"][n] > max(ce["scale"][n], ce["soft+scale"][n]) for n in ns),
            "scale_lowest": all(ce["scale"][n] < min(ce["soft"][n], ce["soft+scale"][n]) for n in ns)}


def report(profile: Profile, tasks: list[str], rows: list[dict], **extra) -> dict:
    paper = paper_rows(profile.name)
    sizes = sizes_for(len(tasks))
    return {"dataset": profile.name, "title": profile.title, "tasks": tasks, "rows": rows,
            "paper": {VARIANT_LABELS[v]: {str(n): vals[n] for n in sizes} for v, vals in paper.items()},
            "paper_tasks": get_profile(profile.name).default_tasks if paper else None,  # not a --task_file's
            "shape": shape_check(rows), **extra}


def markdown(doc: dict) -> str:
    """The table: one row per pool, then the paper's rows (cross-expert share only: the paper's
    Table 6 gives no accuracies)."""
    sizes = list(next(iter(doc["rows"]))["combinations"]) if doc["rows"] else [str(n) for n in SIZES]

    def cells(values):
        return [f"{values[n]:.2f}" if values and n in values else "–" for n in sizes]

    head = ["pool"] + [f"cross-expert % n(Q)={n}" for n in sizes] + [f"accuracy % n(Q)={n}" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (2 * len(sizes))]
    for r in doc["rows"]:
        lines.append("| " + " | ".join([r["label"], *cells(r["cross_expert_pct"]), *cells(r["accuracy_pct"])]) + " |")
    for label, values in doc["paper"].items():
        lines.append("| " + " | ".join([f"*paper: {label}*", *cells(values), *cells(None)]) + " |")
    combos = next(iter(doc["rows"]))["combinations"] if doc["rows"] else {}
    notes = [f"Mean over all combinations of the {len(doc['tasks'])} tasks ("
             + ", ".join(f"{combos[n]} for n(Q)={n}" for n in combos) + "); cross-expert % = share of a task "
             "model's errors whose predicted class is in another queried task than the true class."]
    if doc["paper"] and doc["tasks"] != doc["paper_tasks"]:
        notes.append("The paper's rows are over its six tasks; this table used other tasks.")
    if doc.get("shape"):
        s = doc["shape"]
        notes.append(f"Paper's ordering: L_soft only highest at every n(Q): {'yes' if s['soft_highest'] else 'NO'}; "
                     f"L_scale only lowest at every n(Q): {'yes' if s['scale_lowest'] else 'NO'}.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


# -- plot ---------------------------------------------------------------------------------------------
def plot(doc: dict, path: Path) -> str:
    """Cross-expert share vs n(Q): a solid line per pool, the paper's rows dashed. Returns a note."""
    from matplotlib.figure import Figure  # imported here: only plotting pays for it

    colours = {VARIANT_LABELS[v]: f"C{i}" for i, v in enumerate(VARIANTS)}
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, r in enumerate(doc["rows"]):
        xs = [int(n) for n in r["cross_expert_pct"]]
        colour = colours.get(VARIANT_LABELS.get(r.get("loss")), f"C{len(VARIANTS) + i}")
        ax.plot(xs, list(r["cross_expert_pct"].values()), "o^vD<>"[i % 6] + "-", color=colour, label=r["label"])
    for label, values in doc["paper"].items():
        ax.plot([int(n) for n in values], list(values.values()), "s--", color=colours[label], alpha=0.6,
                label=f"paper: {label}")
    ax.set_xlabel("n(Q), tasks per query")
    ax.set_ylabel("cross-expert errors (% of errors)")
    ax.set_xticks(sorted({int(n) for r in doc["rows"] for n in r["cross_expert_pct"]}))
    ax.set_title(f"Table 6, {doc.get('title', doc['dataset'])}\nmean over all combinations of the tasks", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
