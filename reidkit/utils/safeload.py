"""The one way reidkit reads a torch pickle file: tensors and plain data only, never code."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from typing import Any

import torch

from reidkit.errors import CheckpointError


def safe_torch_load(path: str | os.PathLike[str], expected: str, map_location: str = "cpu",
                    mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line ``CheckpointError`` messages.

    A file holding objects that would run code is refused (and the message never suggests loading
    it unsafely); a damaged or foreign file names ``expected``. ``mmap`` maps the tensors' bytes instead of
    reading them (a look at the shapes costs no memory; files in the legacy format are read).

    Examples:
        >>> state = safe_torch_load("runs/x/checkpoint.pt", "a reidkit checkpoint")  # doctest: +SKIP
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused to load: it holds objects that would run code "
                              f"(expected {expected} of plain tensors)") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found (expected {expected})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply; expected {expected}") from None
    except Exception as exc:  # truncated zip, not a torch file at all
        raise CheckpointError(f"{path}: not a readable torch file ({type(exc).__name__}); "
                              f"expected {expected}") from None
