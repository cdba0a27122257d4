"""CUHK03 (Li et al., CVPR 2014): labeled (hand-drawn) and detected (DPM) boxes, two protocols.

Layout (``cuhk03/``, torchreid's):
    cuhk03_release/cuhk-03.mat                     the official release (MATLAB v7.3 = HDF5)
    cuhk03_new_protocol_config_labeled.mat         767/700 protocol (Zhong et al., CVPR 2017; MATLAB v5)
    cuhk03_new_protocol_config_detected.mat
    images_labeled/  images_detected/              PNGs, extracted from cuhk-03.mat on first use

Image names: ``{campair}_{pid:03d}_{view}_{img:02d}.png``; campair 1-5, pid counted within the pair,
view 1 for images 1-5 (camera a) and 2 for images 6-10 (camera b); camid = view - 1. Extraction skips
the empty cells of persons with fewer than 10 images, writes each file atomically, and leaves a
``.reidkit-extracted.json`` index; later loads reuse the PNGs that exist.

Protocols (``protocol=``):

- ``"new"`` (default), 767/700: train/query/gallery indices, labels and camera ids from the
  ``cuhk03_new_protocol_config_*.mat`` files (those from github.com/zhunzhong07/person-re-ranking,
  ``evaluation/data/CUHK03/``); one split. Original pids are the ``labels`` field (1-1467).
- ``"classic"``, 1367/100, 20 splits (``split_id`` 0-19) from the ``testsets`` field of cuhk-03.mat:
  the 100 test persons of the split are the test ids, every other person (1,367) is train. Original
  pids number the 1,467 persons through the five camera pairs, in order (the same numbers as the
  new-protocol ``labels``). ``classic_query="view1"`` (default) makes camera a (view 1) images the
  queries and camera b (view 2) images the gallery, the original cross-camera protocol of Li et al.;
  ``classic_query="all"`` puts every test image in both query and gallery, as torchreid's
  ``splits_classic_*.json`` do (its evaluator then drops same-pid same-camera gallery images).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.datasets._common import RawRecord, VerifyMode, assemble, find_dataset_dir, normalize_verify
from reidkit.data.records import ReidDataset
from reidkit.errors import DatasetError, ReidkitError
from reidkit.utils.limits import MAX_SIDECAR_BYTES
from reidkit.utils.textfile import read_text

FOLDER_NAMES = ("cuhk03", "CUHK03", "cuhk-03")
RAW_MAT = "cuhk03_release/cuhk-03.mat"
NEW_MAT = "cuhk03_new_protocol_config_{kind}.mat"
INDEX_NAME = ".reidkit-extracted.json"
LAYOUT = ("cuhk03_release/cuhk-03.mat and/or cuhk03_new_protocol_config_{labeled,detected}.mat "
          "with images_labeled/, images_detected/")
NEW_MAT_SOURCE = "github.com/zhunzhong07/person-re-ranking (evaluation/data/CUHK03/)"


def image_name(campair: int, pid: int, index: int) -> str:
    """PNG name of image ``index`` (1-10) of person ``pid`` (1-based) in camera pair ``campair`` (1-5)."""
    view = 1 if index <= 5 else 2
    return f"{campair}_{pid:03d}_{view}_{index:02d}.png"


def _open_h5(mat_path: Path) -> Any:
    import h5py

    try:
        return h5py.File(mat_path, "r")
    except OSError as exc:
        raise DatasetError(f"cuhk03: {mat_path} is not a readable MATLAB v7.3 (HDF5) file ({exc})") from exc


def _cell_refs(f: Any, key: str, mat_path: Path) -> np.ndarray:
    if key not in f:
        raise DatasetError(f"cuhk03: {mat_path} has no '{key}' variable (expected the official cuhk-03.mat)")
    return np.asarray(f[key]).ravel()


def extract_images(mat_path: Path, kind: str, out_dir: Path) -> dict[str, Any]:
    """Write the ``kind`` ("labeled" or "detected") images of cuhk-03.mat as PNGs into ``out_dir``
    (files that already exist are kept) and return the index ``{"pids_per_campair": [...],
    "persons": [[campair, pid, [names]], ...]}``, also saved as ``out_dir/.reidkit-extracted.json``."""
    from PIL import Image

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cuhk03: cannot create {out_dir} to extract images into ({exc.strerror})") from exc
    persons: list[list[Any]] = []
    per_pair: list[int] = []
    with _open_h5(mat_path) as f:
        for c, camp_ref in enumerate(_cell_refs(f, kind, mat_path), 1):
            camp = np.asarray(f[camp_ref]).T  # MATLAB (n_pids x 10) cell, stored transposed
            if camp.ndim != 2 or camp.shape[1] != 10:
                raise DatasetError(f"cuhk03: {mat_path}: {kind}{{{c}}} has shape {camp.shape[::-1]} in HDF5 "
                                   "(expected 10 x n_pids image references)")
            per_pair.append(int(camp.shape[0]))
            for p in range(camp.shape[0]):
                names: list[str] = []
                for j, ref in enumerate(camp[p], 1):
                    if not ref:
                        continue
                    ds = f[ref]
                    if ds.ndim != 3 or ds.size == 0:  # empty cell: person has fewer images
                        continue
                    name = image_name(c, p + 1, j)
                    target = out_dir / name
                    if not target.is_file():
                        arr = np.ascontiguousarray(np.asarray(ds).T)  # (H, W, 3)
                        if arr.dtype != np.uint8 or arr.shape[2] != 3:
                            raise DatasetError(f"cuhk03: {mat_path}: image {kind}{{{c}}}{{{p + 1},{j}}} is "
                                               f"{arr.dtype} {arr.shape} (expected HxWx3 uint8)")
                        tmp = out_dir / f".{name}.tmp"
                        Image.fromarray(arr, mode="RGB").save(tmp, format="PNG")
                        os.replace(tmp, target)
                    names.append(name)
                persons.append([c, p + 1, names])
    index = {"source": str(mat_path), "kind": kind, "pids_per_campair": per_pair, "persons": persons}
    tmp = out_dir / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index), encoding="utf-8")
    os.replace(tmp, out_dir / INDEX_NAME)
    return index


def _image_index(base: Path, kind: str) -> dict[str, Any]:
    """The extraction index of ``images_<kind>/`` (extracting from cuhk-03.mat when absent)."""
    out_dir = base / f"images_{kind}"
    idx_path = out_dir / INDEX_NAME
    if idx_path.is_file():
        try:
            index = json.loads(read_text(idx_path, limit=MAX_SIDECAR_BYTES, what="a CUHK03 extraction index"))
            if all(k in index for k in ("pids_per_campair", "persons")) and all(
                (out_dir / n).is_file() for _, _, names in index["persons"] for n in names
            ):
                return index
        except (ReidkitError, ValueError, RecursionError):
            pass  # unreadable index: extract again
    raw = base / RAW_MAT
    if not raw.is_file():
        raise DatasetError(f"cuhk03: {raw} not found: the classic protocol reads its splits and images from "
                           "the official release (cuhk03_release.zip from the CUHK03 site)")
    return extract_images(raw, kind, out_dir)


def _load_new(base: Path, kind: str) -> tuple[dict[str, list[RawRecord]], dict[str, str]]:
    from scipy.io import loadmat

    mat_path = base / NEW_MAT.format(kind=kind)
    if not mat_path.is_file():
        raise DatasetError(
            f"cuhk03: {mat_path} not found: the 767/700 protocol needs cuhk03_new_protocol_config_labeled.mat "
            f"and cuhk03_new_protocol_config_detected.mat in {base} (from {NEW_MAT_SOURCE})"
        )
    try:
        cfg = loadmat(str(mat_path))
    except Exception as exc:  # scipy raises several types for bad files
        raise DatasetError(f"cuhk03: {mat_path} is not a readable MATLAB v5 file ({exc})") from exc
    fields = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")
    missing = [k for k in fields if k not in cfg]
    if missing:
        raise DatasetError(f"cuhk03: {mat_path} lacks the fields {', '.join(missing)} (expected {', '.join(fields)})")
    filelist = [str(np.asarray(x).ravel()[0]) for x in cfg["filelist"].ravel()]
    labels = cfg["labels"].ravel().astype(np.int64)
    cams = cfg["camId"].ravel().astype(np.int64)
    n = len(filelist)
    if len(labels) != n or len(cams) != n:
        raise DatasetError(f"cuhk03: {mat_path}: filelist, labels and camId differ in length")
    img_dir = base / f"images_{kind}"
    if not all(os.path.isfile(os.path.join(img_dir, name)) for name in filelist):
        if (base / RAW_MAT).is_file():
            _image_index(base, kind)
        elif not img_dir.is_dir():
            raise DatasetError(f"cuhk03: {img_dir} not found and no {base / RAW_MAT} to extract it from "
                               f"(expected {LAYOUT})")
    prefix = os.path.join(str(img_dir), "")
    splits: dict[str, list[RawRecord]] = {}
    for split in ("train", "query", "gallery"):
        idx = cfg[f"{split}_idx"].ravel().astype(np.int64) - 1
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise DatasetError(f"cuhk03: {mat_path}: {split}_idx has indices outside 1..{n}")
        splits[split] = [(prefix + filelist[i], int(labels[i]), int(cams[i]) - 1) for i in idx]
    sources = {s: f"{img_dir} ({s}_idx of {mat_path.name})" for s in splits}
    return splits, sources


def _load_classic(base: Path, kind: str, split_id: int, classic_query: str) -> tuple[
    dict[str, list[RawRecord]], dict[str, str], int
]:
    raw = base / RAW_MAT
    index = _image_index(base, kind)
    with _open_h5(raw) as f:
        refs = _cell_refs(f, "testsets", raw)
        if not 0 <= split_id < len(refs):
            raise DatasetError(f"cuhk03: split_id={split_id} out of range: {raw} has {len(refs)} classic splits "
                               f"(0..{len(refs) - 1})")
        pairs = np.asarray(f[refs[split_id]]).T.reshape(-1, 2)
    test = {(int(c), int(p)) for c, p in pairs}
    offsets = np.concatenate([[0], np.cumsum(index["pids_per_campair"])]).tolist()
    img_dir = base / f"images_{kind}"
    splits: dict[str, list[RawRecord]] = {"train": [], "query": [], "gallery": []}
    for c, p, names in index["persons"]:
        gpid = int(offsets[c - 1]) + int(p)
        for name in names:
            rec = (str(img_dir / name), gpid, int(name.split("_")[2]) - 1)
            if (c, p) not in test:
                splits["train"].append(rec)
            elif classic_query == "all":
                splits["query"].append(rec)
                splits["gallery"].append(rec)
            else:
                splits["query" if rec[2] == 0 else "gallery"].append(rec)
    sources = {s: f"{img_dir} (classic split {split_id} of {raw})" for s in splits}
    return splits, sources, len(refs)


def load(
    root: str | os.PathLike[str],
    labeled: bool = True,
    protocol: str = "new",
    split_id: int = 0,
    classic_query: str = "view1",
    verify_images: VerifyMode = "header",
) -> ReidDataset:
    """Read CUHK03 (labeled or detected boxes) under the ``"new"`` 767/700 or ``"classic"`` 1367/100
    protocol from ``root`` (the ``cuhk03`` folder or the folder holding it)."""
    normalize_verify(verify_images)
    if protocol not in ("new", "classic"):
        raise DatasetError(f"cuhk03: protocol={protocol!r}: expected 'new' (767/700) or 'classic' (1367/100)")
    if classic_query not in ("view1", "all"):
        raise DatasetError(f"cuhk03: classic_query={classic_query!r}: expected 'view1' or 'all'")
    split_id = int(split_id)
    if protocol == "new" and split_id != 0:
        raise DatasetError(f"cuhk03: split_id={split_id}: the new 767/700 protocol has one split (0)")
    kind = "labeled" if labeled else "detected"
    base = find_dataset_dir(
        root, dataset="cuhk03", candidates=FOLDER_NAMES,
        markers=("cuhk03_release", "images_labeled", "images_detected", NEW_MAT.format(kind="labeled"),
                 NEW_MAT.format(kind="detected")),
        layout=LAYOUT,
    )
    extras: dict[str, Any] = {"cuhk03_protocol": protocol, "cuhk03_images": kind}
    if protocol == "new":
        splits, sources = _load_new(base, kind)
    else:
        splits, sources, n_splits = _load_classic(base, kind, split_id, classic_query)
        extras.update({"cuhk03_split": split_id, "cuhk03_num_splits": n_splits, "cuhk03_classic_query": classic_query})
    return assemble("cuhk03", base, splits, verify=verify_images, sources=sources, extras=extras)
