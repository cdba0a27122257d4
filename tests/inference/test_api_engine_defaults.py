"""``reidkit.load(...).embed(...)`` runs with the settings ``reidkit extract`` uses on the same crops: the same
engine (PyTorch for a few images, ONNX Runtime for many or once exported) and the same CPU threads."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import reidkit
from reidkit.cli import main
from reidkit.inference.engines import AUTO_ONNX_MIN_IMAGES

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
FOREIGN_THREADS = 3  # what torch was left at before the call: neither side may keep it


def settings(emb: Any) -> tuple[str, int, int | None]:
    """(engine kind, torch intra-op threads, ONNX Runtime intra-op threads or None)."""
    ort = emb.engine.session.get_session_options().intra_op_num_threads if emb.engine.kind == "onnx" else None
    return emb.engine.kind, torch.get_num_threads(), ort


@pytest.fixture()
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh ONNX cache and a thread policy (2) other than torch's current count; restored after."""
    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cli_settings(monkeypatch: pytest.MonkeyPatch, model: Path, images: Path, out: Path) -> tuple[str, int, int | None]:
    """The settings ``reidkit extract`` embedded with."""
    import reidkit.commands.extract as extract

    used: list[Any] = []
    real = extract.load_embedder
    monkeypatch.setattr(extract, "load_embedder", lambda args: used.append(real(args)) or used[-1])
    torch.set_num_threads(FOREIGN_THREADS)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["extract", "--checkpoint", str(model), "--images", str(images), "--out", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    return settings(used[0])


def api_settings(model: Path, images: Path) -> tuple[str, int, int | None]:
    """The settings of ``reidkit.load(model).embed(the same files)``."""
    torch.set_num_threads(FOREIGN_THREADS)
    emb = reidkit.load(model, device="cpu")
    with contextlib.redirect_stderr(io.StringIO()):
        feats = emb.embed(sorted(str(p) for p in images.glob("*.jpg")))
    assert feats.shape[0] == len(list(images.glob("*.jpg")))
    return settings(emb)


def test_api_uses_the_cli_threads_and_engine_on_a_few_crops(stadb_file: Path, gallery_dir: Path, tmp_path: Path,
                                                            policy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = cli_settings(monkeypatch, stadb_file, gallery_dir, tmp_path / "f.safetensors")
    api = api_settings(stadb_file, gallery_dir)
    assert cli == ("torch", 2, None)  # a few crops, nothing exported yet: PyTorch with the policy's threads
    assert api == cli


@pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed (pip install 'reidkit[onnx]')")
def test_api_uses_the_cli_threads_and_engine_on_many_crops(stadb_file: Path, gallery_dir: Path, tmp_path: Path,
                                                           policy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    crops = tmp_path / "crops"
    crops.mkdir()
    first = sorted(gallery_dir.glob("*.jpg"))[0]
    for i in range(AUTO_ONNX_MIN_IMAGES):
        shutil.copy(first, crops / f"{i:04d}.jpg")
    cli = cli_settings(monkeypatch, stadb_file, crops, tmp_path / "f.safetensors")
    assert cli == ("onnx", 2, 2)  # many crops: ONNX Runtime, exported once into the cache, the same threads
    assert api_settings(stadb_file, crops) == cli
    assert api_settings(stadb_file, gallery_dir) == cli  # exported before: ONNX Runtime for a few crops too


def test_api_switches_to_onnx_when_a_later_call_embeds_many(stadb_file: Path, gallery_dir: Path,
                                                            policy: None) -> None:
    if not HAS_ORT:
        pytest.skip("onnx/onnxruntime not installed")
    emb = reidkit.load(stadb_file, device="cpu")
    emb.embed(str(sorted(gallery_dir.glob("*.jpg"))[0]))
    assert emb.engine.kind == "torch" and emb.threads == 2
    with contextlib.redirect_stderr(io.StringIO()):
        emb.embed(torch.zeros(AUTO_ONNX_MIN_IMAGES, 3, 64, 32, dtype=torch.uint8))
    assert emb.engine.kind == "onnx"


def test_load_takes_the_cli_engine_and_threads(stadb_file: Path, policy: None) -> None:
    emb = reidkit.load(stadb_file, device="cpu", engine="torch", threads=1)
    emb.embed(torch.zeros(1, 3, 64, 32, dtype=torch.uint8))
    assert (emb.engine.kind, emb.threads, torch.get_num_threads()) == ("torch", 1, 1)
    with pytest.raises(reidkit.errors.ReidkitError, match="engine"):
        reidkit.load(stadb_file, engine="tensorrt")
