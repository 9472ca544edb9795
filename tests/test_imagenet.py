"""ImageNet profile: MobileNetV2 library/experts, pretrained weights from local files only, and the
whole path (preprocessing of experts + service) on a tiny generated ImageFolder with random-init
networks — no downloads."""
import json

import pytest
import torch

import Run_preprocessing
import Run_Service
from helpers import make_image_folder
from ImageNet import PROFILE, WNIDS
from poe.cli import run
from poe.consolidate import consolidate
from poe.errors import PoEError
from poe.metrics import count_params

ARCH = PROFILE.architecture
TASKS = ["bird_passerine", "bird_Etc1"]
QUERY_CLASSES = sorted(PROFILE.hierarchy["bird_passerine"] + PROFILE.hierarchy["bird_Etc1"])
OTHER_CLASSES = [0, 999]  # images outside the tasks: experts train on the whole training set


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_library_and_head_split_the_student_exactly():
    student = ARCH.student().eval()
    library_state, head_state = ARCH.split_student(student.state_dict())
    library, head = ARCH.library(), ARCH.student_head()
    library.load_state_dict(library_state)  # strict
    head.load_state_dict(head_state)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        features = library.eval()(x)
        assert features.shape[1] == 320
        torch.testing.assert_close(head.eval()(features), student(x))


def test_pool_sizes_are_the_papers():
    """Paper's ImageNet table: PoE models of 1-3 bird tasks have 1.84-1.89 M parameters."""
    library = ARCH.library()
    one = consolidate(library, {"bird_passerine": ARCH.expert(11)}, PROFILE.hierarchy)
    three = consolidate(library, {t: ARCH.expert(len(PROFILE.hierarchy[t])) for t in
                                  ("bird_passerine", "bird_aquatic1", "bird_aquatic2")}, PROFILE.hierarchy)
    assert round(count_params(one) / 1e6, 2) == 1.84 and round(count_params(three) / 1e6, 2) == 1.89
    assert PROFILE.class_names[QUERY_CLASSES[0]] == "brambling" and WNIDS[0] == "n01440764"


def test_reader_gives_standard_ids_for_a_partial_copy(tmp_path):
    make_image_folder(tmp_path, {c: WNIDS[c] for c in (1, 500)}, train_per_class=2, val_per_class=1)
    train, val = PROFILE.load(tmp_path)
    assert train.labels.tolist() == [1, 1, 500, 500] and val.labels.tolist() == [1, 500]
    assert val.subset([500]).paths == [tmp_path / "val" / WNIDS[500] / f"{WNIDS[500]}_0.JPEG"]
    (tmp_path / "val" / "not_a_wnid").mkdir()
    with pytest.raises(PoEError, match="not class wnids of this dataset: not_a_wnid"):
        len(PROFILE.load(tmp_path)[1])  # a split is listed when first used
    with pytest.raises(PoEError, match="ImageNet not found"):
        PROFILE.load(tmp_path / "elsewhere")


def test_loader_batches_are_normalised_crops_and_epochs_reproducible(tmp_path, monkeypatch):
    monkeypatch.setattr(PROFILE, "workers", 1)
    make_image_folder(tmp_path, {c: WNIDS[c] for c in (3, 4, 5)}, train_per_class=3, val_per_class=1)
    train, val = PROFILE.load(tmp_path)
    loader = PROFILE.train_loader(train, batch_size=4, seed=1)
    loader.set_epoch(2)
    first = list(loader)
    again = list(loader)
    assert len(first) == len(loader) == 3 and first[0][0].shape == (4, 3, 224, 224)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    loader.set_epoch(3)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, loader))
    x, y = next(iter(PROFILE.eval_loader(val)))
    assert x.shape == (3, 3, 224, 224) and y.tolist() == [3, 4, 5] and abs(x.mean().item()) < 3


@pytest.fixture(scope="module")
def small_imagenet(tmp_path_factory):
    """A tiny ImageFolder, random-init 'pretrained' weights (Oracle in torchvision's cache under a
    temporary TORCH_HOME, student as a --weights file), and 32×32 crops (from 36) so that
    WRN-101-2 runs in seconds on a CPU: the networks are fully convolutional, only sizes change."""
    root = tmp_path_factory.mktemp("imagenet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        for name, value in (("image_size", 32), ("resize", 36), ("workers", 1)):
            mp.setattr(PROFILE, name, value)
        data = make_image_folder(root / "data", {c: WNIDS[c] for c in QUERY_CLASSES + OTHER_CLASSES},
                                 train_per_class=2, val_per_class=1)
        torch.manual_seed(0)
        cached = ARCH.cached_weights_path("oracle")
        assert str(cached).startswith(str(root)) and cached.name.startswith("wide_resnet101_2-")
        cached.parent.mkdir(parents=True)
        torch.save(ARCH.oracle().state_dict(), cached)
        torch.save(ARCH.student().state_dict(), root / "student.pth")
        yield root, data
        cached.unlink()  # 500 MB: not left behind in pytest's kept temporary folders


def test_whole_path_preprocessing_then_service(small_imagenet, capsys):
    root, data = small_imagenet
    pool = root / "pool"
    argv = ["--dataset", "imagenet", "--data_root", str(data), "--db", str(pool), "--weights",
            f"student={root / 'student.pth'}", "--tasks", *TASKS, "--epochs_expert", "1", "--batch_size", "16"]
    assert run(Run_preprocessing.main, argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pretrained wide_resnet101_2 from" in out and "pretrained mobilenet_v2 from" in out
    manifest = json.loads((pool / "manifest.json").read_text())
    assert sorted(manifest["experts"]) == sorted(TASKS)
    budget = manifest["experts"]["bird_passerine"]["budget"]
    assert budget["epochs"] == 1 and budget["lr"] == 0.01, "experts: lr 0.01 (paper's ImageNet setting)"
    assert (pool / "library.pt").is_file() and (pool / "student_head.pt").is_file()

    report_path, model_path = root / "report.json", root / "model.pt2"
    code = run(Run_Service.main, ["--dataset", "imagenet", "--data_root", str(data), "--db", str(pool),
                                  "--queriedTask", *TASKS, "--json", str(report_path), "--export", str(model_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["class_ids"] == QUERY_CLASSES and report["images"] == len(QUERY_CLASSES)
    assert report["params"] == count_params(ARCH.library()) + sum(count_params(ARCH.expert(len(PROFILE.hierarchy[t])))
                                                                 for t in TASKS)
    exported = torch.export.load(model_path).module()
    assert exported(torch.zeros(2, 3, 32, 32)).shape == (2, len(QUERY_CLASSES))


def test_without_weights_one_line_says_how_to_get_them(small_imagenet, tmp_path, monkeypatch, capsys):
    root, data = small_imagenet
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    code = run(Run_preprocessing.main, ["--dataset", "imagenet", "--data_root", str(data), "--db", str(tmp_path / "p"),
                                        "--tasks", "bird_Etc1", "--epochs_expert", "1"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "--download" in line and "--weights student=PATH" in line
    assert not (tmp_path / "p" / "library.pt").exists()


def test_weights_that_do_not_fit_are_refused(tmp_path):
    torch.save(ARCH.expert(3).state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(PoEError, match="does not fit the library student"):
        ARCH.load_pretrained("student", tmp_path / "wrong.pth")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "imagenet", "--epochs_oracle", "3"], "comes pretrained"),
    (["--dataset", "cifar100", "--weights", "oracle=x.pth"], "--weights applies to datasets whose networks"),
    (["--dataset", "imagenet", "--weights", "teacher=x.pth"], "oracle=PATH and/or student=PATH")])
def test_flag_misuse_is_one_line(argv, message, tmp_path, capsys):
    assert run(Run_preprocessing.main, argv + ["--db", str(tmp_path / "p")]) == 2
    assert message in one_error_line(capsys.readouterr().err)
