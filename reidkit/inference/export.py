"""ONNX export of a reidkit model's test embedding, checked against PyTorch.

The exported graph maps ``images`` (float32, N×3×H×W, ImageNet-normalised, dynamic N) to ``embeddings``
(float32, N×D), exactly what ``model(x)`` returns in eval mode. The model description (the same JSON dict
as in ``model.safetensors``, with the weights digest) is stored in the ONNX ``metadata_props`` under the key
``"reidkit"``, so ``reidkit extract --onnx`` and ``reidkit.load`` know the input size; beside it, plain keys
(``input_contract``) tell a program without reidkit how to feed the model and read its output
(docs/export.md, "Without reidkit"). ``write_metadata`` writes both, for this export and for
``reidkit.inference.quantize``.

Examples:
    >>> report = export_onnx(model, "model.onnx")  # doctest: +SKIP
    >>> report.max_abs_diff < 1e-4  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from reidkit.errors import CheckpointError, ReidkitError
from reidkit.inference.modelfile import check_model_meta, parse_meta_json
from reidkit.models.io import META_KEY, model_meta
from reidkit.utils.atomic import atomic_path
from reidkit.utils.images import RESIZE_DESCRIPTION

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 17


@dataclass
class ExportReport:
    """What ``export_onnx`` checked over random batches.

    - ``max_abs_diff``: largest |onnxruntime − PyTorch| over all embedding entries;
    - ``max_scaled_diff``: ``max_abs_diff / max(1, largest |PyTorch entry|)`` — the absolute difference for
      embeddings of unit scale, the relative one for larger embeddings (raw re-ID embeddings reach ~1e2,
      where float32 itself is only accurate to ~1e-5 absolute); this is what ``atol`` bounds;
    - ``normalized_diff``: largest difference between the L2-normalised embeddings (what cosine search sees).
    """

    path: Path
    opset: int
    input_size: tuple[int, int]
    embedding_dim: int
    max_abs_diff: float
    max_scaled_diff: float
    normalized_diff: float
    batch_sizes: tuple[int, ...]
    ok: bool

    def summary(self) -> str:
        """One printable line."""
        state = "ok" if self.ok else "MISMATCH"
        return (f"{self.path}: opset {self.opset}, input N×3×{self.input_size[0]}×{self.input_size[1]} → "
                f"N×{self.embedding_dim}; onnxruntime vs PyTorch over batches {list(self.batch_sizes)}: "
                f"max |diff| {self.max_abs_diff:.3g} (scaled {self.max_scaled_diff:.3g}, "
                f"L2-normalised {self.normalized_diff:.3g}) ({state})")


def onnx_modules() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules, or a one-line ``ReidkitError`` saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ReidkitError("ONNX export needs the onnx and onnxruntime packages "
                           "(pip install 'reidkit[onnx]')") from exc
    return onnx, onnxruntime


def describe_quantization(quantization: dict[str, Any] | None) -> str:
    """The ``quantization`` entry of a model description in words (``"none"`` for a float32 file)."""
    if not quantization:
        return "none (float32 weights and activations)"
    q = quantization
    parts = [f"int8 {q.get('mode', '?')}"]
    if q.get("format"):
        parts.append(f"{q['format']} format")
    if q.get("weights"):
        parts.append(f"weights {q['weights']}")
    if q.get("activations"):
        parts.append(f"activations {q['activations']}")
    if q.get("calibration"):
        parts.append(f"calibrated ({q['calibration']}) on {q.get('calibration_images', '?')} images")
    return ", ".join(parts)


def input_contract(meta: dict[str, Any]) -> dict[str, str]:
    """The plain ``metadata_props`` keys (string values) that say how to feed a reidkit ONNX model without
    reidkit and what it returns: input name, layout, type, size, channel order, pixel scale, mean and std,
    the resize; output name, width, that it is not L2-normalised and the metric reidkit compares it with;
    whether the file is quantized. They restate ``meta`` (the ``reidkit`` key) and the preprocessing of
    ``reidkit.inference.Embedder``; docs/export.md runs them."""
    h, w = (int(v) for v in meta["input_size"])
    return {
        "input_name": INPUT_NAME,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_height": str(h),
        "input_width": str(w),
        "input_channel_order": "RGB",
        "input_pixel_divisor": "255",
        "input_mean": ",".join(str(v) for v in IMAGENET_MEAN),
        "input_std": ",".join(str(v) for v in IMAGENET_STD),
        "input_normalization": "x = (pixel / input_pixel_divisor - input_mean) / input_std, per channel, "
                               "pixels 0-255 in RGB order",
        "input_resize": RESIZE_DESCRIPTION,
        "input_resize_interpolation": "bilinear",
        "input_resize_antialias": "true",
        "input_resize_aspect": "stretch",
        "output_name": OUTPUT_NAME,
        "output_dim": str(int(meta.get("embedding_dim") or 0)),
        "output_normalized": "false",
        "output_metric": "euclidean (reidkit's default; cosine on L2-normalised embeddings works too)",
        "quantization": describe_quantization(meta.get("quantization")),
    }


def write_metadata(proto: Any, meta: dict[str, Any]) -> None:
    """Replace ``proto``'s ``metadata_props`` with the model description ``meta`` (JSON under ``"reidkit"``)
    and the plain keys of ``input_contract``."""
    del proto.metadata_props[:]
    for key, value in {META_KEY: json.dumps(meta), **input_contract(meta)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(model: torch.nn.Module, out: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                check: bool = True, atol: float = 1e-4, batch_sizes: tuple[int, ...] = (1, 3),
                seed: int = 0, source: str | os.PathLike[str] | None = None) -> ExportReport:
    """Export ``model`` (eval mode, on CPU) to ``out`` and compare onnxruntime with PyTorch.

    The check runs random normal inputs at every batch size in ``batch_sizes``; with ``check=True`` a
    scaled difference (see ``ExportReport``) above ``atol`` raises ``ReidkitError`` and leaves ``out`` untouched (the file is written
    atomically only after the check passes). Embeddings with NaN or infinite values, from either side, fail the
    check whatever ``check`` says, naming ``source`` (the model file) when given.

    Examples:
        >>> export_onnx(model, "model.onnx", opset=17).summary()  # doctest: +SKIP
    """
    onnx, ort = onnx_modules()

    out = Path(out)
    device = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else None
    model = model.to("cpu").eval()
    meta = model_meta(model, digest=True)
    h, w = meta["input_size"]
    gen = torch.Generator().manual_seed(seed)
    dummy = torch.randn(2, 3, h, w, generator=gen)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(tmp), dynamo=False, opset_version=int(opset),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        write_metadata(proto, meta)
        proto.producer_name = "reidkit"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        worst = scaled = normed = 0.0
        for bs in batch_sizes:
            x = torch.randn(bs, 3, h, w, generator=gen)
            with torch.no_grad():
                ref = model(x).float().numpy()
            got = sess.run(None, {INPUT_NAME: x.numpy()})[0]
            if got.shape != ref.shape:
                raise ReidkitError(f"{out}: ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
            if not ref.size:
                continue
            for name, values in (("PyTorch", ref), ("ONNX Runtime", got)):
                if not np.isfinite(values).all():  # NaN compares as no difference: never a parity pass
                    raise ReidkitError(f"{source or 'the model'}: {name} gives NaN or infinite embeddings for the "
                                       "check inputs; expected finite values (damaged weights or statistics); "
                                       "the ONNX file is not written")
            diff = float(np.abs(got - ref).max())
            worst = max(worst, diff)
            scaled = max(scaled, diff / max(1.0, float(np.abs(ref).max())))
            nr = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
            ng = got / np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
            normed = max(normed, float(np.abs(ng - nr).max()))
        ok = scaled <= atol
        if check and not ok:
            raise ReidkitError(f"{out}: ONNX output differs from PyTorch by {worst:.3g} (scaled {scaled:.3g} "
                               f"> {atol}); file not written")
    if device is not None:
        model.to(device)
    return ExportReport(out, int(opset), (int(h), int(w)), int(meta["embedding_dim"]), worst, scaled, normed,
                        tuple(batch_sizes), ok)


def read_onnx_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The reidkit model description stored in an ONNX file's metadata (input size, embedding size, ...).

    Files exported elsewhere get their input size from the graph's input shape when it is static.

    Examples:
        >>> read_onnx_meta("model.onnx")["input_size"]  # doctest: +SKIP
        [384, 128]
    """
    onnx, _ = onnx_modules()
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: ONNX file not found")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise CheckpointError(f"{p}: not a readable ONNX file ({type(exc).__name__})") from exc
    props = {e.key: e.value for e in proto.metadata_props}
    if META_KEY in props:
        meta = check_model_meta(parse_meta_json(props[META_KEY], p), p, registered=False)
        if "input_size" not in meta:
            raise CheckpointError(f"{p}: damaged model description (no 'input_size')")
        return dict(meta)
    # A foreign ONNX file: read the input size from a static input shape.
    try:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        h, w = int(dims[2].dim_value), int(dims[3].dim_value)
        out_dims = proto.graph.output[0].type.tensor_type.shape.dim
        d = int(out_dims[1].dim_value) if len(out_dims) > 1 else 0
    except (IndexError, ValueError) as exc:
        raise CheckpointError(f"{p}: no reidkit metadata and no N×3×H×W input; expected a file from "
                              "'reidkit export'") from exc
    if h <= 0 or w <= 0:
        raise CheckpointError(f"{p}: no reidkit metadata and a dynamic input size; expected a file from "
                              "'reidkit export'")
    meta = {"model": p.stem or "onnx", "options": {}, "input_size": [h, w], "embedding_dim": max(d, 0),
            "weights_digest": None}
    return check_model_meta(meta, p, registered=False)
