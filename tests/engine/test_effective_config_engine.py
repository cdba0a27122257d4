"""What is printed and saved is what runs: ``--print-config`` and the run folder's ``config.yaml`` hold the input
size, the schedule's numbers and the model options the trainer used, and reading them back changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.engine.config import config_to_dict, load_config, resolve_effective
from reidkit.engine.presets import preset_path
from reidkit.engine.schedules import lr_at
from reidkit.engine.trainer import Trainer


def tiny(root: Path, out: Path) -> list[str]:
    return tiny_sets(out, root, train__eval_every=2)


def test_print_config_shows_the_size_schedule_and_options_that_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--preset", "stadb_market1501", "--print-config", "--set", "data.size=[256, 96]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["size"] == [256, 96] and printed["augment"]["size"] == [256, 96]
    assert printed["schedule"] == {"kind": "stadb", "warmup_epochs": 50, "warmup_step": 5, "milestones": [200, 300],
                                   "gamma": 0.1, "min_factor": 0.0}
    assert printed["model"]["options"]["use_sta"] is True and printed["model"]["options"]["rho"] == 0.25
    # no data.size: the model's own input size, written out
    assert main(["train", "--preset", "mancs_market1501", "--print-config", "--set", "data.size=null"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["size"] == [256, 128] and printed["augment"]["size"] == [256, 128]


def test_resolving_keeps_the_learning_rates_and_is_stable() -> None:
    cfg = load_config(preset_path("stadb_market1501"))
    before = [lr_at(cfg.schedule, cfg.optim.lr, e, cfg.train.epochs) for e in range(cfg.train.epochs)]
    resolve_effective(cfg)
    after = [lr_at(cfg.schedule, cfg.optim.lr, e, cfg.train.epochs) for e in range(cfg.train.epochs)]
    assert before == after and after[0] == pytest.approx(1e-4) and after[250] == pytest.approx(1e-4)
    once = config_to_dict(cfg)
    assert config_to_dict(resolve_effective(cfg)) == once


def test_saved_config_is_what_the_trainer_used(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(preset_path("stadb_market1501"), [*tiny(synth_root, run), "schedule.kind=stadb",
                                                       "schedule.milestones=[1]"])
    assert cfg.augment.size == (384, 128) and cfg.schedule.warmup_epochs == 0  # as written, before the run
    trainer = Trainer(cfg, quiet=True)
    result = trainer.fit()
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    # the input size the images were decoded and augmented at
    assert saved["data"]["size"] == list(trainer.size) == [64, 32]
    assert saved["augment"]["size"] == list(trainer.augment.cfg.size) == [64, 32]
    assert tuple(trainer.train_cache.images.shape[-2:]) == (64, 32)
    # the schedule the trainer applied, epoch by epoch
    assert saved["schedule"]["warmup_epochs"] == 50 and saved["schedule"]["milestones"] == [1]
    assert saved["schedule"] == config_to_dict(trainer.cfg)["schedule"]
    assert [r["lr"] for r in result.history] == pytest.approx([1e-4, 1e-5])  # warm-up 1/10 of 1e-3, then x0.1 at 1
    again = load_config(run / "config.yaml")
    assert [r["lr"] for r in result.history] == pytest.approx(
        [lr_at(again.schedule, again.optim.lr, e, again.train.epochs) for e in range(2)])
    # every option of the model it built, and the checkpoint records the same config
    assert saved["model"]["options"] == trainer.core.options
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"] == saved
    assert config_to_dict(again) == saved  # reading it back changes nothing
