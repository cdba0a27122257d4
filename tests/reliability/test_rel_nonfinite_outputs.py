"""Finite weights that make the network's output NaN (a BatchNorm running variance of −1: √(−1 + ε) is NaN)
are refused: at loading (BatchNorm statistics checked), in every embedding path (``Embedder.embed_uint8``,
the one loop behind ``embed``, ``embed_paths``, ``extract``, ``index``, ``eval``), and in the export's parity
check (NaN compared with NaN used to read "max |diff| 0 (ok)")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.errors import CheckpointError, ReidkitError

SIZE = (64, 32)


def _bad_bn_model() -> torch.nn.Module:
    """The reliability tests' tiny ResNet-18 baseline with one BatchNorm channel's running_var set to −1."""
    from reidkit.models import build

    torch.manual_seed(0)
    model = build("baseline", 4, backbone="resnet18", pretrained=None)
    model.input_size = SIZE
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var[0] = -1.0
    return model.eval()


@pytest.fixture(scope="module")
def bad_bn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reidkit.models.io import save_weights

    return save_weights(_bad_bn_model(), tmp_path_factory.mktemp("bad_bn") / "model.safetensors")


def test_the_planted_statistics_really_give_nan(bad_bn_file):
    """Positive control: loaded without the check, the network's embeddings are NaN."""
    from reidkit.models.io import load_model

    with torch.no_grad():
        out = load_model(bad_bn_file)(torch.rand(2, 3, *SIZE))
    assert torch.isnan(out).any()


def test_loading_refuses_negative_running_var(bad_bn_file):
    import reidkit
    from reidkit.inference.modelfile import load_model_file

    for load in (load_model_file, lambda p: reidkit.load(p, device="cpu")):
        with pytest.raises(CheckpointError, match=r"running_var holds negative values") as info:
            load(bad_bn_file)
        assert str(bad_bn_file) in str(info.value) and "\n" not in str(info.value)


def test_loading_refuses_non_finite_statistics_too(tmp_path):
    """running_mean/var are buffers: the weight check already refuses NaN there; the statistics check names
    the layer also for a model built in memory."""
    from reidkit.inference.modelfile import check_norm_statistics

    model = _bad_bn_model()
    with pytest.raises(CheckpointError, match=r"^m\.pt: .*running_var holds negative"):
        check_norm_statistics(model, "m.pt")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var.fill_(1.0)
        bn.running_mean[0] = float("inf")
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        check_norm_statistics(model, "m.pt")


def test_embed_refuses_nan_embeddings():
    """A model in memory (no file check) whose output is NaN: embed, embed_uint8 and embed_paths refuse
    with one line naming the model's source."""
    from reidkit.inference import Embedder

    emb = Embedder(_bad_bn_model(), device="cpu")
    emb.source = "weights/model.safetensors"
    for call in (lambda: emb.embed(np.zeros((64, 32, 3), np.uint8)),
                 lambda: emb.embed_uint8(torch.zeros(3, 3, *SIZE, dtype=torch.uint8), batch_size=2)):
        with pytest.raises(CheckpointError, match="NaN or infinite embeddings") as info:
            call()
        assert str(info.value).startswith("weights/model.safetensors: ")


def test_extract_refuses_the_file_and_writes_nothing(bad_bn_file, synth_root, tmp_path, cli_inproc):
    out = tmp_path / "f.safetensors"
    res = cli_inproc(["extract", "--checkpoint", bad_bn_file, "--images", synth_root / "query", "--out", out,
                      "--device", "cpu", "--no-progress", "--engine", "torch"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert str(bad_bn_file) in res.error_lines()[0] and "running_var" in res.error_lines()[0]
    assert not out.exists()


def test_export_parity_check_fails_on_nan(tmp_path):
    """export_onnx of a model whose outputs are NaN: refused (whatever ``check``), naming the source, and the
    file is not written."""
    pytest.importorskip("onnxruntime")
    from reidkit.inference import export_onnx

    out = tmp_path / "m.onnx"
    for check in (True, False):
        with pytest.raises(ReidkitError, match="PyTorch gives NaN or infinite embeddings") as info:
            export_onnx(_bad_bn_model(), out, check=check, source="weights/model.safetensors")
        assert str(info.value).startswith("weights/model.safetensors: ")
        assert not out.exists()


def test_export_cli_refuses_the_file(bad_bn_file, tmp_path, cli_inproc):
    out = tmp_path / "m.onnx"
    res = cli_inproc(["export", "--checkpoint", bad_bn_file, "--out", out])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert str(bad_bn_file) in res.error_lines()[0] and "max |diff|" not in res.stdout
    assert not out.exists()
