"""Where the images to embed come from: a folder, a CSV list (``path`` and optional ``pid``, ``camid``
columns), or a benchmark's query/gallery; and the labels a file name carries."""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reidkit.errors import DatasetError
from reidkit.utils.images import walk_files
from reidkit.utils.paths import OUTSIDE, listed_path

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
CAM_RE = re.compile(r"^[cC]?(\d+)_")


@dataclass
class ImageList:
    """Image paths with their identity and camera labels (-1 when unknown), and the list entries left out
    (``(as written, why)``)."""

    paths: list[str]
    pids: list[int]
    camids: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)

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
    """Paths, pids and camids from a CSV with a ``path`` column (optional ``pid``, ``camid``). Missing labels
    are -1. Paths are read as the ``csv`` dataset reads them (``reidkit.utils.paths.listed_path``): absolute
    as written, relative from the CSV's folder; a relative path that leads outside that folder is left out
    and listed in ``skipped``."""
    p = Path(csv_path)
    if not p.is_file():
        raise DatasetError(f"{p}: CSV file not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise DatasetError(f"{p}: no 'path' column in the header; expected path[,pid,camid]")
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{p}: not a readable CSV file ({type(exc).__name__})") from exc
    out = ImageList([], [], [])
    folder = os.path.abspath(p.parent)
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            continue
        try:
            pid = int(row["pid"]) if row.get("pid") not in (None, "") else -1
            camid = int(row["camid"]) if row.get("camid") not in (None, "") else -1
        except ValueError as exc:
            raise DatasetError(f"{p}:{line}: pid and camid must be integers") from exc
        path = listed_path(row["path"], folder)
        if path is None:
            out.skipped.append((row["path"], f"{OUTSIDE} {folder} (line {line})"))
            continue
        out.paths.append(path)
        out.pids.append(pid)
        out.camids.append(camid)
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
