"""Our code computes what the authors' published CIFAR-100 checkpoints scored (spec/poe.md)."""
import json

import pytest
import torch

from CIFAR100 import PROFILE
from poe.evaluate import expert_logits, predict, score_all_combinations, score_combination
from poe.pool import Pool
from poe.service import build_task_model, evaluate_task_model
from helpers import shared_path

OWN_CLASSES = {"large_omnivores_and_herbivores": 84.2, "medium-sized_mammals": 90.2, "people": 61.6,
               "small_mammals": 72.4, "vehicles_1": 89.8, "vehicles_2": 96.2}
MEAN_ACCURACY = {2: 79.03, 3: 76.41, 4: 74.18, 5: 72.22}
COMBINATIONS = {2: 15, 3: 20, 4: 15, 5: 6}


def test_our_modules_have_the_authors_key_names_and_shapes():
    layouts = json.loads(shared_path("reference", "poe-authors", "checkpoint_layouts.json").read_text())
    arch = PROFILE.architecture
    for name, model in (("cifar100_library", arch.library()), ("cifar100_expert_people", arch.expert(5)),
                        ("cifar100_library_student_classifier", arch.student_head())):
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == layouts[name], name


@pytest.fixture(scope="module")
def authors(authors_cifar_pool, cifar_root):
    pool = Pool(authors_cifar_pool, PROFILE)
    assert pool.layout == "authors"
    _, test = PROFILE.load(cifar_root)
    tasks = PROFILE.default_tasks
    library = pool.load_library()
    experts = {t: pool.load_expert(t) for t in tasks}
    classes = sorted(c for t in tasks for c in PROFILE.hierarchy[t])
    logits, labels = expert_logits(library, experts, PROFILE.eval_loader(test.subset(classes)))
    return pool, test, library, logits, labels


def test_each_expert_on_its_own_classes(authors):
    _, _, _, logits, labels = authors
    for task, expected in OWN_CLASSES.items():
        assert score_combination(logits, labels, PROFILE.hierarchy, [task])["accuracy_pct"] == \
            pytest.approx(expected, abs=0.05), task


def test_mean_accuracy_over_all_combinations(authors):
    _, _, _, logits, labels = authors
    summary = score_all_combinations(logits, labels, PROFILE.hierarchy, PROFILE.default_tasks, (2, 3, 4, 5))
    for n, expected in MEAN_ACCURACY.items():
        assert summary[n]["combinations"] == COMBINATIONS[n]
        assert summary[n]["accuracy_pct"] == pytest.approx(expected, abs=0.05), n


def test_library_student_over_all_classes(authors):
    pool, test, library, _, _ = authors
    student = torch.nn.Sequential(library, pool.load_student_head())
    logits, labels = predict(student, PROFILE.eval_loader(test))
    assert 100 * (logits.argmax(1) == labels).float().mean().item() == pytest.approx(63.84, abs=0.05)


def test_service_task_model_agrees_with_the_combination_scores(authors):
    pool, test, _, logits, labels = authors
    query = ["vehicles_2", "people", "small_mammals"]  # deliberately not in class order
    model, build_ms = build_task_model(pool, query)
    report = evaluate_task_model(model, PROFILE, test)
    expected = score_combination(logits, labels, PROFILE.hierarchy, query)
    assert report["accuracy_pct"] == pytest.approx(expected["accuracy_pct"], abs=1e-6)
    assert report["cross_expert_errors"] == expected["cross_expert_errors"]
    assert report["images"] == 1500 and build_ms > 0
