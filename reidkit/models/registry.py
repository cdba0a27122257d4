"""Model registry: ``build(name, num_classes, **options)`` and ``names()``."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from reidkit.errors import ReidkitError
from reidkit.models.base import ReIDModel

# name -> "module:Class"; imported on first use
_MODELS: dict[str, str] = {
    "stadb": "reidkit.models.stadb:STADB",
    "bdb": "reidkit.models.bdb:BDB",
    "mancs": "reidkit.models.mancs:Mancs",
    "baseline": "reidkit.models.baseline:GlobalBaseline",
}


def names() -> list[str]:
    """The registered model names."""
    return list(_MODELS)


def model_class(name: str) -> type[ReIDModel]:
    """The class registered as ``name`` (a one-line ReidkitError for an unknown name)."""
    if name not in _MODELS:
        raise ReidkitError(f"unknown model {name!r}; expected one of {', '.join(_MODELS)}")
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def option_defaults(name: str) -> dict[str, Any]:
    """The keyword options of model ``name`` (the fields of its ``Options`` dataclass) with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(model_class(name).Options)}


def build(name: str, num_classes: int, **options: Any) -> ReIDModel:
    """Build model ``name`` for ``num_classes`` training identities with keyword ``options``.

    Unknown options raise a one-line ReidkitError listing the valid ones.
    """
    cls = model_class(name)
    valid = option_defaults(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ReidkitError(f"model {name!r} has no option {unknown[0]!r}; valid options: {', '.join(valid)}")
    if int(num_classes) < 1:
        raise ReidkitError(f"model {name!r}: num_classes must be >= 1, got {num_classes}")
    return cls(int(num_classes), **options)
