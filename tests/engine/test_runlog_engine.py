"""What a run folder's logs say about the run: env.json keeps a record per start and resume (and reads the single
record older versions wrote); TensorBoard asked for but not installed is said once, in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.engine.config import load_config
from reidkit.engine.presets import preset_path
from reidkit.engine.runlog import environment_records
from reidkit.engine.trainer import train


def first_epoch(root: Path, run: Path) -> None:
    train(load_config(preset_path("stadb_market1501"), tiny_sets(run, root, train__epochs=1)), quiet=True)


def resume(run: Path, epochs: int) -> None:
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", f"train.epochs={epochs}"]) == 0


def test_env_json_keeps_a_record_per_start_and_resume(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first_epoch(synth_root, run)
    resume(run, 2)
    data = json.loads((run / "env.json").read_text(encoding="utf-8"))
    assert list(data) == ["runs"] and len(data["runs"]) == 2
    start, again = environment_records(run)
    assert start["resumed_from"] == "" and start["start_epoch"] == 0
    assert again["resumed_from"] == str(run / "checkpoint.pt") and again["start_epoch"] == 1
    assert start["seed"] == again["seed"] == 0 and start["started"] <= again["started"]
    resume(run, 3)
    assert [r["start_epoch"] for r in environment_records(run)] == [0, 1, 2]


def test_a_single_record_of_an_older_version_is_kept(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first_epoch(synth_root, run)
    old = {"seed": 0, "torch": "2.0.0", "resumed_from": ""}  # env.json as reidkit wrote it before
    (run / "env.json").write_text(json.dumps(old), encoding="utf-8")
    assert environment_records(run) == [old]
    resume(run, 2)
    records = environment_records(run)
    assert len(records) == 2 and records[0] == old and records[1]["start_epoch"] == 1
    assert environment_records(tmp_path / "nowhere") == []


def test_tensorboard_missing_is_said_once(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    run = tmp_path / "run"
    sets = tiny_sets(run, synth_root, train__tensorboard="true")
    assert main(["train", "--preset", "stadb_market1501", "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "TensorBoard" in line]
    assert said == ["reidkit: warning: train.tensorboard is on, but TensorBoard is not installed (pip install "
                    "tensorboard): no tb/ logs for this run (--set train.tensorboard=false to not ask for them)"]
    assert not (run / "tb").exists() and (run / "model.safetensors").is_file()
    sets = tiny_sets(tmp_path / "off", synth_root, train__tensorboard="false")
    assert main(["train", "--preset", "stadb_market1501", "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "TensorBoard" not in capsys.readouterr().err  # not asked for: nothing to say
