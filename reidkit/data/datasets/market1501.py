"""Market-1501 (Zheng et al., ICCV 2015).

Layout (``Market-1501-v15.09.15/``):
    bounding_box_train/  0002_c1s1_000451_03.jpg ...   12,936 images, 751 ids
    bounding_box_test/   gallery: 0000 distractors kept, -1 junk dropped (15,913 images, 751 ids)
    query/               3,368 images, 750 ids
    gt_bbox/             optional: hand-drawn boxes; images with the same pid and camera form the
                         multi-query groups

File names: ``PPPP_cCsS_FFFFFF_BB.jpg`` (pid ``-1`` = junk, ``0000`` = distractor; cameras 1-6, made
0-based). 24 real files end in ``.jpg.jpg``; they are read like the others.

``extras["multi_query"]`` (only when ``gt_bbox/`` exists): ``{(pid, camid): [paths]}`` with original
pids and 0-based camids, the same keys as the query records; junk and distractors are left out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from reidkit.data.datasets._common import (
    RawRecord,
    VerifyMode,
    assemble,
    check_files,
    find_dataset_dir,
    normalize_verify,
    require_entries,
)
from reidkit.data.records import ReidDataset
from reidkit.utils.images import walk_files

NAME_RE = re.compile(r"^(-?\d+)_c(\d+)")
FOLDER_NAMES = ("Market-1501-v15.09.15", "market1501", "Market-1501", "market1501/Market-1501-v15.09.15")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
LAYOUT = "folders bounding_box_train/, bounding_box_test/, query/ (and optionally gt_bbox/)"


def parse_bbox_folder(
    directory: Path, *, drop_pids: tuple[int, ...] = (-1,), max_cam: int | None = None
) -> tuple[list[RawRecord], list[tuple[str, str]]]:
    """Read a Market/Duke style folder: ``(path, pid, camid)`` for each ``PPPP_cC...`` image (camid
    0-based), dropping ``drop_pids``; files whose names do not parse come back as skipped."""
    recs: list[RawRecord] = []
    skipped: list[tuple[str, str]] = []
    for path in walk_files(directory):
        m = NAME_RE.match(os.path.basename(path))
        if m is None:
            skipped.append((path, "file name does not match PPPP_cC..."))
            continue
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid in drop_pids:
            continue
        if cam < 1 or (max_cam is not None and cam > max_cam):
            skipped.append((path, f"camera c{cam} outside 1..{max_cam}"))
            continue
        recs.append((path, pid, cam - 1))
    return recs, skipped


def load_bbox_layout(
    name: str,
    root: str | os.PathLike[str],
    *,
    candidates: tuple[str, ...],
    layout: str,
    max_cam: int,
    drop_pids: tuple[int, ...],
    verify_images: VerifyMode,
) -> tuple[Path, dict[str, list[RawRecord]], list[tuple[str, str]]]:
    """Find the folder of a bounding_box_* benchmark and parse its three splits."""
    normalize_verify(verify_images)
    base = find_dataset_dir(root, dataset=name, candidates=candidates, markers=tuple(SPLIT_DIRS.values()),
                            layout=layout)
    require_entries(base, tuple(SPLIT_DIRS.values()), dataset=name, layout=layout)
    splits: dict[str, list[RawRecord]] = {}
    skipped: list[tuple[str, str]] = []
    for split, sub in SPLIT_DIRS.items():
        recs, bad = parse_bbox_folder(base / sub, drop_pids=drop_pids, max_cam=max_cam)
        if split == "train":  # distractors are never training identities
            recs = [r for r in recs if r[1] > 0]
        splits[split] = recs
        skipped.extend(bad)
    return base, splits, skipped


def load(root: str | os.PathLike[str], verify_images: VerifyMode = "header") -> ReidDataset:
    """Read Market-1501 from ``root`` (its own folder or the folder holding it)."""
    base, splits, skipped = load_bbox_layout(
        "market1501", root, candidates=FOLDER_NAMES, layout=LAYOUT, max_cam=6, drop_pids=(-1,),
        verify_images=verify_images,
    )
    extras: dict[str, object] = {}
    gt = base / "gt_bbox"
    if gt.is_dir():
        recs, bad = parse_bbox_folder(gt, drop_pids=(-1, 0), max_cam=6)
        unusable = check_files([p for p, _, _ in recs], normalize_verify(verify_images))
        skipped.extend(bad)
        skipped.extend((p, unusable[p]) for p, _, _ in recs if p in unusable)
        groups: dict[tuple[int, int], list[str]] = {}
        for p, pid, cam in recs:
            if p not in unusable:
                groups.setdefault((pid, cam), []).append(p)
        extras["multi_query"] = groups
    sources = {s: str(base / d) for s, d in SPLIT_DIRS.items()}
    return assemble("market1501", base, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras=extras)
