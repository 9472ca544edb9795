"""What is stale is rebuilt: an expert trained with another loss, library or teacher is trained
again, and a feature cache is rebuilt when the library, the teacher, the training data or the
stored dtype changes — through the real key functions (Preprocessor.stale_or_missing, the cache
key poe.extract computes), on a tiny demo pool."""
import json

import torch

from poe.pool import Pool
from helpers import make_pool, preprocessor, tiny_profile


def pool_with_library(root, profile, seed):
    """A pool whose library (with its fingerprint in the manifest) was imported as the real tools do."""
    torch.manual_seed(seed)
    source = Pool(root.parent / f"source{seed}", profile)
    source.save_library(profile.architecture.library())
    source.save_student_head(profile.architecture.student_head())
    pool = Pool(root, profile)
    preprocessor(pool, profile).import_library(source)
    return pool


def test_an_expert_of_another_loss_library_or_teacher_is_stale(tmp_path):
    profile = tiny_profile()
    pool = pool_with_library(tmp_path / "pool", profile, seed=1)
    pre = preprocessor(pool, profile, epochs=1)
    pre.experts(["disks"], "soft+scale", "library-student", None)
    assert pre.stale_or_missing(["disks", "rings"], "soft+scale", "library-student") == ["rings"]  # rings: missing
    assert pre.stale_or_missing(["disks"], "soft", "library-student") == ["disks"]       # another loss
    assert pre.stale_or_missing(["disks"], "soft+scale", "oracle") == ["disks"]          # another teacher

    pool_with_library(pool.root, profile, seed=9)  # another library: experts trained on the old one are stale
    assert pre.stale_or_missing(["disks"], "soft+scale", "library-student") == ["disks"]
    pre.experts(["disks"], "soft+scale", "library-student", None)  # retrained on the new library
    assert pre.stale_or_missing(["disks"], "soft+scale", "library-student") == []

    pool.expert_path("disks").unlink()  # the manifest still lists it, the file is gone
    assert pre.stale_or_missing(["disks"], "soft+scale", "library-student") == ["disks"]


def test_the_feature_cache_is_rebuilt_when_what_it_holds_changes(tmp_path):
    profile = tiny_profile()
    pool = make_pool(tmp_path / "pool", profile)
    cache = tmp_path / "cache"

    def train(profile=profile, teacher="library-student", dtype="float16"):
        """Train one expert through the cache; return the cache folders that exist afterwards."""
        preprocessor(pool, profile, epochs=1, cache_dir=cache, cache_dtype=dtype).experts(
            ["disks"], "soft", teacher, lambda: oracle)
        return {p.name: json.loads((p / "key.json").read_text()) for p in cache.iterdir()}

    torch.manual_seed(4)
    oracle = profile.architecture.oracle()
    folders = train()
    assert len(folders) == 1
    assert train() == folders  # nothing changed: the cache is reused

    def new_folder(**change):
        nonlocal folders
        before, folders = folders, train(**change)
        (added,) = set(folders) - set(before)  # exactly one new cache, the old ones untouched
        return folders[added]

    base = next(iter(folders.values()))
    assert new_folder(dtype="float32")["dtype"] == "float32"
    assert new_folder(profile=tiny_profile(data_seed=1))["data"] != base["data"]  # other training images
    torch.manual_seed(5)
    pool.save_student_head(profile.architecture.student_head())  # another library-student teacher
    assert new_folder()["teacher"] != base["teacher"]
    torch.manual_seed(6)
    pool.save_library(profile.architecture.library())  # another library
    assert new_folder()["library"] != base["library"]
    first_oracle = new_folder(teacher="oracle")["teacher"]
    assert first_oracle.startswith("oracle:")
    torch.manual_seed(8)
    oracle = profile.architecture.oracle()  # another Oracle
    assert new_folder(teacher="oracle")["teacher"] not in (first_oracle, base["teacher"])
    assert len(folders) == 7
