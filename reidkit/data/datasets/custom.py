"""The user's own data: a folder layout or a CSV list.

Folder layout (``load("folder", root)``):
    <root>/train/<identity>/<camid>_<anything>.jpg
    <root>/query/<identity>/<camid>_<anything>.jpg
    <root>/gallery/<identity>/<camid>_<anything>.jpg

``<identity>`` folders are person ids (non-negative integers) or names (``alice/``); ``<camid>`` is the
integer before the first ``_`` of the file name (a leading ``c`` is allowed: ``c3_0001.jpg``). Any
image extension is read. Split and identity folders may be symlinks; symlinked folders inside an
identity folder are not followed (so loops cannot hang the scan), symlinked image files are read.

CSV list (``load("csv", "list.csv")``, or a folder holding exactly one ``.csv``): a header with at least
``path,pid,camid,split`` (extra columns are ignored; ``camid`` may be left out with ``default_camid``);
``pid`` is an integer or a name; ``split`` is train, query or gallery; ``path`` is relative to the CSV's
folder or absolute. A relative path that leads outside the CSV's folder (``..``) is left out and listed
in ``extras["skipped"]`` (``reidkit.utils.paths.listed_path``: the rule of ``reidkit extract --csv``
too).

For both:

- **Identity names.** When every identity is an integer, query and gallery keep those pids. When any
  is not (``alice``), all identities are names: sorted as strings across the three splits, name ``i``
  becomes pid ``i`` and ``extras["identity_names"]`` lists them (``ReidDataset.identity_names``
  maps pids or training labels back to names; a training run writes ``identities.json``).
- **Cameras.** ``default_camid`` gives a camera to the images that name none (a file name without
  ``<camid>_``, an empty or absent ``camid`` in the CSV): one integer for every split, or a mapping
  ``{"train": 0, "query": 0, "gallery": 1}``. A split missing from the mapping keeps the rule that
  such images are left out. Query and gallery images of the same camera are never matched under the
  Market-1501 protocol, so images with no known camera need different pseudo cameras for query and
  gallery (as reidkit does for Celeb-reID). Camera ids are then renumbered ``0..C-1`` in increasing
  order of the given numbers, across all splits (``extras["camera_ids"]`` lists the given numbers:
  camid ``i`` was ``camera_ids[i]``).
- Train pids are relabelled ``0..N-1`` (``extras["train_pids"]``).
- An empty split is an error that says why (what was seen and left out, and what would fix it).
- ``verify_images`` defaults to a full decode of every image: unreadable files are left out with a
  warning.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reidkit.data.datasets._common import RawRecord, VerifyMode, assemble, normalize_verify
from reidkit.data.records import SPLITS, ReidDataset
from reidkit.errors import DatasetError
from reidkit.utils.images import walk_files
from reidkit.utils.limits import MAX_LIST_BYTES
from reidkit.utils.paths import OUTSIDE, listed_path
from reidkit.utils.textfile import read_text

CAM_RE = re.compile(r"^[cC]?(\d+)_")
FOLDER_LAYOUT = "<root>/{train,query,gallery}/<identity>/<camid>_<anything>.jpg"
CSV_COLUMNS = ("path", "pid", "camid", "split")
MAX_CAMID = 1_000_000  # camera numbers are small; a larger default_camid is a typo
NO_CAMERA = "file name does not start with <camid>_"
# how to give default_camid, with each command that takes it in the form it takes it
DEFAULT_CAMID_HOW = ("reidkit datasets --default-camid {n}, reidkit eval --option default_camid={n}, "
                     "reidkit train --set data.options.default_camid={n}")

DefaultCamid = int | Mapping[str, int] | None

_INTEGER = re.compile(r"-?[0-9]+")

# (path, identity as written, camid) before the identities are numbered
_NamedRecord = tuple[str, str, int]


def check_default_camid(value: object, dataset: str) -> dict[str, int]:
    """``default_camid`` as a camera per split (splits without a default absent); ``DatasetError`` when it
    is neither None, a non-negative integer nor a mapping of split names to such integers."""
    def camid(v: object, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_CAMID:
            raise DatasetError(f"{dataset}: {what}={v!r}: expected a camera number between 0 and {MAX_CAMID}")
        return v

    if value is None:
        return {}
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in SPLITS]
        if unknown:
            raise DatasetError(f"{dataset}: default_camid names {', '.join(unknown)}; expected split names "
                               f"among {', '.join(SPLITS)}")
        return {str(k): camid(v, f"default_camid.{k}") for k, v in value.items()}
    return dict.fromkeys(SPLITS, camid(value, "default_camid"))


def number_identities(splits: dict[str, list[_NamedRecord]]) -> tuple[dict[str, list[RawRecord]], list[str] | None]:
    """Integer identities keep their numbers; when any is not an integer, every identity is a name, numbered
    in sorted order (the names are returned, else None)."""
    names = sorted({n for recs in splits.values() for _, n, _ in recs})
    if all(_INTEGER.fullmatch(n) for n in names):
        return {s: [(p, int(n), c) for p, n, c in recs] for s, recs in splits.items()}, None
    mapping = {n: i for i, n in enumerate(names)}
    return {s: [(p, mapping[n], c) for p, n, c in recs] for s, recs in splits.items()}, names


def _renumber_cameras(splits: dict[str, list[RawRecord]]) -> tuple[dict[str, list[RawRecord]], list[int]]:
    cams = sorted({c for recs in splits.values() for _, _, c in recs})
    mapping = {c: i for i, c in enumerate(cams)}
    return {s: [(p, pid, mapping[c]) for p, pid, c in recs] for s, recs in splits.items()}, cams


def _identity_extras(cams: list[int], names: list[str] | None) -> dict[str, object]:
    extras: dict[str, object] = {"camera_ids": cams}
    if names is not None:
        extras["identity_names"] = names
    return extras


def load_folder(root: str | os.PathLike[str], verify_images: VerifyMode = True,
                default_camid: DefaultCamid = None) -> ReidDataset:
    """Read a dataset laid out as ``<root>/<split>/<identity>/<camid>_<anything>.jpg`` (see the module
    docstring for identity names and ``default_camid``)."""
    normalize_verify(verify_images)
    defaults = check_default_camid(default_camid, "folder")
    base = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not base.is_dir():
        raise DatasetError(f"folder: {base} is not a folder (expected {FOLDER_LAYOUT})")
    missing = [s for s in SPLITS if not (base / s).is_dir()]
    if missing:
        raise DatasetError(f"folder: {base} lacks {', '.join(s + '/' for s in missing)} (expected {FOLDER_LAYOUT})")
    named: dict[str, list[_NamedRecord]] = {}
    skipped: list[tuple[str, str]] = []
    why_empty: dict[str, str] = {}
    for split in SPLITS:
        recs: list[_NamedRecord] = []
        folders = loose = no_camera = 0
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
                    skipped.append((entry.path, "image not inside an <identity>/ folder"))
                    loose += 1
                continue
            folders += 1
            for path in walk_files(entry.path):
                m = CAM_RE.match(os.path.basename(path))
                if m is not None:
                    recs.append((path, entry.name, int(m.group(1))))
                elif split in defaults:
                    recs.append((path, entry.name, defaults[split]))
                else:
                    skipped.append((path, NO_CAMERA))
                    no_camera += 1
        named[split] = recs
        if not recs:
            why_empty[split] = _folder_why_empty(split, folders, loose, no_camera)
    splits, names = number_identities(named)
    splits, cams = _renumber_cameras(splits)
    sources = {s: str(base / s) for s in SPLITS}
    return assemble("folder", base, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras=_identity_extras(cams, names), why_empty=why_empty)


def _folder_why_empty(split: str, folders: int, loose: int, no_camera: int) -> str:
    """Why a split of the folder layout holds no record, and what would fix it."""
    if no_camera:
        return (f"{no_camera} image files seen in {folders} identity folders, none named <camid>_*.jpg; name "
                f"them like 1_0001.jpg, or pass default_camid to give them one camera (e.g. "
                f"{DEFAULT_CAMID_HOW.format(n=0)})")
    if loose and not folders:
        return (f"{loose} image files lie directly in {split}/, none inside an <identity>/ folder "
                f"(expected {FOLDER_LAYOUT})")
    if folders:
        return f"its {folders} identity folders hold no image files (expected {FOLDER_LAYOUT})"
    return f"the folder holds no identity folders (expected {FOLDER_LAYOUT})"


def _find_csv(root: Path) -> Path:
    if root.exists() and not root.is_dir():  # a pipe or a device too: the reader names what it is
        return root
    if root.is_dir():
        found = sorted(p for p in root.glob("*.csv") if p.is_file())
        if len(found) == 1:
            return found[0]
        raise DatasetError(f"csv: {root} holds {len(found)} .csv files (expected a CSV file path, or a folder "
                           "with exactly one)")
    raise DatasetError(f"csv: {root} does not exist (expected a CSV file with columns {','.join(CSV_COLUMNS)})")


@dataclass
class CsvRow:
    """One row of an image-list CSV: its line, the path as written and where it leads (``None``: outside
    the CSV's folder), the identity as written (``""`` when absent), the camera (``None`` when absent) and
    the split, lower-cased (``""`` when absent)."""

    line: int
    raw_path: str
    path: str | None
    pid: str
    camid: int | None
    split: str


def read_csv_rows(csv_path: Path, required: Sequence[str], expected: str, source: str = "") -> list[CsvRow]:
    """The non-blank rows of an image-list CSV with a header holding ``required`` (column names stripped;
    ``expected`` names the whole layout in the error). Every message names ``source`` + the file and line:
    a missing column, an empty path, a camid that is not an integer, bytes that are not UTF-8, a broken
    CSV. Paths follow ``reidkit.utils.paths.listed_path``: absolute as written, relative from the CSV's
    folder; one that leads outside that folder has ``path=None``."""
    folder = os.path.abspath(csv_path.parent)
    where = f"{source}{csv_path}"
    out: list[CsvRow] = []
    text = read_text(csv_path, limit=MAX_LIST_BYTES, what=f"{source}an image list ({expected})",
                     error=DatasetError, encoding="utf-8-sig")
    try:
        with io.StringIO(text, newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                hint = "; or pass default_camid when the cameras are unknown" if missing == ["camid"] else ""
                raise DatasetError(f"{where} lacks the columns {', '.join(missing)} (found "
                                   f"{','.join(header) or 'no header'}; expected {expected}{hint})")
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue
                raw_path = (row.get("path") or "").strip()
                cam_text = (row.get("camid") or "").strip()
                camid = None
                if cam_text:
                    try:
                        camid = int(cam_text)
                    except ValueError:
                        raise DatasetError(f"{where}:{line}: camid must be an integer, got "
                                           f"{row.get('camid')!r}") from None
                if not raw_path:
                    raise DatasetError(f"{where}:{line}: empty path")
                out.append(CsvRow(line, raw_path, listed_path(raw_path, folder), (row.get("pid") or "").strip(),
                                  camid, (row.get("split") or "").strip().lower()))
    except csv.Error as exc:
        raise DatasetError(f"{where} is not a valid CSV ({exc})") from exc
    return out


def load_csv(root: str | os.PathLike[str], verify_images: VerifyMode = True,
             default_camid: DefaultCamid = None) -> ReidDataset:
    """Read a dataset from a CSV with columns ``path,pid,camid,split`` (see the module docstring for identity
    names and ``default_camid``)."""
    normalize_verify(verify_images)
    defaults = check_default_camid(default_camid, "csv")
    csv_path = _find_csv(Path(os.path.abspath(os.path.expanduser(str(root)))))
    folder = os.path.abspath(csv_path.parent)
    named: dict[str, list[_NamedRecord]] = {s: [] for s in SPLITS}
    skipped: list[tuple[str, str]] = []
    rows: Counter[str] = Counter()
    required = [c for c in CSV_COLUMNS if not (c == "camid" and defaults)]
    for row in read_csv_rows(csv_path, required, ",".join(CSV_COLUMNS), source="csv: "):
        where = f"csv: {csv_path}:{row.line}"
        if row.split not in SPLITS:
            raise DatasetError(f"{where}: split {row.split!r} is not one of {', '.join(SPLITS)}")
        rows[row.split] += 1
        if not row.pid:
            raise DatasetError(f"{where}: empty pid (expected an integer or a name)")
        if row.camid is not None:
            cam = row.camid
        elif row.split in defaults:
            cam = defaults[row.split]
        else:
            raise DatasetError(f"{where}: empty camid; give one, or pass default_camid when the cameras are "
                               f"unknown ({DEFAULT_CAMID_HOW.format(n='N')})")
        if row.path is None:
            skipped.append((row.raw_path, f"{OUTSIDE} {folder} (line {row.line})"))
            continue
        named[row.split].append((row.path, row.pid, cam))
    why_empty: dict[str, str] = {}
    for s in SPLITS:
        if not named[s]:
            seen = ", ".join(f"{n} {k}" for k, n in rows.items()) or "none"
            why_empty[s] = (f"{rows[s]} rows with split={s}, all leading outside {folder}" if rows[s] else
                            f"no row has split={s} (rows per split: {seen})")
    splits, names = number_identities(named)
    splits, cams = _renumber_cameras(splits)
    sources = {s: f"{csv_path} (rows with split={s})" for s in SPLITS}
    return assemble("csv", csv_path, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras=_identity_extras(cams, names), why_empty=why_empty)
