"""The Python API's picture inputs: an empty picture (a PIL image, array or tensor with no pixels) and
non-finite pixels (float arrays and tensors, float TIFF files) are refused by ``Embedder.embed`` with one line
naming the argument or file, instead of being embedded as a row of made-up values. A batch of zero pictures
(an empty list, an (0, 3, H, W) tensor) is zero rows, as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.errors import ReidkitError

SIZE = (64, 32)


@pytest.fixture(scope="module")
def emb():
    from reidkit.inference import Embedder
    from reidkit.models import build

    torch.manual_seed(0)
    model = build("baseline", 4, backbone="resnet18", pretrained=None)
    model.input_size = SIZE
    return Embedder(model.eval(), device="cpu")


@pytest.mark.parametrize(("label", "make", "named"), [
    ("PIL 0×0", lambda: Image.new("RGB", (0, 0)), "images[0]: image has no pixels"),
    ("PIL 0×5", lambda: Image.new("L", (0, 5)), "images[0]: image has no pixels"),
    ("array 0×0×3", lambda: np.zeros((0, 0, 3), np.uint8), "images[0]: image has no pixels"),
    ("array 0×5×3", lambda: np.zeros((0, 5, 3), np.uint8), "images[0]: image has no pixels"),
    ("array 0×5 grey", lambda: np.zeros((0, 5), np.float32), "images[0]: image has no pixels"),
    ("second of a list", lambda: [np.zeros((8, 4, 3), np.uint8), np.zeros((4, 0, 3), np.uint8)],
     "images[1]: image has no pixels"),
    ("tensor 2×3×0×0", lambda: torch.zeros(2, 3, 0, 0), "image tensor of shape (2, 3, 0, 0): image has no pixels"),
    ("uint8 tensor 1×3×5×0", lambda: torch.zeros(1, 3, 5, 0, dtype=torch.uint8), "image has no pixels"),
    ("array with NaN", lambda: np.full((8, 4, 3), np.nan, np.float32), "images[0]: NaN or infinite pixel values"),
    ("array with inf", lambda: np.where(np.eye(8, 4)[..., None] > 0, np.inf, 0.5).repeat(3, -1),
     "images[0]: NaN or infinite pixel values"),
    ("tensor with NaN", lambda: torch.full((1, 3, 64, 32), float("nan")), "image tensor: NaN or infinite"),
    ("tensor with -inf", lambda: torch.zeros(1, 3, 8, 4).index_fill_(2, torch.tensor([3]), float("-inf")),
     "image tensor: NaN or infinite"),
])
def test_empty_or_non_finite_pictures_are_refused(emb, label, make, named):
    with pytest.raises(ReidkitError) as info:
        emb.embed(make())
    msg = str(info.value)
    assert named in msg and "\n" not in msg, (label, msg)


def test_float_tiff_with_nan_is_refused_naming_the_file(emb, tmp_path):
    p = tmp_path / "nan.tif"
    arr = np.ones((16, 8), np.float32)
    arr[3, 3] = np.nan
    Image.fromarray(arr).save(p)
    with pytest.raises(ReidkitError, match="NaN or infinite pixel values") as info:
        emb.embed(str(p))
    assert str(p) in str(info.value)
    feats, kept, bad = emb.embed_paths([str(p)])
    assert kept == [] and bad == [str(p)] and feats.shape[0] == 0


def test_zero_pictures_are_zero_rows_and_good_pictures_still_embed(emb):
    assert tuple(emb.embed([]).shape) == (0, emb.embedding_dim)
    assert tuple(emb.embed(torch.zeros(0, 3, *SIZE)).shape) == (0, emb.embedding_dim)
    ok = emb.embed([np.full((8, 4, 3), 0.5, np.float32), Image.new("I;16", (4, 8), 300)])
    assert ok.shape == (2, emb.embedding_dim) and torch.isfinite(ok).all()
