"""What the tests share, in one module: paths, small datasets and pools, image folders in the real
datasets' layouts, and the command lines run in-process. Fixtures stay in conftest.py (pytest
looks for them there); they are built from these helpers.

The data are tiny and the networks, losses, loaders and pools the real ones, so that the real
stages run in seconds. Nothing here downloads anything.
"""
import contextlib
import dataclasses
import http.client
import io
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:  # the project's packages, for the workers that import this module
    sys.path.insert(0, str(ROOT))

from Demo import PROFILE as DEMO  # noqa: E402
from poe.data import ArrayDataset  # noqa: E402
from poe.consolidate import consolidate  # noqa: E402
from poe.pool import Pool  # noqa: E402
from poe.preprocess import Preprocessor  # noqa: E402
from poe.profiles import Budget  # noqa: E402
from poe.server import QueryService, Server  # noqa: E402


def shared_path(*parts) -> Path:
    """A path under ../shared, or skip the test saying why."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the read-only ../shared folder beside the checkout), which is absent")
    return path


# --- the demo profile, made small -----------------------------------------------------------------

def tiny_profile(n_train=48, n_test=24, data_seed=0):
    """The demo profile on a few random images (batch 16): for tests that run the real stages quickly."""
    g = torch.Generator().manual_seed(data_seed)
    c = DEMO.num_classes
    train = ArrayDataset(torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8),
                         torch.arange(n_train) % c)
    test = ArrayDataset(torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8),
                        torch.arange(n_test) % c)
    return dataclasses.replace(DEMO, load=lambda root=None, download=False: (train, test), batch_size=16)


def shrunk_demo_data():
    """A sixth of the demo's images (480 to train, 160 to test), a fixed random draw: (train, test)."""
    generator = torch.Generator().manual_seed(0)
    return tuple(ArrayDataset(d.images[keep], d.labels[keep]) for d in DEMO.load()
                 for keep in [torch.randperm(len(d), generator=generator)[:len(d) // 6]])


def shrink_demo(monkeypatch):
    """The demo with shrunk_demo_data's images, so that studies training many models stay quick.
    Returns the demo profile."""
    train, test = shrunk_demo_data()
    monkeypatch.setattr(DEMO, "load", lambda data_root=None, download=False: (train, test))
    return DEMO


# --- pools --------------------------------------------------------------------------------------

def make_pool(root, profile, experts=()):
    """A pool holding a random-init library and library-student head, and a random-init expert for
    each task in `experts` (seeded: the same every call). No training: for tests that need a pool's
    files, not its skill."""
    torch.manual_seed(1)
    pool = Pool(root, profile)
    arch = profile.architecture
    pool.save_library(arch.library())
    pool.save_student_head(arch.student_head())
    for task in experts:
        pool.save_expert(task, arch.expert(len(profile.hierarchy[task])))
    return pool


def preprocessor(pool, profile, epochs=2, **kw):
    """Expert budget: `epochs` epochs, lr 0.1, ×0.1 after epoch 1; the other stages 1 epoch."""
    budgets = {"oracle": Budget(1, 0.1, ()), "library": Budget(1, 0.1, ()), "expert": Budget(epochs, 0.1, (1,))}
    return Preprocessor(profile, pool, pool.root / "pre", data_root=None, download=False,
                        batch_size=profile.batch_size, budgets=budgets, device=torch.device("cpu"), amp="none",
                        seed=3, **kw)


# The demo pool that tests/test_end_to_end.py checks (1 epoch per stage, fp32), built once per session
# (conftest.demo_pool_alone); tests/test_torchrun.py builds the same under torchrun and compares the two.
DEMO_E2E_TASKS = ["rings", "disks", "stripes"]


def demo_e2e_argv(root: Path) -> list[str]:
    return ["--dataset", "demo", "--db", str(root / "pool"), "--pretrained_db", str(root / "pre"),
            "--epochs_oracle", "1", "--epochs_library", "1", "--epochs_expert", "1", "--tasks", *DEMO_E2E_TASKS,
            "--amp", "none"]  # fp32 everywhere: bf16 autocast (the demo's 'auto' on CPUs with bf16) moves the figures

# What a correct pipeline reaches at this budget (1 epoch per stage, fp32). Measured with this argv
# and --seed 0/1/2/3 (seed 0 is the test's; the figures of one seed repeat exactly on one machine):
#   Oracle, 24 classes (chance 4.2 %):        25.7 / 21.6 / 25.9 / 21.0 %  (mean 23.6, sd 2.5)
#   experts on their own 3 classes, mean of the three (chance 33.3 %):
#                                              59.7 / 50.8 / 50.3 / 42.8 %  (mean 50.9, sd 6.9)
#   the query, 9 classes (chance 11.1 %):     33.3 / 20.6 / 24.7 / 21.9 %  (mean 25.1, sd 5.7)
# Another CPU rounds differently, and training amplifies that into a run as different as another
# seed's; so each floor sits under the worst seed, about 2 sd (Oracle: 4 sd) under the mean, and
# still above chance: a pipeline that learns nothing (labels out of step with the images, logits
# consolidated in the wrong order) fails it. The Oracle's floor is the sharpest check.
ORACLE_FLOOR, EXPERTS_FLOOR, QUERY_FLOOR = 13.0, 37.0, 14.0


# --- random-init task models and their pools (no training) ------------------------------------

def randomize_bn(module, seed):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # eval-mode BN with non-trivial statistics: folding must matter
            for t, lo, hi in ((m.weight.data, 0.5, 1.5), (m.bias.data, -0.3, 0.3),
                              (m.running_mean, -0.3, 0.3), (m.running_var, 0.5, 2.0)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return module


def randomize_biases(module, seed):
    """Non-zero classifier biases (the networks initialise them to zero): a fused model that dropped
    the experts' biases must not pass for the plain one."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return module


def saved_pool(root, profile, model, tasks) -> Pool:
    """A pool folder holding `model`'s library and experts (for `tasks`, in order)."""
    pool = Pool(root, profile)
    pool.save_library(model.library)
    for t, e in zip(tasks, model.experts):
        pool.save_expert(t, e)
    return pool


def random_model(arch, hierarchy, tasks, seed=0):
    torch.manual_seed(seed)
    library = randomize_bn(arch.library(), seed)
    experts = {t: randomize_biases(randomize_bn(arch.expert(len(hierarchy[t])), seed + i + 1), seed + i + 1)
               for i, t in enumerate(tasks)}
    return consolidate(library, experts, hierarchy)


SERVER_TASK_FILE = "reds: red_disk, red_frame\n"  # overlaps disks and frames: a query may not join them
SERVER_EXPERTS = ["disks", "rings", "stripes", "frames", "reds"]  # blobs, ... have none


def server_pool(root: Path) -> Pool:
    """The query server tests' pool (tests/test_server.py, tests/test_server_page.py): the demo with
    SERVER_TASK_FILE's task, random-init experts for SERVER_EXPERTS, in root/pool."""
    (root / "tasks.txt").write_text(SERVER_TASK_FILE)
    profile = DEMO.with_task_file(root / "tasks.txt")
    disjoint = SERVER_EXPERTS[:-1]
    pool = saved_pool(root / "pool", profile, random_model(profile.architecture, profile.hierarchy, disjoint),
                      disjoint)
    pool.save_expert("reds", profile.architecture.expert(len(profile.hierarchy["reds"])))
    return pool


# --- the query server, in this process -----------------------------------------------------------

@contextlib.contextmanager
def serving(service: QueryService):
    """The server on a free loopback port in a thread of this process; yields its (host, port)."""
    server = Server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def request(address, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request with the standard library's client."""
    if isinstance(body, (dict, list)):
        body, headers = json.dumps(body), {"Content-Type": "application/json", **(headers or {})}
    conn = http.client.HTTPConnection(*address, timeout=300)  # generous: a busy machine
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(address, path):
    status, _, data = request(address, "GET", path)
    assert status == 200, data
    return json.loads(data)


def query(address, body):
    status, headers, data = request(address, "POST", "/query", body)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(data)


def load_program(data: bytes):
    """Plain torch.export.load, none of this project's code: (module, poe_classes.json)."""
    extra = {"poe_classes.json": ""}
    module = torch.export.load(io.BytesIO(data), extra_files=extra).module()
    return module, json.loads(extra["poe_classes.json"])


# --- command lines, in this process -------------------------------------------------------------

def baselines_cli(argv, capsys):
    """Run_Baselines.py in this process: (exit status, stdout, stderr)."""
    import Run_Baselines
    from poe.cli import run

    try:
        code = run(Run_Baselines.main, argv)
    except SystemExit as exc:  # a bad flag: argparse's one error line and exit status
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- small generated image folders in the real datasets' layouts ----------------------------------

def colour(class_id: int) -> tuple[int, int, int]:
    """A distinct colour per class, so decoded pixels can be checked against the label; kept
    within 30..225 so the ±20 noise is never clipped (the image mean stays the colour)."""
    return (30 + class_id * 5 % 196, 225 - class_id * 3 % 196, 30 + class_id * 37 % 196)


def write_image(path: Path, class_id: int, size: int, seed: int = 0, mode: str = "RGB") -> None:
    """A noisy image of the class colour (noise so that networks see some texture)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour(class_id)) + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert(mode) if mode != "RGB" else image).save(path, quality=95)


def make_tiny_imagenet(root: Path, wnids: list[str], train_per_class: int = 1, val_classes=None,
                       val_per_class: int = 1) -> Path:
    """tiny-imagenet-200/ as in the official zip: wnids.txt (not sorted), train/<wnid>/images/,
    val/images/ + val/val_annotations.txt. Images are flat-coloured noise (see colour())."""
    folder = root / "tiny-imagenet-200"
    order = list(reversed(wnids))  # wnids.txt is not in sorted order in the real file either
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(order) + "\n")
    class_id = {w: i for i, w in enumerate(sorted(wnids))}
    for wnid in wnids:
        for i in range(train_per_class):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", class_id[wnid], 64, seed=i)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    lines, n = [], 0
    for wnid in (val_classes if val_classes is not None else wnids):
        for i in range(val_per_class):
            write_image(folder / "val" / "images" / f"val_{n}.JPEG", class_id[wnid], 64, seed=100 + i)
            lines.append(f"val_{n}.JPEG\t{wnid}\t0\t0\t63\t63")
            n += 1
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_image_folder(root: Path, wnids_by_id: dict[int, str], train_per_class: int, val_per_class: int,
                      size: tuple[int, int] = (80, 60)) -> Path:
    """ImageNet's ImageFolder layout: root/{train,val}/<wnid>/*.JPEG, non-square images."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for class_id, wnid in wnids_by_id.items():
            for i in range(count):
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(i)
                pixels = np.clip(np.array(colour(class_id)) + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    return root
