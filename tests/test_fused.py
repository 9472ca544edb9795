"""The fused task model computes the sequential TaskModel's logits; the realtime cache serves warm
queries without rereading files, notices replaced files, and never lets one query's model change
another's."""
import torch
import torch.nn as nn

from CIFAR100 import PROFILE as CIFAR
from helpers import randomize_bn, random_model, saved_pool
from ImageNet import PROFILE as IMAGENET
from poe.consolidate import consolidate
from poe.fused import FusedTaskModel, fuse
from poe.networks import WRNArchitecture, WRNConfig
from poe.pool import Pool
from poe.realtime import CACHE
from poe.service import build_task_model, describe, export

TASKS = ["people", "vehicles_1", "vehicles_2", "small_mammals", "medium-sized_mammals"]


def test_fused_equals_sequential_on_random_networks():
    for arch, size in ((CIFAR.architecture, 32),
                       # Tiny-ImageNet's shapes: stem stride 2, wider library (64 channels)
                       (WRNArchitecture(WRNConfig(16, 10, 2), WRNConfig(16, 2, 2), 16, 100), 64)):
        hierarchy = {"a": [3, 1, 7], "b": [0, 9], "c": [2, 4, 5, 8, 6]}
        for tasks in (["a"], ["c", "a"], ["b", "c", "a"]):
            plain = random_model(arch, hierarchy, tasks).eval()
            assert all(e.fc.bias.abs().min() > 0 for e in plain.experts)  # a dropped bias would show
            fused = fuse(plain)
            assert isinstance(fused, FusedTaskModel)
            x = torch.randn(5, 3, size, size)
            with torch.no_grad():
                expected, got = plain(x), fused(x)
                one = fused(x[:1])  # a single image: PyTorch picks other convolution kernels
            assert torch.equal(fused.class_ids, plain.class_ids) and fused.tasks == tasks
            assert (got - expected).abs().max() <= 1e-4, (tasks, (got - expected).abs().max())
            assert (one - expected[:1]).abs().max() <= 1e-4, (tasks, (one - expected[:1]).abs().max())


def test_fused_equals_sequential_on_real_cifar_images_with_the_authors_checkpoints(authors_cifar_pool, cifar_root):
    pool = Pool(authors_cifar_pool, CIFAR)
    test = CIFAR.load(cifar_root)[1]
    for tasks in (TASKS[:1], TASKS[:3], TASKS[::-1], CIFAR.default_tasks):
        plain, _ = build_task_model(pool, tasks, fuse=False)
        fused, _ = build_task_model(pool, tasks)
        assert isinstance(fused, FusedTaskModel)
        images, _ = next(iter(CIFAR.eval_loader(test.subset(plain.class_ids.tolist()), 1000)))
        with torch.no_grad():
            diff = (fused(images) - plain(images)).abs().max().item()
        assert diff <= 1e-4, (tasks, diff)
        assert torch.equal(fused.class_ids, plain.class_ids)


def test_fused_mobilenet_pool_equals_sequential_and_is_served_warm(tmp_path):
    """ImageNet pools (MobileNetV2 library, 1×1-conv experts): BN folded, experts as one matrix
    product; the same logits as the plain model, also for batches run in chunks; warm queries."""
    hierarchy = IMAGENET.hierarchy
    tasks = ["bird_passerine", "bird_aquatic1", "bird_Etc1"]
    plain = random_model(IMAGENET.architecture, hierarchy, tasks).eval()
    for expert in plain.experts:  # torchvision's fc init (std 0.01) gives logits ~0.1: scale them up
        expert.fc.weight.data *= 30
    fused = fuse(plain)
    assert isinstance(fused, FusedTaskModel) and fused.tasks == tasks
    x = torch.randn(5, 3, 224, 224)
    assert fused.library.chunk(x) < len(x)  # runs in at least two chunks
    with torch.no_grad():
        expected = plain(x)
        assert expected.abs().max() > 1  # logits that are not all ~0: a real comparison
        assert (fused(x) - expected).abs().max() <= 1e-4
        assert (fused(x[:1]) - expected[:1]).abs().max() <= 1e-4
    assert torch.equal(fused.class_ids, plain.class_ids)

    pool = saved_pool(tmp_path / "pool", IMAGENET, plain, tasks)
    CACHE.clear()
    first, _ = build_task_model(pool, tasks[:2])
    misses = CACHE.misses
    second, _ = build_task_model(pool, tasks[1::-1])
    assert isinstance(second, FusedTaskModel) and CACHE.misses == misses and CACHE.hits >= 3
    subset = consolidate(plain.library, dict(zip(tasks[:2], plain.experts[:2])), hierarchy).eval()
    with torch.no_grad():
        assert (second(x[:2]) - subset(x[:2])).abs().max() <= 1e-4
    second.double()  # one query's model changed (its library holds Parameters): the cache is not
    third, _ = build_task_model(pool, tasks[:2])
    assert all(p.dtype == torch.float32 for m in (first, third) for p in m.library.parameters())


def test_networks_that_cannot_fuse_keep_the_plain_model():
    class Head(nn.Module):  # a network poe.fused does not know
        def __init__(self, k):
            super().__init__()
            self.fc = nn.Linear(32, k)

        def forward(self, f):
            return self.fc(f.mean((2, 3)))

    model = consolidate(CIFAR.architecture.library(), {"a": Head(2), "b": Head(3)}, {"a": [0, 1], "b": [2, 3, 4]})
    assert fuse(model) is model


def test_report_and_export_of_the_fused_model(tmp_path):
    plain = random_model(CIFAR.architecture, CIFAR.hierarchy, TASKS[:3])
    pool = saved_pool(tmp_path / "pool", CIFAR, plain, TASKS[:3])
    fused, _ = build_task_model(pool, TASKS[:3])
    report = describe(fused, CIFAR, CIFAR.input_shape)
    expected = describe(plain, CIFAR, CIFAR.input_shape)
    assert report["form"] == "fused" and expected["form"] == "plain"
    assert report["params"] == expected["params"] and report["flops"] == expected["flops"]  # the paper's measure
    export(fused, CIFAR, CIFAR.input_shape, tmp_path / "m.pt2")
    program = torch.export.load(tmp_path / "m.pt2").module()  # plain torch, no project code
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (program(x) - plain.eval()(x)).abs().max() <= 1e-4


def test_warm_queries_use_the_cache_and_replaced_files_are_reread(tmp_path):
    plain = random_model(CIFAR.architecture, CIFAR.hierarchy, TASKS[:2])
    pool = saved_pool(tmp_path / "pool", CIFAR, plain, TASKS[:2])
    CACHE.clear()
    first, _ = build_task_model(pool, TASKS[:2])
    misses = CACHE.misses
    second, _ = build_task_model(pool, TASKS[:2])
    assert CACHE.misses == misses and CACHE.hits >= 3  # library + 2 experts served from memory
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))

    assert second.library is first.library  # a warm query shares the cached library module
    second.double().train()  # one query's model changed: the cache and other models are not
    assert first.library.stem.dtype == torch.float32 and not first.library.training
    third, _ = build_task_model(pool, TASKS[:2])
    assert third.heads.fc_weight.dtype == torch.float32 and third.library.stem.dtype == torch.float32
    assert not any(m.training for m in third.modules())
    training, _ = build_task_model(pool, TASKS[:2])
    training.train()  # only switches its own copy of the library
    assert training.library.training and not third.library.training

    retrained = randomize_bn(CIFAR.architecture.expert(len(CIFAR.hierarchy[TASKS[0]])), 99)
    pool.save_expert(TASKS[0], retrained)
    fourth, _ = build_task_model(pool, TASKS[:2])
    with torch.no_grad():
        assert not torch.allclose(fourth(x), first(x))
        reference = consolidate(pool.load_library(), {t: pool.load_expert(t) for t in TASKS[:2]}, CIFAR.hierarchy)
        assert (fourth(x) - reference(x)).abs().max() <= 1e-4


def test_a_checkpoint_that_does_not_fit_is_one_clear_error_on_both_paths(tmp_path):
    """The fused path folds experts straight from their state_dicts: it must check them as strictly
    as building the plain model does."""
    import pytest
    from poe.errors import PoEError

    plain = random_model(CIFAR.architecture, CIFAR.hierarchy, TASKS[:2])
    pool = saved_pool(tmp_path / "pool", CIFAR, plain, TASKS[:1])
    pool.save_expert(TASKS[1], CIFAR.architecture.expert(3))  # 3 outputs for a 5-class task
    CACHE.clear()
    for fuse in (True, False):
        with pytest.raises(PoEError, match=r"does not fit the expert for 'vehicles_1' \(5 classes\): wrong shapes"):
            build_task_model(pool, TASKS[:2], fuse=fuse)

