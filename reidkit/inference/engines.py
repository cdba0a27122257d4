"""What runs the network at inference: PyTorch (eager or ``torch.compile``) or ONNX Runtime, behind one
call — ``engine(x)`` with ``x`` a float32 ImageNet-normalised ``(N, 3, H, W)`` batch on ``engine.device``,
returning ``(N, D)`` float32 embeddings on the CPU.

``choose_engine`` picks one for ``--engine`` (``auto``, ``torch``, ``onnx``, ``compile``). On a CPU
``auto`` runs a PyTorch model through ONNX Runtime — several times faster than eager PyTorch there
(``benchmarks/bench_extract.py``, BENCHMARKS.md) — when many images are embedded (a dataset, or at least
``AUTO_ONNX_MIN_IMAGES``) or when the model was exported before: the model is exported once (with the
parity check of ``reidkit.inference.export.export_onnx``) into ``onnx_cache_dir``, named by a hash
of its description and weights digest, and reused afterwards. If the export fails or does not match
PyTorch, ``auto`` falls back to PyTorch with a warning. On a GPU ``auto`` is PyTorch. The cache is kept
bounded (``reidkit.inference.onnx_cache``: the least recently used exports go first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from reidkit.errors import CheckpointError, ReidkitError

ENGINES = ("auto", "torch", "onnx", "compile")
AUTO_ONNX_MIN_IMAGES = 256  # below this (and no cached export) the export would cost more than it saves


class Engine(Protocol):
    """Runs the test-time network: normalised float batch on ``device`` → ``(N, D)`` float32 on the CPU."""

    kind: str
    device: torch.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        """The embeddings of ``x``."""
        ...


class TorchEngine:
    """A PyTorch model in eval mode under ``torch.inference_mode`` (optionally autocast to ``autocast_dtype``);
    the model's train/eval mode is restored after each call."""

    kind = "torch"

    def __init__(self, model: nn.Module, device: torch.device, autocast_dtype: torch.dtype | None = None):
        self.model, self.device, self.autocast_dtype = model, device, autocast_dtype

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The eval-mode embeddings of ``x``; a model that does not return ``(N, D)`` is a one-line error."""
        was_training = self.model.training
        self.model.eval()
        ctx = (torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        try:
            with ctx:
                f = self.model(x)
        finally:
            self.model.train(was_training)
        if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] != x.shape[0]:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ReidkitError(f"embed: expected the eval-mode model to return (N, D) features, got {shape}")
        return f.float().cpu()


class OnnxEngine:
    """An exported reidkit ONNX model run by onnxruntime (CUDA provider when asked for and available);
    ``threads`` sets its intra-op threads (onnxruntime's default is every core)."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike[str], device: torch.device, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise ReidkitError(f"{path}: running ONNX models needs onnxruntime "
                               "(pip install 'reidkit[onnx]')") from exc
        from reidkit.inference.export import read_onnx_meta

        self.path, self.device = Path(path), device
        self.meta = read_onnx_meta(self.path)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{self.path}: onnxruntime cannot load it ({type(exc).__name__}); "
                                  "expected a file from 'reidkit export'") from exc
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The embeddings of ``x`` (moved to the CPU for onnxruntime)."""
        out = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def onnx_cache_dir() -> Path:
    """Where ``--engine auto/onnx`` keeps exported models: ``$REIDKIT_CACHE/onnx``, else
    ``$XDG_CACHE_HOME/reidkit/onnx``, else ``~/.cache/reidkit/onnx``."""
    env = os.environ.get("REIDKIT_CACHE")
    if env:
        return Path(env) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reidkit" / "onnx"


def cached_onnx_path(meta: dict[str, Any]) -> Path:
    """The cache file of a model description (name, options, input size, weights digest, version)."""
    from reidkit.inference.export import DEFAULT_OPSET

    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
    h, w = (int(v) for v in meta["input_size"])
    return onnx_cache_dir() / f"{meta.get('model', 'model')}-{h}x{w}-opset{DEFAULT_OPSET}-{key}.onnx"


def _onnx_runtime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(engine: str, model: nn.Module | None, current: Engine, meta: dict[str, Any],
                  n_images: int | None, threads: int | None = None) -> Engine:
    """The engine for ``--engine engine`` (see the module docstring); ``n_images`` None means "many".

    ``model`` is the PyTorch model (None for an ONNX file, whose engine ``current`` is kept) and ``meta`` its
    description with the weights digest (it names the cached export).
    """
    if engine not in ENGINES:
        raise ReidkitError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    on_cpu = current.device.type == "cpu"
    if model is None:  # --onnx FILE
        if engine in ("torch", "compile"):
            raise ReidkitError(f"--engine {engine} needs --checkpoint; --onnx runs with onnxruntime")
        if on_cpu and threads and isinstance(current, OnnxEngine):
            return OnnxEngine(current.path, current.device, threads)
        return current
    if engine == "torch":
        return current
    if engine == "compile":
        return TorchEngine(torch.compile(model), current.device)  # type: ignore[arg-type]
    if engine == "auto" and (not on_cpu or not _onnx_runtime_available()):
        return current
    path = cached_onnx_path(meta)
    if engine == "auto" and not path.is_file() and n_images is not None and n_images < AUTO_ONNX_MIN_IMAGES:
        return current
    from reidkit.inference import onnx_cache

    if path.is_file():
        onnx_cache.mark_used(path)
    else:
        from reidkit.inference.export import export_onnx

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(model, path)
        except (ReidkitError, OSError, RuntimeError) as exc:
            if engine == "onnx":
                raise ReidkitError(f"--engine onnx: the ONNX export failed: {str(exc).splitlines()[0]}") from exc
            print(f"reidkit: warning: ONNX export failed ({str(exc).splitlines()[0]}); using PyTorch",
                  file=sys.stderr)
            return current
        onnx_cache.prune(path.parent, keep=path)
        print(f"reidkit: exported the model to ONNX once for faster CPU inference: {path} "
              f"({path.stat().st_size / 2**20:.0f} MB; reused from now on; the cache keeps the "
              f"{onnx_cache.MAX_MODELS} last used; REIDKIT_CACHE moves it, --engine torch skips it)", file=sys.stderr)
    try:
        return OnnxEngine(path, current.device, threads if on_cpu else None)
    except ReidkitError as exc:  # a damaged cache file: export again next time
        path.unlink(missing_ok=True)
        if engine == "onnx":
            raise
        print(f"reidkit: warning: cached ONNX model unusable ({exc}); using PyTorch", file=sys.stderr)
        return current
