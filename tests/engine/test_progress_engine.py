"""Progress in a log: with the output redirected (not a terminal) no tqdm frames (carriage returns) are written,
only plain lines: one per tenth of the work (a chunk of files when extracting), none per step in training, where
the epoch line is the progress. A terminal still gets the bar."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import tiny_sets
from torch import nn

from reidkit.data.cache import decode_images
from reidkit.engine.config import load_config
from reidkit.engine.presets import preset_path
from reidkit.engine.trainer import train
from reidkit.inference import Embedder
from reidkit.utils.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Means(nn.Module):
    input_size = (8, 4)
    embedding_dim = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def pictures(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((8, 4, 3), 10 * i, np.uint8)).save(folder / f"{i}.png")
    return [str(folder / f"{i}.png") for i in range(n)]


def test_a_log_gets_one_line_per_tenth() -> None:
    log = io.StringIO()
    with progress(25, "decode", "img", stream=log) as bar:
        for _ in range(25):
            bar.update(1)
    # 25 units: a tenth is 2.5, so lines after 3, 5, 8, 10, 13, 15, 18, 20, 23 and 25
    assert log.getvalue().splitlines() == [f"decode: {n}/25 img" for n in (3, 5, 8, 10, 13, 15, 18, 20, 23, 25)]


def test_no_lines_when_the_caller_prints_its_own_or_when_disabled() -> None:
    for kwargs in ({"lines": False}, {"enabled": False}):
        log = io.StringIO()
        bar = progress(4, "epoch 1/2", "batch", stream=log, **kwargs)
        bar.set_postfix(loss="1.0")
        bar.update(4)
        bar.close()
        assert log.getvalue() == ""


def test_a_terminal_gets_the_bar() -> None:
    term = Terminal()
    with progress(3, "embed", "img", stream=term) as bar:
        bar.update(3)
    assert "\r" in term.getvalue() and "embed" in term.getvalue() and "3/3" in term.getvalue()


def test_decoding_into_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = pictures(tmp_path / "p", 4)
    decode_images(paths, (8, 4), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [f"decode: {n}/4 img" for n in (1, 2, 3, 4)]


def test_extraction_into_a_log_is_a_line_per_chunk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = pictures(tmp_path / "p", 10)
    feats, kept, bad = Embedder(Means(), "cpu").embed_paths(paths, batch_size=2, progress=True, chunk=4)
    assert feats.shape == (10, 3) and kept == paths and bad == []
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["embed: 4/10 img", "embed: 8/10 img", "embed: 10/10 img"]


def test_training_into_a_log_prints_the_epoch_lines_only(synth_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sets = tiny_sets(tmp_path / "run", synth_root, train__progress="true", sampler__num_batches=3)
    train(load_config(preset_path("stadb_market1501"), sets))
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert not [line for line in captured.err.splitlines() if line.startswith("epoch")]  # no step frames
    epochs = [line.split()[1] for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert epochs == ["1/2", "2/2"]
    decoded = [line for line in captured.err.splitlines() if line.startswith("decode: ")]
    assert 1 <= len(decoded) <= 10 and decoded[-1].endswith(" img")  # the training images' cache
