"""Decode images once into a uint8 ``(N, 3, H, W)`` tensor and gather batches from it by index.

Decoding runs in a thread pool (``workers`` threads): Pillow releases the GIL while it decodes
and resizes, and threads avoid copying pixel arrays between processes. ``benchmarks/bench_data.py``
times threads against a process pool (``pool="process"``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Sequence

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.utils.images import ImageReadError, read_image, resize_rgb
from reidkit.utils.progress import progress as show_progress


def _decode_one(path: str, size: tuple[int, int]) -> np.ndarray | None:
    try:
        img = read_image(path)
    except ImageReadError:
        return None
    return np.asarray(resize_rgb(img, size), dtype=np.uint8)


def _decode_chunk(args: tuple[list[str], tuple[int, int]]) -> list[np.ndarray | None]:
    paths, size = args
    return [_decode_one(p, size) for p in paths]


def decode_images(
    paths: Sequence[str],
    size: tuple[int, int],
    workers: int = 0,
    progress: bool = False,
    pool: str = "thread",
) -> tuple[torch.Tensor, list[str]]:
    """Decode ``paths`` with ``read_image``, resize (PIL bilinear) to exactly ``size`` = (H, W).

    Returns ``(images, bad)``: a uint8 tensor ``(M, 3, H, W)`` holding the readable images in the
    order of ``paths``, and the list of paths that could not be decoded (their rows are left out,
    so ``M = len(paths) - len(bad)``; ``kept_indices`` gives the row → path index map).
    ``workers`` <= 1 decodes in this thread; otherwise ``pool`` is ``"thread"`` (default) or
    ``"process"``.
    """
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ReidkitError(f"decode_images: expected a positive size (H, W), got {size}")
    if pool not in ("thread", "process"):
        raise ReidkitError(f"decode_images: expected pool 'thread' or 'process', got {pool!r}")
    paths = [str(p) for p in paths]
    n = len(paths)
    out = torch.empty((n, h, w, 3), dtype=torch.uint8)
    out_np = out.numpy()
    ok = np.zeros(n, dtype=bool)
    bar = show_progress(n, "decode", "img", enabled=progress)

    def store(i: int, arr: np.ndarray | None) -> None:
        if arr is not None:
            out_np[i] = arr
            ok[i] = True
        bar.update(1)

    if workers <= 1 or n < 2:
        for i, p in enumerate(paths):
            store(i, _decode_one(p, (h, w)))
    elif pool == "thread":
        with cf.ThreadPoolExecutor(max_workers=workers) as ex:
            for i, arr in enumerate(ex.map(lambda p: _decode_one(p, (h, w)), paths, chunksize=1)):
                store(i, arr)
    else:
        chunk = max(1, min(256, n // (workers * 4) or 1))
        starts = list(range(0, n, chunk))
        ctx = mp.get_context("fork" if os.name != "nt" else "spawn")
        with ctx.Pool(workers) as pp:
            for s, arrs in zip(starts, pp.imap(_decode_chunk, [(paths[s:s + chunk], (h, w)) for s in starts]), strict=True):
                for j, arr in enumerate(arrs):
                    store(s + j, arr)
    bar.close()
    bad = [p for p, good in zip(paths, ok, strict=True) if not good]
    images = out[torch.from_numpy(ok)] if len(bad) else out
    return images.permute(0, 3, 1, 2).contiguous(), bad


def kept_indices(paths: Sequence[str], bad: Sequence[str]) -> list[int]:
    """Indices into ``paths`` of the rows ``decode_images`` returned (those not in ``bad``)."""
    bad_set = set(bad)
    return [i for i, p in enumerate(paths) if str(p) not in bad_set]


class ImageCache:
    """Holds a uint8 ``(N, 3, H, W)`` image tensor (on CPU, optionally pinned, or on a device).

    ``batch(indices, device)`` gathers rows and moves them to ``device`` (non-blocking from pinned memory).
    """

    def __init__(self, images: torch.Tensor, pin: bool = False, device: str | torch.device | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ReidkitError(f"ImageCache: expected a uint8 (N, 3, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if device is not None and torch.device(device).type != "cpu":
            images = images.to(device)
        elif pin and torch.cuda.is_available():
            images = images.pin_memory()
        self.images = images
        self.pinned = bool(images.is_pinned()) if images.device.type == "cpu" else False

    @classmethod
    def from_paths(
        cls, paths: Sequence[str], size: tuple[int, int], workers: int = 0, pin: bool = False,
        device: str | torch.device | None = None, progress: bool = False,
    ) -> tuple[ImageCache, list[str]]:
        """Decode ``paths`` (see ``decode_images``) into a cache; returns ``(cache, bad_paths)``."""
        images, bad = decode_images(paths, size, workers=workers, progress=progress)
        return cls(images, pin=pin, device=device), bad

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the cached images."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def batch(self, indices: Sequence[int] | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
        """The uint8 rows ``indices`` as a ``(B, 3, H, W)`` tensor on ``device`` (default: where the cache is)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise ReidkitError(f"ImageCache: index out of range for a cache of {len(self)} images")
        src = self.images
        idx = idx.to(src.device)
        if self.pinned:
            out = torch.empty((idx.numel(), *src.shape[1:]), dtype=torch.uint8).pin_memory()
            torch.index_select(src, 0, idx, out=out)
        else:
            out = src.index_select(0, idx)
        if device is not None and torch.device(device) != out.device:
            out = out.to(device, non_blocking=self.pinned)
        return out
