"""The ONNX export cache of ``--engine auto`` stays bounded: the least recently used exports go first, the one
in use and files the cache did not name are never removed, temporary files of killed exports are cleaned."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
from pathlib import Path

import pytest

from reidkit.inference import onnx_cache


def fake(folder: Path, i: int, size: int = 10, age: float = 0.0) -> Path:
    p = folder / f"stadb-64x32-opset17-{i:016x}.onnx"
    p.write_bytes(b"x" * size)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_prune_keeps_the_most_recent_and_the_one_in_use(tmp_path: Path) -> None:
    models = [fake(tmp_path, i, age=100 - i) for i in range(10)]  # models[9] the most recently used
    keep = models[0]  # the oldest, but in use
    other = tmp_path / "my-notes.onnx"
    other.write_bytes(b"mine")
    stale = tmp_path / f".{models[3].name}.abc123.tmp"
    fresh = tmp_path / f".{models[4].name}.def456.tmp"
    for p in (stale, fresh):
        p.write_bytes(b"half")
    old = time.time() - 2 * onnx_cache.STALE_TEMP_S
    os.utime(stale, (old, old))
    removed = onnx_cache.prune(tmp_path, keep=keep, max_models=3)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([keep.name, models[9].name, models[8].name, other.name, fresh.name])
    assert set(removed) == {*models[1:8], stale}


def test_prune_bounds_the_bytes(tmp_path: Path) -> None:
    models = [fake(tmp_path, i, size=100, age=10 - i) for i in range(5)]
    onnx_cache.prune(tmp_path, keep=models[4], max_bytes=250)
    assert sorted(tmp_path.iterdir()) == [models[3], models[4]]


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
                    reason="onnx/onnxruntime not installed")
def test_a_new_export_prunes_the_cache(stadb_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reidkit
    from reidkit.inference.engines import cached_onnx_path, onnx_cache_dir

    monkeypatch.setenv("REIDKIT_CACHE", str(tmp_path))
    folder = onnx_cache_dir()
    folder.mkdir(parents=True)
    earlier = [fake(folder, i, age=1000 - i) for i in range(onnx_cache.MAX_MODELS + 2)]
    emb = reidkit.load(stadb_file, device="cpu")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        emb.use_engine("onnx")
    assert emb.engine.kind == "onnx" and "keeps the 8 last used" in err.getvalue()
    mine = cached_onnx_path(emb.meta)
    left = sorted(folder.iterdir())
    assert mine in left and len(left) == onnx_cache.MAX_MODELS
    assert set(left) - {mine} == set(earlier[-(onnx_cache.MAX_MODELS - 1):])  # the most recently used kept
    # using an export marks it recently used: it outlives the others at the next prune
    os.utime(mine, (0, 0))
    reidkit.load(stadb_file, device="cpu").use_engine("onnx")
    assert mine.stat().st_mtime > time.time() - 60
