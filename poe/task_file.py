"""User-defined primitive tasks (`--task_file PATH`, every dataset).

The file is JSON, {"task": [class, ...], ...}, or text with one task per line:

    # my groups (comments start with '#')
    retrievers: 207, 208
    herons: little blue heron, American egret, bittern
    cats: 281 282 283

A class is its id, its name (as `Run_Service.py --list` prints it) or its wnid. In text, classes
are separated by commas when the line has one (names may hold spaces), else by spaces.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import PoEError

TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # becomes a file name: experts/<task>.pt


def _entries(path: Path) -> list[tuple[str, list[str], str]]:
    """[(task, class references, where)] in file order."""
    if not path.is_file():
        raise PoEError(f"task file not found: {path}")
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PoEError(f"{path} is not valid JSON: {exc}") from None
        if not all(isinstance(v, list) for v in raw.values()):
            raise PoEError(f"{path}: every task must map to a list of classes")
        return [(str(task), [str(c) for c in classes], f"{path}, task {task!r}") for task, classes in raw.items()]
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            raise PoEError(f"{path} line {number}: expected 'task: class, class, ...', got {line[:60]!r}")
        task, rest = (part.strip() for part in line.split(":", 1))
        classes = [c.strip() for c in rest.split(",")] if "," in rest else rest.split()
        entries.append((task, [c for c in classes if c], f"{path} line {number}"))
    return entries


def read_task_file(path, class_names: list[str], wnids: list[str], hierarchy: dict[str, list[int]]) -> dict[str, list[int]]:
    """Task -> sorted class ids, checked: valid names, known classes, no duplicates, no clash
    with a built-in task of other classes."""
    path = Path(path)
    lookup = {name: i for i, name in enumerate(class_names)}
    lookup.update({w: i for i, w in enumerate(wnids)})
    tasks: dict[str, list[int]] = {}
    for task, refs, where in _entries(path):
        if not TASK_NAME.fullmatch(task) or task == "all":
            raise PoEError(f"{where}: {task!r} is not a usable task name (letters, digits, _ . -; not 'all')")
        if task in tasks:
            raise PoEError(f"{where}: task {task!r} is defined twice")
        if not refs:
            raise PoEError(f"{where}: task {task!r} has no classes")
        ids = []
        for ref in refs:
            if ref.isdigit() and int(ref) < len(class_names):
                ids.append(int(ref))
            elif ref in lookup:
                ids.append(lookup[ref])
            else:
                raise PoEError(f"{where}: unknown class {ref!r} (give an id 0-{len(class_names) - 1}, a class name "
                               "or a wnid; see Run_Service.py --list)")
        if len(set(ids)) != len(ids):
            raise PoEError(f"{where}: task {task!r} names a class twice")
        if task in hierarchy and hierarchy[task] != sorted(ids):
            raise PoEError(f"{where}: {task!r} is already a task of this dataset, with other classes; rename yours")
        tasks[task] = sorted(ids)
    if not tasks:
        raise PoEError(f"{path} defines no task")
    return tasks
