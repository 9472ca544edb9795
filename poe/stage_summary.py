"""What the model DB holds, read from the stored models' own metadata (nothing is evaluated again):
one line per model after every preprocessing run, and Run_preprocessing.py's --json and --markdown
reports of the stages (architecture, budget, training images, wall time, validation and test scores)."""
from __future__ import annotations

from pathlib import Path

from . import checkpoint
from .losses import TEMPERATURE
from .metrics import OWN_CLASS_KEYS, describe_scores
from .pool import Pool
from .profiles import Profile


def describe_stored(meta: dict) -> str:
    """One line about a stored model: its architecture, budget and test score when it was trained."""
    parts = [meta.get("architecture", "?")]
    budget = meta.get("budget") or {}
    if budget:
        parts.append(f"{budget.get('epochs')} epochs")
    metrics = meta.get("metrics") or {}
    for split in ("val", "test"):
        acc = metrics.get("test_top1_pct" if split == "test" else "val_top1_pct")
        if acc is not None:
            parts.append(f"{split} top-1 {acc:.2f}%")
    return ", ".join(parts)


def stored_summary(profile: Profile, pool: Pool, pretrained_dir: Path, tasks: list[str]) -> dict:
    """Each stored model's architecture, budget, wall time and test score, from its checkpoint's metadata
    (nothing is evaluated again)."""
    stages = {}
    for name in ("oracle", "library_student"):
        path = Path(pretrained_dir) / f"{name}.pt"
        if path.is_file():
            _, meta = checkpoint.state_and_meta(checkpoint.read(path), path, name)
            stages[name] = {k: meta.get(k) for k in ("architecture", "budget", "wall_s", "metrics", "stored_dtype",
                                                     "history", "validation", "date")}
    manifest = pool.manifest()  # read once
    library = manifest.get("library") or {}
    entries = manifest.get("experts", {})
    experts = {t: {k: entries[t].get(k) for k in ("loss", "teacher", "budget", "metrics", "extraction", "validation",
                                                  "date")}
               for t in tasks if t in entries}
    def shown(path) -> str:  # relative to the working folder where it lies below it: results stay portable
        path = Path(path).resolve()
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    return {"dataset": profile.name, "pool": shown(pool.root), "pretrained_db": shown(pretrained_dir),
            "library": {k: library.get(k) for k in ("architecture", "fingerprint", "student_test_top1_pct", "source")},
            "stages": stages, "experts": experts}


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def summary_lines(summary: dict) -> list[str]:
    """One line per stored model, as Run_preprocessing.py prints them."""
    lines = []
    for name, label in (("oracle", "Oracle"), ("library_student", "library student")):
        if name in summary["stages"]:
            lines.append(f"  {label:<16}: {describe_stored(summary['stages'][name])}")
    for task, e in summary["experts"].items():
        scores = describe_scores(e.get("metrics") or {})
        lines.append(f"  expert {task:<24}: {scores or '?'} on its own classes "
                     f"({e.get('loss')}, teacher {e.get('teacher')})")
    return lines


def summary_markdown(summary: dict) -> str:
    """The stages as a Markdown table (architecture, budget, training images, wall time, validation and
    test scores)."""
    def budget(b):
        if not b:
            return "–"
        sched = "cosine" if b.get("schedule") == "cosine" else f"×{b.get('gamma', 0.1)} at {b.get('milestones')}"
        return f"{b['epochs']} epochs, lr {b['lr']} {sched}, batch {b['batch_size']}"

    def pct(value):
        return "–" if value is None else f"{value:.2f} %"

    def trained_on(split):
        return "all" if not split else f"all but {split['images']} held out ({split['per_class']}/class, seed {split['seed']})"

    def span(values):
        values = [v for v in values if v is not None]
        return "–" if not values else f"{min(values):.2f}–{max(values):.2f} %"

    rows = ["| stage | network | budget | training images | wall time | val top-1 | test top-1 |",
            "|---|---|---|---|---|---|---|"]
    stages = (("oracle", "Oracle (cross-entropy)"), ("library_student", f"library student (KD, T={TEMPERATURE:g})"))
    for name, label in stages:
        s = summary["stages"].get(name)
        if s:
            m = s.get("metrics") or {}
            rows.append(f"| {label} | {s.get('architecture')} | {budget(s.get('budget'))} | "
                        f"{trained_on(s.get('validation'))} | "
                        f"{_minutes((s.get('wall_s') or {}).get('this_process_s'))} | "
                        f"{pct(m.get('val_top1_pct'))} | {pct(m.get('test_top1_pct'))} (all classes) |")
    experts = summary["experts"]
    if experts:
        first = next(iter(experts.values()))
        walls = (first.get("extraction") or {}).get("wall_s") or {}
        wall = (f"cache {_minutes(walls.get('cache_this_process_s'))} + training and scoring "
                f"{_minutes(walls.get('training_and_scoring_this_process_s'))}") if walls else "–"
        metrics = [e.get("metrics") or {} for e in experts.values()]
        views = (first.get("extraction") or {}).get("views")
        rows.append(f"| {len(experts)} experts ({first.get('loss')}, teacher {first.get('teacher')}"
                    f"{f', {views} cached views' if views else ''}) | {summary['library'].get('architecture') or ''} "
                    f"+ expert heads | {budget(first.get('budget'))} | {trained_on(first.get('validation'))} | {wall} | "
                    f"{span(m.get(OWN_CLASS_KEYS['val']) for m in metrics)} | "
                    f"{span(m.get(OWN_CLASS_KEYS['test']) for m in metrics)} (own classes) |")
        rows += ["", "| expert | own-class val top-1 | own-class test top-1 |", "|---|---|---|"]
        rows += [f"| {t} | {pct((e.get('metrics') or {}).get(OWN_CLASS_KEYS['val']))} | "
                 f"{pct((e.get('metrics') or {}).get(OWN_CLASS_KEYS['test']))} |" for t, e in experts.items()]
    return "\n".join(rows) + "\n"
