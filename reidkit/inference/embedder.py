"""Person crops → embeddings with a trained model: ``Embedder`` (batching, flip averaging and progress
in one place, over any ``engine <reidkit.inference.engines>``) and ``load`` (any model file).

Examples:
    >>> import reidkit
    >>> emb = reidkit.load("runs/stadb/model.safetensors")  # doctest: +SKIP
    >>> feats = emb.embed(["a.jpg", "b.jpg"])  # (2, emb.embedding_dim) float32  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reidkit.data.augment import test_batch
from reidkit.errors import CheckpointError, ReidkitError
from reidkit.inference.engines import ENGINES, Engine, OnnxEngine, TorchEngine, choose_engine
from reidkit.inference.images import ImageLike, images_to_uint8
from reidkit.utils.devices import resolve_device
from reidkit.utils.progress import progress as show_progress

__all__ = ["Embedder", "load"]


class Embedder:
    """Turns person crops into embeddings with a trained model (PyTorch or ONNX).

    Make one with ``reidkit.load``, or wrap a model in memory: ``Embedder(model)``.

    Attributes:
        device: where the model runs.
        input_size: (H, W) the crops are resized to.
        embedding_dim: width D of the embeddings.
        meta: the model description (name, options, input size, weights digest) stored in indexes and
            features files.
        engine: what runs the network (``reidkit.inference.engines.TorchEngine`` or
            ``reidkit.inference.engines.OnnxEngine``); ``use_engine`` changes it. An embedder from
            ``reidkit.load`` chooses it at its first embedding call, as the command line does.
        threads: the CPU threads ``use_engine`` set (None before it ran, or on a GPU).

    Examples:
        >>> emb = Embedder(model)  # doctest: +SKIP
        >>> emb.embed(np.zeros((256, 128, 3), np.uint8)).shape  # doctest: +SKIP
        torch.Size([1, 1536])
    """

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device | None = None, *,
                 onnx_path: str | os.PathLike[str] | None = None, autocast_dtype: torch.dtype | None = None) -> None:
        self.device = resolve_device(device)
        self.model: torch.nn.Module | None = None
        self._meta: dict[str, Any] | None = None
        self.source: str | None = None
        self.threads: int | None = None
        self._deferred: tuple[str, int | None] | None = None
        self.engine: Engine
        if onnx_path is not None:
            self.engine = OnnxEngine(onnx_path, self.device)
            self._meta = dict(self.engine.meta)
            self.source = str(onnx_path)
            size, dim = self._meta["input_size"], self._meta.get("embedding_dim")
        elif model is not None:
            self.model = model.to(self.device)
            self.engine = TorchEngine(self.model, self.device, autocast_dtype)
            size, dim = getattr(model, "input_size", (256, 128)), getattr(model, "embedding_dim", 0)
        else:
            raise ReidkitError("Embedder: pass a model or onnx_path")
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.embedding_dim: int = int(dim or 0)

    @property
    def meta(self) -> dict[str, Any]:
        """The model description with its weights digest (computed once, on first use)."""
        if self._meta is None:
            from reidkit.models.io import model_meta

            assert self.model is not None
            self._meta = model_meta(self.model, digest=True)  # type: ignore[arg-type]
        return self._meta

    def __repr__(self) -> str:
        name = self._meta.get("model") if self._meta else getattr(self.model, "name", "?")
        return (f"Embedder({name}, {self.engine.kind}, input {self.input_size[0]}x{self.input_size[1]}, "
                f"{self.embedding_dim}-d, device={self.device})")

    def use_engine(self, engine: str = "auto", n_images: int | None = None, threads: int | None = None) -> Embedder:
        """Run on the engine ``--engine engine`` names (see ``reidkit.inference.engines.choose_engine``;
        ``n_images`` None means "many") with ``threads`` CPU threads (default: the free physical cores);
        returns ``self``."""
        if engine not in ENGINES:
            raise ReidkitError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
        self._deferred = None
        if self.device.type == "cpu":
            from reidkit.utils.threads import configure_cpu_threads

            threads = configure_cpu_threads(threads)
            self.threads = threads
        meta = self.meta if self.model is not None and engine in ("auto", "onnx") else {}
        self.engine = choose_engine(engine, self.model, self.engine, meta, n_images, threads)
        return self

    def _defer_engine(self, engine: str, threads: int | None) -> None:
        """Leave the engine choice (``use_engine(engine, n, threads)``) to the first embedding call, which knows
        how many images it embeds."""
        if engine not in ENGINES:
            raise ReidkitError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
        self._deferred = (engine, threads)

    def _settle_engine(self, n_images: int) -> None:
        """Make the deferred engine choice for a call of ``n_images`` images. ``auto`` that keeps PyTorch on a
        CPU (few images, no cached export) stays deferred, so a later call of many images still switches."""
        if self._deferred is None:
            return
        engine, _ = self._deferred
        self.use_engine(engine, n_images, self._deferred[1])
        if engine == "auto" and self.model is not None and self.device.type == "cpu" and self.engine.kind == "torch":
            self._deferred = (engine, self.threads)  # the threads resolved once, not again at every call

    # ------------------------------------------------------------------ core
    def embed_uint8(self, u8: torch.Tensor, batch_size: int = 64, flip: bool = False,
                    progress: bool = False) -> torch.Tensor:
        """Embed a uint8 ``(N, 3, H, W)`` RGB batch (resized to ``input_size`` when it is another size);
        returns ``(N, D)`` float32 on the CPU. ``flip`` averages each image's embedding with its mirror's
        (as BDB's evaluator)."""
        if u8.dtype != torch.uint8 or u8.dim() != 4 or u8.shape[1] != 3:
            raise ReidkitError(f"embed: expected uint8 images (N, 3, H, W), got {u8.dtype} {tuple(u8.shape)}")
        if batch_size < 1:
            raise ReidkitError(f"embed: expected a batch size >= 1, got {batch_size}")
        if u8.shape[0] == 0:
            return torch.zeros(0, self.embedding_dim)
        self._settle_engine(int(u8.shape[0]))
        starts = range(0, int(u8.shape[0]), batch_size)
        chunks = []
        with show_progress(len(starts), "embed", "batch", enabled=progress) as bar:
            for s in starts:
                x = test_batch(u8[s:s + batch_size].to(self.engine.device, non_blocking=True), self.input_size)
                f = self.engine(x)
                if flip:
                    f = (f + self.engine(x.flip(-1))) / 2.0
                if not bool(torch.isfinite(f).all()):
                    raise CheckpointError(
                        f"{self.source or 'the model'}: the network gives NaN or infinite embeddings (images "
                        f"{s}-{s + len(f) - 1}); expected finite values (damaged weights or statistics)")
                chunks.append(f)
                bar.update(1)
        return torch.cat(chunks)

    def embed(self, images: ImageLike, batch_size: int = 64, flip: bool = False, bgr: bool = False,
              normalize: bool = False) -> torch.Tensor:
        """Embed pictures; returns an (N, D) float32 CPU tensor, one row per input picture.

        ``images``: a file path, a PIL image, an H×W×3 uint8 array, a list of these, or a tensor batch (uint8
        (N, 3, H, W) or float in [0, 1]). The model takes RGB: arrays and tensors are read as RGB, unless
        ``bgr=True``, which reverses the channel order of every array and tensor given (an OpenCV
        ``cv2.imread`` picture is BGR); files and PIL images are always decoded to RGB, whatever ``bgr`` says.
        ``flip`` averages with the mirrored picture; ``normalize`` L2-normalises the rows. An unreadable file
        raises ``reidkit.utils.images.ImageReadError`` naming it (use ``embed_paths`` to skip them).

        Examples:
            >>> feats = emb.embed(["a.jpg", Image.open("b.jpg")])  # doctest: +SKIP
            >>> feats = emb.embed([cv2.imread("c.jpg"), cv2.imread("d.jpg")], bgr=True)  # doctest: +SKIP
        """
        feats = []
        if torch.is_tensor(images) and images.dim() == 4:
            self._settle_engine(int(images.shape[0]))
            for s in range(0, images.shape[0], 4096):
                feats.append(self.embed_uint8(images_to_uint8(images[s:s + 4096], self.input_size, bgr),
                                              batch_size, flip))
        else:
            items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) or torch.is_tensor(images) \
                or (isinstance(images, np.ndarray) and images.ndim != 4) else list(images)
            self._settle_engine(len(items))
            for s in range(0, len(items), 1024):
                part = items[s:s + 1024]
                u8 = (images_to_uint8(part[0], self.input_size, bgr) if len(part) == 1 and torch.is_tensor(part[0])
                      else images_to_uint8(part, self.input_size, bgr))
                feats.append(self.embed_uint8(u8, batch_size, flip))
        out = torch.cat(feats) if feats else torch.zeros(0, self.embedding_dim)
        return torch.nn.functional.normalize(out, dim=1) if normalize else out

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, flip: bool = False, workers: int = 0,
                    progress: bool = False, normalize: bool = False,
                    chunk: int = 1024) -> tuple[torch.Tensor, list[str], list[str]]:
        """Embed image files, skipping unreadable ones: returns (feats, kept_paths, bad_paths).

        Files are decoded in chunks by ``reidkit.data.cache.decode_images`` (``workers`` threads),
        so memory stays bounded for large folders; ``progress`` shows a bar (in a log: a line per chunk).

        Examples:
            >>> feats, kept, bad = emb.embed_paths(["a.jpg", "broken.jpg"])  # doctest: +SKIP
        """
        from reidkit.data.cache import decode_images

        feats, kept, bad = [], [], []
        self._settle_engine(len(paths))
        with show_progress(len(paths), "embed", "img", enabled=progress) as bar:  # in a log: a line per chunk
            for s in range(0, len(paths), chunk):
                part = [str(p) for p in paths[s:s + chunk]]
                u8, bad_part = decode_images(part, self.input_size, workers)
                bad_set = set(map(str, bad_part))
                good = [p for p in part if p not in bad_set]
                bad.extend(p for p in part if p in bad_set)
                feats.append(self.embed_uint8(u8, batch_size, flip))
                kept.extend(good)
                bar.update(len(part))
        out = torch.cat(feats) if feats else torch.zeros(0, self.embedding_dim)
        return (torch.nn.functional.normalize(out, dim=1) if normalize else out), kept, bad

    def visual_maps(self, images: ImageLike, bgr: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(uint8 (N,3,H,W) inputs, the model's ``visual_maps`` dict of (N, h, w) maps); PyTorch models only.
        ``images`` and ``bgr`` as for ``embed``."""
        if self.model is None or not hasattr(self.model, "visual_maps"):
            raise ReidkitError(f"{self.source or self.meta.get('model')}: attention maps need a PyTorch "
                               "checkpoint or weight file with visual_maps(), not an ONNX file")
        u8 = images_to_uint8(images, self.input_size, bgr)
        x = test_batch(u8, self.input_size).to(self.device)
        with torch.no_grad():
            maps = self.model.visual_maps(x)
        return u8, {k: v.detach().float().cpu() for k, v in maps.items()}


def load(path: str | os.PathLike[str], device: str | torch.device | None = None, engine: str = "auto",
         threads: int | None = None) -> Embedder:
    """Load a model file for inference: a training checkpoint (.pt), a weight file (.safetensors), a run folder
    or ONNX.

    ``engine`` and ``threads`` are the command line's ``--engine`` and ``--threads``, with its defaults: at the
    first embedding call the embedder runs where ``reidkit extract`` would for that many images (on a CPU,
    ``auto`` is ONNX Runtime for at least ``AUTO_ONNX_MIN_IMAGES`` images or a model exported before, else
    PyTorch) with the free physical cores as threads (``reidkit.utils.threads.default_cpu_threads``; this
    sets PyTorch's intra-op threads for the process). ``Embedder.use_engine`` chooses at once instead.

    The file is read as untrusted input (``reidkit.inference.modelfile``): unknown models, damaged
    metadata, weights that do not fit their description and unreadable files raise
    ``reidkit.errors.CheckpointError`` with one line naming the file, before anything is allocated.

    Examples:
        >>> emb = reidkit.load("runs/stadb/checkpoint.pt", device="cpu")  # doctest: +SKIP
        >>> emb.input_size, emb.embedding_dim  # doctest: +SKIP
        ((384, 128), 1536)
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: model file not found (expected a .pt checkpoint, .safetensors or .onnx)")
    if engine not in ENGINES:
        raise ReidkitError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if p.suffix.lower() == ".onnx":
        emb = Embedder(device=device, onnx_path=p)
    else:
        from reidkit.inference.modelfile import load_model_file

        dev = resolve_device(device)
        emb = Embedder(load_model_file(p, dev), dev)
        emb.source = str(p)
    emb._defer_engine(engine, threads)
    return emb
