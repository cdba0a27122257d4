"""Dataset readers: one per benchmark plus the user's own folder/CSV, behind one registry.

>>> from reidkit.data import datasets
>>> ds = datasets.load("market1501", "/data")          # doctest: +SKIP
>>> print(ds.stats_table())                            # doctest: +SKIP

Every reader returns a ``reidkit.data.records.ReidDataset`` with train pids relabelled
``0..N-1`` (``extras["train_pids"]`` keeps the originals), query/gallery pids as the dataset numbers
them, and 0-based camids. ``root`` may be the dataset's own folder or the folder holding it.
Options per dataset (all keyword):

- every reader: ``verify_images`` (``True``/"full", "header", ``False``/"none"; see
  ``reidkit.data.datasets._common``), default "header" for benchmarks and ``True`` for folder/csv;
- ``folder``, ``csv``: ``default_camid`` (the camera of images that name none: an integer, or one per
  split as ``{"train": 0, "query": 0, "gallery": 1}``; see ``reidkit.data.datasets.custom``);
- ``msmt17``: ``train_lists=("train", "val")``;
- ``cuhk03``: ``labeled=True``, ``protocol="new"|"classic"``, ``split_id=0``, ``classic_query="view1"|"all"``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

from reidkit.data.datasets._common import DatasetWarning
from reidkit.data.records import ReidDataset
from reidkit.errors import DatasetError

__all__ = ["DatasetWarning", "canonical_name", "load", "names", "reader"]

# canonical name -> (module, function)
_REGISTRY: dict[str, tuple[str, str]] = {
    "market1501": ("reidkit.data.datasets.market1501", "load"),
    "dukemtmcreid": ("reidkit.data.datasets.dukemtmc", "load"),
    "msmt17": ("reidkit.data.datasets.msmt17", "load"),
    "cuhk03": ("reidkit.data.datasets.cuhk03", "load"),
    "celebreid": ("reidkit.data.datasets.celebreid", "load"),
    "folder": ("reidkit.data.datasets.custom", "load_folder"),
    "csv": ("reidkit.data.datasets.custom", "load_csv"),
}

_ALIASES = {"market": "market1501", "duke": "dukemtmcreid", "dukemtmc": "dukemtmcreid", "celeb": "celebreid"}


def names() -> list[str]:
    """The dataset names ``load`` accepts (canonical spellings)."""
    return list(_REGISTRY)


def canonical_name(name: str) -> str:
    """The registry spelling of ``name`` (case, dashes and underscores ignored; a few aliases)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(_REGISTRY)}")
    return key


def reader(name: str) -> Callable[..., ReidDataset]:
    """The reader function of dataset ``name`` (called as ``reader(root, **options)``)."""
    module, func = _REGISTRY[canonical_name(name)]
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def load(name: str, root: str | os.PathLike[str], **options: Any) -> ReidDataset:
    """Read dataset ``name`` from ``root`` with the reader's keyword ``options``; unknown options and
    layout problems raise ``DatasetError``."""
    fn = reader(name)
    accepted = [p for p in inspect.signature(fn).parameters if p != "root"]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise DatasetError(f"{canonical_name(name)}: unknown option(s) {', '.join(unknown)}; accepted: "
                           f"{', '.join(accepted)}")
    return fn(root, **options)
