"""``reidkit search --picture`` draws every entry of an index, also those ``index add`` took from other folders
than the ``--gallery-root`` named (README's sequence: build from gallery/, add more_gallery/, search with
``--gallery-root gallery/``): the index keeps a thumbnail of each entry inside its own folder."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reidkit.cli import main


def run(argv: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()
    return err.getvalue()


@pytest.fixture()
def two_folders(synth_root: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    images = sorted((synth_root / "bounding_box_test").glob("0*.jpg"))
    assert len(images) >= 8
    out = []
    for name, part in (("gallery", images[:4]), ("more_gallery", images[4:8]),
                       ("query", sorted((synth_root / "query").glob("*.jpg"))[:2])):
        (tmp_path / name).mkdir()
        for p in part:
            shutil.copy(p, tmp_path / name / p.name)
        out.append(tmp_path / name)
    return out[0], out[1], out[2]


def test_every_tile_of_the_picture_is_drawn(stadb_file: Path, two_folders: tuple[Path, Path, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import reidkit.viz.ranklist as ranklist
    from reidkit.utils.images import read_image

    gallery, more, query = two_folders
    idx = tmp_path / "idx"
    common = ["--device", "cpu", "--no-progress"]
    run(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(idx), *common])
    run(["index", "add", str(idx), "--images", str(more), *common])
    drawn: list[list[Any]] = []
    real = ranklist.render_rank_list
    monkeypatch.setattr(ranklist, "render_rank_list", lambda q, tiles, *a, **k: (drawn.append(list(tiles)),
                                                                                 real(q, tiles, *a, **k))[1])
    err = run(["search", str(idx), "--query", str(query), "--k", "8", "--picture", str(tmp_path / "ranks.png"),
               "--gallery-root", str(gallery), "--out", str(tmp_path / "hits.json"), *common])
    assert "drawn blank" not in err
    assert len(drawn) == 2 and all(len(row) == 8 for row in drawn)
    for row in drawn:
        for tile in row:
            assert isinstance(tile, str), "a blank placeholder was drawn"
            pixels = np.asarray(read_image(tile), dtype=np.float32)
            assert pixels.std() > 5.0, f"{tile}: a uniform (blank) tile"
    # the entries added from more_gallery/ (outside every --gallery-root) come from the index's thumbnails
    assert any(str(idx / "thumbs") in t for row in drawn for t in row)


def test_removed_entries_leave_no_thumbnail(stadb_file: Path, two_folders: tuple[Path, Path, Path],
                                            tmp_path: Path) -> None:
    from reidkit.inference.thumbnails import thumbnail_path

    gallery, more, _ = two_folders
    idx = tmp_path / "idx"
    common = ["--device", "cpu", "--no-progress"]
    run(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(idx), *common])
    run(["index", "add", str(idx), "--images", str(more), *common])
    first, added = sorted(gallery.glob("*.jpg")), sorted(more.glob("*.jpg"))
    assert all(thumbnail_path(idx, str(p)).is_file() for p in first + added)
    run(["index", "remove", str(idx), "--paths", str(added[0])])
    assert not thumbnail_path(idx, str(added[0])).exists()
    assert thumbnail_path(idx, str(added[1])).is_file()
    # a build --force over the index keeps no picture of the entries it replaced
    run(["index", "build", "--checkpoint", str(stadb_file), "--images", str(more), "--out", str(idx), "--force",
         *common])
    assert {p.name for p in (idx / "thumbs").iterdir()} == {thumbnail_path(idx, str(p)).name for p in added[:]}
