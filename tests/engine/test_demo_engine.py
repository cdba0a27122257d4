"""``reidkit demo`` end to end at a miniature scale: the files it promises and their contents."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from reidkit.cli import main


def test_demo_writes_metrics_plots_and_rank_list(tmp_path: Path) -> None:
    out, data = tmp_path / "demo", tmp_path / "data"
    rc = main(["demo", "--out", str(out), "--data", str(data), "--ids", "12", "--epochs", "2", "--quiet",
               "--set", "data.size=[64, 32]", "--set", "sampler.p=3", "--set", "sampler.k=2",
               "--set", "sampler.num_batches=2", "--set", "data.workers=0", "--set", "train.plots=true"])
    assert rc == 0
    assert (data / "Market-1501-v15.09.15" / "bounding_box_train").is_dir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"trained", "untrained", "seconds"}
    for key in ("trained", "untrained"):
        assert 0 <= metrics[key]["mAP"] <= 100 and len(metrics[key]["cmc"]) > 0
        assert metrics[key]["cmc"] == sorted(metrics[key]["cmc"])  # a CMC curve never decreases
    assert metrics["seconds"] > 0 and metrics["epochs"] == 2
    for name in ("cmc.png", "losses.png", "lr.png", "accuracy.png", "ranklist.png", "model.safetensors",
                 "config.yaml", "history.json"):
        assert (out / name).is_file(), name
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    # a second run into the same folder is refused (it would remove the run's checkpoints) ...
    argv = ["demo", "--out", str(out), "--data", str(data), "--ids", "12", "--epochs", "1", "--quiet",
            "--set", "data.size=[64, 32]", "--set", "sampler.p=3", "--set", "sampler.k=2",
            "--set", "sampler.num_batches=1", "--set", "data.workers=0"]
    assert main(argv) == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2
    # ... unless asked for with --force: then it starts afresh
    rc = main([*argv, "--force"])
    assert rc == 0 and json.loads((out / "metrics.json").read_text())["epochs"] == 1
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
