"""The reidkit version (``pyproject.toml`` holds the same string; a test keeps the two equal)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
