"""Small pictures of an index's entries, kept inside the index folder (``thumbs/``), so that ``reidkit search
--picture`` draws every entry — also those added later from other folders — without reading anything outside
the index folder or a ``--gallery-root`` the user names.

A thumbnail is named by a hash of its entry's image path (as ``reidkit.inference.gallery.entry_path`` resolves
it), so a manifest cannot choose which file is read: only regular files named that way inside ``thumbs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

FOLDER = "thumbs"
SIZE = (64, 128)  # (W, H): the rank list's tile
QUALITY = 85


def thumbnail_path(index_dir: str | os.PathLike[str], image_path: str) -> Path:
    """Where the thumbnail of the entry whose image is ``image_path`` (absolute, normalised) is kept."""
    key = hashlib.sha256(os.path.normpath(image_path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return Path(index_dir) / FOLDER / f"{key}.jpg"


def write_thumbnails(index_dir: str | os.PathLike[str], image_paths: Iterable[str]) -> int:
    """Write (or replace) the thumbnails of ``image_paths``; returns how many were written. An image that
    cannot be read or a thumbnail that cannot be written is skipped: the picture then draws that tile blank."""
    from reidkit.errors import ReidkitError
    from reidkit.utils.atomic import atomic_path
    from reidkit.utils.images import ImageReadError, read_image

    written = 0
    for p in image_paths:
        try:
            img = read_image(p).resize(SIZE, Image.Resampling.BILINEAR)
            with atomic_path(thumbnail_path(index_dir, p)) as tmp:
                img.save(tmp, format="JPEG", quality=QUALITY)
        except (ImageReadError, ReidkitError, OSError):
            continue
        written += 1
    return written


def readable_thumbnail(index_dir: str | os.PathLike[str], image_path: str) -> str | None:
    """The thumbnail of ``image_path`` when it is a regular file (not a link), else None."""
    p = thumbnail_path(index_dir, image_path)
    try:
        return str(p) if stat.S_ISREG(os.lstat(p).st_mode) and not os.path.islink(p.parent) else None
    except OSError:
        return None


def remove_thumbnails(index_dir: str | os.PathLike[str], image_paths: Iterable[str]) -> None:
    """Remove the thumbnails of ``image_paths`` (the entries an ``index remove`` took out)."""
    for p in image_paths:
        with contextlib.suppress(OSError):
            thumbnail_path(index_dir, p).unlink()
