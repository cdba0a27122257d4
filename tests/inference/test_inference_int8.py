"""INT8 export (``reidkit export --int8``, ``reidkit.inference.quantize``): close to float32, loadable
everywhere an ONNX file is, its description kept, bad calibration folders refused in one line, nothing
half-written.

The model is the briefly trained STADB of ``conftest.py`` (ResNet-18, 64×32, three SGD steps: not
random-init weights, not a converged model either). The bound asserted, a cosine of at least 0.98 between
the INT8 and float32 embeddings of every held-out image, is the one ``reidkit export`` enforces
(``DEFAULT_MIN_COSINE``); what it costs in retrieval on real images is measured by
``benchmarks/bench_int8.py``, not here.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.cli import main
from reidkit.inference.export import read_onnx_meta
from reidkit.inference.quantize import (
    DEFAULT_MIN_COSINE,
    MIN_CHECK_IMAGES,
    calibration_split,
    int8_path,
    quantize_onnx,
    untie_initializers,
)

BOUND = DEFAULT_MIN_COSINE


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _ops(path: Path) -> collections.Counter[str]:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def crops(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the synthetic set's train and gallery crops (35: 16 calibrate, 19 check)."""
    out = tmp_path_factory.mktemp("crops")
    for split in ("bounding_box_train", "bounding_box_test"):
        for p in sorted((synth_root / split).glob("*.jpg")):
            shutil.copy(p, out / f"{split[13:]}_{p.name}")
    return out


@pytest.fixture(scope="module")
def exported(stadb_file: Path, crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``reidkit export --int8 --calibrate`` of the briefly trained STADB: (float32 file, INT8 file, output)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("int8") / "stadb.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["export", "--checkpoint", str(stadb_file), "--out", str(out), "--int8",
                     "--calibrate", str(crops), "--calibration-images", "16"]) == 0
    return out, out.with_name("stadb.int8.onnx"), buf.getvalue()


def test_int8_path() -> None:
    assert int8_path("a/model.onnx") == Path("a/model.int8.onnx")
    assert int8_path("stadb.ONNX") == Path("stadb.int8.onnx")
    assert int8_path("model") == Path("model.int8.onnx")


def test_calibration_split_is_disjoint_and_seeded(crops: Path) -> None:
    paths = sorted(str(p) for p in crops.iterdir())
    calib, check = calibration_split(crops, 16)
    assert len(calib) == 16 and len(check) == len(paths) - 16
    assert not set(calib) & set(check) and set(calib) | set(check) == set(paths)
    assert calibration_split(crops, 16) == (calib, check)
    assert calibration_split(crops, 16, seed=1)[0] != calib
    assert calibration_split(crops, 1000) == (calibration_split(crops, 1000)[0], [])


def test_static_int8_is_close_to_float32(exported: tuple[Path, Path, str], crops: Path) -> None:
    import reidkit

    fp32, int8, printed = exported
    lines = printed.strip().splitlines()
    assert len(lines) == 2 and "(ok)" in lines[0] and str(fp32) in lines[0]
    assert str(int8) in lines[1] and "static, calibrated on 16 crops" in lines[1]
    n_crops = len(list(crops.iterdir()))
    assert f"over {n_crops - 16} held-out images of {crops}" in lines[1] and ": ok)" in lines[1]
    # the cosine the command checked, recomputed here on the held-out images through reidkit.load
    _, held_out = calibration_split(crops, 16)
    a = reidkit.load(fp32, device="cpu").embed(held_out)
    b = reidkit.load(int8, device="cpu").embed(held_out)
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    assert float(cos.min()) >= BOUND
    mean_printed = float(lines[1].split("mean ")[1].split(",")[0])
    assert abs(mean_printed - float(cos.mean())) < 1e-4
    assert not torch.equal(a, b)  # really another embedding function
    # it is a QDQ graph with per-channel int8 weights, run as integer kernels by onnxruntime
    ops = _ops(int8)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Conv"] == _ops(fp32)["Conv"]
    assert int8.stat().st_size < fp32.stat().st_size / 3


def test_int8_keeps_the_model_description(exported: tuple[Path, Path, str]) -> None:
    import onnx

    fp32, int8, _ = exported
    a, b = read_onnx_meta(fp32), read_onnx_meta(int8)
    q = b.pop("quantization")
    assert a == b  # same model, options, input size, width and the float32 weights digest
    assert "quantization" not in a
    assert q["mode"] == "static" and q["format"] == "QDQ" and q["calibration"] == "minmax"
    assert q["calibration_images"] == 16 and len(q["digest"]) == 16
    assert q["weights"].startswith("int8 per channel") and q["activations"].startswith("uint8")
    props = {e.key: e.value for e in onnx.load(str(int8)).metadata_props}
    assert props["quantization"].startswith("int8 static") and props["input_height"] == "64"
    assert {e.key for e in onnx.load(str(fp32)).metadata_props} == set(props)


def test_dynamic_int8_loads_and_says_what_it_leaves(stadb_onnx: Path, tmp_path: Path) -> None:
    import reidkit

    out = tmp_path / "dyn.int8.onnx"
    report = quantize_onnx(stadb_onnx, out)
    assert report.ok and report.mode == "dynamic" and report.calibration_images == 0
    assert report.check_source == "synthetic pedestrians" and report.check_images == 64
    assert report.min_cosine >= BOUND
    text = report.summary()
    assert "dynamic, no calibration" in text and "BatchNorm, pooling, residual Add" in text
    ops, before = _ops(out), _ops(stadb_onnx)
    assert ops["ConvInteger"] == before["Conv"] and "Conv" not in ops  # every Conv and Gemm quantized ...
    assert ops["MatMulInteger"] == before["Gemm"] and "Gemm" not in ops
    assert ops["BatchNormalization"] == before["BatchNormalization"] > 0  # ... BatchNorm and the rest are not
    assert ops["Sigmoid"] == before["Sigmoid"] > 0 and "QuantizeLinear" not in ops
    meta = read_onnx_meta(out)
    assert meta["quantization"]["mode"] == "dynamic" and meta["quantization"]["calibration"] is None
    emb = reidkit.load(out, device="cpu")
    assert emb.embed(np.zeros((70, 30, 3), np.uint8)).shape == (1, emb.embedding_dim)


def test_int8_works_where_onnx_works(exported: tuple[Path, Path, str], synth_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from reidkit.inference.features import read_dataset_features, read_folder_features

    fp32, int8, _ = exported
    gallery, query = synth_root / "bounding_box_test", synth_root / "query"
    feats = tmp_path / "f.safetensors"
    assert main(["extract", "--onnx", str(int8), "--images", str(gallery), "--out", str(feats),
                 "--no-progress", "--device", "cpu"]) == 0
    assert read_folder_features(feats).model_meta["quantization"]["mode"] == "static"
    ds_feats = tmp_path / "d.safetensors"
    assert main(["extract", "--onnx", str(int8), "--dataset", "market1501", "--root", str(synth_root),
                 "--out", str(ds_feats), "--no-progress", "--device", "cpu"]) == 0
    assert read_dataset_features(ds_feats).model_meta["quantization"]["mode"] == "static"
    assert main(["eval", "--onnx", str(int8), "--dataset", "market1501", "--root", str(synth_root),
                 "--no-progress", "--device", "cpu"]) == 0
    idx8, idx32 = tmp_path / "idx8", tmp_path / "idx32"
    for model, idx in ((int8, idx8), (fp32, idx32)):
        assert main(["index", "build", "--onnx", str(model), "--images", str(gallery), "--out", str(idx),
                     "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    # an INT8 index is searched with its own (INT8) model, and extended by it
    assert main(["search", str(idx8), "--query", str(query), "--k", "3", "--no-progress", "--device", "cpu"]) == 0
    assert main(["search", str(idx8), "--query", str(query), "--onnx", str(int8), "--no-progress",
                 "--device", "cpu"]) == 0
    assert main(["index", "add", str(idx8), "--images", str(query), "--onnx", str(int8), "--no-progress",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    # INT8 queries or rows on a float32 index, and the reverse, are refused in one line
    for idx, model in ((idx32, int8), (idx8, fp32)):
        for command in (["search", str(idx), "--query"], ["index", "add", str(idx), "--images"]):
            assert main([*command, str(query), "--onnx", str(model), "--no-progress", "--device", "cpu"]) == 2
            line = _err(capsys)
            assert "differs from the model that built the index" in line and "int8 static" in line


def test_fingerprint_tells_int8_from_float32(exported: tuple[Path, Path, str]) -> None:
    from reidkit.inference.gallery import Gallery, GalleryIndexError, model_fingerprint

    fp32, int8, _ = exported
    a, b = read_onnx_meta(fp32), read_onnx_meta(int8)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(b) == model_fingerprint(dict(b))
    other_calibration = dict(b, quantization=dict(b["quantization"], digest="0" * 16))
    assert model_fingerprint(other_calibration) != model_fingerprint(b)
    g = Gallery(model_meta=a)
    g.check_model(dict(a))
    with pytest.raises(GalleryIndexError):
        g.check_model(b)
    Gallery(model_meta=b).check_model(dict(b))


@pytest.mark.parametrize("case", ["missing", "empty", "no images", "unreadable", "a file"])
def test_bad_calibration_folder_is_one_line(case: str, stadb_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "calib"
    if case != "missing":
        folder.mkdir()
    if case == "no images":
        (folder / "notes.txt").write_text("not a crop")
    if case == "unreadable":
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    if case == "a file":
        folder = tmp_path / "x.jpg"
        folder.write_bytes(b"")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(stadb_file), "--out", str(out), "--int8",
                 "--calibrate", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith("reidkit: error:") and str(folder) in line
    assert all(x.startswith(("reidkit: skipped", "  ")) for x in err[:-1])  # the unreadable files, listed
    assert not out.exists() and not out.with_name("m.int8.onnx").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"calib", "x.jpg"}  # no temporary file left


def test_below_the_bound_nothing_is_written(stadb_file: Path, crops: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    assert main(["export", "--checkpoint", str(stadb_file), "--out", str(out), "--int8", "--calibrate",
                 str(crops), "--calibration-images", "8", "--min-cosine", "1"]) == 2
    line = _err(capsys)
    assert "m.int8.onnx: INT8 embeddings differ from float32" in line and "file not written" in line
    assert out.read_bytes() == b"the previous export"  # the float32 file waits for the INT8 one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_int8_options_need_int8(stadb_file: Path, crops: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    for extra in (["--calibrate", str(crops)], ["--min-cosine", "0.5"], ["--int8", "--calibration-images", "4"],
                  ["--int8", "--opset", "11"], ["--int8", "--min-cosine", "2"],
                  ["--int8", "--calibrate", str(crops), "--calibration-images", "0"]):
        try:
            code = main(["export", "--checkpoint", str(stadb_file), "--out", str(out), *extra])
        except SystemExit as exc:  # refused by the option's type (argparse), before any work
            code = exc.code
        assert code == 2, extra
        assert _err(capsys).startswith("reidkit: error:")
    assert not out.exists()


def test_quantizing_twice_is_refused(exported: tuple[Path, Path, str], tmp_path: Path) -> None:
    from reidkit.errors import ReidkitError

    with pytest.raises(ReidkitError, match="already quantized"):
        quantize_onnx(exported[1], tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()


def test_too_few_held_out_images_use_synthetic_pedestrians(stadb_onnx: Path, crops: Path, tmp_path: Path) -> None:
    n = len(list(crops.iterdir())) - MIN_CHECK_IMAGES + 1
    report = quantize_onnx(stadb_onnx, tmp_path / "q.onnx", calibrate=crops, calibration_images=n)
    assert report.mode == "static" and report.calibration_images == n
    assert report.check_source == "synthetic pedestrians" and report.ok


def test_every_conv_becomes_an_integer_kernel(crops: Path, tmp_path: Path) -> None:
    """An untrained network's exported graph shares its all-zero conv biases through Identity nodes; untied
    before quantization, every QDQ convolution becomes a QLinearConv when onnxruntime loads the file (tied,
    45 of ResNet-50 STADB's 62 stayed float32 between Q/DQ pairs, slower than float32 alone)."""
    import onnx
    import onnxruntime as ort

    from reidkit.inference import export_onnx
    from reidkit.models import build

    torch.manual_seed(0)
    model = build("stadb", 5, backbone="resnet18").eval()
    model.input_size = (64, 32)
    fp32 = tmp_path / "untrained.onnx"
    export_onnx(model, fp32)
    before = _ops(fp32)
    assert before["Identity"] > 0  # the exporter's shared constants (the case this test is about)
    proto = onnx.load(str(fp32))
    n = untie_initializers(proto)
    assert n == before["Identity"] and "Identity" not in collections.Counter(x.op_type for x in proto.graph.node)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.array_equal(sess.run(None, {"images": x})[0], ref)  # the same graph, untied

    out = tmp_path / "untrained.int8.onnx"
    quantize_onnx(fp32, out, calibrate=crops, calibration_images=8, check=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    optimized = _ops(tmp_path / "optimized.onnx")
    assert optimized["QLinearConv"] == before["Conv"] and "Conv" not in optimized
