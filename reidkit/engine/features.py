"""Batched eval-mode embedding of uint8 images, with optional flip averaging (as BDB's evaluator)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import nn

from reidkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, test_batch
from reidkit.data.cache import decode_images
from reidkit.errors import ReidkitError


def physical_cores() -> int:
    """Physical CPU cores (``psutil`` when installed, else ``os.cpu_count()``)."""
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:  # pragma: no cover - psutil is a dependency of the benchmarks only
        return int(os.cpu_count() or 1)


def default_cpu_threads() -> int:
    """Threads for CPU inference: ``OMP_NUM_THREADS`` when set, else the physical cores not already busy.

    The physical core count minus the whole part of the 1-minute load average (at least 1). On a
    busy machine more OpenMP threads than free cores spin at every barrier: on the 2-core
    development machine at load ~9, eager ResNet inference took 5-10x the CPU time and 4-8x the
    wall time with 2 threads than with 1 (see BENCHMARKS.md, "Feature extraction").
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = physical_cores()
    try:
        busy = math.floor(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        busy = 0
    return max(1, min(cores, cores - busy))


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`default_cpu_threads`); returns the number."""
    n = int(threads) if threads else default_cpu_threads()
    if n < 1:
        raise ReidkitError(f"threads: expected a positive number, got {threads}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@torch.inference_mode()
def embed_uint8(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    flip: bool = False,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    progress: bool = False,
) -> torch.Tensor:
    """Embed uint8 ``(N, 3, H, W)`` images with ``model`` in eval mode; returns float32 ``(N, D)`` on CPU.

    Each batch is moved to ``device``, resized to ``input_size`` (default: the model's
    ``input_size`` attribute if it has one, else left as is) and normalised. With ``flip`` the
    feature is the mean of the image's and its horizontal mirror's. The model's train/eval mode
    is restored afterwards.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ReidkitError(f"embed_uint8: expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1:
        raise ReidkitError(f"embed_uint8: expected batch_size >= 1, got {batch_size}")
    dev = torch.device(device)
    size = tuple(input_size) if input_size is not None else tuple(getattr(model, "input_size", images.shape[-2:]))
    was_training = model.training
    model.eval()
    outs: list[torch.Tensor] = []
    n = int(images.shape[0])
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="embed", unit="batch")
    try:
        for s in starts:
            u8 = images[s:s + batch_size].to(dev, non_blocking=True)
            x = test_batch(u8, (int(size[0]), int(size[1])), mean, std)
            f = _forward(model, x)
            if flip:
                f = (f + _forward(model, x.flip(-1))) / 2
            outs.append(f.float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        dim = getattr(model, "embedding_dim", 0)
        return torch.zeros((0, int(dim)), dtype=torch.float32)
    return torch.cat(outs)


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = model(x)
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ReidkitError(f"embed: expected the eval-mode model to return (N, D) features, got {shape}")
    return f


def extract_features(
    model: nn.Module,
    paths: Sequence[str],
    input_size: tuple[int, int],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    flip: bool = False,
    workers: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, list[str]]:
    """Decode ``paths`` at ``input_size`` (H, W) and embed them: ``(feats (M, D) float32 CPU, bad_paths)``.

    Rows follow ``paths`` with the unreadable files (listed in ``bad_paths``) left out.
    """
    images, bad = decode_images(paths, input_size, workers=workers, progress=progress)
    feats = embed_uint8(model, images, batch_size=batch_size, device=device, flip=flip, input_size=input_size,
                        progress=progress)
    return feats, bad
