"""Bad input, fuzzed: every bad image, list, folder or config gets a one-line error or a listed skip,
never a traceback or a hang.

Byte-level cases use hypothesis (bounded examples) against ``reidkit.utils.images.read_image``, the
image cache (``reidkit.data.cache.decode_images``) and the dataset scan (``reidkit.data.datasets``);
CLI cases run in a subprocess with a timeout.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reidkit.errors import ConfigError, DatasetError, ReidkitError
from reidkit.utils.images import ImageReadError, read_image

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------- helpers
def _encode(mode: str, size: tuple[int, int], fmt: str, seed: int = 0) -> bytes:
    """A small valid image file (``size`` = (w, h)) in ``mode`` and ``fmt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16",):
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    elif mode == "I":
        img = Image.fromarray(rng.integers(0, 70000, (h, w), dtype=np.int32))
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w), dtype=np.float32) * 1000)
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        if mode == "P":
            img = img.quantize(16)
        elif mode == "P+transparency":
            img = img.quantize(16)
            img.info["transparency"] = 0
        elif mode != "RGB":
            img = img.convert(mode)
    buf = io.BytesIO()
    kwargs = {"transparency": 0} if mode == "P+transparency" and fmt == "PNG" else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


VALID = [_encode(m, (7, 13), f, i) for i, (m, f) in enumerate(
    [("RGB", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("I;16", "PNG"),
     ("1", "BMP"), ("RGB", "WEBP"), ("LA", "TIFF")])]


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip()
    assert msg and "\n" not in msg, repr(msg)
    return msg


garbage = st.one_of(
    st.binary(min_size=0, max_size=400),
    # a valid image cut short
    st.tuples(st.sampled_from(VALID), st.floats(0.0, 0.98)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
    # a valid header followed by noise
    st.tuples(st.sampled_from(VALID), st.integers(2, 64), st.binary(min_size=1, max_size=300))
      .map(lambda t: t[0][: t[1]] + t[2]),
    # a valid image with a few bytes flipped
    st.tuples(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                               min_size=1, max_size=8))
      .map(lambda t: bytes(dict(t[1]).get(i, b) for i, b in enumerate(t[0]))),
)


# ------------------------------------------------------------------------------------------- read_image
@FUZZ
@given(data=garbage, ext=st.sampled_from([".jpg", ".png", ".bmp", ".webp", ".tif", ".gif"]))
def test_read_image_fuzzed_bytes(data, ext):
    """Random, truncated or corrupted bytes: an RGB image with pixels, or ImageReadError naming the file."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "crop" + ext)
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            img = read_image(path)
        except ImageReadError as exc:
            assert path in _one_line(exc)
        else:
            assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
            np.asarray(img)  # the pixels are there


@pytest.mark.parametrize(("mode", "fmt"), [
    ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P+transparency", "PNG"), ("P", "GIF"), ("RGBA", "PNG"),
    ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("I;16", "TIFF"), ("I", "TIFF"), ("F", "TIFF"),
    ("1", "PNG"), ("1", "BMP"), ("RGB", "WEBP"), ("YCbCr", "JPEG"),
])
def test_read_image_any_mode_gives_rgb(tmp_path, mode, fmt):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(_encode(mode, (5, 9), fmt))
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (5, 9)
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (9, 5, 3)


def test_read_image_sixteen_bit_keeps_contrast(tmp_path):
    """I;16 pictures are scaled to 8 bits, not clipped to white."""
    arr = np.linspace(0, 60000, 40, dtype=np.uint16).reshape(8, 5)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = np.asarray(read_image(tmp_path / "d.png"))[..., 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 20


@pytest.mark.parametrize("size", [(1, 1), (1, 2000), (2000, 1), (3, 1)])
def test_extreme_sizes_decode_and_embed(tmp_path, size, rel_weights):
    """1×1 and 1×2000 pictures go through the cache and the embedder like any other crop."""
    import torch

    import reidkit
    from reidkit.data.cache import decode_images

    p = tmp_path / "tiny.png"
    Image.fromarray(np.full((size[1], size[0], 3), 200, np.uint8)).save(p)
    u8, bad = decode_images([str(p)], (64, 32))
    assert bad == [] and u8.shape == (1, 3, 64, 32) and u8.dtype == torch.uint8
    feats = reidkit.load(rel_weights, device="cpu").embed(str(p))
    assert feats.shape[0] == 1 and torch.isfinite(feats).all()


def test_unreadable_file_permission(tmp_path):
    """chmod 000: a one-line ImageReadError (root reads anything, so this case is skipped as root)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not block reads (the directory case below covers it)")
    p = tmp_path / "locked.png"
    p.write_bytes(VALID[1])
    p.chmod(0)
    try:
        with pytest.raises(ImageReadError) as info:
            read_image(p)
        assert str(p) in _one_line(info.value)
    finally:
        p.chmod(0o644)


def test_directory_named_like_an_image(tmp_path):
    """A folder called x.jpg (unreadable as a file even for root) is an ImageReadError and a listed bad path."""
    from reidkit.data.cache import decode_images

    d = tmp_path / "x.jpg"
    d.mkdir()
    with pytest.raises(ImageReadError) as info:
        read_image(d)
    assert str(d) in _one_line(info.value)
    good = tmp_path / "good.png"
    good.write_bytes(VALID[1])
    u8, bad = decode_images([str(d), str(good), str(tmp_path / "missing.jpg")], (16, 8))
    assert u8.shape == (1, 3, 16, 8) and sorted(bad) == sorted([str(d), str(tmp_path / "missing.jpg")])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_named_pipe_called_jpg_does_not_hang(tmp_path, rel_weights, cli):
    """A FIFO named x.jpg (opening it would block forever): refused at once by read_image, listed as bad by
    the cache and the dataset scan, and skipped by 'reidkit extract' (run under a timeout)."""
    from reidkit.data import datasets
    from reidkit.data.cache import decode_images
    from reidkit.data.datasets import DatasetWarning

    root = _folder_dataset(tmp_path / "ds")
    fifo = root / "train" / "1" / "1_pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError) as info:
        read_image(fifo)
    assert str(fifo) in _one_line(info.value)
    good = str(root / "train" / "1" / "0_a.png")
    u8, bad = decode_images([str(fifo), good], (16, 8), workers=2)
    assert bad == [str(fifo)] and u8.shape[0] == 1
    for verify in (True, "header"):
        with pytest.warns(DatasetWarning, match="1_pipe.jpg"):
            ds = datasets.load("folder", root, verify_images=verify)
        assert str(fifo) not in {r.path for r in ds.train}
    res = cli(["extract", "--checkpoint", str(rel_weights), "--images", str(root / "train"), "--out",
               str(tmp_path / "f.safetensors"), "--device", "cpu", "--workers", "0", "--no-progress"], timeout=120)
    assert res.returncode == 0 and "1_pipe.jpg" in res.stderr, res.stderr



def _interleaved_reads(monkeypatch, path, during=None):
    """Two threads in ``read_image`` at once, interleaved deterministically: A enters, B enters, A leaves
    while B is still inside (the order a thread pool produces now and then). ``during`` runs in a third
    thread while both are inside."""
    import threading

    from PIL import Image as PILImage

    real_open = PILImage.open
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()

    def open_in_turn(fp, *args, **kwargs):
        if threading.current_thread().name == "reader-a":
            a_in.set()
            assert b_in.wait(30)
            if during is not None:
                t = threading.Thread(target=during)
                t.start()
                t.join()
        else:
            b_in.set()
            assert a_done.wait(30)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PILImage, "open", open_in_turn)
    errors = []

    def read(name):
        try:
            read_image(path)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            if name == "reader-a":
                a_done.set()

    threads = [threading.Thread(target=read, args=(n,), name=n) for n in ("reader-a", "reader-b")]
    threads[0].start()
    assert a_in.wait(30)
    threads[1].start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_concurrent_reads_leave_the_warning_filters_alone(tmp_path, monkeypatch):
    """read_image runs in decoding threads: it must not save and restore the process's warning filters
    (two overlapping reads used to leave them at "ignore everything" for the rest of the process, hiding
    reidkit's warnings about unreadable images and the host application's own)."""
    p = tmp_path / "good.png"
    p.write_bytes(VALID[1])
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        _interleaved_reads(monkeypatch, p)
        assert warnings.filters == before


def test_a_read_does_not_hide_other_threads_warnings(tmp_path, monkeypatch):
    """A warning raised by the host application in another thread while an image is being read is shown."""
    p = tmp_path / "good.png"
    p.write_bytes(VALID[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _interleaved_reads(monkeypatch, p, during=lambda: warnings.warn("the host's own warning", UserWarning,
                                                                        stacklevel=1))
    assert any("the host's own warning" in str(w.message) for w in caught), caught


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_picture_is_refused_before_decoding(tmp_path, monkeypatch):
    """More pixels than PIL.Image.MAX_IMAGE_PIXELS: a one-line ImageReadError naming the file (Pillow
    itself only warns up to twice its limit, and would decode the whole picture)."""
    from PIL import Image as PILImage

    p = tmp_path / "wide.png"
    PILImage.new("RGB", (40, 30)).save(p)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: above the limit, below twice it
    with pytest.raises(ImageReadError) as info:
        read_image(p)
    assert str(p) in _one_line(info.value) and "1000-pixel limit" in str(info.value)


# ------------------------------------------------------------------------------------------- the cache
@FUZZ
@given(blobs=st.lists(st.one_of(garbage, st.sampled_from(VALID)), min_size=1, max_size=6),
       workers=st.sampled_from([0, 2]))
def test_decode_images_fuzzed(blobs, workers):
    """decode_images returns one uint8 row per readable file, in order, and lists exactly the others."""
    from reidkit.data.cache import decode_images

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, b in enumerate(blobs):
            p = os.path.join(d, f"{i}.png")
            with open(p, "wb") as fh:
                fh.write(b)
            paths.append(p)
        expected_bad = []
        for p in paths:
            try:
                read_image(p)
            except ImageReadError:
                expected_bad.append(p)
        u8, bad = decode_images(paths, (16, 8), workers=workers)
        assert list(map(str, bad)) == expected_bad
        assert tuple(u8.shape) == (len(paths) - len(expected_bad), 3, 16, 8)
        assert str(u8.dtype) == "torch.uint8"


# ------------------------------------------------------------------------------------------- dataset scan
def _folder_dataset(root: Path) -> Path:
    for split, pids in (("train", (1, 2)), ("query", (3,)), ("gallery", (3, 4))):
        for pid in pids:
            d = root / split / str(pid)
            d.mkdir(parents=True, exist_ok=True)
            for cam in (0, 1):
                (d / f"{cam}_a.png").write_bytes(VALID[2])
    return root


@FUZZ
@given(blobs=st.lists(garbage, min_size=1, max_size=4), verify=st.sampled_from([True, "header"]))
def test_dataset_scan_fuzzed_files(blobs, verify):
    """Garbage files in a folder dataset: left out and listed (full check), or at worst a header-valid file
    kept; the scan never raises anything but DatasetError and every kept full-checked file decodes."""
    from reidkit.data import datasets
    from reidkit.data.datasets import DatasetWarning

    with tempfile.TemporaryDirectory() as d:
        root = _folder_dataset(Path(d))
        planted = []
        for i, b in enumerate(blobs):
            p = root / "train" / "1" / f"1_bad{i}.jpg"
            p.write_bytes(b)
            planted.append(str(p))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            ds = datasets.load("folder", root, verify_images=verify)
        kept = {r.path for r in ds.train}
        skipped = {p for p, _ in ds.extras.get("skipped", [])}
        for p in planted:
            assert (p in kept) != (p in skipped), p
            if verify is True and p in kept:
                read_image(p)
        assert len(ds.train) >= 4 and len(ds.query) == 2 and len(ds.gallery) == 4


def test_symlink_loops_do_not_hang_the_scan(tmp_path, cli):
    """Directory loops and self-referencing links in a dataset folder: the CLI finishes and lists them."""
    root = _folder_dataset(tmp_path / "ds")
    (root / "train" / "1" / "loop").symlink_to(root / "train" / "1", target_is_directory=True)
    (root / "train" / "2" / "up").symlink_to(root / "train", target_is_directory=True)
    (root / "gallery" / "4" / "0_self.jpg").symlink_to(root / "gallery" / "4" / "0_self.jpg")
    (root / "gallery" / "4" / "1_dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "train" / "7").symlink_to(root / "train" / "7")  # a pid folder that is a loop
    from reidkit.data import datasets
    from reidkit.data.datasets import DatasetWarning

    with pytest.warns(DatasetWarning):
        ds = datasets.load("folder", root)
    skipped = {p for p, _ in ds.extras["skipped"]}
    assert {str(root / "train" / "7"), str(root / "gallery" / "4" / "0_self.jpg")} <= skipped
    res = cli(["datasets", "folder", "--root", str(root), "--json"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    import json

    stats = json.loads(res.stdout)
    assert stats["train"]["images"] == 4 and stats["gallery"]["images"] == 4


def test_symlink_loop_split_folder_is_a_one_line_error(tmp_path, cli_inproc):
    """A split folder that is a symlink loop: a DatasetError, not a hang or an OSError."""
    from reidkit.data import datasets

    root = _folder_dataset(tmp_path / "ds")
    import shutil

    shutil.rmtree(root / "query")
    (root / "query").symlink_to(root / "query")
    with pytest.raises(DatasetError) as info:
        datasets.load("folder", root)
    _one_line(info.value)
    res = cli_inproc(["datasets", "folder", "--root", str(root)])
    assert res.returncode == 2 and len(res.error_lines()) == 1


def _csv(tmp_path: Path, text: str) -> Path:
    _folder_dataset(tmp_path / "imgs")
    p = tmp_path / "list.csv"
    p.write_text(text, encoding="utf-8")
    return p


GOOD_ROWS = ("imgs/train/1/0_a.png,1,0,train\nimgs/train/2/1_a.png,2,1,train\n"
             "imgs/query/3/0_a.png,3,0,query\nimgs/gallery/3/1_a.png,3,1,gallery\n")


@pytest.mark.parametrize(("label", "text"), [
    ("no split column", "path,pid,camid\nimgs/train/1/0_a.png,1,0\n"),
    ("no path column", "file,pid,camid,split\nimgs/train/1/0_a.png,1,0,train\n"),
    ("empty file", ""),
    ("pid not a number", "path,pid,camid,split\nimgs/train/1/0_a.png,one,0,train\n"),
    ("unknown split", "path,pid,camid,split\nimgs/train/1/0_a.png,1,0,validation\n"),
    ("short row", "path,pid,camid,split\nimgs/train/1/0_a.png,1\n"),
    ("binary", "\x00\x01\x02,\xff\n"),
])
def test_csv_dataset_bad_lists(tmp_path, label, text, cli_inproc):
    from reidkit.data import datasets

    p = _csv(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        datasets.load("csv", p)
    assert str(p) in _one_line(info.value), label
    res = cli_inproc(["datasets", "csv", "--root", str(p)])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr


def test_csv_paths_outside_root_are_skipped_and_listed(tmp_path):
    from reidkit.data import datasets
    from reidkit.data.datasets import DatasetWarning

    outside = tmp_path / "secret.png"
    outside.write_bytes(VALID[1])
    sub = tmp_path / "sub"
    sub.mkdir()
    p = _csv(sub, "path,pid,camid,split\n" + GOOD_ROWS + "../secret.png,9,0,train\n"
             "imgs/../../secret.png,9,0,gallery\n")
    with pytest.warns(DatasetWarning, match="outside"):
        ds = datasets.load("csv", p)
    everything = [r.path for s in (ds.train, ds.query, ds.gallery) for r in s]
    assert str(outside) not in everything and all(str(sub) in q for q in everything)
    assert [raw for raw, _ in ds.extras["skipped"]] == ["../secret.png", "imgs/../../secret.png"]


segment = st.sampled_from(["imgs", "a b", "..", ".", "sub", "x.png", "..x", "é"])


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.one_of(st.lists(segment, min_size=1, max_size=5).map("/".join),
                               st.lists(segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))),
                     min_size=1, max_size=8))
def test_both_csv_readers_take_the_same_paths(rows):
    """'reidkit extract --csv' (inference.sources.csv_images) and the csv dataset reader read the same
    list the same way: the same rows kept, leading to the same files, the same rows skipped as leaving the
    CSV's folder (extract used to embed them)."""
    from reidkit.data import datasets
    from reidkit.inference.sources import csv_images

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(d) / "lists"
        folder.mkdir()
        p = folder / "list.csv"
        fixed = ["good.png,1,0,train", "good.png,1,0,query", "good.png,1,1,gallery"]  # no split left empty
        p.write_text("path,pid,camid,split\n" + "\n".join([*fixed, *(f"{r},1,0,train" for r in rows)]) + "\n",
                     encoding="utf-8")
        mine = csv_images(str(p))
        ds = datasets.load("csv", p, verify_images=False)
        theirs = [r.path for s in (ds.train, ds.query, ds.gallery) for r in s]
        skipped = [raw for raw, _ in ds.extras.get("skipped", [])]
        assert sorted(mine.paths) == sorted(theirs)
        assert sorted(raw for raw, _ in mine.skipped) == sorted(skipped)
        for raw in rows:
            if not raw.startswith("/"):
                leaves = os.path.commonpath([os.path.normpath(folder / raw), folder]) != str(folder)
                assert (raw in skipped) == leaves, raw


def test_extract_csv_lists_rows_that_leave_its_folder(tmp_path, rel_weights, cli_inproc):
    """A CSV row whose path leads outside the CSV's folder is skipped and listed, as the dataset reader does."""
    from reidkit.inference.features import read_folder_features

    outside = tmp_path / "secret.png"
    outside.write_bytes(VALID[1])
    sub = tmp_path / "sub"
    (sub / "imgs").mkdir(parents=True)
    (sub / "imgs" / "ok.png").write_bytes(VALID[1])
    p = sub / "list.csv"
    p.write_text("path,pid,camid\nimgs/ok.png,1,0\n../secret.png,2,0\nimgs/../../secret.png,3,0\n", encoding="utf-8")
    res = cli_inproc(["extract", "--checkpoint", str(rel_weights), "--csv", str(p), "--out",
                      str(tmp_path / "f.safetensors"), "--device", "cpu", "--no-progress", "--engine", "torch"])
    assert res.returncode == 0, res.stderr
    assert "skipped 2 CSV row(s)" in res.stderr and "../secret.png" in res.stderr
    ff = read_folder_features(tmp_path / "f.safetensors")
    assert ff.paths == [str(sub / "imgs" / "ok.png")]


@pytest.mark.parametrize(("label", "text"), [
    ("no path column", "file,pid\na.jpg,1\n"),
    ("pid not a number", "path,pid,camid\nq.png,x,0\n"),
    ("no rows", "path,pid,camid\n"),
])
def test_extract_csv_bad_lists(tmp_path, label, text, rel_weights, cli_inproc):
    """'reidkit extract --csv' with a broken list: exit 2 with one error line naming the file."""
    p = tmp_path / "list.csv"
    p.write_text(text, encoding="utf-8")
    res = cli_inproc(["extract", "--checkpoint", str(rel_weights), "--csv", str(p), "--out",
                      str(tmp_path / "f.safetensors"), "--device", "cpu", "--no-progress"])
    assert res.returncode == 2, (label, res.stderr)
    assert len(res.error_lines()) == 1 and str(p) in res.error_lines()[0]
    assert not (tmp_path / "f.safetensors").exists()


def test_extract_folder_of_garbage_lists_skips(tmp_path, rel_weights, cli):
    """A folder mixing good, truncated and random files: the good ones are embedded, the rest listed."""
    from reidkit.inference.features import read_folder_features

    d = tmp_path / "imgs"
    d.mkdir()
    (d / "good.png").write_bytes(VALID[1])
    (d / "cut.jpg").write_bytes(VALID[0][:40])
    (d / "noise.png").write_bytes(os.urandom(300))
    (d / "dir.jpg").mkdir()
    (d / "tall.png").write_bytes(_encode("RGB", (1, 2000), "PNG"))
    res = cli(["extract", "--checkpoint", str(rel_weights), "--images", str(d), "--out",
               str(tmp_path / "f.safetensors"), "--device", "cpu", "--workers", "0", "--no-progress"], timeout=180)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    for name in ("cut.jpg", "noise.png"):
        assert name in res.stderr
    ff = read_folder_features(tmp_path / "f.safetensors")
    assert sorted(Path(p).name for p in ff.paths) == ["good.png", "tall.png"]


def test_extract_only_garbage_is_a_one_line_error(tmp_path, rel_weights, cli_inproc):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "noise.png").write_bytes(b"not an image")
    res = cli_inproc(["extract", "--checkpoint", str(rel_weights), "--images", str(d), "--out",
                      str(tmp_path / "f.safetensors"), "--device", "cpu", "--no-progress"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert not (tmp_path / "f.safetensors").exists()


# ------------------------------------------------------------------------------------------- configs
BAD_CONFIGS = {
    "epochs is text": "train:\n  epochs: ten\n",
    "lr is text": "optim:\n  lr: fast\n",
    "p is a list": "sampler:\n  p: [1, 2]\n",
    "size is a number": "data:\n  size: 5\n",
    "size too small": "data:\n  size: [2, 2]\n",
    "section is a list": "train: [1, 2]\n",
    "top level is a list": "- a\n- b\n",
    "top level is text": "hello\n",
    "unknown key": "train:\n  epocs: 3\n",
    "unknown section": "trian:\n  epochs: 3\n",
    "invalid yaml": "train:\n  epochs: [1, 2\n",
    "tab indented": "train:\n\tepochs: 3\n",
    "negative lr": "optim:\n  lr: -1\n",
    "bool as int": "sampler:\n  k: true\n",
    "base missing": "_base_: nowhere.yaml\n",
    "base cycle": "_base_: cfg.yaml\n",
    "pipeline unknown": "data:\n  pipeline: fastest\n",
    "model options not a mapping": "model:\n  options: 3\n",
}


@pytest.mark.parametrize("label", sorted(BAD_CONFIGS))
def test_bad_config_is_a_one_line_error(tmp_path, label, cli_inproc):
    from reidkit.engine.config import load_config

    p = tmp_path / "cfg.yaml"
    p.write_text(BAD_CONFIGS[label], encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(p) in _one_line(info.value) or "cfg.yaml" in str(info.value), label
    res = cli_inproc(["train", "--config", str(p), "--print-config"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, (label, res.stderr)


def test_bad_config_cli_subprocess(tmp_path, cli, one_line_error):
    """The real command: a config with a wrong type is exit 2, one stderr line, no traceback."""
    p = tmp_path / "cfg.yaml"
    p.write_text("train:\n  epochs: ten\n", encoding="utf-8")
    one_line_error(cli(["train", "--config", str(p)], timeout=120), "train.epochs")


def _laughs(levels: int = 6, width: int = 9) -> str:
    """A "billion laughs" YAML value: ``width ** levels`` strings once its aliases are expanded."""
    rows = [f"&l0 [{', '.join(['lol'] * width)}]"]
    rows += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(rows) + "]"


@pytest.mark.parametrize("key", ["train.epochs", "schedule.milestones", "model.options.backbone",
                                 "data.options.split_id", "nosuch.section", "_base_"])
def test_yaml_alias_bomb_is_refused_at_once(tmp_path, key, cli_inproc):
    """A document whose aliases expand to half a million values, under any key, in a file or a --set value:
    refused with one short line before it is built (it used to be expanded by the type checks, the error
    message or the dump, for minutes, to a MemoryError)."""
    from reidkit.engine.config import load_config

    section, _, name = key.rpartition(".")
    text = f"{section}:\n  {name}: {_laughs()}\n" if section else f"{name}: {_laughs()}\n"
    p = tmp_path / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    for call in (lambda: load_config(p), lambda: load_config(None, [f"{key}={_laughs()}"])):
        with pytest.raises(ConfigError) as info:
            call()
        msg = _one_line(info.value)
        assert "expands" in msg and len(msg) < 300, msg[:300]
    res = cli_inproc(["train", "--config", str(p), "--print-config"])
    assert res.returncode == 2 and len(res.error_lines()) == 1 and len(res.stderr) < 400, res.stderr[:400]


@pytest.mark.parametrize(("label", "text"), [
    ("alias inside itself", "schedule:\n  milestones: &m [1, *m]\n"),
    ("options inside themselves", "model:\n  options: &o {backbone: resnet18, x: *o}\n"),
    ("deep nesting", "train:\n  epochs: " + "[" * 20_000 + "]" * 20_000 + "\n"),
    ("merge key bomb", "a: &a {x: 1, y: 2}\nb: &b {<<: [*a, *a, *a, *a]}\n" + "".join(
        f"c{i}: &c{i} {{<<: [{', '.join([f'*c{i - 1}' if i else '*b'] * 8)}]}}\n" for i in range(7))),
])
def test_self_referring_or_deep_yaml_is_one_line(tmp_path, label, text, cli_inproc):
    from reidkit.engine.config import load_config

    p = tmp_path / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert len(_one_line(info.value)) < 300, label
    res = cli_inproc(["train", "--config", str(p), "--print-config"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, (label, res.stderr[:400])


@FUZZ
@given(data=st.one_of(st.binary(max_size=300),
                      st.sampled_from([b"train:\n  epochs: 3\n", b"model:\n  name: baseline\n"]).flatmap(
                          lambda good: st.tuples(st.integers(0, len(good)), st.binary(min_size=1, max_size=8))
                          .map(lambda t: good[:t[0]] + t[1] + good[t[0]:]))))
def test_config_file_in_any_bytes(data):
    """Any bytes as a config file (invalid UTF-8, NUL, control characters, half a mapping): a config or a
    one-line ConfigError naming the file."""
    from reidkit.engine.config import RunConfig, load_config

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cfg.yaml"
        p.write_bytes(data)
        try:
            cfg = load_config(p)
        except ConfigError as exc:
            assert str(p) in _one_line(exc)
        else:
            assert isinstance(cfg, RunConfig)


KEYS = ["train.epochs", "train.seed", "train.device", "train.amp", "train.max_seconds", "optim.lr", "optim.betas",
        "optim.grad_clip", "optim.name", "sampler.p", "sampler.k", "sampler.num_batches", "data.size",
        "data.workers", "data.pipeline", "eval.metric", "eval.flip", "schedule.milestones", "schedule.kind",
        "augment.pipeline", "model.name", "nosuch.key", "train", "train.epochs.x"]
yaml_scalars = st.one_of(
    st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12), st.sampled_from(["[1, 2]", "[]", "{a: 1}", "null", "true", "'3'", "[1, [2]]", "~",
                                           "[8, 8]", "[64, 32]", "{", "]", ".inf", "-.inf", ".nan", "1e400"]),
)


@settings(max_examples=50, deadline=None)
@given(key=st.sampled_from(KEYS), value=yaml_scalars)
def test_fuzzed_overrides_give_config_or_config_error(key, value):
    """Any ``--set KEY=VALUE``: a valid RunConfig or a one-line ConfigError, nothing else."""
    from reidkit.engine.config import RunConfig, load_config

    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        _one_line(exc)
    else:
        assert isinstance(cfg, RunConfig)
        if key == "optim.lr":
            assert cfg.optim.lr > 0 and np.isfinite(cfg.optim.lr)
        if key in ("train.epochs", "sampler.p", "sampler.k"):
            v = {"train.epochs": cfg.train.epochs, "sampler.p": cfg.sampler.p, "sampler.k": cfg.sampler.k}[key]
            assert isinstance(v, int) and not isinstance(v, bool) and v >= 1


EDGE_CONFIGS = {  # the extremes of what the config accepts (reidkit.utils.limits), grouped into a few runs
    "smallest input and batch": ["data.size=[8, 8]", "sampler.p=1", "sampler.k=2", "optim.momentum=0"],
    "largest rates, smallest factors": ["optim.lr=10", "optim.weight_decay=10", "optim.momentum=1",
                                        "schedule.kind=step", "schedule.milestones=[0]", "schedule.gamma=1e-300",
                                        "optim.grad_clip=1e-300"],
    "adam at the edges": ["optim.name=adam", "optim.lr=1e-300", "optim.betas=[0, 0.999999]",
                          "optim.weight_decay=0", "schedule.kind=cosine", "schedule.warmup_epochs=1000000",
                          "schedule.min_factor=1"],
    "augmentation extremes, per-image": ["data.pipeline=per_image", "data.workers=2", "augment.pipeline=mancs",
                                         "augment.erase_p=1", "augment.erase_area=[1e-9, 0.999999]",
                                         "augment.erase_ratio=[1e-9, 1e9]", "augment.crop_scale=[1e-9, 1]",
                                         "augment.crop_ratio=[1e-9, 1e9]", "augment.flip_p=1",
                                         "augment.erase_value=random"],
    "evaluation and loop extremes": ["eval.max_rank=100000", "eval.rerank=true", "eval.flip=true",
                                     "eval.metric=cosine", "data.eval_batch_size=1", "train.seed=4294967295",
                                     "train.eval_every=0", "train.save_every_steps=1", "train.max_seconds=1e-9",
                                     "train.log_every=1000000", "sampler.num_batches=null"],
    "CUDA settings on a CPU": ["train.amp=fp16", "train.channels_last=true", "data.workers=128"],
}


@pytest.mark.parametrize("label", sorted(EDGE_CONFIGS))
def test_every_value_the_config_accepts_runs(label, synth_root, tmp_path, make_config, cli_inproc):
    """A tiny training run at the edges of every range the config accepts ends normally (exit 0), or, for a
    numerically hopeless setting, stops cleanly on a non-finite loss (exit 1, one line). Nothing else: these
    used to end in tracebacks (a batch of one image, SGD without momentum, a rate that overflows float32,
    a CMC curve of a billion ranks that took all the memory)."""
    from reidkit.engine.config import load_config

    cfg = make_config(tmp_path / "tiny.yaml", synth_root, tmp_path / "run", sampler={"p": 2, "k": 2,
                                                                                      "num_batches": 2})
    sets = EDGE_CONFIGS[label]
    load_config(cfg, sets)  # accepted
    res = cli_inproc(["train", "--config", str(cfg), "--quiet", *[x for s in sets for x in ("--set", s)]])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith(("reidkit: warning: ", "reidkit: error: ")) for ln in lines), res.stderr
    if res.returncode == 1:
        assert len(res.error_lines()) == 1 and "non-finite loss" in res.error_lines()[0], res.stderr
    else:
        assert res.returncode == 0 and not res.error_lines(), res.stderr
        assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("value", ["sampler.k=1", "optim.lr=11", "optim.lr=1e300", "schedule.gamma=1e300",
                                   "optim.weight_decay=1e300", "optim.momentum=2", "eval.max_rank=1000000000",
                                   "train.seed=-1", "train.seed=4294967296", "data.workers=100000",
                                   "data.size=[1025, 64]", "sampler.p=4097", "train.max_seconds=-1",
                                   "optim.betas=[1, 0.999]", "model.name=resnet9000",
                                   "model.options={backbone: resnet18, bnneck: [1]}",
                                   "model.options={backbone: resnet18, depth: 3}"])
def test_values_that_cannot_run_are_refused_up_front(value, synth_root, tmp_path, make_config, cli_inproc):
    """Just past each edge: one ConfigError line naming the setting, before any data is read (sampler.p=1,
    k=1 used to reach BatchNorm with one image; eval.max_rank=1e9 allocated a billion-entry CMC)."""
    cfg = make_config(tmp_path / "tiny.yaml", synth_root, tmp_path / "run")
    res = cli_inproc(["train", "--config", str(cfg), "--quiet", "--set", value,
                      *(["--set", "sampler.p=1"] if value == "sampler.k=1" else [])])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert value.split("=")[0].split(".")[-1] in res.error_lines()[0] or "model" in res.error_lines()[0], res.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", ["baseline", "stadb"])
def test_largest_accepted_input_trains_and_embeds(name):
    """One training step and an embedding at the largest input size the config and model files accept."""
    import torch

    from reidkit.engine.step import train_step
    from reidkit.models import build
    from reidkit.utils.limits import MAX_INPUT_SIDE

    torch.manual_seed(0)
    model = build(name, 2, backbone="resnet18", pretrained=None)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, MAX_INPUT_SIDE, MAX_INPUT_SIDE)
    model.train()
    result = train_step(model, model, opt, x, torch.tensor([0, 1]), 0)
    assert all(np.isfinite(v) for v in result.losses.values())
    model.eval()
    with torch.no_grad():
        f = model(x[:1])
    assert f.shape == (1, model.embedding_dim) and torch.isfinite(f).all()


WEIRD_NAMES = [b"\xff\xfe not utf-8", b"new\nline", b"esc\x1b[31mred", b"-dash", b" spaces ", "é".encode(),
               b"tab\there", b"back\\slash", b"quote'\"s"]


def test_file_names_in_any_bytes(tmp_path, rel_weights, child_env):
    """File names in any bytes (not UTF-8, newlines, terminal escapes, a leading dash) through real
    processes: images under such names are embedded, an output under such a name is written, and a mistake
    naming such a file is one line, its control characters escaped."""
    import subprocess
    import sys

    base = os.fsencode(tmp_path)
    imgs = base + b"/imgs \xff"
    os.mkdir(imgs)
    for i, name in enumerate(WEIRD_NAMES):
        with open(imgs + b"/" + name + b".png", "wb") as fh:
            fh.write(VALID[1 + i % 2])
    out = base + b"/out " + b"".join(WEIRD_NAMES[:3]) + b".safetensors"

    def run(*args: bytes | str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reidkit", *args], capture_output=True, env=child_env(),
                              timeout=240, check=False)

    res = run("extract", "--checkpoint", str(rel_weights), "--images", imgs, "--out", out, "--device", "cpu",
              "--no-progress", "--engine", "torch", "--workers", "0")
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert os.path.isfile(out) and res.stdout.startswith(b"wrote ") and b"9 features" in res.stdout
    from reidkit.inference.features import read_folder_features

    assert sorted(os.fsencode(os.path.basename(p)) for p in read_folder_features(os.fsdecode(out)).paths) == \
        sorted(n + b".png" for n in WEIRD_NAMES)
    for args in (["eval", "--features", base + b"/missing new\nline \xff.safetensors"],
                 ["train", "--config", base + b"/cfg \x1b[2J\xfe.yaml"],
                 ["datasets", "folder", "--root", base + b"/no\nsuch \xff"]):
        res = run(*args)
        err = res.stderr.decode("utf-8", errors="replace")
        assert res.returncode == 2 and "Traceback" not in err, err
        assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith(b"reidkit: error: "), res.stderr
        assert b"\x1b" not in res.stderr and (b"\\n" in res.stderr or b"\\x1b" in res.stderr), res.stderr


def test_reidkit_errors_are_user_errors():
    """The error types the tests above expect are all ReidkitError (the CLI's one-line exit-2 class)."""
    for cls in (ImageReadError, DatasetError, ConfigError):
        assert issubclass(cls, ReidkitError)
