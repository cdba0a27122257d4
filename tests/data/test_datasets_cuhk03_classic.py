"""CUHK03 from a miniature cuhk-03.mat written with the real MATLAB v7.3 structure.

MATLAB v7.3 files are HDF5: a cell array is a dataset of object references (to datasets in the
``#refs#`` group) and every array is stored transposed (an HxWx3 image as 3xWxH; the 5x1 cell
``labeled`` as 1x5; each camera pair's n_pids x 10 cell as 10 x n_pids). Empty cells reference a
``uint64`` array ``[0, 0]`` with the ``MATLAB_empty`` attribute.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from reidkit.data import datasets
from reidkit.data.datasets import cuhk03
from reidkit.errors import DatasetError

PIDS_PER_PAIR = (4, 3, 2, 2, 2)  # 13 persons
# persons (campair, pid) whose cells 8..10 are empty (7 images), and one with only view-1 images
SHORT = {(1, 2), (3, 1)}
VIEW1_ONLY = {(2, 3)}
TESTSETS = [[(1, 1), (2, 3), (5, 2)], [(1, 4), (3, 1), (4, 1)], [(2, 1), (2, 2), (5, 1)]]


def pixel_array(kind: str, c: int, p: int, j: int) -> np.ndarray:
    """The HxWx3 image stored for cell {c}{p, j}: sizes and values encode where it came from."""
    h, w = 5 + c, 3 + p
    yy, xx = np.mgrid[0:h, 0:w]
    base = 100 if kind == "labeled" else 0
    return np.stack([yy * 10 + xx, np.full_like(yy, base + j), np.full_like(yy, c * 16 + p)], axis=-1).astype(np.uint8)


def write_mini_cuhk03(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def put(arr: np.ndarray, cls: str, empty: bool = False) -> h5py.Reference:
            counter[0] += 1
            ds = refs.create_dataset(f"r{counter[0]}", data=arr)
            ds.attrs["MATLAB_class"] = np.bytes_(cls)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        for kind in ("detected", "labeled"):
            pair_refs = []
            for c, n in enumerate(PIDS_PER_PAIR, 1):
                cell = np.empty((n, 10), dtype=object)
                for p in range(1, n + 1):
                    for j in range(1, 11):
                        missing = ((c, p) in SHORT and j > 7) or ((c, p) in VIEW1_ONLY and j > 5)
                        if missing:
                            cell[p - 1, j - 1] = put(np.zeros(2, dtype=np.uint64), "double", empty=True)
                        else:
                            cell[p - 1, j - 1] = put(pixel_array(kind, c, p, j).T, "uint8")
                pair_refs.append(put(cell.T.astype(h5py.ref_dtype), "cell"))
            d = f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # (1, 5)
            d.attrs["MATLAB_class"] = np.bytes_("cell")
        split_refs = [put(np.array(ts, dtype=np.float64).T, "double") for ts in TESTSETS]  # (2, 3) each
        d = f.create_dataset("testsets", data=np.array([split_refs], dtype=h5py.ref_dtype))
        d.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as fh:  # MATLAB's 128-byte text header inside the user block
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116)
                 + b"\x00" * 8 + b"\x00\x02IM")


def n_images(c: int, p: int) -> int:
    return 7 if (c, p) in SHORT else 5 if (c, p) in VIEW1_ONLY else 10


def gpid(c: int, p: int) -> int:
    return sum(PIDS_PER_PAIR[: c - 1]) + p


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_mini_cuhk03(tmp_path / "cuhk03" / "cuhk03_release" / "cuhk-03.mat")
    return tmp_path


def test_classic_split_view1_query(root: Path) -> None:
    ds = datasets.load("cuhk03", root, labeled=True, protocol="classic", split_id=0)
    test = TESTSETS[0]
    assert ds.extras["cuhk03_split"] == 0 and ds.extras["cuhk03_num_splits"] == 3
    assert ds.num_train_pids == 13 - 3
    assert sorted({r.pid for r in ds.train}) == list(range(10))
    assert len(ds.train) == sum(n_images(c, p) for c, n in enumerate(PIDS_PER_PAIR, 1)
                                for p in range(1, n + 1) if (c, p) not in test)
    # queries: camera a (view 1, camid 0) of the test persons; gallery: camera b (view 2, camid 1)
    assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
    assert {r.pid for r in ds.query} == {gpid(c, p) for c, p in test}
    assert {r.pid for r in ds.gallery} == {gpid(c, p) for c, p in test if (c, p) not in VIEW1_ONLY}
    assert len(ds.query) == 15 and len(ds.gallery) == 5 + 5
    # original pids of persons equal the new-protocol numbering (pair offsets): (5, 2) -> 4+3+2+2+2
    assert gpid(5, 2) == 13 and 13 in {r.pid for r in ds.query}
    assert ds.extras["train_pids"] == sorted({gpid(c, p) for c, n in enumerate(PIDS_PER_PAIR, 1)
                                              for p in range(1, n + 1)} - {gpid(c, p) for c, p in test})


def test_extracted_pngs_names_and_pixels(root: Path) -> None:
    datasets.load("cuhk03", root, labeled=False, protocol="classic", split_id=1)
    out = root / "cuhk03" / "images_detected"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == sum(n_images(c, p) for c, n in enumerate(PIDS_PER_PAIR, 1) for p in range(1, n + 1))
    assert "1_002_2_07.png" in pngs and "1_002_2_08.png" not in pngs  # empty cells skipped
    assert "2_003_1_05.png" in pngs and "2_003_2_06.png" not in pngs
    with Image.open(out / "3_002_2_09.png") as im:
        arr = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(arr, pixel_array("detected", 3, 2, 9))  # HxWx3, not transposed
    assert not (root / "cuhk03" / "images_labeled").exists()  # only the kind asked for


def test_reuses_extracted_images(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = datasets.load("cuhk03", root, protocol="classic", split_id=2)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("extracted again")

    monkeypatch.setattr(cuhk03, "extract_images", boom)
    again = datasets.load("cuhk03", root, protocol="classic", split_id=2)
    assert again.train == first.train and again.query == first.query
    # a lost PNG is noticed and extracted again
    monkeypatch.undo()
    lost = root / "cuhk03" / "images_labeled" / "4_001_1_01.png"
    lost.unlink()
    third = datasets.load("cuhk03", root, protocol="classic", split_id=2)
    assert lost.is_file() and third.train == first.train


def test_classic_all_query_gallery(root: Path) -> None:
    ds = datasets.load("cuhk03", root, protocol="classic", split_id=1, classic_query="all")
    assert ds.query == ds.gallery
    assert len(ds.query) == sum(n_images(c, p) for c, p in TESTSETS[1])
    assert {r.camid for r in ds.query} == {0, 1}


def test_classic_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"split_id=3 out of range.*3 classic splits"):
        datasets.load("cuhk03", root, protocol="classic", split_id=3)
    with pytest.raises(DatasetError, match="protocol='old'"):
        datasets.load("cuhk03", root, protocol="old")
    empty = tmp_path / "other" / "cuhk03"
    (empty / "images_labeled").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"cuhk03_release/cuhk-03\.mat not found"):
        datasets.load("cuhk03", empty, protocol="classic")


def test_new_protocol_needs_config_files(root: Path) -> None:
    with pytest.raises(DatasetError) as info:
        datasets.load("cuhk03", root, protocol="new")
    msg = str(info.value)
    assert "cuhk03_new_protocol_config_labeled.mat" in msg and "cuhk03_new_protocol_config_detected.mat" in msg
    assert "zhunzhong07/person-re-ranking" in msg and "\n" not in msg


def test_new_protocol_extracts_from_release(root: Path) -> None:
    """A miniature new-protocol config (MATLAB v5, 1-based indices) over the extracted PNGs."""
    persons = [(c, p) for c, n in enumerate(PIDS_PER_PAIR, 1) for p in range(1, n + 1)]
    files, labels, cams = [], [], []
    for c, p in persons:
        for j in range(1, n_images(c, p) + 1):
            files.append(cuhk03.image_name(c, p, j))
            labels.append(gpid(c, p))
            cams.append(1 if j <= 5 else 2)
    idx = np.arange(1, len(files) + 1)
    train = idx[np.array(labels) <= 6]
    test = idx[np.array(labels) > 6]
    query = np.array([i for i in test if files[i - 1].endswith("_01.png") or files[i - 1].endswith("_06.png")])
    gallery = np.setdiff1d(test, query)
    scipy.io.savemat(str(root / "cuhk03" / "cuhk03_new_protocol_config_labeled.mat"), {
        "filelist": np.array([[np.array([f])] for f in files], dtype=object),
        "labels": np.array(labels, dtype=np.uint16)[:, None], "camId": np.array(cams, dtype=np.uint8)[:, None],
        "train_idx": train[:, None].astype(np.uint16), "query_idx": query[:, None].astype(np.uint16),
        "gallery_idx": gallery[:, None].astype(np.uint16),
    })
    ds = datasets.load("cuhk03", root / "cuhk03", labeled=True)
    assert (root / "cuhk03" / "images_labeled" / "1_001_1_01.png").is_file()
    assert ds.num_train_pids == 6 and len(ds.train) == len(train)
    assert {r.pid for r in ds.query} == set(range(7, 14))
    assert len(ds.query) == len(query) and len(ds.gallery) == len(gallery)
    assert {(Path(r.path).name.split("_")[2], r.camid) for r in ds.gallery} == {("1", 0), ("2", 1)}


def test_cli_cuhk03_classic(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from reidkit.cli import main

    assert main(["datasets", "cuhk03", "--root", str(root), "--cuhk03-classic", "--cuhk03-detected",
                 "--split-id", "1", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"]["ids"] == 10 and stats["query"]["ids"] == 3
    assert (root / "cuhk03" / "images_detected").is_dir()
    assert main(["datasets", "cuhk03", "--root", str(root)]) == 2  # new protocol: config files missing
    assert "cuhk03_new_protocol_config_labeled.mat" in capsys.readouterr().err
