"""A training run says what it is when it starts: the header (dataset statistics, model and parameters,
device and threads, epochs × batches, run folder), one line under --quiet; the ETA keeps to a time budget;
under DDP only rank 0 shows the warnings every rank would print alike."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.data.datasets import load
from reidkit.engine.config import load_config
from reidkit.engine.distributed import DistInfo, warnings_on_rank_zero
from reidkit.engine.presets import preset_path
from reidkit.engine.trainer import Trainer, estimate_eta


def tiny(root: Path, out: Path) -> list[str]:
    return tiny_sets(out, root, sampler__num_batches=3, train__epochs=4, train__eval_every=2)


def test_header_names_data_model_device_length_and_folder(synth_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    trainer = Trainer(load_config(preset_path("stadb_market1501"), tiny(synth_root, run)))
    trainer.setup()
    out = capsys.readouterr().out.splitlines()
    stats = load("market1501", str(synth_root)).stats()
    params = sum(p.numel() for p in trainer.core.parameters())
    assert out[0] == (f"train stadb ({params / 1e6:.2f}M parameters) on market1501 ({stats['train']['ids']} ids, "
                      f"{stats['train']['images']} images), cpu, 4 epochs x 3 batches -> {run} (new run)")
    text = "\n".join(out)
    for split in ("train", "query", "gallery"):
        row = next(line.split() for line in out[1:] if line.split()[:1] == [split])
        assert row == [split, str(stats[split]["ids"]), str(stats[split]["images"]), str(stats[split]["cameras"])]
    assert f"stadb, resnet18 trunk: {params:,} parameters, {stats['train']['ids']} classes, input 64x32" in text
    assert f"cpu, {torch.get_num_threads()} CPU thread" in text and "float32" in text
    assert "4 epochs x 3 batches of 2x2 images (12 steps), evaluation every 2 epochs and after the last" in text
    assert f"run folder  {run} (new run)" in text and str(synth_root) in text


def test_quiet_keeps_one_line_and_resume_says_where_from(synth_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    sets = [x for s in tiny(synth_root, run) for x in ("--set", s)]
    assert main(["train", "--preset", "stadb_market1501", *sets, "--set", "train.epochs=1", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("train stadb (") and "1 epoch x 3 batches" in out[0]
    assert out[0].endswith(f"-> {run} (new run)") and out[1].startswith(f"done: {run}")
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(f"(resuming from {run / 'checkpoint.pt'} at epoch 1)")


def test_eta_keeps_to_the_time_budget() -> None:
    assert estimate_eta(10.0, 1, 29) == pytest.approx(290.0)  # no budget: every remaining epoch
    assert estimate_eta(10.0, 1, 29, max_seconds=45.0) == pytest.approx(30.0)  # 3 more epochs start within it
    assert estimate_eta(40.0, 4, 26, max_seconds=45.0) == 0.0  # the next one would pass it: the run stops
    assert estimate_eta(10.0, 1, 2, max_seconds=1000.0) == pytest.approx(20.0)


def test_demo_eta_uses_its_budget(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The epoch lines of a budgeted run promise no more than the budget leaves."""
    run = tmp_path / "run"
    cfg = load_config(preset_path("stadb_market1501"), [*tiny(synth_root, run), "train.epochs=500",
                                                        "train.eval_every=0", "sampler.num_batches=1"])
    trainer = Trainer(cfg)
    trainer.setup()
    cfg.train.max_seconds = 3.0
    capsys.readouterr()
    result = trainer.fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert result.epochs_run < 500 and lines
    for line in lines:
        minutes, seconds = line.rsplit("eta ", 1)[1].split(":")
        assert int(minutes) * 60 + int(seconds) <= 3


def test_only_rank_zero_shows_the_warnings_every_rank_shares() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with warnings_on_rank_zero(DistInfo(rank=1, world_size=2)):
            warnings.warn("train.amp='bf16' is for CUDA", stacklevel=1)
        assert seen == []
        with warnings_on_rank_zero(DistInfo(rank=0, world_size=2)):
            warnings.warn("train.amp='bf16' is for CUDA", stacklevel=1)
        assert [str(w.message) for w in seen] == ["train.amp='bf16' is for CUDA"]
        warnings.warn("after", stacklevel=1)  # the filter is undone after it
        assert len(seen) == 2


def test_trainer_setup_warns_on_rank_zero_only(synth_root: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(preset_path("stadb_market1501"), [*tiny(synth_root, tmp_path / "run"), "train.amp=bf16"])
    with pytest.warns(UserWarning, match="train.amp='bf16' is for CUDA"):
        Trainer(cfg, quiet=True).setup()

    class Rank1(Trainer):  # rank 1's view of the same setup: nothing shown (rank 0 showed it)
        def header_lines(self) -> list[str]:
            return []

    cfg = load_config(preset_path("stadb_market1501"), [*tiny(synth_root, tmp_path / "run1"), "train.amp=bf16"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **_: model)  # no group
        trainer = Rank1(cfg, quiet=True, dist_info=DistInfo(rank=1, world_size=2))
        trainer.setup()
    assert not [w for w in seen if "train.amp" in str(w.message)]
