"""The readers report the canonical statistics on trees built from the real file names in ../shared.

Every image is a hard link to one tiny valid JPEG/PNG, so the trees are built in a few seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from realnames_trees import build_tree, names

from reidkit.data import datasets


def summary(ds: datasets.ReidDataset) -> dict[str, tuple[int, int]]:  # type: ignore[name-defined]
    st = ds.stats()
    return {s: (st[s]["ids"], st[s]["images"]) for s in ("train", "query", "gallery")}


def check_common(ds) -> None:  # type: ignore[no-untyped-def]
    """Train pids relabelled 0..N-1, camids 0-based, nothing skipped."""
    train_pids = sorted({r.pid for r in ds.train})
    assert train_pids == list(range(len(train_pids)))
    assert min(r.camid for s in ("train", "query", "gallery") for r in ds.split(s)) == 0
    assert "skipped" not in ds.extras


def test_market1501_real_names(shared_dir: Path, tmp_path: Path) -> None:
    rel = names(shared_dir, "market1501")
    build_tree(tmp_path / "Market-1501-v15.09.15", rel)
    ds = datasets.load("market1501", tmp_path)  # parent folder: found by its known name
    assert summary(ds) == {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)}
    assert {s: v["cameras"] for s, v in ds.stats().items()} == {"train": 6, "query": 6, "gallery": 6}
    check_common(ds)
    assert sum(r.pid == 0 for r in ds.gallery) == 2798
    assert all(r.pid != -1 for r in ds.gallery)
    assert sum(r.path.endswith(".jpg.jpg") for r in ds.query + ds.gallery) == 6 + 18 - sum(
        1 for p in rel if p.endswith(".jpg.jpg") and os.path.basename(p).startswith("-1")
    )
    q = [r for r in ds.query if r.path.endswith("1488_c1s6_023021_00.jpg.jpg")]
    assert len(q) == 1 and q[0].pid == 1488 and q[0].camid == 0
    assert "multi_query" not in ds.extras  # no gt_bbox: no key, no error


def test_dukemtmcreid_real_names(shared_dir: Path, tmp_path: Path) -> None:
    build_tree(tmp_path / "dukemtmc-reid" / "DukeMTMC-reID", names(shared_dir, "dukemtmcreid"))
    ds = datasets.load("dukemtmcreid", tmp_path)  # torchreid's nesting
    assert summary(ds) == {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)}
    assert {s: v["cameras"] for s, v in ds.stats().items()} == {"train": 8, "query": 8, "gallery": 8}
    check_common(ds)


def test_msmt17_real_lists(shared_dir: Path, tmp_path: Path) -> None:
    """MSMT17 is read from its list files: with ``verify_images=False`` no image is opened, so only the
    two folders are created (the per-file checks are covered by the V2 test and the other datasets)."""
    base = tmp_path / "MSMT17_V1"
    (base / "train").mkdir(parents=True)
    (base / "test").mkdir()
    for f in (shared_dir / "realnames" / "msmt17").glob("list_*.txt"):
        shutil.copyfile(f, base / f.name)
    ds = datasets.load("msmt17", tmp_path, verify_images=False)
    assert summary(ds) == {"train": (1041, 32621), "query": (3060, 11659), "gallery": (3060, 82161)}
    assert {s: v["cameras"] for s, v in ds.stats().items()} == {"train": 15, "query": 15, "gallery": 15}
    assert ds.extras["msmt17_version"] == "V1"
    check_common(ds)
    # every record points at a name of the real MSMT17_V1 tree
    real = set(names(shared_dir, "msmt17"))
    cut = len(str(base)) + 1
    assert {r.path[cut:] for s in ("train", "query", "gallery") for r in ds.split(s)} == real
    only = datasets.load("msmt17", base, train_lists=("train",), verify_images=False)
    assert summary(only)["train"] == (1041, 30248)


def test_msmt17_v2_layout(shared_dir: Path, tmp_path: Path) -> None:
    """V2 folder names, checked on the first 300 lines of each real list."""
    base = tmp_path / "msmt17" / "MSMT17_V2"
    base.mkdir(parents=True)
    rel = []
    for n in ("train", "val", "query", "gallery"):  # default image check: the files must exist
        lines = (shared_dir / "realnames" / "msmt17" / f"list_{n}.txt").read_text().splitlines()[:300]
        (base / f"list_{n}.txt").write_text("\n".join(lines) + "\n")
        sub = "mask_train_v2" if n in ("train", "val") else "mask_test_v2"
        rel += [f"{sub}/{line.split()[0]}" for line in lines]
    build_tree(base, rel)
    ds = datasets.load("msmt17", tmp_path)
    assert ds.extras["msmt17_version"] == "V2"
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [600, 300, 300]
    assert all("/mask_train_v2/" in r.path for r in ds.train)


@pytest.mark.parametrize(("labeled", "expected"), [
    (True, {"train": (767, 7368), "query": (700, 1400), "gallery": (700, 5328)}),
    (False, {"train": (767, 7365), "query": (700, 1400), "gallery": (700, 5332)}),
])
def test_cuhk03_new_protocol_real_mats(shared_dir: Path, tmp_path: Path, labeled: bool,
                                       expected: dict[str, tuple[int, int]]) -> None:
    kind = "labeled" if labeled else "detected"
    base = tmp_path / "cuhk03"
    build_tree(base, [p for p in names(shared_dir, "cuhk03") if p.startswith(f"images_{kind}/")], fmt="PNG")
    for f in (shared_dir / "realnames" / "cuhk03").glob("*.mat"):
        shutil.copyfile(f, base / f.name)
    ds = datasets.load("cuhk03", tmp_path, labeled=labeled, protocol="new")
    assert summary(ds) == expected
    assert {s: v["cameras"] for s, v in ds.stats().items()} == {"train": 2, "query": 2, "gallery": 2}
    check_common(ds)
    assert ds.extras["cuhk03_images"] == kind
    # query and gallery keep the .mat labels (1..1467), train is relabelled
    assert max(r.pid for r in ds.gallery) <= 1467 and min(r.pid for r in ds.query) >= 1


def test_celebreid_real_names(shared_dir: Path, tmp_path: Path) -> None:
    build_tree(tmp_path / "Celeb-reID", names(shared_dir, "celebreid"))
    ds = datasets.load("celebreid", tmp_path)
    assert summary(ds) == {"train": (632, 20208), "query": (420, 2972), "gallery": (420, 11006)}
    check_common(ds)
    assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
    assert {r.pid for r in ds.query} == {r.pid for r in ds.gallery}
