"""The per-image PIL pipeline agrees with the batched one where their random choices coincide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data.augment import AugmentConfig, normalize
from reidkit.data.cache import decode_images
from reidkit.data.per_image import PerImageDataset, make_loader
from reidkit.data.sampler import PKSampler
from reidkit.errors import ConfigError


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("pi")
    rng = np.random.default_rng(1)
    out = []
    for i in range(8):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 20, 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def test_eval_mode_matches_cache_and_normalize(paths: list[str]) -> None:
    cfg = AugmentConfig(pipeline="stadb", size=(32, 16))
    ds = PerImageDataset(paths, list(range(8)), cfg, train=False)
    u8, bad = decode_images(paths, (32, 16))
    assert not bad
    ref = normalize(u8)
    for i in range(8):
        x, pid = ds[i]
        assert pid == i and torch.allclose(x, ref[i], atol=1e-6)


def test_forced_flip_matches_batched_flip(paths: list[str]) -> None:
    cfg = AugmentConfig(pipeline="stadb", size=(40, 20), flip_p=1.0, erase_p=0.0)
    ds = PerImageDataset(paths, [0] * 8, cfg, train=True)
    u8, _ = decode_images(paths, (40, 20))
    assert torch.allclose(ds[3][0], normalize(u8[3:4].flip(-1))[0], atol=1e-6)


def test_per_image_cutout_cuts_one_clipped_square_of_mean_pixels(paths: list[str]) -> None:
    """With cutout_p 1 every image gets one rectangle of exact zeros (the mean pixel), at most the square's side."""
    torch.manual_seed(0)
    cfg = AugmentConfig(pipeline="stadb", size=(40, 20), flip_p=0.0, erase_p=0.0, cutout_p=1.0, cutout_size=0.25)
    ds = PerImageDataset(paths, [0] * 8, cfg, train=True)
    u8, _ = decode_images(paths, (40, 20))
    for i in range(8):
        x, ref = ds[i][0], normalize(u8[i:i + 1])[0]
        cut = (x == 0).all(dim=0) & (ref != 0).any(dim=0)
        rows, cols = cut.any(dim=1).nonzero().flatten(), cut.any(dim=0).nonzero().flatten()
        assert 0 < len(rows) <= 10 and 0 < len(cols) <= 10
        box = torch.zeros_like(cut)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(cut | ((x == 0).all(dim=0) & box), box)  # one solid rectangle
        assert torch.allclose(x[:, ~box], ref[:, ~box], atol=1e-6)


@pytest.mark.parametrize("pipeline", ["stadb", "mancs"])
def test_loader_batches(paths: list[str], pipeline: str) -> None:
    cfg = AugmentConfig.for_pipeline(pipeline, size=(32, 16))
    pids = [i // 2 for i in range(8)]
    loader = make_loader(paths, pids, cfg, batch_size=4, workers=0)
    x, y = next(iter(loader))
    assert tuple(x.shape) == (4, 3, 32, 16) and x.dtype == torch.float32 and tuple(y.shape) == (4,)
    pk = make_loader(paths, pids, cfg, batch_sampler=PKSampler(pids, p=2, k=2))
    batches = list(pk)
    assert len(batches) == 2
    for _x, y in batches:
        assert y[0] == y[1] and y[2] == y[3] and y[0] != y[2]


def test_length_mismatch(paths: list[str]) -> None:
    with pytest.raises(ConfigError, match="one pid per path"):
        PerImageDataset(paths, [0], AugmentConfig())


def test_path_type(paths: list[str]) -> None:
    assert isinstance(PerImageDataset([Path(p) for p in paths], [0] * 8, AugmentConfig()).paths[0], str)
