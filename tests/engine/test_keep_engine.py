"""What a run folder keeps: ``best.pt`` without optimizer state, and ``train.keep`` choosing the checkpoints,
with ``--resume`` and its fallback to ``checkpoint_prev.pt`` still working."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.engine.checkpoint import find_resume_checkpoint, save_checkpoint
from reidkit.engine.config import load_config
from reidkit.engine.presets import preset_path
from reidkit.engine.trainer import NonFiniteLossError, train
from reidkit.errors import ConfigError
from reidkit.models.io import load_model


def tiny(root: Path, out: Path, epochs: int = 2, *extra: str) -> list[str]:
    return [*tiny_sets(out, root, train__epochs=epochs, schedule__kind="constant"), *extra]


def checkpoints(run: Path) -> set[str]:
    return {p.name for p in run.glob("*.pt")}


def test_best_pt_holds_no_optimizer_state(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(preset_path("stadb_market1501"), tiny(synth_root, run)), quiet=True)
    assert checkpoints(run) == {"checkpoint.pt", "checkpoint_prev.pt", "best.pt"}  # the default keeps all three
    latest = torch.load(run / "checkpoint.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    assert "optimizer" in latest and latest["optimizer"]["state"]
    assert "optimizer" not in best and "scaler" not in best
    assert {"model", "model_meta", "epoch", "config", "best"} <= set(best)
    assert best["epoch"] == best["best"]["epoch"] and best["config"] == latest["config"]
    assert (run / "best.pt").stat().st_size < 0.5 * (run / "checkpoint.pt").stat().st_size
    model = load_model(run / "best.pt")  # still a checkpoint reidkit loads weights from
    assert model.embedding_dim > 0
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in best["model"].items())


def test_best_pt_written_by_save_checkpoint_has_no_optimizer(tmp_path: Path) -> None:
    state = {"model": {"w": torch.ones(3)}, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}},
             "scaler": {"scale": 1.0}, "epoch": 2, "step": 0}
    save_checkpoint(state, tmp_path, best=True)
    assert set(torch.load(tmp_path / "best.pt", weights_only=True)) == {"model", "epoch", "step"}
    assert "optimizer" in torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    save_checkpoint({**state, "epoch": 3}, tmp_path, previous=False)
    assert not (tmp_path / "checkpoint_prev.pt").exists()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_keep_latest_only_resumes_and_leaves_no_previous_or_best(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(preset_path("stadb_market1501"), tiny(synth_root, run, 2, "train.keep=[latest]")), quiet=True)
    assert checkpoints(run) == {"checkpoint.pt"}
    assert (run / "best.safetensors").is_file() and (run / "model.safetensors").is_file()
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", "train.epochs=3"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 3
    assert checkpoints(run) == {"checkpoint.pt"}


def test_keep_nothing_removes_checkpoints_only_when_the_run_ends(synth_root: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    cfg = load_config(preset_path("stadb_market1501"), tiny(synth_root, run, 3, "train.keep=[]"))
    monkeypatch.setenv("REIDKIT_DEBUG_NAN_AT_STEP", "2")  # epoch 2 stops: the run has not ended
    with pytest.raises(NonFiniteLossError):
        train(cfg, quiet=True)
    assert checkpoints(run) == {"checkpoint.pt"}  # written for the run's own safety, so it can resume
    monkeypatch.delenv("REIDKIT_DEBUG_NAN_AT_STEP")
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert checkpoints(run) == set()
    assert (run / "model.safetensors").is_file() and (run / "best.safetensors").is_file()


def test_resume_falls_back_to_previous_with_the_default_keep(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(preset_path("stadb_market1501"), tiny(synth_root, run, 2)), quiet=True)
    (run / "checkpoint.pt").write_bytes(b"cut short")
    with pytest.warns(UserWarning, match="checkpoint.pt"):
        path, state = find_resume_checkpoint(run)
    assert path.name == "checkpoint_prev.pt" and state["epoch"] == 1 and "optimizer" in state


def test_keep_names_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"'train.keep' must be a list of 'latest' or 'previous' or 'best'"):
        load_config(None, ["train.keep=[latest, newest]"])


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def disk_bytes(run: Path) -> int:
    """The bytes the run folder's files take, a file with several names (hard links) counted once."""
    seen: dict[tuple[int, int], int] = {}
    for p in run.rglob("*"):
        if p.is_file():
            st = p.stat()
            seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def test_best_weights_that_are_the_final_ones_take_no_second_copy(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # evaluated once, after the last epoch: the best weights are the final ones
    train(load_config(preset_path("stadb_market1501"), tiny(synth_root, run, 2, "train.eval_every=0")), quiet=True)
    best, final = run / "best.safetensors", run / "model.safetensors"
    assert best.samefile(final) and final.stat().st_nlink == 2  # one file, two names
    files = [p for p in run.rglob("*") if p.is_file()]
    assert disk_bytes(run) == sum(p.stat().st_size for p in files) - final.stat().st_size
    loaded = load_model(best)  # whatever loads "best" still does
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in weights_of(final).items())
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 2
    assert {p.name for p in run.iterdir() if p.suffix in (".pt", ".safetensors")} == \
        {"checkpoint.pt", "checkpoint_prev.pt", "best.pt", "best.safetensors", "model.safetensors"}
    # only the resumable checkpoints hold optimizer state
    for name in ("checkpoint.pt", "checkpoint_prev.pt", "best.pt"):
        assert ("optimizer" in torch.load(run / name, weights_only=True)) == name.startswith("checkpoint")


def test_earlier_best_weights_stay_their_own_file_and_survive_a_resume(synth_root: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import reidkit.engine.trainer as trainer_module

    scores = iter([50.0, 40.0, 30.0])  # epoch 1 is the best; later epochs are worse
    monkeypatch.setattr(trainer_module.Trainer, "evaluate", lambda self: {"mAP": next(scores), "rank1": 0.0})
    run = tmp_path / "run"
    train(load_config(preset_path("stadb_market1501"), tiny(synth_root, run, 1)), quiet=True)
    best, final = run / "best.safetensors", run / "model.safetensors"
    assert best.samefile(final)  # after one epoch the best is the final
    epoch1 = weights_of(final)
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", "train.epochs=3"]) == 0
    assert not best.samefile(final)  # model.safetensors was replaced by a new file; the link kept epoch 1
    assert all(torch.equal(weights_of(best)[k], v) for k, v in epoch1.items())
    assert not all(torch.equal(weights_of(final)[k], v) for k, v in epoch1.items())
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1
