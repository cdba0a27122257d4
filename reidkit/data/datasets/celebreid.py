"""Celeb-reID (Huang et al., 2019): celebrities photographed in many outfits.

Layout (``Celeb-reID/``):
    train/    1_1_0.jpg ...    20,208 images, 632 ids (pids 1-632)
    query/                     2,972 images, 420 ids (pids 1-420, numbered apart from train)
    gallery/                   11,006 images, the same 420 ids

File names: ``<pid>_<image index>_<flag>.jpg``; the flag is not a camera and the dataset has no camera
ids. **Pseudo-cameras:** every query record gets camid 0 and every gallery record camid 1, so the
"same pid and same camera" rule of the Market protocol never removes a gallery image; every train
record gets camid 0 (the train split reports 1 camera).
"""

from __future__ import annotations

import os
import re

from reidkit.data.datasets._common import (
    RawRecord,
    VerifyMode,
    assemble,
    find_dataset_dir,
    normalize_verify,
    require_entries,
)
from reidkit.data.records import ReidDataset
from reidkit.utils.images import walk_files

NAME_RE = re.compile(r"^(\d+)_\d+_\d+\.")
FOLDER_NAMES = ("Celeb-reID", "celeb-reid", "celebreid", "Celeb-reID-light")
SPLIT_DIRS = {"train": "train", "query": "query", "gallery": "gallery"}
PSEUDO_CAMID = {"train": 0, "query": 0, "gallery": 1}
LAYOUT = "folders train/, query/, gallery/ of <pid>_<index>_<flag>.jpg images"


def load(root: str | os.PathLike[str], verify_images: VerifyMode = "header") -> ReidDataset:
    """Read Celeb-reID from ``root`` (its own folder or the folder holding it); see the module docstring
    for the pseudo-camera ids."""
    normalize_verify(verify_images)
    base = find_dataset_dir(root, dataset="celebreid", candidates=FOLDER_NAMES, markers=tuple(SPLIT_DIRS.values()),
                            layout=LAYOUT)
    require_entries(base, tuple(SPLIT_DIRS.values()), dataset="celebreid", layout=LAYOUT)
    splits: dict[str, list[RawRecord]] = {}
    skipped: list[tuple[str, str]] = []
    for split, sub in SPLIT_DIRS.items():
        recs: list[RawRecord] = []
        for path in walk_files(base / sub):
            m = NAME_RE.match(os.path.basename(path))
            if m is None:
                skipped.append((path, "file name does not match <pid>_<index>_<flag>.jpg"))
                continue
            recs.append((path, int(m.group(1)), PSEUDO_CAMID[split]))
        splits[split] = recs
    sources = {s: str(base / d) for s, d in SPLIT_DIRS.items()}
    return assemble("celebreid", base, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras={"pseudo_cameras": dict(PSEUDO_CAMID)})
