"""`--dataset folder`: a pool from a folder of your own images (poe/image_folder.py, poe/folder_profile.py).

A small folder is written on the fly from the demo's synthetic shapes as PNG files (plus a few
other sizes, a greyscale, an RGBA and a JPEG image); the whole pipeline runs on it at a tiny
budget, the service and the server answer from the pool without the training folder, the export
runs in a client that has none of this project, and every bad input ends in one error line with
nothing written."""
import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import Run_Baselines
import Run_preprocessing
import Run_Service
import Run_Table6
from Demo.synthetic import make_demo
from poe.cli import profile_from_args, run
from poe.errors import PoEError
from poe.image_folder import check_memory, read_image
from poe.pool import Pool
from poe.server import QueryService, Server

DEMO = make_demo(0, train_per_class=12, test_per_class=4)
NAMES, HIERARCHY = DEMO["class_names"], DEMO["hierarchy"]
TASKS = ("disks", "rings", "stripes")
LOOSE = NAMES[HIERARCHY["blobs"][0]]  # a class in no task: a folder directly under train/
CLASSES = sorted([NAMES[c] for t in TASKS for c in HIERARCHY[t]] + [LOOSE])
TASK_OF = {NAMES[c]: t for t in TASKS for c in HIERARCHY[t]}
RED_DISK = [NAMES[int(y)] for y in DEMO["train_y"]].index("red_disk")  # a training image of red_disk
CLIENT = '''import json, sys, torch
from PIL import Image, ImageOps

extra = {"poe_classes.json": ""}
model = torch.export.load(sys.argv[1], extra_files=extra).module()
info = json.loads(extra["poe_classes.json"])
size, mean, std = info["input"]["shape"][-1], info["input"]["mean"], info["input"]["std"]
image = ImageOps.fit(Image.open(sys.argv[2]).convert("RGB"), (size, size), Image.Resampling.BICUBIC)
x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1) / 255
x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
print(info["class_names"][model(x[None]).argmax(1).item()])
'''


def write_folder(root, *, per_class=12, val_per_class=4, two_level=True, odd_images=True):
    """root/{train,val}/<task>/<class>/*.png (two_level) or root/{train,val}/<class>/*.png, from the
    demo's images of CLASSES; with `odd_images`, train also holds images of other sizes and modes."""
    for split, xs, ys, count in (("train", DEMO["train_x"], DEMO["train_y"], per_class),
                                 ("val", DEMO["test_x"], DEMO["test_y"], val_per_class)):
        seen = {}
        for i, (x, y) in enumerate(zip(xs, ys)):
            name = NAMES[int(y)]
            if name not in CLASSES or seen.get(name, 0) >= count:
                continue
            seen[name] = seen.get(name, 0) + 1
            folder = root / split / (TASK_OF[name] if two_level and name in TASK_OF else "") / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(folder / f"{i:04d}.png")
    if odd_images:  # other sizes and modes, each converted to 32×32 RGB
        x = DEMO["train_x"][RED_DISK]
        folder = root / "train" / ("disks" if two_level else "") / "red_disk"
        big = Image.fromarray(x).resize((48, 40))
        big.save(folder / "wide.png")
        Image.fromarray(x).convert("L").save(folder / "grey.png")
        alpha = np.full(x.shape[:2], 255, np.uint8)
        alpha[:, :16] = 0  # the left half transparent
        Image.fromarray(np.dstack([x, alpha])).save(folder / "alpha.png")
        Image.fromarray(x).save(folder / "photo.jpg", quality=95)
    return root


def namespace(**kw):
    base = {"dataset": "folder", "data_root": "data", "db": None, "task_file": None, "image_size": None,
            "restrict_to": None}
    return argparse.Namespace(**{**base, **kw})


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- reading the folder -------------------------------------------------------------------------------
def test_two_level_layout_gives_classes_tasks_and_rgb_images(tmp_path, capsys):
    root = write_folder(tmp_path / "images")
    profile = profile_from_args(namespace(data_root=str(root), db=str(tmp_path / "pool")))
    out = capsys.readouterr().out
    assert profile.class_names == CLASSES and profile.image_size == 32 and profile.family == "cifar100"
    assert profile.hierarchy == {t: sorted(CLASSES.index(NAMES[c]) for c in HIERARCHY[t]) for t in TASKS}
    assert f"1 of 10 classes are in no task ({LOOSE})" in out
    assert profile.architecture.num_classes == 10 and profile.architecture.student_cfg.stem_stride == 1
    train, val = profile.load(root)
    assert train.images.shape == (12 * 10 + 4, 3, 32, 32) and len(val) == 4 * 10
    pixels = train.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert np.allclose(profile.mean, pixels.mean(1), atol=1e-5) and np.allclose(profile.std, pixels.std(1), atol=1e-4)
    disk = root / "train" / "disks" / "red_disk"
    grey = read_image(disk / "grey.png", 32)
    assert grey.shape == (32, 32, 3) and (grey[..., 0] == grey[..., 1]).all()
    alpha = read_image(disk / "alpha.png", 32)
    assert (alpha[:, :16] == 0).all() and np.array_equal(alpha[:, 16:], DEMO["train_x"][RED_DISK][:, 16:])
    assert read_image(disk / "wide.png", 32).shape == (32, 32, 3)
    assert np.abs(read_image(disk / "photo.jpg", 32).astype(int) - DEMO["train_x"][RED_DISK]).mean() < 12


def test_decoding_says_what_memory_it_takes_and_refuses_what_cannot_fit(monkeypatch, capsys):
    check_memory(20_000, 64, "training images")
    assert "decoding 20,000 training images to 64×64 RGB: 234 MiB in memory" in capsys.readouterr().out
    monkeypatch.setattr("poe.image_folder.available_memory", lambda: 2**30)
    with pytest.raises(PoEError, match=r"need 2\.3 GiB decoded, but only 1\.0 GiB of memory are available"):
        check_memory(50_000, 128, "training images")


def test_one_level_layout_takes_its_tasks_from_a_task_file(tmp_path):
    root = write_folder(tmp_path / "images", two_level=False, odd_images=False)
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("".join(f"{t}: {', '.join(NAMES[c] for c in HIERARCHY[t])}\n" for t in TASKS))
    profile = profile_from_args(namespace(data_root=str(root), db=str(tmp_path / "pool"), task_file=str(tasks)))
    assert list(profile.hierarchy) == list(TASKS) and profile.default_tasks == list(TASKS)
    assert profile.source["layout"] == "classes"


def test_the_network_family_follows_the_image_size(tmp_path, capsys):
    for side, size, family in ((64, 64, "tinyimagenet"), (150, 64, "tinyimagenet")):
        root = tmp_path / f"side{side}"
        for split in ("train", "val"):
            for t, name in (("a", "x"), ("a", "y")):
                folder = root / split / t / name
                folder.mkdir(parents=True)
                Image.fromarray(np.full((side, side, 3), 9 if name == "x" else 200, np.uint8)).save(folder / "0.png")
        profile = profile_from_args(namespace(data_root=str(root), db=str(tmp_path / f"pool{side}")))
        assert (profile.image_size, profile.family) == (size, family)
        assert profile.architecture.student_cfg.stem_stride == 2 and profile.crop_padding == 8
        assert profile.budget_presets["cpu"].architecture.oracle_cfg.stem_stride == 2
    assert "about 150 px: resized to 64×64" in capsys.readouterr().out
    profile = profile_from_args(namespace(data_root=str(tmp_path / "side150"), db=str(tmp_path / "p"),
                                          image_size=128))
    assert profile.family == "imagenet" and type(profile.architecture).__name__ == "UserWeightsMobileNetV2"
    with pytest.raises(PoEError, match="--weights oracle=PATH student=PATH"):
        profile.architecture.load_pretrained("oracle", None)
    with pytest.raises(PoEError, match="--image_size 48: use 32"):
        profile_from_args(namespace(data_root=str(tmp_path / "side150"), db=str(tmp_path / "p"), image_size=48))


# -- the pipeline ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A pool trained on the folder at a tiny budget (CPU budget's networks, 1 epoch per stage); then
    the training folder is moved away: every later use reads the pool, and val/ only to score."""
    root = tmp_path_factory.mktemp("folder")
    images = write_folder(root / "images", per_class=6, val_per_class=2)
    pool = root / "pool"
    argv = ["--dataset", "folder", "--data_root", str(images), "--db", str(pool), "--budget", "cpu",
            "--epochs_oracle", "1", "--epochs_library", "1", "--epochs_expert", "1", "--cache_views", "1",
            "--batch_size", "32"]
    assert run(Run_preprocessing.main, argv) == 0
    test_only = root / "test_only"
    test_only.mkdir()
    shutil.copytree(images / "val", test_only / "val")
    shutil.move(images, root / "moved_away")
    return root, pool, test_only, root / "moved_away"


def test_the_pool_describes_itself(built):
    root, pool, _, images = built
    manifest = json.loads((pool / "manifest.json").read_text())
    d = manifest["dataset_description"]
    assert manifest["dataset"] == "folder" and d["class_names"] == CLASSES and d["image_size"] == 32
    assert sorted(d["tasks"]) == list(TASKS) and sorted(manifest["experts"]) == list(TASKS)
    assert d["source"]["train_images"] == 64 and d["family"] == "cifar100"
    assert (pool / "pretrained" / "oracle.pt").is_file(), "the Oracle lives inside the folder's pool"
    oracle = torch.load(pool / "pretrained" / "oracle.pt", weights_only=True)["meta"]
    assert oracle["architecture"] == "WRN-16-4" and oracle["dataset"] == "folder"
    profile = profile_from_args(namespace(data_root=str(images), db=str(pool)))  # the same folder: accepted
    assert list(profile.mean) == d["mean"] and list(profile.std) == d["std"]


@pytest.mark.slow  # a subprocess runs the exported model's client
def test_the_service_answers_without_the_training_folder(built, tmp_path, capsys):
    _, pool, test_only, _ = built
    report, model = tmp_path / "report.json", tmp_path / "model.pt2"
    code = run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--data_root", str(test_only),
                                  "--queriedTask", "disks", "rings", "--json", str(report), "--export", str(model)])
    assert code == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    assert r["images"] == 6 * 2 and r["class_names"] == sorted(NAMES[c] for t in ("disks", "rings")
                                                               for c in HIERARCHY[t])
    code = run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--queriedTask", "stripes", "--no-eval"])
    assert code == 0
    assert run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("stripes  ")

    extra = {"poe_classes.json": ""}
    torch.export.load(model, extra_files=extra)
    info, description = json.loads(extra["poe_classes.json"]), json.loads((pool / "manifest.json").read_text())
    assert info["class_names"] == r["class_names"] and info["input"]["shape"] == ["batch", 3, 32, 32]
    assert [info["input"][k] for k in ("mean", "std")] == [description["dataset_description"][k] for k in ("mean", "std")]

    # The README's client: plain torch and Pillow, in a folder without this project.
    image = sorted((test_only / "val" / "rings").rglob("*.png"))[0]
    (tmp_path / "client.py").write_text(CLIENT)
    proc = subprocess.run([sys.executable, "client.py", str(model), str(image)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    profile = profile_from_args(namespace(db=str(pool)))
    x = torch.from_numpy(np.array(read_image(image, 32))).permute(2, 0, 1)[None]
    from poe.data import normalize
    from poe.service import build_task_model
    task_model, _ = build_task_model(Pool(pool, profile), ["disks", "rings"])
    with torch.no_grad():
        expected = r["class_names"][task_model(normalize(x, profile.mean, profile.std)).argmax(1).item()]
    assert proc.stdout.strip() == expected


def test_the_server_answers_without_the_training_folder(built):
    _, pool, _, _ = built
    profile = profile_from_args(namespace(db=str(pool)))
    server = Server(QueryService(Pool(pool, profile)), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=300)
        conn.request("GET", "/tasks")
        tasks = json.loads(conn.getresponse().read())
        assert [t["name"] for t in tasks["tasks"]] == list(TASKS) and tasks["evaluate"] is False
        conn.request("POST", "/query", body=json.dumps({"tasks": ["rings", "stripes"]}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["num_classes"] == 6
        conn.request("GET", "/model.pt2?tasks=disks")
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) > 1000
    finally:
        server.shutdown()
        server.server_close()


def test_table6_and_baselines_run_on_a_folder_pool(built, capsys):
    root, pool, test_only, _ = built
    assert run(Run_Table6.main, ["--dataset", "folder", "--db", str(pool), "--data_root", str(test_only)]) == 0
    assert "| L_soft + L_scale (pool) |" in capsys.readouterr().out
    argv = ["--dataset", "folder", "--db", str(pool), "--data_root", str(root / "moved_away"), "--queriedTask",
            "disks", "rings", "--methods", "Transfer", "--epochs_head", "1", "--teacher", "library-student",
            "--cache_views", "1", "--amp", "none"]
    assert run(Run_Baselines.main, argv) == 0, capsys.readouterr().err
    assert list((pool / "baselines" / "Transfer").glob("*.pt")), "baselines are kept inside the folder's pool"


def test_large_images_with_mobilenet_v2_and_the_users_weights(tmp_path, capsys):
    """--image_size 96: the ImageNet profile's MobileNetV2 library from the user's --weights (here a
    random MobileNetV2 with the folder's 10 outputs), experts taught by the library student."""
    import torchvision

    images = write_folder(tmp_path / "images", per_class=3, val_per_class=1, odd_images=False)
    torch.save(torchvision.models.mobilenet_v2(num_classes=10).state_dict(), tmp_path / "student.pth")
    pool = tmp_path / "pool"
    argv = ["--dataset", "folder", "--data_root", str(images), "--db", str(pool), "--image_size", "96",
            "--teacher", "library-student", "--epochs_expert", "1", "--tasks", "disks", "--amp", "none"]
    assert run(Run_preprocessing.main, argv) == 2
    assert "--weights oracle=PATH student=PATH" in one_error_line(capsys.readouterr().err)
    assert run(Run_preprocessing.main, [*argv, "--weights", f"student={tmp_path / 'student.pth'}"]) == 0
    description = json.loads((pool / "manifest.json").read_text())["dataset_description"]
    assert description["image_size"] == 96 and description["family"] == "imagenet"
    report = tmp_path / "r.json"
    assert run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--data_root", str(images),
                                  "--queriedTask", "disks", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["images"] == 3


# -- bad input: one error line, a non-zero exit, nothing written -------------------------------------------
def _break(kind, root, tmp_path):
    """Damage a freshly written folder; returns extra command-line arguments."""
    train, val = root / "train", root / "val"
    red_disk = train / "disks" / "red_disk"
    if kind == "missing train":
        shutil.rmtree(train)
    elif kind == "empty train":
        shutil.rmtree(train)
        train.mkdir()
    elif kind == "class without images":
        shutil.rmtree(red_disk)
        red_disk.mkdir()
        (red_disk / "notes.txt").write_text("not an image")
    elif kind == "val class not in train":
        shutil.copytree(val / "disks" / "red_disk", val / "dragons")
    elif kind == "truncated image":
        path = sorted(red_disk.glob("*.png"))[3]
        path.write_bytes(path.read_bytes()[:150])
    elif kind == "unreadable test image":
        (val / "rings" / "pink_ring" / "0000.png").write_bytes(b"not a png at all")
    elif kind == "task file names an unknown class":
        (tmp_path / "t.txt").write_text("mine: red_disk, dragon\n")
        return ["--task_file", str(tmp_path / "t.txt")]
    elif kind == "task folders share a class":
        shutil.copytree(red_disk, train / "rings" / "red_disk")
    elif kind == "task file tasks share a class":
        (tmp_path / "t.txt").write_text("reds: red_disk, teal_stripe\n")
        return ["--task_file", str(tmp_path / "t.txt")]
    elif kind == "no tasks at all":
        for task in TASKS:
            for folder in list((train / task).iterdir()):
                shutil.move(folder, train / folder.name)
            (train / task).rmdir()
    return []


@pytest.mark.parametrize("kind, message", [
    ("missing train", r"no pool built from an image folder in .*, and no .*train to build one from"),
    ("empty train", r"train is empty: expected one folder of images per class"),
    ("class without images", r"class folder .*red_disk holds no images"),
    ("val class not in train", r"class 'dragons' in .*val is absent from .*train"),
    ("truncated image", r"cannot read image .*red_disk/\d+\.png: OSError: .*truncated"),
    ("unreadable test image", r"cannot read image .*pink_ring/0000\.png: UnidentifiedImageError"),
    ("task file names an unknown class", r"unknown class 'dragon'"),
    ("task folders share a class", r"class 'red_disk' is in two places, train/disks/red_disk and train/rings/red_disk"),
    ("task file tasks share a class", r"tasks (disks|stripes) and reds share the class"),
    ("no tasks at all", r"no primitive tasks: name them with --task_file"),
])
def test_bad_folders_are_one_clear_line_and_nothing_is_written(tmp_path, capsys, kind, message):
    root = write_folder(tmp_path / "images", per_class=4, val_per_class=1, odd_images=False)
    extra = _break(kind, root, tmp_path)
    pool = tmp_path / "pool"
    code = run(Run_preprocessing.main, ["--dataset", "folder", "--data_root", str(root), "--db", str(pool),
                                        "--budget", "cpu", "--epochs_oracle", "1", "--epochs_library", "1",
                                        "--epochs_expert", "1", "--amp", "none", *extra])  # a check missed: seconds
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and re.search(message, line), line
    assert not pool.exists(), "nothing is written"


def test_a_pool_refuses_another_folder(built, tmp_path, capsys):
    _, pool, _, _ = built
    before = {p: p.stat().st_mtime_ns for p in pool.rglob("*") if p.is_file()}
    other = write_folder(tmp_path / "other", per_class=5, val_per_class=1, odd_images=False)
    for tool, argv in ((Run_Service.main, ["--queriedTask", "disks"]), (Run_preprocessing.main, ["--amp", "none"])):
        code = run(tool, ["--dataset", "folder", "--db", str(pool), "--data_root", str(other), *argv])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and f"the pool {pool} was built from another image folder ('images')" in line
        assert "other images (50 here, 64 when the pool was built" in line
    shutil.rmtree(other / "train")
    shutil.copytree(other / "val" / "disks" / "red_disk", other / "val" / "dragons")
    code = run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--data_root", str(other),
                                  "--queriedTask", "disks"])
    assert code == 2 and "class 'dragons' in" in one_error_line(capsys.readouterr().err)
    code = run(Run_Service.main, ["--dataset", "folder", "--db", str(pool), "--image_size", "64", "--list"])
    assert code == 2 and "built for 32×32 images" in one_error_line(capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in pool.rglob("*") if p.is_file()} == before


# -- --restrict_to: a dataset cut down to some tasks' classes ------------------------------------------------
def test_restrict_to_keeps_the_tasks_classes_renumbered():
    from Demo import PROFILE

    profile = profile_from_args(namespace(dataset="demo", restrict_to=["rings", "disks"]))
    keep = sorted(HIERARCHY["rings"] + HIERARCHY["disks"])
    assert profile.name == "demo-6cls" and profile.class_names == [NAMES[c] for c in keep]
    assert profile.hierarchy == {"disks": [keep.index(c) for c in HIERARCHY["disks"]],
                                 "rings": [keep.index(c) for c in HIERARCHY["rings"]]}
    assert profile.default_tasks == ["rings", "disks"] and profile.architecture.num_classes == 6
    assert PROFILE.architecture.num_classes == 24, "the dataset's own profile is unchanged"
    train, test = profile.load(None)
    full_train, _ = PROFILE.load(None)
    mask = torch.isin(full_train.labels, torch.tensor(keep))
    assert torch.equal(train.images, full_train.images[mask])
    assert torch.equal(torch.tensor(keep)[train.labels], full_train.labels[mask])
    assert profile.architecture.student().fc.out_features == 6
    with pytest.raises(PoEError, match="--image_size applies to --dataset folder"):
        profile_from_args(namespace(dataset="demo", image_size=32))


# -- the proof's premise, on real CIFAR-100 (../shared) ------------------------------------------------------
def test_the_folder_reader_gives_cifar100s_batches(cifar_root, tmp_path, capsys):
    """tools/cifar100_to_png.py writes a task's images as PNG; read back with --dataset folder they are
    the cifar100 profile's (restricted to the task): the same classes in the same order, and, put in the
    same order and normalised alike, the very same training batches. What the proof
    (results/folder_vs_cifar100.sh) compares is therefore only the image order and the statistics."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import cifar100_to_png
    import dataclasses

    from poe.data import ArrayDataset

    assert run(cifar100_to_png.main, ["--data_root", str(cifar_root), "--out", str(tmp_path / "png"),
                                      "--tasks", "people"]) == 0
    folder = profile_from_args(namespace(data_root=str(tmp_path / "png"), db=str(tmp_path / "pool")))
    cifar = profile_from_args(namespace(dataset="cifar100", data_root=str(cifar_root), restrict_to=["people"]))
    assert folder.class_names == cifar.class_names == ["baby", "boy", "girl", "man", "woman"]
    assert folder.hierarchy == cifar.hierarchy
    assert folder.with_budget("cpu").budgets == cifar.with_budget("cpu").budgets
    assert folder.with_budget("cpu").architecture.describe() == cifar.with_budget("cpu").architecture.describe()
    (folder_train, folder_test), (cifar_train, cifar_test) = folder.load(tmp_path / "png"), cifar.load(cifar_root)
    assert len(folder_train) == 2500 and len(folder_test) == 500
    order = torch.argsort(cifar_train.labels, stable=True)  # the folder's order: class by class, then index
    same_order = ArrayDataset(cifar_train.images[order], cifar_train.labels[order])
    alike = dataclasses.replace(folder, mean=cifar.mean, std=cifar.std)
    batches = list(zip(alike.train_loader(folder_train, 256, seed=5), cifar.train_loader(same_order, 256, seed=5)))
    assert len(batches) == 10 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in batches)
