"""Expert extraction from the feature cache: equal to the live (recompute-per-batch) training, views
read as documented, stale caches never reused, and the experts load in the service."""
import dataclasses

import pytest
import torch

from Demo import PROFILE as DEMO
from poe.extract import Member, initial_expert, train_from_cache
from poe.feature_cache import CachedLoader
from poe.pool import Pool
from poe.service import build_task_model
from helpers import make_pool, preprocessor, tiny_profile

TASKS = ["disks", "rings"]


def expert_states(pool, tasks):
    return {t: pool.load_expert(t).state_dict() for t in tasks}


def test_cached_joint_training_equals_live_training(tmp_path):
    """With a float32 cache of as many views as epochs, every batch is the live loader's batch:
    the experts must come out as the live path's (same loss, optimizer, schedule, sample visits),
    up to float rounding (grouped vs separate convolutions)."""
    profile = tiny_profile()
    live_pool = make_pool(tmp_path / "live", profile)
    cached_pool = make_pool(tmp_path / "cached", profile)
    grouped_pool = make_pool(tmp_path / "grouped", profile)
    preprocessor(live_pool, profile, expert_source="live").experts(TASKS, "soft+scale", "library-student", None)
    preprocessor(cached_pool, profile, expert_source="cache", cache_views=2, cache_dtype="float32").experts(
        TASKS, "soft+scale", "library-student", None)
    # The same with the experts stacked as grouped convolutions (the GPU layout), through the same code.
    train_from_cache(preprocessor(grouped_pool, profile), [Member("soft+scale", t, grouped_pool) for t in TASKS],
                     "library-student", None, views=2, cache_dir=tmp_path / "cache", cache_dtype="float32",
                     layout="grouped")
    live = expert_states(live_pool, TASKS)
    for pool in (cached_pool, grouped_pool):
        cached = expert_states(pool, TASKS)
        for t in TASKS:
            for name, value in live[t].items():
                torch.testing.assert_close(cached[t][name], value, atol=2e-4, rtol=1e-3, msg=f"{t} {name}")
    for t in TASKS:
        untrained = initial_expert(profile.architecture, 3, 3, t).state_dict()  # seed 3, as preprocessor()
        assert (live[t]["fc.weight"] - untrained["fc.weight"]).abs().max() > 1e-3  # the experts did train
    meta = torch.load(cached_pool.expert_path("disks"), weights_only=True)["meta"]
    wall = meta["extraction"].pop("wall_s")
    assert set(wall) == {"cache_this_process_s", "training_and_scoring_this_process_s"}
    assert meta["extraction"] == {"source": "cache", "views": 2, "cache_dtype": "float32", "joint_experts": 2,
                                  "layout": "separate"}
    assert torch.load(grouped_pool.expert_path("disks"), weights_only=True)["meta"]["extraction"]["layout"] == "grouped"
    assert [h["epoch"] for h in meta["history"]] == [1, 2]


def test_three_loss_variants_in_one_pass_into_three_pools(tmp_path):
    profile = tiny_profile()
    pools = {kind: make_pool(tmp_path / kind, profile) for kind in ("soft", "scale", "soft+scale")}
    pre = preprocessor(pools["soft"], profile, epochs=2, cache_views=1, cache_dir=tmp_path / "cache")
    scores = pre.train_expert_pools({k: (p, TASKS) for k, p in pools.items()}, "library-student", None)
    assert set(scores) == set(pools) and all(set(s) == set(TASKS) for s in scores.values())
    weights = {}
    for kind, pool in pools.items():
        manifest = pool.manifest()["experts"]
        assert {manifest[t]["loss"] for t in TASKS} == {kind}
        model, _ = build_task_model(pool, TASKS)  # the service loads them
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
        weights[kind] = pool.load_expert("disks").fc.weight
    assert not torch.equal(weights["soft"], weights["scale"])  # each pool got its own loss
    assert len(list((tmp_path / "cache").glob("*/seed3-view0/meta.json"))) == 1  # one view, shared


def test_cached_loader_reads_view_e_mod_v_and_visits_every_row_once(tmp_path):
    class View:
        def __init__(self, tag, n=10):
            self.tag, self.n = tag, n

        def __len__(self):
            return self.n

        def batch(self, rows):
            return torch.full((len(rows),), self.tag), rows

    loader = CachedLoader([View(0), View(1)], batch_size=4, seed=0)
    seen = {}
    for epoch in range(5):
        loader.set_epoch(epoch)
        batches = list(loader)
        tags = torch.cat([b[0] for b in batches])
        rows = torch.cat([b[1] for b in batches])
        assert set(tags.tolist()) == {epoch % 2} and len(batches) == 3
        assert sorted(rows.tolist()) == list(range(10))  # every row once per epoch
        seen[epoch] = rows.tolist()
    assert seen[0] == list(range(10)) and seen[1] == list(range(10))  # first V epochs: stored order
    assert seen[2] != seen[3] and seen[2] != list(range(10))           # then reshuffled per epoch


def test_a_changed_library_or_teacher_gets_another_cache_and_partial_views_are_rebuilt(tmp_path):
    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    pre = preprocessor(pool, profile, epochs=1, cache_views=1)
    pre.experts(["disks"], "soft+scale", "library-student", None)
    folders = list((pool.root / "feature_cache").iterdir())
    assert len(folders) == 1
    view = folders[0] / "seed3-view0"
    assert (view / "meta.json").is_file() and (view / "features.bin").stat().st_size == 48 * 32 * 16 * 16 * 2

    (view / "meta.json").unlink()  # as if interrupted while writing: must be rebuilt, not read
    (view / "features.bin").write_bytes(b"junk")
    pre.experts(["disks"], "soft+scale", "library-student", None)
    assert (view / "features.bin").stat().st_size == 48 * 32 * 16 * 16 * 2

    torch.manual_seed(5)  # another teacher: a new cache folder, the old one untouched
    pool.save_student_head(profile.architecture.student_head())
    pre.experts(["disks"], "soft+scale", "library-student", None)
    assert len(list((pool.root / "feature_cache").iterdir())) == 2


def test_the_number_of_views_defaults_to_the_profiles():
    from ImageNet import PROFILE as IMAGENET

    profile = dataclasses.replace(tiny_profile(), cache_views=2)
    pool = Pool("/nonexistent", profile)
    assert preprocessor(pool, profile).cache_views == 2 and preprocessor(pool, profile, cache_views=3).cache_views == 3
    assert DEMO.cache_views == 10 and IMAGENET.cache_views == 1  # ImageNet: ~45 GB per view


def test_bad_settings_are_one_line_errors(tmp_path):
    from poe.errors import PoEError

    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    with pytest.raises(PoEError, match="cache_views"):
        preprocessor(pool, profile, cache_views=0).experts(["disks"], "soft", "library-student", None)
    with pytest.raises(PoEError, match="expert source"):
        preprocessor(pool, profile, expert_source="sometimes")


def test_a_cache_that_does_not_fit_on_disk_is_refused_before_writing(tmp_path, monkeypatch):
    """The views are sparse memmaps: without the check a full disk kills the process mid-write."""
    import collections
    import poe.feature_cache
    from poe.errors import PoEError

    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    view_bytes = 48 * (32 * 16 * 16 * 2 + profile.num_classes * 4)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(poe.feature_cache.shutil, "disk_usage", lambda path: usage(0, 0, 2 * view_bytes))
    with pytest.raises(PoEError, match=r"needs .* GB \(3 view\(s\) of .*--expert_source live"):
        preprocessor(pool, profile, epochs=3, cache_views=3).experts(["disks"], "soft", "library-student", None)
    assert not list((pool.root / "feature_cache").glob("*/*/*.bin*"))  # nothing written
    preprocessor(pool, profile, epochs=3, cache_views=2).experts(["disks"], "soft", "library-student", None)
    assert len(list((pool.root / "feature_cache").glob("*/*/meta.json"))) == 2  # two views fit


def test_an_interrupted_cached_run_resumes_to_the_same_experts(tmp_path, monkeypatch):
    profile = tiny_profile()
    full_pool = make_pool(tmp_path / "full", profile)
    preprocessor(full_pool, profile, epochs=3, cache_views=2).experts(TASKS, "soft+scale", "library-student", None)

    pool = make_pool(tmp_path / "interrupted", profile)
    original = CachedLoader.__iter__

    def interrupted(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        yield from original(self)

    monkeypatch.setattr(CachedLoader, "__iter__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocessor(pool, profile, epochs=3, cache_views=2).experts(TASKS, "soft+scale", "library-student", None)
    assert (pool.root / "experts.cache.resume.pt").is_file() and not pool.has_expert("disks")
    monkeypatch.setattr(CachedLoader, "__iter__", original)
    preprocessor(pool, profile, epochs=3, cache_views=2).experts(TASKS, "soft+scale", "library-student", None)
    assert not (pool.root / "experts.cache.resume.pt").exists()
    for t in TASKS:
        for name, value in full_pool.load_expert(t).state_dict().items():
            torch.testing.assert_close(pool.load_expert(t).state_dict()[name], value, msg=f"{t} {name}")
