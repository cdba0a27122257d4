"""MSMT17 list files and Celeb-reID on miniature trees: parsing, options and bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from reidkit.data import datasets
from reidkit.data.datasets import DatasetWarning
from reidkit.errors import DatasetError

_JPEG = io.BytesIO()
Image.new("RGB", (4, 8), (1, 2, 3)).save(_JPEG, "JPEG")
JPEG = _JPEG.getvalue()

LISTS = {
    "train": ["0000/0000_045_12_0303morning_0006_2.jpg 0", "0001/0001_000_01_0303morning_0008_0.jpg 1"],
    "val": ["0000/0000_050_03_0303morning_0009_1_ex.jpg 0"],
    "query": ["0003/0003_001_15_0113noon_0002_1.jpg 3"],
    "gallery": ["0003/0003_002_07_0113noon_0003_0.jpg 3", "0000/0000_010_01_0113noon_0004_0.jpg 0"],
}


def make_msmt(base: Path, train: str = "train", test: str = "test", lists: dict[str, list[str]] = LISTS) -> Path:
    for name, lines in lists.items():
        sub = train if name in ("train", "val") else test
        for line in lines:
            p = base / sub / line.split()[0]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(JPEG)
        (base / f"list_{name}.txt").write_text("\n".join(lines) + "\n")
    return base


def test_msmt17_lists(tmp_path: Path) -> None:
    base = make_msmt(tmp_path / "MSMT17_V1")
    ds = datasets.load("msmt17", tmp_path)
    assert sorted((Path(r.path).name, r.pid, r.camid) for r in ds.train) == [
        ("0000_045_12_0303morning_0006_2.jpg", 0, 11), ("0000_050_03_0303morning_0009_1_ex.jpg", 0, 2),
        ("0001_000_01_0303morning_0008_0.jpg", 1, 0)]
    assert [(r.pid, r.camid) for r in ds.query] == [(3, 14)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 0), (3, 6)]
    assert all(r.path.startswith(str(base / "test")) for r in ds.query + ds.gallery)
    only = datasets.load("msmt17", base, train_lists=("train",))
    assert len(only.train) == 2
    with pytest.raises(DatasetError, match=r"train_lists=\('test',\)"):
        datasets.load("msmt17", base, train_lists=("test",))


def test_msmt17_missing_image_and_bad_line(tmp_path: Path) -> None:
    base = make_msmt(tmp_path / "MSMT17_V2", train="mask_train_v2", test="mask_test_v2")
    with open(base / "list_gallery.txt", "a") as fh:
        fh.write("0009/0009_000_01_0113noon_0004_0.jpg 9\nbroken-line\n")
    with pytest.warns(DatasetWarning, match="left out 2"):
        ds = datasets.load("msmt17", base)
    reasons = dict(ds.extras["skipped"])
    assert reasons[str(base / "mask_test_v2" / "0009/0009_000_01_0113noon_0004_0.jpg")] == "file not found"
    assert any(k.endswith("list_gallery.txt:4") for k in reasons)
    assert ds.extras["msmt17_version"] == "V2" and len(ds.gallery) == 2


def test_msmt17_layout_errors(tmp_path: Path) -> None:
    base = make_msmt(tmp_path / "MSMT17_V1")
    (base / "list_query.txt").unlink()
    with pytest.raises(DatasetError, match=r"lacks list_query\.txt"):
        datasets.load("msmt17", base)
    (base / "test").rename(base / "testing")
    with pytest.raises(DatasetError, match=r"neither train/ \+ test/ \(V1\) nor mask_train_v2/"):
        datasets.load("msmt17", base)


def test_celebreid_pseudo_cameras_and_symlinked_split(tmp_path: Path) -> None:
    base = tmp_path / "Celeb-reID"
    real = tmp_path / "real_query"
    for sub, files in {"train": ["5_1_0.jpg", "5_2_3.jpg", "9_1_0.jpg"], "gallery": ["1_3_0.jpg", "2_1_1.jpg"]}.items():
        (base / sub).mkdir(parents=True)
        for f in files:
            (base / sub / f).write_bytes(JPEG)
    real.mkdir()
    (real / "1_1_0.jpg").write_bytes(JPEG)
    os.symlink(real, base / "query")  # a symlinked split folder is read
    ds = datasets.load("celebreid", base)
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 0), (1, 0)]
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 0)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(1, 1), (2, 1)]


def test_celebreid_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "Celeb-reID" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"Celeb-reID lacks query, gallery \(expected folders train/"):
        datasets.load("celebreid", tmp_path)
