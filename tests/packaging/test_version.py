"""``reidkit.__version__`` (from the leaf module ``reidkit.version``) is the version pyproject.toml declares."""

from __future__ import annotations

import re
from pathlib import Path

import reidkit
from reidkit.version import __version__

REPO = Path(__file__).resolve().parents[2]


def test_version_is_pyprojects() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]  # tomllib is not in Python 3.10
    declared = re.search(r'^version = "([^"]+)"$', project, re.M)
    assert declared, "pyproject.toml: no version in [project]"
    assert __version__ == declared.group(1)
    assert reidkit.__version__ == declared.group(1)
