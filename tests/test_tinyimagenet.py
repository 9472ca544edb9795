"""Tiny-ImageNet profile: the reader on a generated folder in the downloaded layout, the networks
against the authors' checkpoints, and (when ../shared has a real copy) what those checkpoints score."""
import json
import shutil

import pytest
import torch

import Run_preprocessing
import Run_Service
from helpers import colour, make_tiny_imagenet, shared_path, write_image
from poe.cli import run
from poe.errors import PoEError
from poe.evaluate import expert_logits, score_all_combinations, score_combination
from poe.pool import Pool
from TinyImageNet import PROFILE, WNIDS

BIRD_AND_ARACHNID = sorted(PROFILE.hierarchy["bird"] + PROFILE.hierarchy["arachnid"])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    val_classes = [WNIDS[c] for c in BIRD_AND_ARACHNID] + [WNIDS[0], WNIDS[199]]
    make_tiny_imagenet(root, WNIDS, train_per_class=1, val_classes=val_classes, val_per_class=2)
    return root


def test_the_profile_knows_the_200_classes_and_the_authors_hierarchy():
    assert len(WNIDS) == 200 and WNIDS == sorted(WNIDS)
    assert PROFILE.class_names[PROFILE.hierarchy["canine"][0]] == "Chihuahua"
    every = sorted(c for classes in PROFILE.hierarchy.values() for c in classes)
    assert len(PROFILE.hierarchy) == 34 and every == list(range(200)), "34 groups partition the 200 classes"
    assert PROFILE.resolve_task("baririer") == "barrier"


def test_reader_labels_are_sorted_wnid_positions_and_pixels_survive(tiny_root):
    train, val = PROFILE.load(tiny_root)
    assert len(train) == 200 and len(val) == 2 * (len(BIRD_AND_ARACHNID) + 2)
    assert train._images is None, "nothing is decoded before it is needed"
    # train: the label of each file is the position of its folder's wnid in sorted order
    for path, label in zip(train.paths, train.labels.tolist()):
        assert WNIDS[label] == path.parent.parent.name
    assert train.images.shape == (200, 3, 64, 64) and train.images.dtype == torch.uint8
    means = train.images.float().mean(dim=(2, 3))  # (N, 3): each image is noise around its class colour
    expected = torch.tensor([colour(c) for c in train.labels.tolist()], dtype=torch.float)
    assert (means - expected).abs().max() < 4
    # val: labels from val_annotations.txt; subset decodes only the chosen classes
    birds = val.subset(PROFILE.hierarchy["bird"])
    assert sorted(set(birds.labels.tolist())) == PROFILE.hierarchy["bird"] and len(birds) == 8
    assert val._images is None and birds.images.shape == (8, 3, 64, 64)
    assert (birds.images.float().mean(dim=(2, 3)) -
            torch.tensor([colour(c) for c in birds.labels.tolist()], dtype=torch.float)).abs().max() < 4


def test_grayscale_images_become_rgb(tmp_path):
    folder = make_tiny_imagenet(tmp_path, WNIDS, val_classes=[WNIDS[5]])
    write_image(folder / "val" / "images" / "val_0.JPEG", 5, 64, mode="L")
    _, val = PROFILE.load(tmp_path)
    image = val.images[0]
    assert image.shape == (3, 64, 64) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def _break(kind, folder):
    val_dir, wnid = folder / "val", WNIDS[3]
    if kind == "absent":
        shutil.rmtree(folder)
    elif kind == "foreign wnid":
        (folder / "wnids.txt").write_text("\n".join(WNIDS[:-1] + ["n99999999"]) + "\n")
    elif kind == "no annotations":
        (val_dir / "val_annotations.txt").unlink()
    elif kind == "malformed annotation":
        with open(val_dir / "val_annotations.txt", "a") as f:
            f.write("val_0.JPEG\n")
    elif kind == "annotated image missing":
        (val_dir / "images" / "val_1.JPEG").unlink()
    elif kind == "train class missing":
        shutil.rmtree(folder / "train" / wnid / "images")
    elif kind == "truncated image":
        path = folder / "train" / wnid / "images" / f"{wnid}_0.JPEG"
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "wrong size":
        path = folder / "train" / wnid / "images" / f"{wnid}_0.JPEG"
        write_image(path, 3, 32)


@pytest.mark.parametrize("kind, message", [
    ("absent", "Tiny-ImageNet not found"), ("foreign wnid", "not Tiny-ImageNet's list of 200 wnids"),
    ("no annotations", "missing .*val_annotations.txt"), ("malformed annotation", "line 3 is malformed"),
    ("annotated image missing", "val_1.JPEG, which is missing"), ("train class missing", "missing folder"),
    ("truncated image", "cannot read image"), ("wrong size", "is 32×32, expected 64×64")])
def test_reader_errors_are_one_clear_line(tmp_path, kind, message):
    folder = make_tiny_imagenet(tmp_path, WNIDS, val_classes=WNIDS[:2])
    _break(kind, folder)
    with pytest.raises(PoEError, match=message) as info:
        train, val = PROFILE.load(tmp_path)
        train.images  # decoding errors show when the pixels are first needed
    assert "\n" not in str(info.value)


def test_networks_have_the_authors_key_names_and_shapes():
    layouts = json.loads(shared_path("reference", "poe-authors", "checkpoint_layouts.json").read_text())
    arch = PROFILE.architecture
    for name, model in (("tinyimagenet_library", arch.library()), ("tinyimagenet_expert_canine", arch.expert(6))):
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == layouts[name], name
    assert arch.library()(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 16, 16), "stride-2 stem: 64 ch @ 16×16"
    assert arch.student()(torch.zeros(1, 3, 64, 64)).shape == (1, 200)
    assert arch.oracle().conv1.stride == (2, 2) and arch.oracle().fc.in_features == 640  # WRN-16-10


def test_the_authors_files_load_strictly():
    pool = Pool(shared_path("reference", "poe-authors", "TinyImageNet"), PROFILE)
    assert pool.layout == "authors" and set(pool.experts_available()) == set(PROFILE.default_tasks)
    library, head = pool.load_library(), pool.load_student_head()
    experts = {t: pool.load_expert(t) for t in PROFILE.default_tasks}
    features = library(torch.zeros(2, 3, 64, 64))
    assert head(features).shape == (2, 200)
    assert all(e(features).shape == (2, len(PROFILE.hierarchy[t])) for t, e in experts.items())


def test_preprocessing_and_service_on_a_generated_folder(tiny_root, tmp_path, capsys):
    """Experts trained (1 epoch) on the authors' library, then a query answered: the CLI path."""
    authors = shared_path("reference", "poe-authors", "TinyImageNet")
    pool = tmp_path / "pool"
    argv = ["--dataset", "tinyimagenet", "--data_root", str(tiny_root), "--db", str(pool), "--library_from", str(authors),
            "--teacher", "library-student", "--tasks", "bird", "arachnid", "--epochs_expert", "1", "--batch_size", "64"]
    assert run(Run_preprocessing.main, argv) == 0
    manifest = json.loads((pool / "manifest.json").read_text())
    assert sorted(manifest["experts"]) == ["arachnid", "bird"]
    report_path = tmp_path / "report.json"
    code = run(Run_Service.main, ["--dataset", "tinyimagenet", "--data_root", str(tiny_root), "--db", str(pool),
                                  "--queriedTask", "bird", "arachnid", "--json", str(report_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["class_ids"] == BIRD_AND_ARACHNID and report["images"] == 2 * len(BIRD_AND_ARACHNID)
    assert report["class_names"][0] == "scorpion"


# -- the authors' checkpoints on a real copy (../shared/data/tiny-imagenet-200: full val set) --------
OWN_CLASSES = {"canine": 67.33, "feline": 76.00, "ungulate": 77.67, "bird": 86.50, "arachnid": 79.00,
               "vertebrate_etc": 80.67}
MEAN_ACCURACY = {2: 74.02, 3: 71.29, 4: 69.12, 5: 67.33}
CROSS_EXPERT = {2: 23.33, 3: 37.01, 4: 45.88, 5: 52.07}


STUDENT = "library student (200 classes)"  # not a task name: score_* read only the tasks' logits


@pytest.fixture(scope="module")
def authors_on_real_data():
    shared_path("data", "tiny-imagenet-200", "wnids.txt")
    pool = Pool(shared_path("reference", "poe-authors", "TinyImageNet"), PROFILE)
    _, val = PROFILE.load(shared_path("data"))
    assert len(val) == 10_000
    library = pool.load_library()
    experts = {t: pool.load_expert(t) for t in PROFILE.default_tasks}
    # the library student's head rides along as one more "expert": the library's 10,000-image pass,
    # the costly part, is made once for both the experts' tests and the student's
    heads = {**experts, STUDENT: pool.load_student_head()}
    logits, labels = expert_logits(library, heads, PROFILE.eval_loader(val))
    return pool, val, library, logits, labels


def test_authors_experts_on_their_own_classes(authors_on_real_data):
    *_, logits, labels = authors_on_real_data
    for task, expected in OWN_CLASSES.items():
        assert score_combination(logits, labels, PROFILE.hierarchy, [task])["accuracy_pct"] == \
            pytest.approx(expected, abs=0.05), task


def test_authors_combinations_accuracy_and_cross_expert_share(authors_on_real_data):
    *_, logits, labels = authors_on_real_data
    summary = score_all_combinations(logits, labels, PROFILE.hierarchy, PROFILE.default_tasks, (2, 3, 4, 5))
    for n in (2, 3, 4, 5):
        assert summary[n]["accuracy_pct"] == pytest.approx(MEAN_ACCURACY[n], abs=0.05), n
        assert summary[n]["cross_expert_pct"] == pytest.approx(CROSS_EXPERT[n], abs=0.05), n


def test_authors_library_student_over_200_classes(authors_on_real_data):
    *_, logits, labels = authors_on_real_data
    assert logits[STUDENT].shape == (10_000, 200)
    assert 100 * (logits[STUDENT].argmax(1) == labels).float().mean().item() == pytest.approx(57.11, abs=0.05)
