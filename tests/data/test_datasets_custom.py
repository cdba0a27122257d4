"""The user's own data (folder layout and CSV) and bad input: corrupt files, odd modes, loops."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from reidkit.data import datasets
from reidkit.data.datasets import DatasetWarning
from reidkit.data.datasets._common import relabel
from reidkit.errors import DatasetError


def jpeg_bytes(color: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (8, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def put(path: Path, data: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes() if data is None else data)
    return path


def make_folder_tree(root: Path) -> None:
    # train pids 7 and 3 (relabelled 0, 1), cameras 1 and 4 -> 0 and 1 (c-prefix allowed)
    put(root / "train" / "7" / "1_a.jpg")
    put(root / "train" / "7" / "4_b.jpg")
    put(root / "train" / "3" / "c1_x.jpg")
    put(root / "query" / "12" / "1_q.jpg")
    put(root / "gallery" / "12" / "4_g.jpg")
    put(root / "gallery" / "0" / "1_distractor.jpg")


def test_folder_layout(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    ds = datasets.load("folder", tmp_path)
    by_name = {Path(r.path).name: r for r in ds.train}
    assert (by_name["1_a.jpg"].pid, by_name["1_a.jpg"].camid) == (1, 0)
    assert (by_name["4_b.jpg"].pid, by_name["4_b.jpg"].camid) == (1, 1)
    assert (by_name["c1_x.jpg"].pid, by_name["c1_x.jpg"].camid) == (0, 0)
    assert ds.extras["train_pids"] == [3, 7] and ds.extras["camera_ids"] == [1, 4]
    assert [(r.pid, r.camid) for r in ds.query] == [(12, 0)]
    assert sorted((r.pid, r.camid) for r in ds.gallery) == [(0, 0), (12, 1)]
    assert ds.stats()["train"] == {"ids": 2, "images": 3, "cameras": 2}


def test_folder_missing_split_names_layout(tmp_path: Path) -> None:
    put(tmp_path / "train" / "1" / "1_a.jpg")
    put(tmp_path / "query" / "1" / "1_a.jpg")
    with pytest.raises(DatasetError, match=r"lacks gallery/ .*<root>/\{train,query,gallery\}") as info:
        datasets.load("folder", tmp_path)
    assert str(tmp_path) in str(info.value)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    for f in (tmp_path / "query").rglob("*.jpg"):
        f.unlink()
    with pytest.raises(DatasetError, match=r"split 'query' is empty.*query"):
        datasets.load("folder", tmp_path)


def test_corrupt_and_truncated_images_skipped(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    good = jpeg_bytes(size=(32, 64))
    trunc = put(tmp_path / "train" / "7" / "1_trunc.jpg", good[: len(good) // 2])
    empty = put(tmp_path / "train" / "7" / "1_empty.jpg", b"")
    junk = put(tmp_path / "gallery" / "12" / "1_junk.jpg", b"<html>not found</html>")
    with pytest.warns(DatasetWarning, match=r"left out 3 of 9 files"):
        ds = datasets.load("folder", tmp_path)
    skipped = dict(ds.extras["skipped"])
    assert set(skipped) == {str(trunc), str(empty), str(junk)}
    assert "empty" in skipped[str(empty)]
    kept = {r.path for s in ("train", "query", "gallery") for r in ds.split(s)}
    assert not kept & set(skipped) and len(kept) == 6
    # the cheap header check catches the empty and non-image files, not the truncated body
    with pytest.warns(DatasetWarning, match="left out 2 of 9"):
        ds2 = datasets.load("folder", tmp_path, verify_images="header")
    assert {p for p, _ in ds2.extras["skipped"]} == {str(empty), str(junk)}


def test_odd_image_modes_accepted(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    d = tmp_path / "train" / "3"
    Image.new("L", (4, 8), 128).save(d / "1_gray.png")
    Image.new("RGBA", (4, 8), (1, 2, 3, 100)).save(d / "1_rgba.png")
    Image.new("P", (4, 8), 5).save(d / "1_pal.png")
    Image.new("LA", (4, 8), (9, 200)).save(d / "1_la.png")
    Image.fromarray(np.full((8, 4), 40000, dtype=np.uint16)).save(d / "1_16bit.png")
    Image.new("CMYK", (4, 8), (0, 0, 0, 0)).save(d / "1_cmyk.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        ds = datasets.load("folder", tmp_path)
    names = {Path(r.path).name for r in ds.train}
    assert {"1_gray.png", "1_rgba.png", "1_pal.png", "1_la.png", "1_16bit.png", "1_cmyk.jpg"} <= names


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    os.symlink(tmp_path / "train", tmp_path / "train" / "7" / "loop")
    os.symlink(tmp_path / "gallery" / "12", tmp_path / "gallery" / "12" / "self")
    ds = datasets.load("folder", tmp_path)
    assert ds.stats()["gallery"]["images"] == 2
    # symlinked sub-folders are not followed: no image shows up again under another pid
    assert sorted((Path(r.path).name, r.pid) for r in ds.train) == [("1_a.jpg", 1), ("4_b.jpg", 1), ("c1_x.jpg", 0)]


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_list(tmp_path: Path) -> None:
    put(tmp_path / "imgs" / "a.jpg")
    put(tmp_path / "imgs" / "b.jpg")
    put(tmp_path / "imgs" / "q.jpg")
    absolute = put(tmp_path / "elsewhere" / "g.jpg")
    put(tmp_path / "outside.jpg")
    csv_path = write_csv(tmp_path / "lists" / "data.csv", (
        "path,pid,camid,split,note\n"
        "../imgs/a.jpg,5,2,train,x\n"   # relative to the CSV's folder, escapes it -> skipped
        f"{tmp_path}/imgs/b.jpg,9,3,train,\n"
        f"{tmp_path}/imgs/q.jpg,5,2,query,\n"
        f"{absolute},5,3,gallery,\n"
    ))
    with pytest.warns(DatasetWarning, match="left out 1"):
        ds = datasets.load("csv", csv_path)
    assert ds.extras["skipped"][0][0] == "../imgs/a.jpg" and "outside" in ds.extras["skipped"][0][1]
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 1)]
    assert [(r.pid, r.camid) for r in ds.query] == [(5, 0)]
    assert [(r.pid, r.camid, r.path) for r in ds.gallery] == [(5, 1, str(absolute))]


def test_csv_relative_paths(tmp_path: Path) -> None:
    for n in ("a", "b", "q", "g"):
        put(tmp_path / "img" / f"{n}.jpg")
    csv_path = write_csv(tmp_path / "list.csv", "path,pid,camid,split\nimg/a.jpg,1,0,train\nimg/b.jpg,2,1,train\n"
                         "img/q.jpg,2,0,query\nimg/g.jpg,2,1,gallery\n")
    ds = datasets.load("csv", tmp_path)  # the folder holding exactly one CSV
    assert [r.path for r in ds.train] == [str(tmp_path / "img" / "a.jpg"), str(tmp_path / "img" / "b.jpg")]
    assert ds.num_train_pids == 2 and ds.root == str(csv_path)


def test_csv_missing_columns(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "bad.csv", "path,pid\nimg/a.jpg,1\n")
    with pytest.raises(DatasetError) as info:
        datasets.load("csv", csv_path)
    msg = str(info.value)
    assert str(csv_path) in msg and "camid, split" in msg and "\n" not in msg


def test_csv_bad_values(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "bad.csv", "path,pid,camid,split\nimg/a.jpg,1,one,train\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:2: camid must be an integer, got 'one'"):
        datasets.load("csv", csv_path)
    write_csv(csv_path, "path,pid,camid,split\nimg/a.jpg,1,,train\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:2: empty camid; .*default_camid"):
        datasets.load("csv", csv_path)
    write_csv(csv_path, "path,pid,camid,split\nimg/a.jpg,1,0,val\n")
    with pytest.raises(DatasetError, match="split 'val' is not one of"):
        datasets.load("csv", csv_path)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 3000), st.integers(0, 20)), min_size=1, max_size=60))
def test_relabel_property(pairs: list[tuple[int, int]]) -> None:
    """Labels are 0..N-1, keep the order of the original pids, and group exactly as they did."""
    recs = [(f"img{i}.jpg", pid, cam) for i, (pid, cam) in enumerate(pairs)]
    out, originals = relabel(recs)
    assert sorted({r.pid for r in out}) == list(range(len({p for p, _ in pairs})))
    assert originals == sorted({p for p, _ in pairs})
    for r, (pid, cam) in zip(out, pairs, strict=True):
        assert originals[r.pid] == pid and r.camid == cam


# ---------------------------------------------------------------- named identities, default camera, empty splits


def make_named_tree(root: Path, prefix: str = "") -> None:
    """Identities named as people are (alice, bob, carol), file names with or without a camera."""
    for split, ident, name in (("train", "bob", "a.jpg"), ("train", "bob", "b.jpg"), ("train", "alice", "c.jpg"),
                               ("query", "carol", "q.jpg"), ("gallery", "carol", "g.jpg"),
                               ("gallery", "dave", "d.jpg")):
        put(root / split / ident / f"{prefix}{name}")


def test_folder_named_identities(tmp_path: Path) -> None:
    make_named_tree(tmp_path, prefix="2_")
    put(tmp_path / "gallery" / "0007" / "3_x.jpg")  # a numbered folder among named ones is a name too
    ds = datasets.load("folder", tmp_path)
    names = ["0007", "alice", "bob", "carol", "dave"]  # sorted as strings, across the splits
    assert ds.extras["identity_names"] == names
    assert {Path(r.path).name: r.pid for r in ds.train} == {"2_a.jpg": 1, "2_b.jpg": 1, "2_c.jpg": 0}
    assert ds.extras["train_pids"] == [1, 2]  # label 0 is pid 1 (alice), label 1 is pid 2 (bob)
    assert ds.identity_names("train") == {0: "alice", 1: "bob"}
    assert ds.identity_names("query") == {3: "carol"}
    assert ds.identity_names("gallery") == {0: "0007", 3: "carol", 4: "dave"}
    q, = ds.query
    assert [r.pid for r in ds.gallery if r.pid == q.pid] == [3]  # carol is carol in query and gallery


def test_folder_numbered_identities_record_no_names(tmp_path: Path) -> None:
    make_folder_tree(tmp_path)
    ds = datasets.load("folder", tmp_path)
    assert "identity_names" not in ds.extras and ds.identity_names("train") == {}


def test_folder_without_cameras_says_why_and_how(tmp_path: Path) -> None:
    make_named_tree(tmp_path)
    with pytest.warns(DatasetWarning, match="left out 6 of 6"), pytest.raises(DatasetError) as info:
        datasets.load("folder", tmp_path)
    msg = str(info.value)
    assert "split 'train' is empty" in msg and "3 image files seen in 2 identity folders" in msg
    assert "none named <camid>_*.jpg" in msg and "default_camid" in msg and "\n" not in msg


def test_folder_default_camid(tmp_path: Path) -> None:
    make_named_tree(tmp_path)
    put(tmp_path / "train" / "bob" / "5_e.jpg")  # a file that names its camera keeps it
    ds = datasets.load("folder", tmp_path, default_camid=1)
    assert ds.extras["camera_ids"] == [1, 5]
    assert {Path(r.path).name: r.camid for r in ds.train} == {"a.jpg": 0, "b.jpg": 0, "c.jpg": 0, "5_e.jpg": 1}
    assert {r.camid for r in ds.query} == {r.camid for r in ds.gallery} == {0}
    # one pseudo camera per split: query and gallery of one unknown camera can still be matched
    ds2 = datasets.load("folder", tmp_path, default_camid={"train": 0, "query": 0, "gallery": 1})
    assert {r.camid for r in ds2.query} == {0} and {r.camid for r in ds2.gallery} == {1}
    # a split missing from the mapping keeps the rule: unnamed images are left out, and the error says so
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match=r"split 'gallery' is empty: .*default_camid"):
        datasets.load("folder", tmp_path, default_camid={"train": 0, "query": 0})


@pytest.mark.parametrize("bad", [-1, True, 1.5, "0", {"val": 0}, {"train": "x"}])
def test_default_camid_checked(tmp_path: Path, bad: object) -> None:
    make_named_tree(tmp_path)
    with pytest.raises(DatasetError, match="default_camid"):
        datasets.load("folder", tmp_path, default_camid=bad)


@pytest.mark.parametrize(("build", "why"), [
    (lambda r: (r / "train").mkdir(), "the folder holds no identity folders"),
    (lambda r: (r / "train" / "bob").mkdir(parents=True), "its 1 identity folders hold no image files"),
    (lambda r: put(r / "train" / "loose.jpg"), "1 image files lie directly in train/"),
    (lambda r: put(r / "train" / "bob" / "1_a.jpg", b"not an image"), "1 found, all unusable: "),
])
def test_empty_split_always_says_why(tmp_path: Path, build: object, why: str) -> None:
    put(tmp_path / "query" / "1" / "1_q.jpg")
    put(tmp_path / "gallery" / "1" / "2_g.jpg")
    build(tmp_path)  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        with pytest.raises(DatasetError, match="split 'train' is empty") as info:
            datasets.load("folder", tmp_path)
    assert why in str(info.value)


def test_csv_named_identities_and_default_camid(tmp_path: Path) -> None:
    for n in ("a", "b", "q", "g"):
        put(tmp_path / "img" / f"{n}.jpg")
    csv_path = write_csv(tmp_path / "list.csv", "path,pid,split\nimg/a.jpg,bob,train\nimg/b.jpg,alice,train\n"
                         "img/q.jpg,bob,query\nimg/g.jpg,bob,gallery\n")
    with pytest.raises(DatasetError, match=r"lacks the columns camid .*default_camid"):
        datasets.load("csv", csv_path)
    ds = datasets.load("csv", csv_path, default_camid={"train": 0, "query": 0, "gallery": 1})
    assert ds.extras["identity_names"] == ["alice", "bob"]
    assert ds.identity_names("train") == {0: "alice", 1: "bob"} and ds.identity_names("query") == {1: "bob"}
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 1)]


def test_csv_empty_split_says_why(tmp_path: Path) -> None:
    put(tmp_path / "img" / "a.jpg")
    csv_path = write_csv(tmp_path / "list.csv", "path,pid,camid,split\nimg/a.jpg,1,0,train\nimg/a.jpg,1,0,query\n")
    with pytest.raises(DatasetError, match=r"split 'gallery' is empty.*no row has split=gallery "
                                           r"\(rows per split: 1 train, 1 query\)"):
        datasets.load("csv", csv_path)


def test_datasets_command_default_camid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reidkit.cli import main

    make_named_tree(tmp_path)
    assert main(["datasets", "folder", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reidkit: error: folder: split 'train' is empty") and "\n" not in err
    assert main(["datasets", "folder", "--root", str(tmp_path), "--default-camid", "0", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"] == {"ids": 2, "images": 3, "cameras": 1}
    assert main(["datasets", "market1501", "--root", str(tmp_path), "--default-camid", "0"]) == 2
    assert "--default-camid applies to folder and csv only" in capsys.readouterr().err


def test_training_on_named_identities_records_them(tmp_path: Path) -> None:
    """A run on named identities with unknown cameras trains, evaluates and writes identities.json."""
    from reidkit.engine.config import load_config
    from reidkit.engine.trainer import train

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i, ident in enumerate(("ann", "ben", "cid", "dee")):
        for split, n in (("train", 3), ("query", 1), ("gallery", 2)):
            for j in range(n):
                color = tuple(int(v) for v in rng.integers(0, 255, 3))
                put(data / split / ident / f"{split}{i}{j}.jpg", jpeg_bytes(color, (32, 64)))
    run = tmp_path / "run"
    sets = ["model.options.backbone=resnet18", "model.options.pretrained=null", "data.dataset=folder",
            f"data.root={data}", "data.options.default_camid={train: 0, query: 0, gallery: 1}",
            "data.size=[64, 32]", "data.workers=0", "sampler.p=2", "sampler.k=2", "sampler.num_batches=1",
            "train.epochs=1", "train.eval_every=1", "train.progress=false", f"train.out_dir={run}",
            "schedule.kind=constant", "train.plots=false", "train.tensorboard=false"]
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "stadb_market1501.yaml", sets)
    result = train(cfg, quiet=True)
    assert result.history[-1]["mAP"] > 0
    ids = json.loads((run / "identities.json").read_text())
    assert ids == {"classes": ["ann", "ben", "cid", "dee"], "pids": {"0": "ann", "1": "ben", "2": "cid", "3": "dee"}}
