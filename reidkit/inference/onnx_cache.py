"""The ONNX export cache of ``--engine auto/onnx`` (``reidkit.inference.engines``) kept bounded: at most
``MAX_MODELS`` exported models and ``MAX_BYTES`` in all, the least recently used removed first, and the
temporary files of exports killed midway removed once they are an hour old.

Only files named as the cache names them are ever removed, so a ``REIDKIT_CACHE`` pointing at a folder that
holds other files loses none of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

MAX_MODELS = 8
MAX_BYTES = 2 * 2**30
STALE_TEMP_S = 3600.0

# "<model>-<H>x<W>-opset<N>-<16 hex>.onnx" (``engines.cached_onnx_path``) and atomic_path's temporary files of it
_CACHED = re.compile(r"[A-Za-z0-9_.]+-\d+x\d+-opset\d+-[0-9a-f]{16}\.onnx")
_TEMP = re.compile(r"\.([A-Za-z0-9_.]+-\d+x\d+-opset\d+-[0-9a-f]{16}\.onnx)\..+\.tmp")


def mark_used(path: Path) -> None:
    """Record that the cached ``path`` was just used (its modification time), so it is removed last."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(folder: Path, keep: Path | None = None, max_models: int = MAX_MODELS, max_bytes: int = MAX_BYTES,
          now: float | None = None) -> list[Path]:
    """Remove the least recently used cached models of ``folder`` beyond ``max_models`` files or ``max_bytes``
    bytes (never ``keep``, the one in use), and stale temporary files; returns what was removed."""
    now = time.time() if now is None else now
    models: list[tuple[float, int, Path]] = []
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if _CACHED.fullmatch(e.name):
            models.append((st.st_mtime, st.st_size, Path(e.path)))
        elif _TEMP.fullmatch(e.name) and now - st.st_mtime > STALE_TEMP_S:
            removed += _unlink(Path(e.path))
    models.sort(key=lambda m: m[0], reverse=True)  # most recently used first
    total, count = 0, 0
    for _mtime, size, path in models:
        if keep is not None and path == keep:
            total, count = total + size, count + 1
    for _mtime, size, path in models:
        if keep is not None and path == keep:
            continue
        if count + 1 > max_models or total + size > max_bytes:
            removed += _unlink(path)
        else:
            total, count = total + size, count + 1
    return removed


def _unlink(path: Path) -> list[Path]:
    try:
        path.unlink()
    except OSError:
        return []
    return [path]
