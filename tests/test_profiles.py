"""Every registered profile: listed in --help, --list without its data; user-defined tasks (--task_file)."""
import json

import pytest

import Run_preprocessing
import Run_Service
from poe.cli import run
from poe.errors import PoEError
from poe.pool import Pool
from poe.profiles import REGISTRY, get_profile


def test_help_lists_every_dataset(capsys):
    with pytest.raises(SystemExit):
        Run_Service.get_args_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in REGISTRY) and {"tinyimagenet", "imagenet"} <= set(REGISTRY)


@pytest.mark.parametrize("dataset", sorted(REGISTRY))
def test_list_works_without_the_data(dataset, tmp_path, capsys):
    code = run(Run_Service.main, ["--dataset", dataset, "--list", "--data_root", str(tmp_path / "no_data"),
                                  "--db", str(tmp_path / "no_pool")])
    lines = capsys.readouterr().out.splitlines()
    profile = get_profile(dataset)
    assert code == 0 and [line.split()[0] for line in lines] == list(profile.hierarchy)
    first = profile.hierarchy[lines[0].split()[0]]
    assert "no-expert" in lines[0] and profile.class_names[first[0]] in lines[0]
    assert set(profile.default_tasks) <= set(profile.hierarchy)


def test_task_file_in_text_and_json(tmp_path):
    profile = get_profile("tinyimagenet")
    text = tmp_path / "tasks.txt"
    text.write_text("# my groups\nretrievers: golden retriever, Labrador retriever\n"
                    "cats: 30 31   # by id\nbugs: n02165456 n02190166\n")
    mine = profile.with_task_file(text)
    assert mine.default_tasks == ["retrievers", "cats", "bugs"]
    assert mine.hierarchy["retrievers"] == [26, 27] and mine.hierarchy["cats"] == [30, 31]
    assert mine.hierarchy["bugs"] == [36, 37] and mine.hierarchy["canine"] == profile.hierarchy["canine"]
    assert "retrievers" not in profile.hierarchy, "the registered profile is left as it was"
    as_json = tmp_path / "tasks.json"
    as_json.write_text(json.dumps({"my_dogs": [29, "Chihuahua"], "canine": profile.hierarchy["canine"]}))
    assert profile.with_task_file(as_json).hierarchy["my_dogs"] == [24, 29]


@pytest.mark.parametrize("content, message", [
    ("dogs: 24, unicorn\n", "unknown class 'unicorn'"),
    ("dogs 24 25\n", "line 1: expected 'task: class, class, ...'"),
    ("dogs: 24\ndogs: 25\n", "defined twice"),
    ("dogs: 24 24\n", "names a class twice"),
    ("canine: 24 25\n", "already a task of this dataset"),
    ("../evil: 24\n", "not a usable task name"),
    ("dogs:\n", "has no classes"),
    ("dogs: 200\n", "unknown class '200'"),
    ('{"dogs": [24,', "is not valid JSON"),
    ("# nothing\n", "defines no task")])
def test_task_file_errors(tmp_path, content, message):
    path = tmp_path / "tasks.txt"
    path.write_text(content)
    with pytest.raises(PoEError, match=message):
        get_profile("tinyimagenet").with_task_file(path)


def test_task_file_through_the_clis(tmp_path, capsys):
    """--task_file is a common flag: --list shows the user's tasks, a query of overlapping tasks
    is refused in one line, and preprocessing builds the user's tasks by default."""
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("round_things: 0 1 2\nmixed: 2 3\n")
    assert run(Run_Service.main, ["--dataset", "demo", "--task_file", str(tasks), "--list",
                                  "--db", str(tmp_path / "p")]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()][-2:] == ["round_things", "mixed"]

    demo = get_profile("demo").with_task_file(tasks)
    pool = Pool(tmp_path / "pool", demo)
    pool.save_library(demo.architecture.library())
    for task in ("round_things", "mixed"):
        pool.save_expert(task, demo.architecture.expert(len(demo.hierarchy[task])))
    code = run(Run_Service.main, ["--dataset", "demo", "--task_file", str(tasks), "--db", str(pool.root),
                                  "--queriedTask", "round_things", "mixed", "--no-eval"])
    err = capsys.readouterr().err
    assert code == 2 and "round_things and mixed share classes" in err and len(err.splitlines()) == 1
    code = run(Run_Service.main, ["--dataset", "demo", "--task_file", str(tasks), "--db", str(pool.root),
                                  "--queriedTask", "round_things", "--no-eval"])
    assert code == 0 and "round_things (3 classes)" in capsys.readouterr().out

    missing = tmp_path / "nope.txt"
    assert run(Run_preprocessing.main, ["--dataset", "demo", "--task_file", str(missing), "--db", str(tmp_path / "q")]) == 2
    assert "task file not found" in capsys.readouterr().err
