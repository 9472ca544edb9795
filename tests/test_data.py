import pickle

import numpy as np
import pytest
import torch

from poe.data import ArrayDataset, ArrayLoader, load_cifar100, random_crop_flip
from poe.errors import PoEError


def test_random_crop_flip_is_a_shifted_or_mirrored_window_of_the_padded_image():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    out = random_crop_flip(images, 2, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(2):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        candidates = windows + [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in candidates)


def test_loader_epochs_are_reproducible_and_differ_between_epochs():
    data = ArrayDataset(torch.randint(0, 255, (20, 3, 8, 8), dtype=torch.uint8), torch.arange(20))
    loader = ArrayLoader(data, 8, (0.5,) * 3, (0.25,) * 3, train=True, seed=1)
    loader.set_epoch(2)
    first = [y for _, y in loader]
    loader.set_epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader]))
    loader.set_epoch(3)
    assert not torch.equal(torch.cat(first), torch.cat([y for _, y in loader]))
    assert sorted(torch.cat(first).tolist()) == list(range(20)) and len(loader) == 3


def _write_fake_cifar(folder, n=10):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "fine_labels": list(range(n)), "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)


def test_cifar_reader_reads_python_layout_without_md5(tmp_path):
    _write_fake_cifar(tmp_path / "cifar-100-python")
    train, test, names = load_cifar100(tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and test.labels.tolist() == list(range(10))
    assert names[3] == "c3"


def test_cifar_reader_errors_are_one_clear_line(tmp_path):
    with pytest.raises(PoEError, match="CIFAR-100 not found"):
        load_cifar100(tmp_path)
    _write_fake_cifar(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"\x80\x04garbage")
    with pytest.raises(PoEError, match="cannot read CIFAR-100 file"):
        load_cifar100(tmp_path)


def test_real_cifar_copy(cifar_root):
    train, test, names = load_cifar100(cifar_root)
    assert len(train) == 50_000 and len(test) == 10_000 and len(names) == 100
    assert torch.bincount(test.labels).tolist() == [100] * 100
