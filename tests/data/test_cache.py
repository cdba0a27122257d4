"""uint8 image cache: exact pixels, PIL-bilinear resize, bad files dropped, thread/process pools agree, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.data.cache import ImageCache, decode_images, kept_indices
from reidkit.errors import ReidkitError


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[np.ndarray]]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths, arrays = [], []
    for i in range(6):
        a = rng.integers(0, 256, size=(8 + i, 4 + i, 3), dtype=np.uint8)
        p = root / f"{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
        arrays.append(a)
    (root / "bad.jpg").write_bytes(b"not an image")
    gray = np.full((8, 4), 77, dtype=np.uint8)
    Image.fromarray(gray, "L").save(root / "gray.png")
    paths.insert(2, str(root / "bad.jpg"))
    arrays.insert(2, None)
    paths.append(str(root / "gray.png"))
    arrays.append(np.repeat(gray[..., None], 3, axis=2))
    paths.append(str(root / "missing.png"))
    arrays.append(None)
    return paths, arrays


def test_exact_pixels_and_bad_rows(files: tuple[list[str], list]) -> None:
    paths, arrays = files
    imgs, bad = decode_images(paths, (8, 4))
    assert bad == [paths[2], paths[-1]]
    keep = kept_indices(paths, bad)
    assert keep == [0, 1, 3, 4, 5, 6, 7]
    assert imgs.dtype == torch.uint8 and tuple(imgs.shape) == (7, 3, 8, 4)
    # the first image is already 8×4: exact; others equal PIL bilinear resizing
    for row, i in enumerate(keep):
        ref = Image.fromarray(arrays[i]).resize((4, 8), Image.BILINEAR)
        assert np.array_equal(imgs[row].permute(1, 2, 0).numpy(), np.asarray(ref))
    assert np.array_equal(imgs[0].permute(1, 2, 0).numpy(), arrays[0])
    assert int(imgs[-1].min()) == int(imgs[-1].max()) == 77  # grey converted to RGB


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_pools_agree(files: tuple[list[str], list], pool: str) -> None:
    paths, _ = files
    ref, bad_ref = decode_images(paths, (10, 6))
    got, bad = decode_images(paths, (10, 6), workers=2, pool=pool)
    assert bad == bad_ref and torch.equal(got, ref)


def test_empty_and_errors(files: tuple[list[str], list]) -> None:
    imgs, bad = decode_images([], (4, 2))
    assert tuple(imgs.shape) == (0, 3, 4, 2) and bad == []
    with pytest.raises(ReidkitError):
        decode_images(files[0], (0, 4))
    with pytest.raises(ReidkitError):
        decode_images(files[0], (4, 4), pool="gpu")


def test_image_cache_batch(files: tuple[list[str], list]) -> None:
    cache, bad = ImageCache.from_paths(files[0], (8, 4))
    assert len(bad) == 2 and len(cache) == 7 and cache.size == (8, 4)
    b = cache.batch([3, 0, 3], device="cpu")
    assert b.dtype == torch.uint8 and torch.equal(b, cache.images[[3, 0, 3]])
    assert torch.equal(cache.batch(torch.tensor([1])), cache.images[1:2])
    with pytest.raises(ReidkitError, match="out of range"):
        cache.batch([7])
    with pytest.raises(ReidkitError, match="uint8"):
        ImageCache(torch.zeros(2, 3, 4, 4))
