"""reidkit: person re-identification with STADB, Mancs, BDB and a global baseline.

The Python API is loaded on first use, so ``import reidkit`` stays light (no torch import):

>>> import reidkit
>>> emb = reidkit.load("runs/stadb/model.safetensors")        # doctest: +SKIP
>>> feats = emb.embed(["a.jpg", "b.jpg"])                     # doctest: +SKIP
>>> gallery = reidkit.Gallery(emb.embedding_dim)              # doctest: +SKIP
>>> results = reidkit.evaluate                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reidkit.version import __version__

__all__ = ["Embedder", "Gallery", "__version__", "datasets", "evaluate", "load", "models"]

# subpackages reachable as attributes without an explicit import (reidkit.models.build, reidkit.datasets.load)
_SUBMODULES = ("models", "datasets", "eval", "data", "losses", "engine", "inference", "viz")

# public name -> module that defines it
_LAZY = {
    "load": "reidkit.inference",
    "Embedder": "reidkit.inference",
    "Gallery": "reidkit.inference",
    "evaluate": "reidkit.eval",
}

if TYPE_CHECKING:  # pragma: no cover
    from reidkit.eval import evaluate
    from reidkit.inference import Embedder, Gallery, load


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"reidkit.{name}")
    raise AttributeError(f"module 'reidkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
