"""The trainer: run folder contents, determinism, NaN handling and resume, checkpoint fallback, per-image data."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_sets

from reidkit.cli import main
from reidkit.engine.checkpoint import find_resume_checkpoint, save_checkpoint
from reidkit.engine.config import load_config
from reidkit.engine.runlog import environment_records
from reidkit.engine.trainer import NonFiniteLossError, train

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "reidkit" / "configs" / "stadb_market1501.yaml"


@pytest.fixture(scope="module")
def mini_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reidkit.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), ids=12, cams=2, seed=5, images_per_id_cam=2,
                            size=(64, 32), distractors=4, junk=1, gt_bbox=False)


def tiny(root: Path, out: Path, epochs: int = 2, **extra: object) -> list[str]:
    return tiny_sets(out, root, **{"sampler__p": 3, "sampler__num_batches": 2, "train__epochs": epochs,
                                   "schedule__kind": "constant", "optim__lr": "3e-4", "train__seed": 7, **extra})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_run_folder_has_everything(mini_market: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(PRESET, tiny(mini_market, run, train__plots="true", train__tensorboard="true"))
    result = train(cfg, quiet=True)
    for name in ("config.yaml", "env.json", "checkpoint.pt", "checkpoint_prev.pt", "best.pt", "model.safetensors",
                 "best.safetensors", "metrics.csv", "history.json", "final_metrics.json", "losses.png", "lr.png",
                 "accuracy.png"):
        assert (run / name).is_file(), name
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {"model", "model_meta", "optimizer", "scheduler", "sampler", "rng", "epoch", "step", "config",
            "best"} <= set(state)
    assert state["epoch"] == 2 and state["config"]["train"]["seed"] == 7
    assert state["best"]["mAP"] == pytest.approx(max(r["mAP"] for r in result.history))
    env = environment_records(run)[-1]
    assert env["seed"] == 7 and env["torch"] == torch.__version__ and "reidkit" in env and "git_commit" in env
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"lr", "loss", "loss/global_ce", "loss/part_triplet", "mAP", "rank1", "images_per_s",
            "data_wait_per_step_ms"} <= set(rows[0])
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    if importlib.util.find_spec("tensorboard") is not None:  # TensorBoard is optional
        assert any((run / "tb").iterdir())
    from reidkit.models.io import load_model

    model = load_model(run / "model.safetensors")
    assert tuple(model.input_size) in ((64, 32), (384, 128))  # (64, 32) once load_model restores the size
    ref = result.model.eval()
    x = torch.rand(2, 3, 64, 32)
    assert torch.allclose(model(x), ref(x), atol=1e-5)
    # a fresh run refuses to overwrite a run folder that holds a checkpoint
    rc = main(["train", "--config", str(PRESET), "--quiet", *[a for s in tiny(mini_market, run) for a in ("--set", s)]])
    assert rc == 2


def test_drop_statistics_are_logged_per_epoch(mini_market: Path, tmp_path: Path) -> None:
    # rho = 1: every step takes the drop path; quantile α = 0.75 erases round(0.25 · 8) = 2 of the 4x2
    # positions of a 64x32 input's layer4 map
    run = tmp_path / "run"
    sets = tiny(mini_market, run, train__tensorboard="true", train__eval_every=0,
                model__options__threshold="quantile", model__options__alpha=0.75, model__options__rho=1.0)
    result = train(load_config(PRESET, sets), quiet=True)
    for row in result.history:
        assert row["drop/erased"] == pytest.approx(2 / 8) and row["drop/whole"] == 0.0
    assert json.loads((run / "history.json").read_text())[-1]["drop/erased"] == pytest.approx(0.25)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [float(r["drop/erased"]) for r in rows] == pytest.approx([0.25, 0.25])
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tb"))
        events.Reload()
        assert [e.value for e in events.Scalars("epoch/drop/erased")] == pytest.approx([0.25, 0.25])
    # the literal α·max rule on these flat maps: every sample it would erase entirely is left whole instead
    flat = train(load_config(PRESET, tiny(mini_market, tmp_path / "flat", train__eval_every=0,
                                          model__options__threshold="max", model__options__alpha=0.0,
                                          model__options__rho=1.0)), quiet=True)
    assert all(r["drop/whole"] == 1.0 and r["drop/erased"] == 0.0 for r in flat.history)


def test_same_seed_same_weights_and_metrics(mini_market: Path, tmp_path: Path) -> None:
    a = train(load_config(PRESET, tiny(mini_market, tmp_path / "a")), quiet=True)
    b = train(load_config(PRESET, tiny(mini_market, tmp_path / "b")), quiet=True)
    wa, wb = weights(tmp_path / "a" / "checkpoint.pt"), weights(tmp_path / "b" / "checkpoint.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.final["mAP"] == b.final["mAP"] and a.final["cmc"] == b.final["cmc"]
    c = train(load_config(PRESET, tiny(mini_market, tmp_path / "c", train__seed=8)), quiet=True)
    wc = weights(tmp_path / "c" / "checkpoint.pt")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())
    assert c.run_dir == tmp_path / "c"


def test_nan_loss_stops_names_the_term_and_resumes(mini_market: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    cfg = load_config(PRESET, tiny(mini_market, run, epochs=3))
    monkeypatch.setenv("REIDKIT_DEBUG_NAN_AT_STEP", "3")  # epoch 2, its second batch
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, quiet=True)
    msg = str(err.value)
    assert "global_ce=nan" in msg and "epoch 2 step 2" in msg and "--resume" in msg and "\n" not in msg
    good = torch.load(run / "checkpoint.pt", weights_only=True)
    assert good["epoch"] == 1 and all(torch.isfinite(v).all() for v in good["model"].values()
                                      if v.is_floating_point())
    # the CLI exits non-zero with the same one line
    rc = main(["train", "--out", str(run), "--resume", "--quiet"])
    assert rc == 1
    monkeypatch.delenv("REIDKIT_DEBUG_NAN_AT_STEP")
    rc = main(["train", "--out", str(run), "--resume", "--quiet"])
    assert rc == 0
    done = torch.load(run / "checkpoint.pt", weights_only=True)
    assert done["epoch"] == 3 and [r["epoch"] for r in done["history"]] == [1, 2, 3]


def test_resume_falls_back_to_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint({"model": {"w": torch.zeros(1)}, "epoch": 1, "step": 0}, tmp_path)
    save_checkpoint({"model": {"w": torch.ones(1)}, "epoch": 2, "step": 0}, tmp_path, best=True)
    assert torch.load(tmp_path / "checkpoint_prev.pt", weights_only=True)["epoch"] == 1
    path, state = find_resume_checkpoint(tmp_path)
    assert path.name == "checkpoint.pt" and state["epoch"] == 2
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated garbage")
    with pytest.warns(UserWarning, match="checkpoint.pt"):
        path, state = find_resume_checkpoint(tmp_path)
    assert path.name == "checkpoint_prev.pt" and state["epoch"] == 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2
    assert find_resume_checkpoint(tmp_path / "empty") is None


def test_per_image_pipeline_and_time_budget(mini_market: Path, tmp_path: Path) -> None:
    cfg = load_config(PRESET, tiny(mini_market, tmp_path / "p", epochs=5, data__pipeline="per_image",
                                   train__max_seconds="0.001", train__eval_every=0))
    result = train(cfg, quiet=True)
    assert result.epochs_run == 1  # the budget stops it after the first epoch, which is then evaluated
    assert math.isfinite(result.history[-1]["loss"]) and "mAP" in result.history[-1]


def test_channels_last_and_amp_request_on_cpu(mini_market: Path, tmp_path: Path) -> None:
    cfg = load_config(PRESET, tiny(mini_market, tmp_path / "cl", epochs=1, train__channels_last="true",
                                   train__amp="bf16", sampler__num_batches=1))
    with pytest.warns(UserWarning, match="train.amp"):
        result = train(cfg, quiet=True)
    assert math.isfinite(result.history[-1]["loss"])
    assert next(result.model.backbone.parameters()).is_contiguous(memory_format=torch.channels_last)
