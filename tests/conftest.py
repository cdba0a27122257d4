"""Shared fixtures: the ../shared folder (skipped when absent), small thread counts for CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the clone (CI has it; a user's clone does not)."""
    if not (SHARED / "realnames").is_dir():
        pytest.skip(f"../shared/realnames not found beside the clone (looked at {SHARED}); "
                    "these tests need the real file-name lists that CI provides")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)
