"""Market-1501 details (junk, distractors, gt_bbox multi-query, .jpg.jpg), layout errors, the
registry and the ``reidkit datasets`` command, on miniature trees with the real naming."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from reidkit.cli import main
from reidkit.data import datasets
from reidkit.data.datasets import DatasetWarning
from reidkit.errors import DatasetError

_JPEG = io.BytesIO()
Image.new("RGB", (4, 8), (1, 2, 3)).save(_JPEG, "JPEG")
JPEG = _JPEG.getvalue()

MARKET = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_077419_03.jpg",
                           "0010_c6s4_002427_02.jpg"],
    "query": ["0001_c1s1_001051_00.jpg", "0003_c3s1_000551_00.jpg", "1488_c1s6_023021_00.jpg.jpg"],
    "bounding_box_test": ["-1_c1s1_000401_03.jpg", "0000_c1s1_000151_01.jpg", "0001_c2s1_000301_01.jpg",
                          "0003_c5s1_000551_02.jpg", "1488_c3s3_056178_01.jpg.jpg", "-1_c4s6_000810_00.jpg.jpg",
                          "0000_c6s2_018968_04.jpg.jpg", "Thumbs.db"],
    "gt_bbox": ["0001_c1s1_001051_00.jpg", "0001_c1s1_001101_00.jpg", "0001_c1s1_001151_00.jpg",
                "0001_c2s1_000301_00.jpg", "0003_c3s1_000551_00.jpg", "0002_c1s1_000451_00.jpg"],
}


def make_market(base: Path, with_gt: bool = True) -> Path:
    for sub, files in MARKET.items():
        if sub == "gt_bbox" and not with_gt:
            continue
        (base / sub).mkdir(parents=True, exist_ok=True)
        for f in files:
            (base / sub / f).write_bytes(b"not an image" if f == "Thumbs.db" else JPEG)
    return base


def test_market_splits_and_multi_query(tmp_path: Path) -> None:
    base = make_market(tmp_path / "Market-1501-v15.09.15")
    ds = datasets.load("market1501", base)
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 0), (0, 1), (1, 2), (2, 5)]
    assert ds.extras["train_pids"] == [2, 7, 10]
    assert sorted((r.pid, r.camid) for r in ds.query) == [(1, 0), (3, 2), (1488, 0)]
    # -1 junk dropped (also as .jpg.jpg), 0000 distractors kept, Thumbs.db ignored
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 0), (0, 5), (1, 1), (3, 4), (1488, 2)]
    mq = ds.extras["multi_query"]
    gt = base / "gt_bbox"
    assert mq == {
        (1, 0): [str(gt / "0001_c1s1_001051_00.jpg"), str(gt / "0001_c1s1_001101_00.jpg"),
                 str(gt / "0001_c1s1_001151_00.jpg")],
        (1, 1): [str(gt / "0001_c2s1_000301_00.jpg")],
        (3, 2): [str(gt / "0003_c3s1_000551_00.jpg")],
        (2, 0): [str(gt / "0002_c1s1_000451_00.jpg")],
    }
    assert all((r.pid, r.camid) in mq for r in ds.query if r.pid != 1488)
    assert "skipped" not in ds.extras


def test_market_without_gt_bbox(tmp_path: Path) -> None:
    ds = datasets.load("market1501", make_market(tmp_path / "market1501", with_gt=False).parent)
    assert "multi_query" not in ds.extras and len(ds.gallery) == 5


def test_misnamed_file_is_listed(tmp_path: Path) -> None:
    base = make_market(tmp_path / "m")
    (base / "query" / "person_1.jpg").write_bytes(JPEG)
    with pytest.warns(DatasetWarning, match=r"left out 1 .*person_1\.jpg \(file name does not match"):
        ds = datasets.load("market1501", base)
    assert ds.extras["skipped"] == [(str(base / "query" / "person_1.jpg"), "file name does not match PPPP_cC...")]


def test_missing_folder_names_layout_and_path(tmp_path: Path) -> None:
    base = make_market(tmp_path / "Market-1501")
    (base / "query").rename(base / "queries")
    with pytest.raises(DatasetError) as info:
        datasets.load("market1501", tmp_path)
    msg = str(info.value)
    assert str(base) in msg and "lacks query" in msg and "bounding_box_train/" in msg and "\n" not in msg


def test_wrong_root_names_candidates(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match=r"no dataset folder found at .*Market-1501-v15\.09\.15"):
        datasets.load("market1501", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.load("dukemtmcreid", tmp_path / "nope")


def test_registry() -> None:
    assert datasets.names() == ["market1501", "dukemtmcreid", "msmt17", "cuhk03", "celebreid", "folder", "csv"]
    assert datasets.canonical_name("Market-1501") == "market1501"
    assert datasets.canonical_name("DukeMTMC-reID") == "dukemtmcreid"
    with pytest.raises(DatasetError, match="unknown dataset 'viper'"):
        datasets.load("viper", ".")
    with pytest.raises(DatasetError, match=r"unknown option.*labeled; accepted: verify_images"):
        datasets.load("market1501", ".", labeled=True)
    with pytest.raises(DatasetError, match="verify_images='fast'"):
        datasets.load("market1501", ".", verify_images="fast")


def test_duke_layout(tmp_path: Path) -> None:
    base = tmp_path / "DukeMTMC-reID"
    for sub, files in {"bounding_box_train": ["0001_c2_f0046182.jpg", "0003_c8_f0000001.jpg"],
                       "query": ["0005_c1_f0044158.jpg"], "bounding_box_test": ["0005_c7_f0044158.jpg",
                                                                                "0009_c1_f0044158.jpg"]}.items():
        (base / sub).mkdir(parents=True)
        for f in files:
            (base / sub / f).write_bytes(JPEG)
    ds = datasets.load("duke", tmp_path)
    assert sorted((r.pid, r.camid) for r in ds.train) == [(0, 1), (1, 7)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(5, 6), (9, 0)]


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_market(tmp_path / "Market-1501-v15.09.15")
    assert main(["datasets", "market1501", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "# ids" in out and "train    |     3 |        4 |         4" in out
    assert main(["datasets", "market1501", "--root", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == {"train": {"ids": 3, "images": 4, "cameras": 4}, "query": {"ids": 3, "images": 3, "cameras": 2},
                     "gallery": {"ids": 4, "images": 5, "cameras": 5}}


def test_cli_errors_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "market1501", "--root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reidkit: error: market1501: root folder") and err.count("\n") == 1
    assert main(["datasets", "market1501", "--root", str(tmp_path), "--split-id", "3"]) == 2
    assert "cuhk03 only" in capsys.readouterr().err
    base = make_market(tmp_path / "Market-1501")
    (base / "query" / "0003_c1s1_000001_00.jpg").write_bytes(b"")
    assert main(["datasets", "market", "--root", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert "reidkit: warning: market1501: left out 1" in captured.err
    assert json.loads(captured.out)["query"]["images"] == 3
    assert main(["datasets"]) == 0
    assert capsys.readouterr().out.split() == datasets.names()
