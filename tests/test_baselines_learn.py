"""The baselines learn what they should, from the right teachers at the right columns.

Queries here list their tasks in an order that is neither the profile's, nor sorted by name, nor by
class id, so a teacher paired with another task's columns, or SD given UHC's loss, changes the
numbers: the first tests compute each distilling student's loss from teachers run apart and columns
found apart; the last trains every method on a small demo query and wants it clearly above chance.
"""
import pytest
import torch

import poe.train
from Demo import PROFILE as DEMO
from poe import checkpoint
from poe.baselines import METHODS
from poe.baselines.query import Query
from poe.baselines.training import Setup, model_path, obtain
from poe.losses import SDLoss, UHCLoss
from poe.profiles import Budget
from helpers import make_pool

QUERY = ("rings", "disks", "stripes")  # profile order: disks, stripes, rings; by first class: stripes, disks, rings
T = 4.0


def make_setup(root, pool, epochs=1, **kw) -> Setup:
    budgets = {"network": Budget(epochs, 0.1, ()), "head": Budget(epochs, 0.1, ())}
    return Setup(profile=DEMO, pool=pool, data=DEMO.load(), out=root / "models", budgets=budgets, batch_size=32,
                 device=torch.device("cpu"), amp="none", seed=0, **kw)


def columns_of(tasks):
    """Each task's classes (sorted) as columns of the query's output, the classes of all tasks sorted."""
    classes = sorted(c for t in tasks for c in DEMO.hierarchy[t])
    return [torch.tensor([classes.index(c) for c in sorted(DEMO.hierarchy[t])]) for t in tasks]


def in_sorted_order(task, logits):
    """A single-task model's logits (in the task's class order) in the task's sorted class order."""
    own = DEMO.hierarchy[task]
    return logits[:, [own.index(c) for c in sorted(own)]]


@pytest.mark.parametrize("method", ["SD_CKD", "UHC_CKD", "SD_Scratch", "UHC_Scratch"])
def test_each_distilling_student_gets_its_loss_from_each_teacher_at_its_tasks_columns(method, small_demo, tmp_path):
    pool = make_pool(tmp_path / "pool", DEMO, experts=QUERY)  # random experts: teachers that differ
    setup = make_setup(tmp_path, pool)
    query = Query.of(QUERY, DEMO.hierarchy)
    plan = METHODS[method].prepare(setup, query, method)
    x, _ = next(iter(setup.train_loader(query)))
    plan.model.eval()  # BatchNorm on its running statistics: the same student output in both calls
    with torch.no_grad():
        plan.model.head.fc.weight *= 20  # a confident student: its columns differ, and so do the losses at them
        got = plan.batch_loss(x, None).item()
        student = plan.model(x)
        if method.endswith("_CKD"):  # PoE's experts on PoE's library, each run on its own
            library = pool.load_library()
            teachers = [in_sorted_order(t, pool.load_expert(t)(library(x))) for t in QUERY]
        else:  # the single-task Scratch models the study trained (stored: loaded here)
            teachers = [in_sorted_order(t, obtain(setup, "Scratch", Query.of([t], DEMO.hierarchy))[0].eval()(x))
                        for t in QUERY]
    columns = columns_of(QUERY)
    own, other = (SDLoss(T), UHCLoss(T)) if method.startswith("SD_") else (UHCLoss(T), SDLoss(T))
    expected = own(student, teachers, columns).item()
    # Tolerance 2e-5: float32 rounding of one batch's loss is far below it, while the 1-epoch Scratch
    # teachers (PyTorch's default init: nearly flat logits) move the loss by ~1e-3 when their columns
    # are swapped.
    assert got == pytest.approx(expected, rel=2e-5)
    # what these numbers tell apart: the other family's loss, and the teachers on each other's columns
    assert other(student, teachers, columns).item() != pytest.approx(expected, rel=2e-5)
    assert own(student, teachers[1:] + teachers[:1], columns[1:] + columns[:1]).item() == pytest.approx(expected)
    assert own(student, teachers, columns[1:] + columns[:1]).item() != pytest.approx(expected, rel=2e-5)


def test_a_stored_baseline_is_keyed_by_what_taught_it(small_demo, tmp_path):
    """CKD taught by the Oracle is another model than CKD taught by the library student (a rerun with
    the other teacher trains, it does not load the first); SD_CKD with a retrained expert too; Transfer,
    which has no teacher, is one model for both."""
    tasks = ("rings", "disks")
    pool = make_pool(tmp_path / "pool", DEMO, experts=tasks)
    torch.manual_seed(2)
    oracle = DEMO.architecture.oracle()
    checkpoint.atomic_save(checkpoint.make("oracle", oracle, dataset="demo", config=DEMO.architecture.oracle_config()),
                           tmp_path / "pre" / "oracle.pt")
    query = Query.of(tasks, DEMO.hierarchy)
    by_student = make_setup(tmp_path, pool, teacher="library-student", pretrained_dir=tmp_path / "pre")
    by_oracle = make_setup(tmp_path, pool, teacher="oracle", pretrained_dir=tmp_path / "pre")
    obtain(by_student, "CKD", query)
    obtain(by_oracle, "CKD", query)
    stored = [torch.load(p, weights_only=True)["meta"] for p in sorted((tmp_path / "models" / "CKD").glob("*.pt"))]
    assert sorted(m["signature"]["teacher"] for m in stored) == ["library-student", "oracle"]
    assert model_path(by_student, "Transfer", query) == model_path(by_oracle, "Transfer", query)
    before = model_path(by_student, "SD_CKD", query)
    torch.manual_seed(3)
    pool.save_expert("rings", DEMO.architecture.expert(len(DEMO.hierarchy["rings"])))  # retrained
    assert model_path(by_student, "SD_CKD", query) != before


# Trained on the demo pool of tests/test_end_to_end.py (1 epoch per stage): its experts and Oracle
# are the teachers; 4 epochs each (lr x0.1 after 2). 2 tasks = 6 classes, 240 test images: chance is
# 16.7 % overall and 33.3 % within a task (a task's 3 classes differ in hue only; the tasks, in shape).
LEARN_QUERY = ("rings", "disks")
LEARN_EPOCHS = 4
OVERALL_FLOOR_PCT, AGREEMENT_FLOOR_PCT = 25.0, 55.0


def overall_accuracy(logits, labels) -> float:
    return (logits.argmax(1) == labels).float().mean().item() * 100


def agreement_with_teachers(logits, labels, teachers, query) -> float:
    """How often the student, choosing among the true task's classes only, picks what that task's
    teacher picks (mean over the tasks). SD's and UHC's losses carry no signal between tasks, and
    a 1-epoch demo expert is itself right on only 43-76 % of its task's images (it depends on the
    CPU's rounding as on a seed), so the student's agreement with its teacher, not its accuracy, is
    what it surely learns: chance is 33 %. `teachers`: per task, (N, task's classes) logits in the
    task's sorted class order."""
    agree = []
    for cols, teacher in zip(map(torch.tensor, query.positions), teachers):
        mine = torch.isin(labels, cols)
        agree.append((logits[mine][:, cols].argmax(1) == teacher[mine].argmax(1)).float().mean().item() * 100)
    return sum(agree) / len(agree)


@pytest.mark.slow  # trains nine small models
def test_every_baseline_learns_above_chance_on_a_small_demo_query(demo_pool_alone, tmp_path, monkeypatch):
    """Scratch, Transfer and CKD (labels, or the Oracle's logits of all the query's classes) well
    above chance overall; SD and UHC, taught by teachers who each know one task, agree with the
    teacher of each image's task well above chance. Measured on this query (fp32; demo pools of
    seeds 0 and 1, training seeds 0-2; 1 and 2 threads): overall 40-85 % (chance 16.7; the lowest,
    CKD, taught by a weak 1-epoch Oracle); agreement 67-95 % over 7 runs at 4 epochs (58-92 % at 2,
    which is why it trains 4), and 38-43 % with the teachers' logits shuffled across the batch (a
    student taught nothing about its images). The floor, 55 %, lies between the two."""
    from poe.evaluate import expert_logits, predict
    from poe.pool import Pool

    monkeypatch.setattr(poe.train, "write_history", lambda *args, **kwargs: None)
    root, _ = demo_pool_alone
    pool = Pool(root / "pool", DEMO)
    setup = make_setup(tmp_path, pool, teacher="oracle", pretrained_dir=root / "pre", cache_views=2)
    setup.budgets = {"network": Budget(LEARN_EPOCHS, 0.1, (LEARN_EPOCHS // 2,)),
                     "head": Budget(LEARN_EPOCHS, 0.1, (LEARN_EPOCHS // 2,))}
    query = Query.of(LEARN_QUERY, DEMO.hierarchy)
    loader = DEMO.eval_loader(setup.subset(query, 1))
    experts, _ = expert_logits(pool.load_library(), {t: pool.load_expert(t) for t in LEARN_QUERY}, loader)
    singles = [obtain(setup, "Scratch", Query.of([t], DEMO.hierarchy))[0] for t in LEARN_QUERY]  # stored: SD/UHC reuse them
    teachers = {"CKD": [in_sorted_order(t, experts[t]) for t in LEARN_QUERY],  # PoE's experts
                "Scratch": [in_sorted_order(t, predict(m, loader)[0]) for t, m in zip(LEARN_QUERY, singles)]}
    scores = {}
    for m in METHODS:
        logits, labels = predict(obtain(setup, m, query)[0], loader)
        if m in ("Scratch", "Transfer", "CKD"):
            scores[m] = ("overall", overall_accuracy(logits, labels))
        else:  # SD_CKD, UHC_Scratch, ...: taught by the teachers named after the underscore
            scores[m] = ("agreement", agreement_with_teachers(logits, labels, teachers[m.split("_")[1]], query))
    print(scores)
    for m, (kind, pct) in scores.items():
        assert pct >= (OVERALL_FLOOR_PCT if kind == "overall" else AGREEMENT_FLOOR_PCT), (m, scores)
