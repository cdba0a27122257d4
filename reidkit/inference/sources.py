"""Where the images to embed come from: a folder, a CSV list (``path`` and optional ``pid``, ``camid``
columns), or a benchmark's query/gallery; and the labels a file name carries."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reidkit.data.datasets.custom import number_identities, read_csv_rows
from reidkit.errors import DatasetError
from reidkit.utils.images import walk_files
from reidkit.utils.paths import OUTSIDE

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
CAM_RE = re.compile(r"^[cC]?(\d+)_")


@dataclass
class ImageList:
    """Image paths with their identity and camera labels (-1 when unknown), the list entries left out
    (``(as written, why)``) and, when the identities were names, the names by pid."""

    paths: list[str]
    pids: list[int]
    camids: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    identity_names: list[str] | None = None  # pid i was named identity_names[i] (a CSV with named identities)

    def __len__(self) -> int:
        return len(self.paths)


def parse_labels(path: str) -> tuple[int, int]:
    """(pid, camid) from a file's name: Market-1501 ``0002_c3s1_...`` → (2, 2) (0-based camera, as the
    Market reader), custom layout ``<pid>/<camid>_x.jpg`` → (pid, camid as written); (-1, -1) when unknown.

    Examples:
        >>> parse_labels("/x/0002_c3s1_000451_03.jpg")
        (2, 2)
        >>> parse_labels("/x/17/4_a.jpg")
        (17, 4)
        >>> parse_labels("/x/photo.jpg")
        (-1, -1)
    """
    p = Path(path)
    m = MARKET_RE.match(p.name)
    if m:
        return int(m.group(1)), int(m.group(2)) - 1
    c = CAM_RE.match(p.name)
    if c and p.parent.name.isdigit():
        return int(p.parent.name), int(c.group(1))
    return -1, -1


def list_folder(directory: str) -> list[str]:
    """Every image file under ``directory`` (recursive, sorted); a one-line error when there is none."""
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"{d}: not a folder; expected a folder of images (.jpg, .png, ...)")
    paths = walk_files(d)
    if not paths:
        raise DatasetError(f"{d}: no images found; expected .jpg/.jpeg/.png/.bmp/.webp/.tif files")
    return paths


def folder_images(directory: str) -> ImageList:
    """The images of a folder with the labels their names carry (``parse_labels``)."""
    paths = list_folder(directory)
    labels = [parse_labels(q) for q in paths]
    return ImageList(paths, [a for a, _ in labels], [b for _, b in labels])


def csv_images(csv_path: str) -> ImageList:
    """Paths, pids and camids from a CSV with a ``path`` column (optional ``pid``, ``camid``), read by the
    ``csv`` dataset's reader (``reidkit.data.datasets.custom.read_csv_rows``: the same header, path and
    camid rules and messages). Missing labels are -1. ``pid`` is an integer or a name: when any is a name,
    every identity is a name, numbered in sorted order, and ``identity_names`` lists them (as the ``csv``
    dataset does). A relative path that leads outside the CSV's folder is left out and listed in
    ``skipped``."""
    p = Path(csv_path)
    if not p.exists():
        raise DatasetError(f"{p}: CSV file not found; expected a CSV list with a 'path' column "
                           "(optional pid, camid)")
    rows = read_csv_rows(p, ["path"], "path[,pid,camid]")
    out = ImageList([], [], [])
    folder = os.path.abspath(p.parent)
    kept = [row for row in rows if row.path is not None]
    labelled, names = number_identities({"list": [(str(i), row.pid, 0) for i, row in enumerate(kept) if row.pid]})
    pid_of = {int(i): pid for i, pid, _ in labelled["list"]}
    for i, row in enumerate(kept):
        out.paths.append(str(row.path))
        out.pids.append(pid_of.get(i, -1))
        out.camids.append(-1 if row.camid is None else row.camid)
    out.identity_names = names
    out.skipped = [(row.raw_path, f"{OUTSIDE} {folder} (line {row.line})") for row in rows if row.path is None]
    if not out.paths:
        raise DatasetError(f"{p}: the CSV lists no images" + (f" inside {folder} (every path leads outside it)"
                                                               if out.skipped else ""))
    return out


def collect_images(images: str | None, csv_path: str | None) -> ImageList:
    """The images of ``--images DIR`` or ``--csv FILE``; the CSV rows left out are listed on stderr."""
    if csv_path:
        found = csv_images(csv_path)
        report_bad([f"{raw} ({why})" for raw, why in found.skipped], what="CSV row(s)")
        return found
    if images is None:
        raise DatasetError("expected a folder of images or a CSV list")
    return folder_images(images)


def report_bad(bad: list[str], limit: int = 20, what: str = "unreadable image(s)") -> None:
    """Print what was skipped (to stderr): ``reidkit: skipped N <what>:`` and up to ``limit`` of them."""
    if not bad:
        return
    print(f"reidkit: skipped {len(bad)} {what}:", file=sys.stderr)
    for b in bad[:limit]:
        print(f"  {b}", file=sys.stderr)
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more", file=sys.stderr)
