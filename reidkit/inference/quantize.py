"""INT8 copies of an exported reidkit ONNX model (ONNX Runtime's quantization), checked against the float32 file.

Two modes (docs/export.md, "INT8"):

- **static** (``calibrate`` names a folder of crops): the QDQ format, weights int8 per output channel
  (symmetric), activations uint8 per tensor with ranges from MinMax calibration over up to
  ``calibration_images`` crops of the folder (``STATIC_SETTINGS``, chosen by measurement: docs/export.md).
  The crops are read, resized and normalised by reidkit's own image path
  (``reidkit.data.cache.decode_images``, ``reidkit.data.augment.test_batch``): what
  ``reidkit.inference.Embedder`` feeds the model, so the calibration sees what inference sees. The trunk
  (Conv, Add, Relu, pooling) is quantized, and ONNX Runtime fuses its QDQ pairs into integer kernels
  (QLinearConv, QLinearAdd, ...) when it loads the file; the embedding heads stay float32. Constants the
  exporter shares between nodes are untied first (``untie_initializers``), or those convolutions would not
  fuse.
- **dynamic** (no folder): the weights of every Conv and Gemm (the linear heads, rewritten as MatMul) are
  stored int8 and their inputs are quantized to uint8 on the fly, per batch (ConvInteger, MatMulInteger).
  BatchNormalization, pooling, the residual Add, Relu, Sigmoid, Mul and Concat stay float32: ONNX Runtime
  has no dynamic kernel for them. For a convolutional network this makes the file ~4× smaller; it does not
  make it faster (``DYNAMIC_NOTE``).

The file keeps the model description of the float32 file (``reidkit.inference.export.write_metadata``): the
``weights_digest`` stays the digest of the float32 weights it was quantized from, and ``quantization`` says
how, with ``digest``, the digest of the quantized file's tensors. A gallery index compares both
(``reidkit.inference.gallery.model_fingerprint``), so INT8 and float32 embeddings never mix in one index.

The check: the mean and the minimum cosine similarity between INT8 and float32 embeddings of images the
calibration did not use: the rest of the folder (up to ``CHECK_IMAGES``) or, when fewer than
``MIN_CHECK_IMAGES`` remain or there is no folder, ``SYNTHETIC_CHECK_IMAGES`` synthetic pedestrians
(``reidkit.data.synthetic``). Below ``min_cosine`` nothing is written.

Examples:
    >>> report = quantize_onnx("model.onnx", "model.int8.onnx", calibrate="crops/")  # doctest: +SKIP
    >>> report.min_cosine >= DEFAULT_MIN_COSINE  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reidkit.errors import DatasetError, ReidkitError
from reidkit.utils.atomic import atomic_path

DEFAULT_CALIBRATION_IMAGES = 128
DEFAULT_MIN_COSINE = 0.97
CHECK_IMAGES = 256  # held-out folder images the check embeds, at most
MIN_CHECK_IMAGES = 16  # fewer held-out folder images than this: the check uses synthetic pedestrians
SYNTHETIC_CHECK_IMAGES = 64
CALIBRATION_BATCH = 16
# The static settings, chosen by measurement (docs/export.md, "INT8": cosine to float32 on held-out crops).
STATIC_SETTINGS: dict[str, Any] = {
    "calibration": "minmax",
    "activations": "uint8",
    "weights": "int8",
    "per_channel": True,
    "reduce_range": False,
    # the trunk; the embedding heads (Gemm, BatchNorm, Concat, attention's Sigmoid/Mul) stay float32: they cost
    # little time, and quantizing them (the embeddings output included) lowered the cosine to float32
    "op_types": ["Conv", "Add", "Relu", "MaxPool", "GlobalAveragePool", "AveragePool"],
}
DYNAMIC_NOTE = ("dynamic quantization: Conv and Gemm weights stored int8, their inputs quantized per batch at run "
                "time (ConvInteger, MatMulInteger); BatchNorm, pooling, residual Add, activations and attention "
                "stay float32; on a CPU ONNX Runtime runs ConvInteger slower than float32 Conv, so this makes the "
                "file smaller, not faster; give --calibrate DIR for static quantization")


@dataclass
class QuantizeReport:
    """What ``quantize_onnx`` wrote and measured.

    ``mean_cosine`` and ``min_cosine`` compare INT8 and float32 embeddings (``Embedder`` on both files) of
    ``check_images`` images the calibration did not use, from ``check_source``; ``ok`` is
    ``min_cosine >= bound``.
    """

    path: Path
    mode: str
    calibration_images: int
    check_images: int
    check_source: str
    mean_cosine: float
    min_cosine: float
    bound: float
    size_bytes: int
    fp32_size_bytes: int
    ok: bool

    def summary(self) -> str:
        """A printable line (two for dynamic quantization: what it does not quantize)."""
        how = (f"static, calibrated on {self.calibration_images} crops" if self.mode == "static"
               else "dynamic, no calibration")
        line = (f"{self.path}: int8 ({how}), {self.size_bytes / 2**20:.1f} MB (float32 "
                f"{self.fp32_size_bytes / 2**20:.1f} MB); cosine to float32 over {self.check_images} "
                f"{self.check_source}: mean {self.mean_cosine:.4f}, min {self.min_cosine:.4f} "
                f"(bound {self.bound:g}: {'ok' if self.ok else 'BELOW'})")
        return line if self.mode == "static" else f"{line}\n  {DYNAMIC_NOTE}"


def int8_path(fp32_path: str | os.PathLike[str]) -> Path:
    """Where ``reidkit export --int8`` writes the INT8 copy: ``model.onnx`` → ``model.int8.onnx`` beside it."""
    p = Path(fp32_path)
    stem = p.name[: -len(".onnx")] if p.name.lower().endswith(".onnx") else p.name
    return p.with_name(f"{stem}.int8.onnx")


def calibration_split(folder: str | os.PathLike[str], n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` images of ``folder`` for calibration and up to ``CHECK_IMAGES`` others for the check, drawn
    with ``seed`` from its sorted listing (``reidkit.inference.sources.list_folder``: a one-line
    ``DatasetError`` for a missing folder or one without images)."""
    from reidkit.inference.sources import list_folder

    if n < 1:
        raise ReidkitError(f"--calibration-images: expected a positive number, got {n}")
    paths = list_folder(os.fspath(folder))
    random.Random(seed).shuffle(paths)
    return paths[:n], paths[n:n + CHECK_IMAGES]


def synthetic_crops(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``n`` synthetic pedestrians (``reidkit.data.synthetic``, JPEG-encoded as the generated datasets are)
    as a uint8 ``(n, 3, H, W)`` batch at ``size``, resized as ``Embedder`` resizes pictures."""
    from reidkit.data.synthetic import render_bytes
    from reidkit.inference.images import images_to_uint8
    from reidkit.utils.images import read_image

    return images_to_uint8([read_image(io.BytesIO(render_bytes(seed, i // 2, i % 2, i))) for i in range(n)], size)


def _decode(paths: list[str], size: tuple[int, int], what: str) -> torch.Tensor:
    from reidkit.data.cache import decode_images
    from reidkit.inference.sources import report_bad

    u8, bad = decode_images(paths, size, workers=4)
    report_bad(bad, what=f"unreadable {what} image(s)")
    return u8


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger ("consider pre-processing", per-tensor axis
    notes); reidkit prints its own summary instead. Restores the logging state after."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _tensors_digest(proto: Any) -> str:
    """SHA-256 (16 hex digits) of an ONNX graph's initializers: names, types, shapes and bytes."""
    from onnx import numpy_helper

    h = hashlib.sha256()
    for t in sorted(proto.graph.initializer, key=lambda t: t.name):
        arr = numpy_helper.to_array(t)
        h.update(t.name.encode())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def untie_initializers(proto: Any) -> int:
    """Give every tensor that reaches a node through an ``Identity`` of an initializer its own initializer, and
    drop those ``Identity`` nodes; returns how many. The torch exporter shares equal constants that way (the
    zero biases of BatchNorm folded into convolutions, in an untrained network); ONNX Runtime's quantizer then
    leaves such a convolution's bias float32, and the QDQ convolution cannot become an integer QLinearConv
    (it runs as float32 between QuantizeLinear/DequantizeLinear pairs: slower than no quantization at all)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    keep, copies = [], []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            copies.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0]))
        else:
            keep.append(node)
    if copies:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
        proto.graph.initializer.extend(copies)
    return len(copies)


def _static(fp32: Any, tmp: Path, u8: torch.Tensor, meta: dict[str, Any]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from reidkit.data.augment import test_batch
    from reidkit.inference.export import INPUT_NAME

    size = (int(meta["input_size"][0]), int(meta["input_size"][1]))

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        """The calibration crops, normalised as ``Embedder`` normalises them, in batches."""

        def __init__(self) -> None:
            self.starts = iter(range(0, int(u8.shape[0]), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, Any] | None:
            s = next(self.starts, None)
            return None if s is None else {INPUT_NAME: test_batch(u8[s:s + CALIBRATION_BATCH], size).numpy()}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    s = STATIC_SETTINGS
    quantize_static(fp32, str(tmp), Batches(), quant_format=QuantFormat.QDQ, per_channel=s["per_channel"],
                    reduce_range=s["reduce_range"], activation_type=types[s["activations"]],
                    weight_type=types[s["weights"]], calibrate_method=methods[s["calibration"]],
                    op_types_to_quantize=list(s["op_types"]))


def _dynamic(fp32: Any, tmp: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32, str(tmp), weight_type=QuantType.QInt8, per_channel=False)


def quantize_onnx(fp32_path: str | os.PathLike[str], out: str | os.PathLike[str],
                  calibrate: str | os.PathLike[str] | None = None,
                  calibration_images: int = DEFAULT_CALIBRATION_IMAGES, min_cosine: float = DEFAULT_MIN_COSINE,
                  check: bool = True, seed: int = 0) -> QuantizeReport:
    """Write an INT8 copy of the reidkit ONNX file ``fp32_path`` to ``out``: static quantization calibrated on
    up to ``calibration_images`` crops of the folder ``calibrate``, dynamic quantization when it is None (see
    the module docstring), then compare its embeddings with the float32 file's on held-out images.

    With ``check``, a minimum cosine below ``min_cosine`` is a one-line ``ReidkitError`` and ``out`` is left
    as it was; the file is written atomically only after the check. A missing folder, one without images or
    with no readable image is a one-line ``DatasetError``.

    Examples:
        >>> quantize_onnx("stadb.onnx", "stadb.int8.onnx", calibrate="crops/").summary()  # doctest: +SKIP
    """
    from reidkit.inference.embedder import Embedder
    from reidkit.inference.export import onnx_modules, read_onnx_meta, write_metadata

    onnx, ort = onnx_modules()
    fp32 = Path(fp32_path)
    meta = dict(read_onnx_meta(fp32))
    if meta.get("quantization"):
        raise ReidkitError(f"{fp32}: already quantized ({meta['quantization'].get('mode', '?')}); expected the "
                           "float32 file of 'reidkit export'")
    size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
    calib_u8 = held_out = None
    if calibrate is not None:
        calib_paths, check_paths = calibration_split(calibrate, calibration_images, seed)
        calib_u8 = _decode(calib_paths, size, "calibration")
        if not len(calib_u8):
            raise DatasetError(f"{calibrate}: none of the {len(calib_paths)} calibration images could be read; "
                               "expected person crops (.jpg, .png, ...)")
        if len(check_paths) >= MIN_CHECK_IMAGES:
            held_out = _decode(check_paths, size, "check")
    source = f"held-out images of {calibrate}"
    if held_out is None or len(held_out) < MIN_CHECK_IMAGES:
        held_out, source = synthetic_crops(SYNTHETIC_CHECK_IMAGES, size, seed), "synthetic pedestrians"
    out = Path(out)
    with atomic_path(out) as tmp:
        source_proto = onnx.load(str(fp32))
        untie_initializers(source_proto)
        with _quiet_quantizer():
            if calib_u8 is not None:
                _static(source_proto, tmp, calib_u8, meta)
            else:
                _dynamic(source_proto, tmp)
        proto = onnx.load(str(tmp))
        meta["quantization"] = {
            "mode": "static" if calib_u8 is not None else "dynamic",
            "format": "QDQ" if calib_u8 is not None else "integer operators (ConvInteger, MatMulInteger)",
            "weights": ("int8 per channel, symmetric" if calib_u8 is not None and STATIC_SETTINGS["per_channel"]
                        else "int8 per tensor"),
            "activations": (f"{STATIC_SETTINGS['activations']} per tensor, calibrated" if calib_u8 is not None
                            else "uint8 per tensor, quantized per batch at run time"),
            "calibration": STATIC_SETTINGS["calibration"] if calib_u8 is not None else None,
            "calibration_images": len(calib_u8) if calib_u8 is not None else 0,
            "onnxruntime": str(ort.__version__),
            "digest": _tensors_digest(proto),
        }
        write_metadata(proto, meta)
        proto.producer_name = "reidkit"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        ref = Embedder(onnx_path=fp32, device="cpu").embed_uint8(held_out, batch_size=32)
        got = Embedder(onnx_path=tmp, device="cpu").embed_uint8(held_out, batch_size=32)
        cos = torch.nn.functional.cosine_similarity(got.double(), ref.double(), dim=1)
        mean, worst = float(cos.mean()), float(cos.min())
        ok = worst >= min_cosine
        if check and not ok:
            raise ReidkitError(f"{out}: INT8 embeddings differ from float32 (cosine over {len(held_out)} "
                               f"{source}: mean {mean:.4f}, min {worst:.4f} < {min_cosine:g}); file not written "
                               "(calibrate on more or other crops, or lower --min-cosine)")
        size_bytes = tmp.stat().st_size
    return QuantizeReport(out, meta["quantization"]["mode"], meta["quantization"]["calibration_images"],
                          len(held_out), source, mean, worst, float(min_cosine), size_bytes,
                          fp32.stat().st_size, ok)
