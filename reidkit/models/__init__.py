"""Re-ID networks (STADB, BDB, Mancs, a global baseline), their registry and weight files."""

from reidkit.models.base import ReIDModel
from reidkit.models.io import load_model, save_weights
from reidkit.models.registry import build, names

__all__ = ["ReIDModel", "build", "load_model", "names", "save_weights"]
