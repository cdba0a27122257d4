"""Every paper preset trains for one short epoch on a miniature synthetic set (tiny overrides)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_sets

from reidkit.engine.config import load_config
from reidkit.engine.trainer import train

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "reidkit" / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def mini_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reidkit.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), ids=12, cams=2, seed=3, images_per_id_cam=2,
                            size=(64, 32), distractors=4, junk=1, gt_bbox=False)


def tiny(root: Path, out: Path) -> list[str]:
    """Overrides that shrink any preset to seconds on a CPU (on any preset's dataset: Market-1501's layout)."""
    return tiny_sets(out, root, data__dataset="market1501", data__options="{}", data__eval_batch_size=64,
                     sampler__p=3, train__epochs=1)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_runs_one_tiny_epoch(preset: Path, mini_market: Path, tmp_path: Path) -> None:
    cfg = load_config(preset, tiny(mini_market, tmp_path / "run"))
    result = train(cfg, quiet=True)
    row = result.history[-1]
    losses = {k: v for k, v in row.items() if k.startswith("loss")}
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses.values())
    assert result.final["mAP"] >= 0 and len(result.final["cmc"]) > 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["model_meta"]["model"] == cfg.model.name
    assert state["model_meta"]["input_size"] == [64, 32]
    emb = result.model.eval()(torch.zeros(2, 3, 64, 32))
    assert emb.shape == (2, result.model.embedding_dim)
