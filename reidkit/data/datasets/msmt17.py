"""MSMT17 (Wei et al., CVPR 2018), versions 1 and 2, read through its list files.

Layout (``MSMT17_V1/``; V2 names its image folders ``mask_train_v2/`` and ``mask_test_v2/``):
    train/ 0000/0000_045_12_0303morning_0006_2.jpg ...     (V2: mask_train_v2/)
    test/  0000/0000_000_01_0303morning_0015_0.jpg ...     (V2: mask_test_v2/)
    list_train.txt list_val.txt list_query.txt list_gallery.txt

Each list line is ``<relative path> <label>``; train/val paths are under the train folder, query/gallery
under the test folder. The label is the pid (train and test are numbered separately); the camera is the
third ``_`` field of the file name (01-15, made 0-based).

``train_lists`` picks the lists merged into the training split: ``("train", "val")`` by default
(1,041 ids / 32,621 images, the number in the paper), ``("train",)`` for list_train alone (30,248
images, what torchreid loads without ``combineall``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reidkit.data.datasets._common import RawRecord, VerifyMode, assemble, find_dataset_dir, normalize_verify
from reidkit.data.records import ReidDataset
from reidkit.errors import DatasetError
from reidkit.utils.limits import MAX_LIST_BYTES
from reidkit.utils.textfile import read_text

FOLDER_NAMES = ("MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2", "msmt17", "MSMT17")
VERSIONS = {  # version -> (train dir, test dir)
    "V1": ("train", "test"),
    "V2": ("mask_train_v2", "mask_test_v2"),
}
LIST_NAMES = ("train", "val", "query", "gallery")
LAYOUT = "list_train.txt, list_val.txt, list_query.txt, list_gallery.txt and train/ + test/ (V1) or " \
         "mask_train_v2/ + mask_test_v2/ (V2)"


def read_list(list_path: Path, image_dir: Path) -> tuple[list[RawRecord], list[tuple[str, str]]]:
    """Parse an MSMT17 list file into ``(path, pid, camid)`` records (paths under ``image_dir``)."""
    recs: list[RawRecord] = []
    bad: list[tuple[str, str]] = []
    text = read_text(list_path, limit=MAX_LIST_BYTES, what="an MSMT17 list file", error=DatasetError)
    prefix = os.path.join(str(image_dir), "")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        fields = parts[0].rsplit("/", 1)[-1].split("_")
        try:
            if len(parts) != 2 or len(fields) < 3:
                raise ValueError
            pid, cam = int(parts[1]), int(fields[2])
        except ValueError:
            bad.append((f"{list_path}:{lineno}", "line is not '<pid>/<name>_<nnn>_<camera>_... <label>'"))
            continue
        recs.append((prefix + parts[0], pid, cam - 1))
    return recs, bad


def load(
    root: str | os.PathLike[str],
    train_lists: Sequence[str] = ("train", "val"),
    verify_images: VerifyMode = "header",
) -> ReidDataset:
    """Read MSMT17 V1 or V2 (detected from the folder names) from ``root`` (its own folder or its parent)."""
    if isinstance(train_lists, str):
        train_lists = tuple(t.strip() for t in train_lists.split(",") if t.strip())
    wrong = [t for t in train_lists if t not in ("train", "val")]
    if wrong or not train_lists:
        raise DatasetError(f"msmt17: train_lists={tuple(train_lists)!r}: expected a non-empty subset of "
                           "('train', 'val')")
    normalize_verify(verify_images)
    base = find_dataset_dir(root, dataset="msmt17", candidates=FOLDER_NAMES,
                            markers=("list_train.txt", "list_query.txt", "train", "mask_train_v2"),
                            layout=LAYOUT)
    version = next((v for v, (tr, te) in VERSIONS.items() if (base / tr).is_dir() and (base / te).is_dir()), None)
    if version is None:
        raise DatasetError(f"msmt17: {base} has neither train/ + test/ (V1) nor mask_train_v2/ + mask_test_v2/ "
                           f"(V2) (expected {LAYOUT})")
    train_dir, test_dir = (base / d for d in VERSIONS[version])
    needed = set(train_lists) | {"query", "gallery"}
    missing = [f"list_{n}.txt" for n in LIST_NAMES if n in needed and not (base / f"list_{n}.txt").is_file()]
    if missing:
        raise DatasetError(f"msmt17: {base} lacks {', '.join(missing)} (expected {LAYOUT})")
    skipped: list[tuple[str, str]] = []
    splits: dict[str, list[RawRecord]] = {"train": [], "query": [], "gallery": []}
    for n in LIST_NAMES:
        if n not in needed:
            continue
        recs, bad = read_list(base / f"list_{n}.txt", train_dir if n in ("train", "val") else test_dir)
        skipped.extend(bad)
        splits["train" if n in ("train", "val") else n].extend(recs)
    sources = {"train": f"{train_dir} (lists {', '.join(train_lists)})",
               "query": f"{test_dir} (list_query.txt)", "gallery": f"{test_dir} (list_gallery.txt)"}
    return assemble("msmt17", base, splits, verify=verify_images, sources=sources, skipped=skipped,
                    extras={"msmt17_version": version, "train_lists": list(train_lists)})
