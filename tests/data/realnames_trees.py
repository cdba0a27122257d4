"""Trees in the real datasets' layouts, built from the real file names in ../shared/realnames: every image is a hard
link to one tiny valid JPEG/PNG, so a whole dataset's tree is built in a few seconds."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

from PIL import Image


def _tiny(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 4), (120, 30, 200)).save(buf, fmt)
    return buf.getvalue()


def build_tree(base: Path, rel_paths: list[str], fmt: str = "JPEG") -> None:
    """Create every relative path under ``base`` as a hard link to one tiny image."""
    base.mkdir(parents=True, exist_ok=True)
    data = _tiny(fmt)
    for d in sorted({os.path.dirname(p) for p in rel_paths}):
        (base / d).mkdir(parents=True, exist_ok=True)
    b = str(base)
    s = ""
    for i, p in enumerate(rel_paths):
        if i % 50_000 == 0:  # file systems cap hard links per inode (ext4: 65,000)
            s = os.path.join(b, f".src{i}.{fmt.lower()}")
            with open(s, "wb") as fh:
                fh.write(data)
        os.link(s, os.path.join(b, p))


def names(shared: Path, dataset: str) -> list[str]:
    """The relative paths of every file of ``dataset``'s real tree (``shared/realnames/<dataset>_names.txt.gz``)."""
    with gzip.open(shared / "realnames" / f"{dataset}_names.txt.gz", "rt", encoding="utf-8") as fh:
        return [line for line in fh.read().split("\n") if line]
