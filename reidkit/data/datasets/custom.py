"""The user's own data: a folder layout or a CSV list.

Folder layout (``load("folder", root)``):
    <root>/train/<pid>/<camid>_<anything>.jpg
    <root>/query/<pid>/<camid>_<anything>.jpg
    <root>/gallery/<pid>/<camid>_<anything>.jpg

``<pid>`` folders are non-negative integers; ``<camid>`` is the integer before the first ``_`` of the
file name (a leading ``c`` is allowed: ``c3_0001.jpg``). Any image extension is read. Split and pid
folders may be symlinks; symlinked folders inside a pid folder are not followed (so loops cannot hang
the scan), symlinked image files are read.

CSV list (``load("csv", "list.csv")``, or a folder holding exactly one ``.csv``): a header with at least
``path,pid,camid,split`` (extra columns are ignored); ``split`` is train, query or gallery; ``path`` is
relative to the CSV's folder or absolute. A relative path that leads outside the CSV's folder (``..``)
is left out and listed in ``extras["skipped"]`` (``reidkit.utils.paths.listed_path``: the rule of
``reidkit extract --csv`` too).

For both: camera ids are renumbered ``0..C-1`` in increasing order of the given numbers, across all
splits (``extras["camera_ids"]`` lists the given numbers: camid ``i`` was ``camera_ids[i]``); train
pids are relabelled ``0..N-1`` (``extras["train_pids"]``); query and gallery keep the given pids.
``verify_images`` defaults to a full decode of every image: unreadable files are left out with a
warning.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from reidkit.data.datasets._common import RawRecord, VerifyMode, assemble, normalize_verify
from reidkit.data.records import SPLITS, ReidDataset
from reidkit.errors import DatasetError
from reidkit.utils.images import walk_files
from reidkit.utils.paths import OUTSIDE, listed_path

CAM_RE = re.compile(r"^[cC]?(\d+)_")
FOLDER_LAYOUT = "<root>/{train,query,gallery}/<pid>/<camid>_<anything>.jpg"
CSV_COLUMNS = ("path", "pid", "camid", "split")


def _renumber_cameras(splits: dict[str, list[RawRecord]]) -> tuple[dict[str, list[RawRecord]], list[int]]:
    cams = sorted({c for recs in splits.values() for _, _, c in recs})
    mapping = {c: i for i, c in enumerate(cams)}
    return {s: [(p, pid, mapping[c]) for p, pid, c in recs] for s, recs in splits.items()}, cams


def load_folder(root: str | os.PathLike[str], verify_images: VerifyMode = True) -> ReidDataset:
    """Read a dataset laid out as ``<root>/<split>/<pid>/<camid>_<anything>.jpg``."""
    normalize_verify(verify_images)
    base = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not base.is_dir():
        raise DatasetError(f"folder: {base} is not a folder (expected {FOLDER_LAYOUT})")
    missing = [s for s in SPLITS if not (base / s).is_dir()]
    if missing:
        raise DatasetError(f"folder: {base} lacks {', '.join(s + '/' for s in missing)} (expected {FOLDER_LAYOUT})")
    splits: dict[str, list[RawRecord]] = {}
    skipped: list[tuple[str, str]] = []
    for split in SPLITS:
        recs: list[RawRecord] = []
        try:
            entries = sorted(os.scandir(base / split), key=lambda e: e.name)
        except OSError as exc:
            raise DatasetError(f"folder: cannot list {base / split} ({exc.strerror or type(exc).__name__})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # a symlink loop or an unreadable link: listed, never a traceback
                skipped.append((entry.path, f"cannot read ({exc.strerror or type(exc).__name__})"))
                continue
            if not is_dir:
                if entry.name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")):
                    skipped.append((entry.path, "image not inside a <pid>/ folder"))
                continue
            if not entry.name.isdigit():
                raise DatasetError(f"folder: {entry.path} is not a pid folder (expected a non-negative integer "
                                   f"name, layout {FOLDER_LAYOUT})")
            pid = int(entry.name)
            for path in walk_files(entry.path):
                m = CAM_RE.match(os.path.basename(path))
                if m is None:
                    skipped.append((path, "file name does not start with <camid>_"))
                    continue
                recs.append((path, pid, int(m.group(1))))
        splits[split] = recs
    splits, cams = _renumber_cameras(splits)
    sources = {s: str(base / s) for s in SPLITS}
    return assemble("folder", base, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras={"camera_ids": cams})


def _find_csv(root: Path) -> Path:
    if root.is_file():
        return root
    if root.is_dir():
        found = sorted(p for p in root.glob("*.csv") if p.is_file())
        if len(found) == 1:
            return found[0]
        raise DatasetError(f"csv: {root} holds {len(found)} .csv files (expected a CSV file path, or a folder "
                           "with exactly one)")
    raise DatasetError(f"csv: {root} does not exist (expected a CSV file with columns {','.join(CSV_COLUMNS)})")


def load_csv(root: str | os.PathLike[str], verify_images: VerifyMode = True) -> ReidDataset:
    """Read a dataset from a CSV with columns ``path,pid,camid,split`` (see the module docstring)."""
    normalize_verify(verify_images)
    csv_path = _find_csv(Path(os.path.abspath(os.path.expanduser(str(root)))))
    folder = os.path.abspath(csv_path.parent)
    splits: dict[str, list[RawRecord]] = {s: [] for s in SPLITS}
    skipped: list[tuple[str, str]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DatasetError(f"csv: {csv_path} lacks the columns {', '.join(missing)} (found "
                                   f"{','.join(header) or 'no header'}; expected {','.join(CSV_COLUMNS)})")
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue
                raw_path = (row.get("path") or "").strip()
                split = (row.get("split") or "").strip().lower()
                try:
                    pid, cam = int((row.get("pid") or "").strip()), int((row.get("camid") or "").strip())
                except ValueError:
                    raise DatasetError(f"csv: {csv_path}:{line}: pid and camid must be integers, got "
                                       f"{row.get('pid')!r}, {row.get('camid')!r}") from None
                if split not in SPLITS:
                    raise DatasetError(f"csv: {csv_path}:{line}: split {row.get('split')!r} is not one of "
                                       f"{', '.join(SPLITS)}")
                if not raw_path:
                    raise DatasetError(f"csv: {csv_path}:{line}: empty path")
                path = listed_path(raw_path, folder)
                if path is None:
                    skipped.append((raw_path, f"{OUTSIDE} {folder} (line {line})"))
                    continue
                splits[split].append((path, pid, cam))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"csv: {csv_path} is not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise DatasetError(f"csv: {csv_path} is not a valid CSV ({exc})") from exc
    splits, cams = _renumber_cameras(splits)
    sources = {s: f"{csv_path} (rows with split={s})" for s in SPLITS}
    return assemble("csv", csv_path, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras={"camera_ids": cams})
