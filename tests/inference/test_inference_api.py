"""The Python API: reidkit.load → Embedder (every input kind), Gallery (search = brute force, save/load)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reidkit
from reidkit.errors import CheckpointError, ReidkitError
from reidkit.inference.gallery import Gallery


def _brute(q: torch.Tensor, g: torch.Tensor, k: int, metric: str = "euclidean") -> torch.Tensor:
    if metric == "cosine":
        d = 1 - torch.nn.functional.normalize(q.double(), dim=1) @ torch.nn.functional.normalize(g.double(), dim=1).T
    else:
        d = torch.cdist(q.double(), g.double())
    return torch.argsort(d, dim=1, stable=True)[:, :k]


def assert_same(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5, msg: str = "") -> None:
    """Equal up to float32 rounding: max |a - b| within ``rel`` of the largest |b| (features are ~1e2)."""
    assert a.shape == b.shape, msg
    diff, scale = float((a - b).abs().max()), float(b.abs().max())
    assert diff <= rel * scale + 1e-6, f"{msg}: max |diff| {diff:.3g} for values up to {scale:.3g}"


def test_import_reidkit_is_light() -> None:
    code = "import sys, reidkit; assert 'torch' not in sys.modules; print(reidkit.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == reidkit.__version__
    assert callable(reidkit.load) and reidkit.Gallery is Gallery


def test_embed_every_input_kind_gives_same_features(stadb_file: Path, gallery_dir: Path, tmp_path: Path) -> None:
    emb = reidkit.load(stadb_file, device="cpu")
    assert emb.input_size == (64, 32) and emb.embedding_dim == 1536 and emb.device.type == "cpu"
    paths = sorted(str(p) for p in gallery_dir.glob("*.jpg"))[:3]
    # pictures of another size than the model's input are resized the same way for every kind
    pils = [Image.open(p).convert("RGB").resize((40, 90)) for p in paths]
    pngs = [str(tmp_path / f"{i}.png") for i in range(3)]
    for im, p in zip(pils, pngs, strict=True):
        im.save(p)
    rgb = [np.asarray(im) for im in pils]
    bgr = [a[..., ::-1].copy() for a in rgb]
    u8 = torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in rgb])
    ref = emb.embed(pngs)
    assert ref.shape == (3, 1536) and ref.dtype == torch.float32
    variants = {
        "pil": emb.embed(pils),
        "rgb": emb.embed(rgb),
        "bgr": emb.embed(bgr, bgr=True),
        "u8": emb.embed(u8),
        "float": emb.embed(u8.float() / 255.0),
        "array batch": emb.embed(np.stack(rgb)),
        "single path": emb.embed(pngs[0]),
        "single pil": emb.embed(pils[0]),
        "single array": emb.embed(rgb[0]),
        "single bgr": emb.embed(bgr[0], bgr=True),
        "path objects": emb.embed([Path(p) for p in pngs]),
    }
    for name, got in variants.items():
        assert_same(got, ref[: got.shape[0]], msg=name)
    # BGR given as RGB is a different picture
    assert not torch.allclose(emb.embed(bgr), ref, atol=1e-3)
    # batching does not change anything; normalize gives unit rows
    assert_same(emb.embed(pngs, batch_size=1), ref)
    norm = emb.embed(pngs, normalize=True)
    torch.testing.assert_close(norm.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    flipped = emb.embed(pngs, flip=True)
    mirrored = emb.embed([im.transpose(Image.FLIP_LEFT_RIGHT) for im in pils])
    assert_same(flipped, (ref + mirrored) / 2)


def test_load_checkpoint_safetensors_and_onnx_agree(stadb_model: torch.nn.Module, stadb_file: Path,
                                                    stadb_onnx: Path, gallery_dir: Path, tmp_path: Path) -> None:
    from reidkit.models.io import model_meta

    meta = model_meta(stadb_model)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": stadb_model.state_dict(), "model_meta": {k: v for k, v in meta.items()
                                                                  if k != "weights_digest"}}, ckpt)
    onnx_path = stadb_onnx
    paths = sorted(str(p) for p in gallery_dir.glob("*.jpg"))[:4]
    a = reidkit.load(stadb_file).embed(paths)
    b = reidkit.load(ckpt).embed(paths)
    o = reidkit.load(onnx_path)
    assert o.input_size == (64, 32) and o.embedding_dim == 1536
    c = o.embed(paths, flip=True)
    assert_same(a, b)
    # on CPU both ways: a GPU's convolutions (TF32) differ from ONNX Runtime's CPU ones by ~1e-3
    assert_same(c, reidkit.load(stadb_file, device="cpu").embed(paths, flip=True), rel=1e-5, msg="onnx")
    assert reidkit.load(stadb_file).meta["weights_digest"] == o.meta["weights_digest"] == \
        reidkit.load(ckpt).meta["weights_digest"]


def test_load_rejects_unknown_model_and_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "model_meta": {"model": "resnet9000", "num_classes": 3}}, bad)
    with pytest.raises(CheckpointError) as err:
        reidkit.load(bad)
    assert "resnet9000" in str(err.value) and "\n" not in str(err.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ReidkitError, match=r"junk\.onnx"):
        reidkit.load(junk)
    with pytest.raises(ReidkitError, match=r"missing\.safetensors"):
        reidkit.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("use_faiss", [False, pytest.param(True, marks=pytest.mark.faiss)])
def test_gallery_search_equals_brute_force_and_round_trips(metric: str, use_faiss: bool, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(300, 24, generator=gen)
    q = torch.randn(7, 24, generator=gen)
    gal = Gallery(metric=metric, use_faiss=use_faiss)
    gal.add(g[:200], ids=[f"img{i}" for i in range(200)], metadata=[{"n": i} for i in range(200)])
    gal.add(g[200:], ids=[f"img{i}" for i in range(200, 300)], metadata=[{"n": i} for i in range(200, 300)])
    assert len(gal) == 300 and gal.embedding_dim == 24
    res = gal.search(q, k=10)
    want = _brute(q, g, 10, metric)
    assert [[r.index for r in row] for row in res] == want.tolist()
    assert [[r.id for r in row] for row in res] == [[f"img{j}" for j in row] for row in want.tolist()]
    assert all(r.metadata["n"] == r.index for row in res for r in row)
    d0 = torch.cdist(q[:1].double(), g[want[0, :1]].double()).item() if metric == "euclidean" else None
    if d0 is not None:
        assert abs(res[0][0].distance - d0) < 1e-4
    gal.save(tmp_path / "idx")
    back = Gallery.load(tmp_path / "idx", use_faiss=use_faiss)
    assert len(back) == 300 and back.metric == metric and back.ids == gal.ids and back.metadata == gal.metadata
    torch.testing.assert_close(back.embeddings, gal.embeddings, atol=0, rtol=0)
    assert [[(r.id, round(r.distance, 5)) for r in row] for row in back.search(q, k=10)] == \
        [[(r.id, round(r.distance, 5)) for r in row] for row in res]
    # a single vector is one query; k larger than the gallery returns everything
    assert len(back.search(q[0], k=1000)) == 1 and len(back.search(q[0], k=1000)[0]) == 300


def test_gallery_save_replaces_atomically_and_checks(tmp_path: Path) -> None:
    gal = Gallery()
    gal.add(torch.randn(5, 4))
    gal.save(tmp_path / "idx")
    first = json.loads((tmp_path / "idx" / "manifest.json").read_text())["segments"]
    gal.add(torch.randn(3, 4))
    gal.save(tmp_path / "idx")
    files = sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.startswith("."))  # not the lock
    segments = json.loads((tmp_path / "idx" / "manifest.json").read_text())["segments"]
    # one generation: its segment (5 rows and 3 merged: one file of 8) and the manifest; an exact index has no
    # FAISS file
    assert [s["rows"] for s in first] == [5] and [s["rows"] for s in segments] == [8]
    assert first[0]["file"] not in files and len(Gallery.load(tmp_path / "idx")) == 8
    assert files == sorted([segments[0]["file"], "manifest.json"])
    with pytest.raises(ReidkitError, match="width"):
        gal.add(torch.randn(2, 5))
    with pytest.raises(ReidkitError, match="NaN"):
        gal.add(torch.tensor([[float("nan"), 0, 0, 0]]))
    with pytest.raises(ReidkitError, match="NaN"):
        gal.search(torch.tensor([[float("nan"), 0, 0, 0]]), k=1)
    with pytest.raises(ReidkitError, match="manifest"):
        Gallery.load(tmp_path)
    with pytest.raises(ReidkitError, match="metric"):
        Gallery(metric="manhattan")
