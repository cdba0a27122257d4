"""ONNX export: parity with PyTorch for every model (eval mode), dynamic batch, metadata, CLI, extract --onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.cli import main
from reidkit.inference.export import export_onnx, read_onnx_meta
from reidkit.inference.features import read_folder_features


@pytest.mark.parametrize("name", ["stadb", "bdb", "baseline", "mancs"])
def test_onnx_matches_pytorch(name: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from reidkit.models import build

    torch.manual_seed(0)
    model = build(name, 5, backbone="resnet18").eval()
    model.input_size = (64, 32)
    out = tmp_path / f"{name}.onnx"
    report = export_onnx(model, out, batch_sizes=(1, 3))
    assert report.ok and report.max_scaled_diff < 1e-4 and report.normalized_diff < 1e-4
    meta = read_onnx_meta(out)
    assert meta["model"] == name and meta["input_size"] == [64, 32]
    assert meta["embedding_dim"] == model.embedding_dim
    # dynamic batch: a batch size the export never traced (it traced 2)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (5, model.embedding_dim)
    assert np.abs(got - ref).max() / max(1.0, np.abs(ref).max()) < 1e-4
    assert model.training is False


def test_export_cli_and_extract_onnx(stadb_file: Path, stadb_onnx: Path, gallery_dir: Path, tmp_path: Path) -> None:
    onnx_path = stadb_onnx
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--images", str(gallery_dir), "--out", str(a),
                 "--no-progress", "--device", "cpu"]) == 0
    assert main(["extract", "--onnx", str(onnx_path), "--images", str(gallery_dir), "--out", str(b),
                 "--no-progress", "--device", "cpu"]) == 0
    fa, fb = read_folder_features(a), read_folder_features(b)
    assert fa.paths == fb.paths and fa.pids.tolist() == fb.pids.tolist()
    scale = float(fa.feats.abs().max())
    assert float((fa.feats - fb.feats).abs().max()) < 1e-5 * scale
    assert fb.model_meta is not None and fb.model_meta["weights_digest"] == fa.model_meta["weights_digest"]


def test_export_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    out = tmp_path / "x.onnx"
    assert main(["export", "--checkpoint", str(junk), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reidkit: error:") and "junk.pt" in err and len(err.splitlines()) == 1
    assert not out.exists()
