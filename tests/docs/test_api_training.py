"""docs/api.md's "train from Python" block runs as written, on a tiny synthetic set.

The block is taken from the page (the Python block after the marker comment) and executed in a folder
holding ``data/synthetic``; only ``load_config`` is wrapped, to append overrides that shrink the run to
seconds on a CPU (a ResNet-18 trunk at 64×32, two batches, one epoch) — the block's own code, its config
attribute assignments and what it reads from the result run unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
MARKER = "<!-- the block below is run by tests/docs/test_api_training.py"
TINY = ["model.options.backbone=resnet18", "data.size=[64, 32]", "data.workers=0", "sampler.p=3", "sampler.k=2",
        "sampler.num_batches=2", "train.eval_every=1", "train.progress=false", "train.plots=false",
        "train.tensorboard=false", "schedule.kind=constant"]


def training_block() -> str:
    text = API_MD.read_text(encoding="utf-8")
    assert MARKER in text, "docs/api.md lost its train-from-Python block (or its marker)"
    found = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert found is not None
    return found.group(1)


def test_api_training_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from reidkit.data.synthetic import generate_dataset
    from reidkit.engine import config

    code = training_block()
    assert "train(cfg)" in code and "load_config(" in code
    generate_dataset(tmp_path / "data" / "synthetic", ids=12, cams=2, seed=1, images_per_id_cam=2, size=(64, 32),
                     distractors=2, junk=1, gt_bbox=False)
    monkeypatch.chdir(tmp_path)
    real = config.load_config
    monkeypatch.setattr(config, "load_config", lambda path, overrides=None: real(path, [*(overrides or []), *TINY]))
    code = code.replace("cfg.train.epochs = 20", "cfg.train.epochs = 1")  # the one number shrunk by hand
    namespace: dict[str, object] = {}
    exec(compile(code, str(API_MD), "exec"), namespace)
    result = namespace["result"]
    run = tmp_path / "runs" / "stadb_synthetic"
    assert Path(result.run_dir).resolve() == run.resolve() and result.epochs_run == 1  # type: ignore[attr-defined]
    assert (run / "model.safetensors").is_file() and (run / "final_metrics.json").is_file()
    assert 0 <= result.final["mAP"] <= 100 and namespace["model"] is not None  # type: ignore[attr-defined]
    assert "runs/stadb_synthetic 1 " in capsys.readouterr().out
