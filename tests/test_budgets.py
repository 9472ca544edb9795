"""Named budgets (--budget), the Oracle stage's resume and history, and stored Oracles of another shape."""
import dataclasses

import pytest
import torch

import Run_preprocessing
from CIFAR100 import PROFILE as CIFAR
from Demo import PROFILE as DEMO
from poe.cli import run
from poe.history import read_csv
from poe.networks import WRNArchitecture, WRNConfig
from poe.pool import Pool
from poe.preprocess import Preprocessor, stored_summary, summary_lines, summary_markdown
from poe.profiles import Budget

# A WRN-10-1 Oracle on 4 demo classes: a few seconds per run, the same code path as CIFAR-100's.
TINY = dataclasses.replace(
    DEMO, architecture=WRNArchitecture(oracle=WRNConfig(10, 1), student=WRNConfig(10, 1), expert_width=16,
                                       num_classes=DEMO.num_classes),
    budgets={**DEMO.budgets, "oracle": Budget(3, 0.1, (), schedule="cosine", batch_size=32)})


def tiny_preprocessor(tmp_path, profile=TINY, folder="pre"):
    pre = Preprocessor(profile, Pool(tmp_path / "pool", profile), tmp_path / folder, data_root=None, download=False,
                       batch_size=128, budgets=profile.budgets, device=torch.device("cpu"), amp="none", seed=0)
    train, test = DEMO.load()
    pre._data = (train.subset(range(4)), test.subset(range(4)))
    return pre


class InterruptedLoader:
    """Passes batches through, and raises KeyboardInterrupt (Ctrl-C) mid-way through epoch `epoch`."""

    def __init__(self, loader, epoch: int, after_batches: int):
        self.loader, self.stop_epoch, self.after = loader, epoch, after_batches

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if self.epoch == self.stop_epoch and i == self.after:
                raise KeyboardInterrupt
            yield batch


def test_cpu_budget_is_a_named_choice_and_the_paper_stays_the_default():
    assert CIFAR.architecture.oracle_cfg == WRNConfig(40, 4)
    assert CIFAR.budgets["oracle"] == Budget(200, 0.1, (80, 160)) and CIFAR.batch_size == 512
    cpu = CIFAR.with_budget("cpu")
    assert cpu.architecture.oracle_cfg == WRNConfig(16, 4)
    assert cpu.architecture.student_cfg == CIFAR.architecture.student_cfg == WRNConfig(16, 1)  # the authors' library
    assert cpu.budgets["oracle"].batch_size == 128 and cpu.budgets["oracle"].schedule == "cosine"
    assert cpu.amp_default == "auto" and CIFAR.amp_default == "none"
    assert CIFAR.with_budget("paper") is CIFAR
    assert "--budget" in Run_preprocessing.get_args_parser().format_help()


def test_unknown_budget_is_one_clear_error(capsys):
    assert run(Run_preprocessing.main, ["--dataset", "demo", "--budget", "gpu-week"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: demo has no budget 'gpu-week'") and "paper" in err


def test_interrupted_oracle_stage_resumes_to_the_same_weights_and_history(tmp_path):
    straight = tiny_preprocessor(tmp_path / "a").oracle()
    expected = read_csv(tmp_path / "a" / "pre" / "oracle.history.csv")

    pre = tiny_preprocessor(tmp_path / "b")
    live_loader = pre.train_loader
    pre.train_loader = lambda stage, *world: InterruptedLoader(live_loader(stage, *world), epoch=1, after_batches=1)
    with pytest.raises(KeyboardInterrupt):
        pre.oracle()
    assert (tmp_path / "b" / "pre" / "oracle.resume.pt").is_file()
    assert not (tmp_path / "b" / "pre" / "oracle.pt").exists()
    assert len(read_csv(tmp_path / "b" / "pre" / "oracle.history.csv")) == 1  # epoch 1 logged as it finished

    resumed = tiny_preprocessor(tmp_path / "b").oracle()  # the same command again
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    got = read_csv(tmp_path / "b" / "pre" / "oracle.history.csv")
    assert [r["lr"] for r in got] == [r["lr"] for r in expected]
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    assert [r["test_top1_pct"] for r in got] == [r["test_top1_pct"] for r in expected]
    assert not (tmp_path / "b" / "pre" / "oracle.resume.pt").exists()


def test_oracle_history_csv_and_plot(tmp_path):
    pre = tiny_preprocessor(tmp_path)
    pre.oracle()
    rows = read_csv(tmp_path / "pre" / "oracle.history.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # Cosine over 3 epochs, logged as the rate each epoch trained with.
    assert [round(r["lr"], 6) for r in rows] == [0.1, 0.075, 0.025]
    assert all(r["loss"] > 0 and r["seconds"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert all(0 <= r["test_top1_pct"] <= 100 for r in rows)
    image = pytest.importorskip("matplotlib.image").imread(tmp_path / "pre" / "oracle.history.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_stored_oracle_is_half_precision_and_loads_with_its_own_shape(tmp_path):
    trained = tiny_preprocessor(tmp_path).oracle()
    stored = torch.load(tmp_path / "pre" / "oracle.pt", weights_only=True)
    assert stored["meta"]["config"] == {"depth": 10, "widen": 1, "stem_stride": 1}
    assert all(v.dtype == torch.float16 for v in stored["state_dict"].values() if v.is_floating_point())
    # The demo's own Oracle is WRN-16-2; the stored WRN-10-1 still loads, from its checkpoint's config.
    default = dataclasses.replace(TINY, architecture=DEMO.architecture)
    loaded = tiny_preprocessor(tmp_path, profile=default).oracle()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), trained.eval()(x))  # what was scored is what was stored
    assert stored["meta"]["metrics"]["test_top1_pct"] == pytest.approx(
        tiny_preprocessor(tmp_path, profile=default)._top1(loaded))


def test_stored_summary_reports_each_stage_from_its_checkpoint(tmp_path):
    pre = tiny_preprocessor(tmp_path)
    pre.oracle()
    stored = torch.load(tmp_path / "pre" / "oracle.pt", weights_only=True)["meta"]
    summary = stored_summary(TINY, pre.pool, pre.pretrained_dir, ["rings"])
    oracle = summary["stages"]["oracle"]
    assert oracle["metrics"] == stored["metrics"] and oracle["architecture"] == "WRN-10-1"
    assert oracle["wall_s"]["this_process_s"] >= oracle["wall_s"]["training_s"] > 0
    assert [h["epoch"] for h in oracle["history"]] == [1, 2, 3]
    table = summary_markdown(summary)
    assert f"{stored['metrics']['test_top1_pct']:.2f} %" in table and "3 epochs, lr 0.1 cosine, batch 32" in table
    assert "Oracle" in summary_lines(summary)[0]


def test_a_budgets_batch_applies_to_its_stage_only(tmp_path):
    pre = tiny_preprocessor(tmp_path)
    assert pre.stage_batch_size("oracle") == 32 and pre.stage_batch_size("expert") == 128
    assert pre._signature("oracle")["batch_size"] == 32 and pre._signature("oracle")["schedule"] == "cosine"


def test_the_oracle_is_scored_as_stored_after_its_rounding_to_half(tmp_path, monkeypatch):
    """The score in oracle.pt is that of the fp16 weights the file holds, not of the fp32 ones before
    rounding: the last scoring pass (after the per-epoch ones) sees weights fp16 holds exactly."""
    pre = tiny_preprocessor(tmp_path)
    rounded = []
    score = pre._top1

    def scoring(model):
        rounded.append(all(torch.equal(v, v.half().float()) for v in model.state_dict().values()
                           if v.is_floating_point()))
        return score(model)

    monkeypatch.setattr(pre, "_top1", scoring)
    pre.oracle()
    assert len(rounded) == TINY.budgets["oracle"].epochs + 1  # each epoch's logged score, then the stored one
    assert rounded[-1], "the stored Oracle was scored before its rounding to half precision"


class Stop(Exception):
    pass


def test_a_budget_preset_reaches_every_stage_of_the_run(tmp_path, monkeypatch):
    """--budget cpu: its Oracle, schedules, batches, cache views and amp reach the Preprocessor the
    command builds (caught there, before any data is read), unless a flag overrides one."""
    seen = []

    class Caught(Preprocessor):
        def __init__(self, profile, *args, **kwargs):
            super().__init__(profile, *args, **kwargs)
            seen.append(self)
            raise Stop

    monkeypatch.setattr(Run_preprocessing, "Preprocessor", Caught)
    base = ["--dataset", "cifar100", "--budget", "cpu", "--db", str(tmp_path / "pool"), "--pretrained_db",
            str(tmp_path / "pre"), "--device", "cpu"]
    for extra in ([], ["--cache_views", "2", "--epochs_expert", "3"]):
        with pytest.raises(Stop):
            Run_preprocessing.main(base + extra)
    preset, overridden = seen
    assert preset.profile.architecture.oracle_cfg == WRNConfig(16, 4)
    assert preset.cache_views == 1 and overridden.cache_views == 2
    assert [preset.budgets[s].epochs for s in ("oracle", "library", "expert")] == [15, 20, 30]
    assert preset.validation.per_class == overridden.validation.per_class == 50  # the preset's hold-out
    assert overridden.budgets["expert"].epochs == 3 and overridden.budgets["oracle"].epochs == 15
    assert preset.stage_batch_size("oracle") == preset.stage_batch_size("library") == 128
    assert preset.stage_batch_size("expert") == 512 and preset.budgets["library"].schedule == "cosine"
    assert preset.amp == Run_preprocessing.pick_amp("auto", torch.device("cpu"))  # the preset's amp: auto
