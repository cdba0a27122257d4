"""The Embedder's one batching loop: equals a direct forward, flip averaging, batch-size independence, eval
mode restored, bad files skipped; the same loop over ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reidkit.data.augment import normalize
from reidkit.errors import ReidkitError
from reidkit.inference import Embedder


class Dummy(nn.Module):
    """(N, 3, H, W) -> (N, 6): per-channel means of the left and right halves (not flip-invariant)."""

    input_size = (16, 8)
    embedding_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.seen_training: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        w = x.shape[-1] // 2
        return self.scale * torch.cat([x[..., :w].mean((2, 3)), x[..., w:].mean((2, 3))], dim=1)


def embed_uint8(model: nn.Module, u8: torch.Tensor, batch_size: int = 64, flip: bool = False) -> torch.Tensor:
    return Embedder(model, "cpu").embed_uint8(u8, batch_size, flip)


def _u8(n: int, h: int = 16, w: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_matches_direct_forward_any_batch_size() -> None:
    m = Dummy()
    u8 = _u8(10)
    ref = m(normalize(u8)).detach()
    for bs in (1, 3, 10, 64):
        f = embed_uint8(m, u8, batch_size=bs)
        assert f.dtype == torch.float32 and f.device.type == "cpu" and tuple(f.shape) == (10, 6)
        assert torch.allclose(f, ref, atol=1e-6)


def test_flip_is_mean_of_image_and_mirror() -> None:
    m = Dummy()
    u8 = _u8(4)
    x = normalize(u8)
    expected = (m(x) + m(x.flip(-1))).detach() / 2
    got = embed_uint8(m, u8, flip=True)
    assert torch.allclose(got, expected, atol=1e-6)
    # hand check: left/right halves swap under the mirror, so both halves average to the whole-image mean
    whole = 2 * x.mean((2, 3))
    assert torch.allclose(got[:, :3], whole, atol=1e-5) and torch.allclose(got[:, 3:], whole, atol=1e-5)


def test_eval_mode_no_grad_and_mode_restored() -> None:
    m = Dummy().train()
    f = embed_uint8(m, _u8(2))
    assert m.seen_training == [False] and m.training and not f.requires_grad


def test_resizes_to_model_input_size() -> None:
    m = Dummy()
    f = embed_uint8(m, _u8(3, 32, 16))
    assert tuple(f.shape) == (3, 6)
    assert tuple(embed_uint8(m, _u8(0)).shape) == (0, 6)


def test_wrong_inputs() -> None:
    with pytest.raises(ReidkitError, match="uint8"):
        embed_uint8(Dummy(), torch.zeros(1, 3, 16, 8))

    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> dict:
            return {"x": x}

    Bad.input_size = (16, 8)  # type: ignore[attr-defined]
    with pytest.raises(ReidkitError, match=r"\(N, D\)"):
        embed_uint8(Bad(), _u8(1))


def test_extract_features_skips_unreadable(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (tmp_path / "x.jpg").write_bytes(b"")
    paths.insert(1, str(tmp_path / "x.jpg"))
    m = Dummy()
    feats, kept, bad = Embedder(m, "cpu").embed_paths(paths, batch_size=2, flip=True, workers=2)
    assert bad == [paths[1]] and kept == [paths[0], paths[2], paths[3]] and tuple(feats.shape) == (3, 6)
    direct = torch.stack([embed_uint8(m, torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)[None], flip=True)[0]
                          for p in (paths[0], paths[2], paths[3])])
    assert torch.allclose(feats, direct, atol=1e-6)


def test_bgr_reverses_arrays_and_tensors_only(tmp_path: Path) -> None:
    """The model takes RGB: ``bgr=True`` turns a BGR array or tensor (OpenCV's order) into it; files and PIL
    images are RGB whatever ``bgr`` says. The Dummy's features are per-channel means, so a swap shows."""
    emb = Embedder(Dummy(), "cpu")
    rgb = np.zeros((16, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 0  # red, some green, no blue
    Image.fromarray(rgb).save(tmp_path / "a.png")
    ref = emb.embed(rgb)
    assert not torch.allclose(ref, emb.embed(rgb[..., ::-1].copy()))  # a BGR array read as RGB is wrong
    assert torch.allclose(ref, emb.embed(rgb[..., ::-1].copy(), bgr=True))
    assert torch.allclose(ref, emb.embed(torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)[None], bgr=True))
    for picture in (str(tmp_path / "a.png"), Image.open(tmp_path / "a.png")):
        assert torch.allclose(ref, emb.embed(picture)) and torch.allclose(ref, emb.embed(picture, bgr=True))


def test_embed_docstring_says_what_bgr_does() -> None:
    """The docstring's OpenCV example passes ``bgr=True`` (cv2.imread gives BGR, which the test above shows
    needs it) and the text says which inputs ``bgr`` reverses."""
    doc = Embedder.embed.__doc__ or ""
    calls = [line for line in doc.splitlines() if "cv2.imread" in line and ">>>" in line]
    assert calls and all("bgr=True" in line for line in calls)
    assert "files and PIL images are always decoded to RGB" in " ".join(doc.split())
