"""Shared fixtures: the ../shared folder (skipped when absent), small thread counts for CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``faiss`` skip with a reason where the optional faiss package is not installed."""
    from reidkit.eval.knn import faiss_available

    if faiss_available():
        return
    skip = pytest.mark.skip(reason="faiss is not installed (pip install 'reidkit[faiss]')")
    for item in items:
        if item.get_closest_marker("faiss") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the clone (CI has it; a user's clone does not)."""
    if not (SHARED / "realnames").is_dir():
        pytest.skip(f"../shared/realnames not found beside the clone (looked at {SHARED}); "
                    "these tests need the real file-name lists that CI provides")
    return SHARED


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Market-1501-layout synthetic dataset: 8 ids (4 train, 4 test), 2 cameras, 64×32 crops (read only)."""
    from reidkit.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    return generate_dataset(out, ids=8, cams=2, seed=0, images_per_id_cam=2, distractors=2, junk=1, size=(64, 32))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)
