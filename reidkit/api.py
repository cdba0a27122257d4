"""The Python API: ``reidkit.load(path)`` → :class:`Embedder`, and :class:`reidkit.Gallery`.

Example:
    >>> import reidkit
    >>> emb = reidkit.load("runs/stadb/model.safetensors")  # doctest: +SKIP
    >>> feats = emb.embed(["a.jpg", "b.jpg"])  # (2, emb.embedding_dim) float32  # doctest: +SKIP
    >>> gallery = reidkit.Gallery(emb.embedding_dim)  # doctest: +SKIP
    >>> gallery.add(feats, ids=["a.jpg", "b.jpg"])  # doctest: +SKIP
    >>> gallery.search(emb.embed("query.jpg"), k=1)[0][0].id  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.index import Gallery, SearchResult
from reidkit.utils.images import read_image, to_rgb

__all__ = ["Embedder", "Gallery", "SearchResult", "load", "model_meta"]

ImageLike = Any  # path | PIL.Image | HxWx3 uint8 array | tensor batch, or a list of them


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict: names, shapes and float32 values.

    The same weights give the same digest whether loaded from a checkpoint, a safetensors file or
    exported to ONNX (the export stores it), so an index can tell models apart.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous()
                 .numpy().tobytes())
    return h.hexdigest()[:16]


def model_meta(model: torch.nn.Module) -> dict[str, Any]:
    """The JSON description of a reidkit model (ARCHITECTURE.md model contract) plus its weights digest.

    Example:
        >>> model_meta(model)["input_size"]  # doctest: +SKIP
        [384, 128]
    """
    from reidkit import __version__

    return {
        "model": str(getattr(model, "name", type(model).__name__)),
        "num_classes": getattr(model, "num_classes", None),
        "options": dict(getattr(model, "options", {}) or {}),
        "input_size": [int(v) for v in getattr(model, "input_size", (256, 128))],
        "embedding_dim": int(getattr(model, "embedding_dim", 0)),
        "version": __version__,
        "weights_digest": weights_digest(model),
    }


# ---------------------------------------------------------------------------------------------- images
def _resize_u8(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """RGB PIL image → uint8 (3, H, W) tensor at ``size`` (H, W), resized as the image cache resizes."""
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _array_to_pil(arr: np.ndarray, bgr: bool, what: str) -> Image.Image:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ReidkitError(f"{what}: expected an H×W×3 image array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = np.round(arr * 255.0)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    arr = arr[..., :3]
    if bgr:
        arr = arr[..., ::-1]
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def images_to_uint8(images: ImageLike, size: tuple[int, int], bgr: bool = False) -> torch.Tensor:
    """Any supported image input → uint8 (N, 3, H, W) tensor at ``size``.

    Accepts a path, a PIL image, an H×W×3 uint8 array (RGB, or BGR with ``bgr=True``), a list of these,
    or a tensor batch: uint8 (N, 3, H, W) or float (N, 3, H, W) in [0, 1] (tensors are RGB). Pictures of
    another size are resized (bilinear) to ``size``.

    Example:
        >>> images_to_uint8(np.zeros((64, 32, 3), np.uint8), (128, 64)).shape
        torch.Size([1, 3, 128, 64])
    """
    h, w = size
    if torch.is_tensor(images):
        t = images.detach().to("cpu")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[1] != 3:
            raise ReidkitError(f"image tensor: expected (N, 3, H, W), got shape {tuple(t.shape)}")
        if t.is_floating_point():
            t = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        elif t.dtype != torch.uint8:
            raise ReidkitError(f"image tensor: expected uint8 or float in [0, 1], got {t.dtype}")
        if bgr:
            t = t.flip(1)
        if tuple(t.shape[2:]) == (h, w):
            return t.contiguous()
        return torch.stack([_resize_u8(Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB"), size) for x in t])
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise ReidkitError(f"images: expected paths, PIL images, arrays or a tensor, got {type(images).__name__}")
    out = []
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            img = read_image(item)
        elif isinstance(item, Image.Image):
            img = to_rgb(item)
        elif isinstance(item, np.ndarray):
            img = _array_to_pil(item, bgr, f"images[{i}]")
        else:
            raise ReidkitError(f"images[{i}]: expected a path, a PIL image or an H×W×3 array, "
                               f"got {type(item).__name__}")
        out.append(_resize_u8(img, size))
    if not out:
        return torch.zeros(0, 3, h, w, dtype=torch.uint8)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------- backends
class _OnnxRunner:
    """Runs an exported reidkit ONNX model with onnxruntime on float32 normalised batches."""

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise ReidkitError(f"{path}: running ONNX models needs onnxruntime "
                               "(pip install 'reidkit[onnx]')") from exc
        from reidkit.export import read_onnx_meta

        self.meta = read_onnx_meta(path)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}); "
                                  "expected a file from 'reidkit export'") from exc
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


class Embedder:
    """Turns person crops into embeddings with a trained model (PyTorch or ONNX).

    Make one with :func:`reidkit.load`, or wrap a model in memory: ``Embedder(model)``.

    Attributes:
        device: where the model runs.
        input_size: (H, W) the crops are resized to.
        embedding_dim: width D of the embeddings.
        meta: the model description (name, options, input size, weights digest) stored in indexes.

    Example:
        >>> emb = Embedder(model)  # doctest: +SKIP
        >>> emb.embed(np.zeros((256, 128, 3), np.uint8)).shape  # doctest: +SKIP
        torch.Size([1, 1536])
    """

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device | None = None, *,
                 onnx_path: str | os.PathLike[str] | None = None) -> None:
        self.device = _pick_device(device)
        self.model: torch.nn.Module | None = None
        self._onnx: _OnnxRunner | None = None
        if onnx_path is not None:
            self._onnx = _OnnxRunner(Path(onnx_path), self.device)
            self.meta = dict(self._onnx.meta)
        elif model is not None:
            self.model = model.to(self.device).eval()
            self.meta = model_meta(model)
        else:
            raise ReidkitError("Embedder: pass a model or onnx_path")
        self.input_size: tuple[int, int] = (int(self.meta["input_size"][0]), int(self.meta["input_size"][1]))
        self.embedding_dim: int = int(self.meta.get("embedding_dim") or 0)
        self.source: str | None = str(onnx_path) if onnx_path is not None else None

    def __repr__(self) -> str:
        kind = "onnx" if self._onnx is not None else "torch"
        return (f"Embedder({self.meta.get('model')}, {kind}, input {self.input_size[0]}x{self.input_size[1]}, "
                f"{self.embedding_dim}-d, device={self.device})")

    # ------------------------------------------------------------------ core
    def embed_uint8(self, u8: torch.Tensor, batch_size: int = 64, flip: bool = False) -> torch.Tensor:
        """Embed a uint8 (N, 3, H, W) RGB batch already at :attr:`input_size`; returns (N, D) float32 on CPU."""
        if u8.shape[0] == 0:
            return torch.zeros(0, self.embedding_dim)
        if self.model is not None:
            from reidkit.engine.features import embed_uint8

            out = embed_uint8(self.model, u8, batch_size=batch_size, device=self.device, flip=flip,
                              input_size=self.input_size)
            return out.detach().to("cpu", torch.float32)
        from reidkit.data.augment import test_batch

        assert self._onnx is not None
        chunks = []
        for s in range(0, u8.shape[0], batch_size):
            x = test_batch(u8[s:s + batch_size], self.input_size)
            f = self._onnx(x)
            if flip:
                f = (f + self._onnx(x.flip(3))) / 2.0
            chunks.append(f)
        return torch.cat(chunks)

    def embed(self, images: ImageLike, batch_size: int = 64, flip: bool = False, bgr: bool = False,
              normalize: bool = False) -> torch.Tensor:
        """Embed pictures; returns an (N, D) float32 CPU tensor, one row per input picture.

        ``images``: a file path, a PIL image, an H×W×3 uint8 array (RGB; OpenCV BGR with ``bgr=True``), a
        list of these, or a tensor batch (uint8 (N, 3, H, W) or float in [0, 1]). ``flip`` averages with
        the mirrored picture; ``normalize`` L2-normalises the rows. An unreadable file raises
        :class:`reidkit.utils.images.ImageReadError` naming it (use :meth:`embed_paths` to skip them).

        Example:
            >>> feats = emb.embed(["a.jpg", Image.open("b.jpg"), cv2.imread("c.jpg")], bgr=False)  # doctest: +SKIP
        """
        feats = []
        if torch.is_tensor(images) and images.dim() == 4:
            for s in range(0, images.shape[0], 4096):
                feats.append(self.embed_uint8(images_to_uint8(images[s:s + 4096], self.input_size, bgr),
                                              batch_size, flip))
        else:
            items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) or torch.is_tensor(images) \
                or (isinstance(images, np.ndarray) and images.ndim != 4) else list(images)
            for s in range(0, len(items), 1024):
                part = items[s:s + 1024]
                u8 = (images_to_uint8(part[0], self.input_size, bgr) if len(part) == 1 and torch.is_tensor(part[0])
                      else images_to_uint8(part, self.input_size, bgr))
                feats.append(self.embed_uint8(u8, batch_size, flip))
        out = torch.cat(feats) if feats else torch.zeros(0, self.embedding_dim)
        if normalize:
            out = torch.nn.functional.normalize(out, dim=1)
        return out

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, flip: bool = False, workers: int = 0,
                    progress: bool = False, normalize: bool = False,
                    chunk: int = 1024) -> tuple[torch.Tensor, list[str], list[str]]:
        """Embed image files, skipping unreadable ones: returns (feats, kept_paths, bad_paths).

        Files are decoded in chunks by :func:`reidkit.data.cache.decode_images` (``workers`` processes),
        so memory stays bounded for large folders; ``progress`` shows a bar.

        Example:
            >>> feats, kept, bad = emb.embed_paths(["a.jpg", "broken.jpg"])  # doctest: +SKIP
        """
        from reidkit.data.cache import decode_images

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), desc="embed", unit="img")
        feats, kept, bad = [], [], []
        try:
            for s in range(0, len(paths), chunk):
                part = [str(p) for p in paths[s:s + chunk]]
                u8, bad_part = decode_images(part, self.input_size, workers)
                bad_set = set(map(str, bad_part))
                good = [p for p in part if p not in bad_set]
                bad.extend(p for p in part if p in bad_set)
                if len(good) != u8.shape[0]:
                    raise RuntimeError(f"decode_images returned {u8.shape[0]} images for {len(good)} good paths")
                feats.append(self.embed_uint8(u8, batch_size, flip))
                kept.extend(good)
                if bar is not None:
                    bar.update(len(part))
        finally:
            if bar is not None:
                bar.close()
        out = torch.cat(feats) if feats else torch.zeros(0, self.embedding_dim)
        if normalize:
            out = torch.nn.functional.normalize(out, dim=1)
        return out, kept, bad

    def visual_maps(self, images: ImageLike, bgr: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(uint8 (N,3,H,W) inputs, the model's ``visual_maps`` dict of (N, h, w) maps); PyTorch models only."""
        if self.model is None or not hasattr(self.model, "visual_maps"):
            raise ReidkitError(f"{self.source or self.meta.get('model')}: attention maps need a PyTorch "
                               "checkpoint or weight file with visual_maps(), not an ONNX file")
        from reidkit.data.augment import test_batch

        u8 = images_to_uint8(images, self.input_size, bgr)
        x = test_batch(u8, self.input_size).to(self.device)
        with torch.no_grad():
            maps = self.model.visual_maps(x)
        return u8, {k: v.detach().float().cpu() for k, v in maps.items()}


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ReidkitError(f"--device {device!r}: expected cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ReidkitError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def load(path: str | os.PathLike[str], device: str | torch.device | None = None) -> Embedder:
    """Load a model file for inference: a training checkpoint (.pt), a weight file (.safetensors) or ONNX.

    Unknown models and unreadable files raise :class:`reidkit.errors.CheckpointError` with one line naming
    the file.

    Example:
        >>> emb = reidkit.load("runs/stadb/checkpoint.pt", device="cpu")  # doctest: +SKIP
        >>> emb.input_size, emb.embedding_dim  # doctest: +SKIP
        ((384, 128), 1536)
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: model file not found (expected a .pt checkpoint, .safetensors or .onnx)")
    if p.suffix.lower() == ".onnx":
        emb = Embedder(device=device, onnx_path=p)
    else:
        from reidkit.models.io import load_model

        dev = _pick_device(device)
        emb = Embedder(load_model(str(p), dev), dev)
        emb.source = str(p)
    return emb


def meta_equal(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """True when two model descriptions name the same architecture and weights."""
    from reidkit.index import model_fingerprint

    if a is None or b is None:
        return True
    return model_fingerprint(a) == model_fingerprint(b)

