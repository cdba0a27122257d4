"""Training presets shipped inside the package: one YAML file per paper row (and, under ``examples/``, settings no
paper reports, each saying so first), found by name.

The presets live in ``reidkit/configs/`` (package data, so a ``pip install``ed reidkit has them; the
repository's top-level ``configs`` is a link to that folder, not a copy). A preset's name is its path
under that folder without ``.yaml``: ``stadb_market1501``, ``ablations/table6_all``. A config file names
one as ``_base_: stadb_market1501`` and ``reidkit train --preset stadb_market1501`` trains it;
``reidkit presets`` lists them with the paper row each reproduces, the first sentence of its header
comment.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from reidkit.errors import ConfigError
from reidkit.utils.limits import MAX_CONFIG_BYTES
from reidkit.utils.textfile import read_text

__all__ = ["find_preset", "preset_names", "preset_path", "preset_summary", "presets_folder"]

_SUFFIX = ".yaml"


def presets_folder() -> Path:
    """The folder of the installed package's presets (``reidkit/configs``)."""
    folder = importlib.resources.files("reidkit") / "configs"
    if not isinstance(folder, Path):  # a zipped install: no real files to give a path to
        raise ConfigError("the presets are inside a zipped reidkit install; install reidkit unzipped to use them")
    return folder


def preset_names() -> list[str]:
    """Every preset's name, sorted: the main ones first, then those in sub-folders (``ablations/...``)."""
    root = presets_folder()
    names = [p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{_SUFFIX}") if p.is_file()]
    return sorted(names, key=lambda n: (n.count("/"), [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]))


def find_preset(name: str) -> Path | None:
    """The file of preset ``name`` (``.yaml`` may be given), or ``None`` when there is no such preset."""
    name = name.strip()
    if name.endswith(_SUFFIX):
        name = name[: -len(_SUFFIX)]
    if not name or name.startswith("/") or ".." in name.split("/") or "\\" in name:
        return None
    path = presets_folder() / f"{name}{_SUFFIX}"
    return path if path.is_file() else None


def preset_path(name: str) -> Path:
    """The file of preset ``name``; ``ConfigError`` listing the presets when there is none by that name."""
    path = find_preset(name)
    if path is None:
        main = [n for n in preset_names() if "/" not in n]
        raise ConfigError(f"no preset named {name!r}; presets: {', '.join(main)}, ablations/... "
                          "(`reidkit presets` lists them all)")
    return path


def preset_summary(name: str) -> str:
    """The paper row preset ``name`` reproduces: its header comment up to the first line ending a sentence."""
    lines = []
    text = read_text(preset_path(name), limit=MAX_CONFIG_BYTES, what="a preset", error=ConfigError)
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        lines.append(text)
        if text.endswith("."):
            break
    return " ".join(t for t in lines if t)
