"""Fixtures for the inference tests: a tiny synthetic dataset and briefly trained tiny models.

"Briefly trained" = three SGD steps (:func:`reidkit.engine.step.train_step`, the trainer's step) on the
synthetic train split, with a ResNet-18 backbone at a 64×32 input so every test stays fast on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SIZE = (64, 32)


def train_briefly(name: str, root: Path, seed: int = 0, steps: int = 3, **options: object) -> torch.nn.Module:
    """A ``name`` model (resnet18, 64×32 input) after ``steps`` SGD steps of its losses; eval mode."""
    from reidkit.data.augment import normalize
    from reidkit.data.cache import decode_images
    from reidkit.data.synthetic import parse_name
    from reidkit.engine.step import train_step
    from reidkit.models import build

    paths = sorted(str(p) for p in (root / "bounding_box_train").glob("*.jpg"))
    pids = [parse_name(Path(p).name)[0] for p in paths]
    uniq = sorted(set(pids))
    labels = torch.tensor([uniq.index(p) for p in pids])
    u8, bad = decode_images(paths, SIZE)
    assert not bad
    torch.manual_seed(seed)
    model = build(name, len(uniq), backbone="resnet18", **options)
    model.input_size = SIZE
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    x = normalize(u8)
    for step in range(steps):
        train_step(model, model, opt, x, labels, 0, step=step)
    return model.eval()


@pytest.fixture(scope="session")
def train_model() -> object:
    """:func:`train_briefly`, for tests that need another model."""
    return train_briefly


@pytest.fixture(scope="session")
def stadb_model(synth_root: Path) -> torch.nn.Module:
    """A briefly trained STADB (resnet18, 64×32)."""
    return train_briefly("stadb", synth_root)


@pytest.fixture(scope="session")
def stadb_file(stadb_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.safetensors`` of :func:`stadb_model`."""
    from reidkit.models import save_weights

    return save_weights(stadb_model, tmp_path_factory.mktemp("stadb") / "model.safetensors")


@pytest.fixture(scope="session")
def other_file(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another STADB (different seed, so different weights): an index must refuse it."""
    from reidkit.models import save_weights

    model = train_briefly("stadb", synth_root, seed=1, steps=1)
    return save_weights(model, tmp_path_factory.mktemp("other") / "model.safetensors")


@pytest.fixture()
def gallery_dir(synth_root: Path) -> Path:
    """The synthetic gallery folder (``bounding_box_test``)."""
    return synth_root / "bounding_box_test"


@pytest.fixture(scope="session")
def stadb_onnx(stadb_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``reidkit export`` of :func:`stadb_file` (checks the printed parity line)."""
    import contextlib
    import io

    from reidkit.cli import main

    out = tmp_path_factory.mktemp("onnx") / "stadb.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["export", "--checkpoint", str(stadb_file), "--out", str(out), "--opset", "17"]) == 0
    line = buf.getvalue()
    assert "max |diff|" in line and "(ok)" in line, line
    return out
