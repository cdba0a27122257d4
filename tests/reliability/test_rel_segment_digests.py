"""Gallery segments carry a SHA-256 digest in the manifest (index format 4), checked when they are read: one
flipped bit in an embeddings segment is a one-line error naming the segment, not a different ranking with exit
0. Digests follow the segments through adds and removals; a manifest without digests (format 3) still loads."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from reidkit.errors import ReidkitError
from reidkit.inference.gallery import Gallery, add_to_index, remove_from_index

DIM = 16


def _manifest(idx: Path) -> dict:
    return json.loads((idx / "manifest.json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_bit(path: Path) -> None:
    """Flip one bit in the middle of the file: inside the float data, past the safetensors header."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture()
def index(tmp_path: Path) -> Path:
    """An exact index of two segments (40 rows, then 10 added), no model."""
    torch.manual_seed(0)
    g = Gallery(DIM)
    g.add(torch.randn(40, DIM), ids=[f"a{i}" for i in range(40)])
    idx = g.save(tmp_path / "idx")
    add_to_index(idx, torch.randn(10, DIM), [f"b{i}" for i in range(10)], [{}] * 10)
    return idx


def test_untouched_index_verifies_and_records_every_digest(index):
    m = _manifest(index)
    assert m["format_version"] == 4 and len(m["segments"]) == 2
    for seg in m["segments"]:
        assert seg["sha256"] == _sha256(index / seg["file"])
    assert len(Gallery.load(index)) == 50


def test_one_flipped_bit_names_the_segment(index):
    seg = _manifest(index)["segments"][0]["file"]
    _flip_bit(index / seg)
    with pytest.raises(ReidkitError) as err:
        Gallery.load(index)
    text = str(err.value)
    assert seg in text and "sha256" in text and "\n" not in text
    for write in (lambda: add_to_index(index, torch.zeros(1, DIM), ["z"], [{}]),
                  lambda: remove_from_index(index, ["a1"])):
        with pytest.raises(ReidkitError, match=seg):  # a writer reads the index first: it refuses too
            write()
    assert (index / seg).exists()  # nothing removed or replaced


def test_search_with_a_flipped_bit_is_one_line_naming_the_segment(rel_index, rel_weights, synth_root, tmp_path,
                                                                   cli_inproc, one_line_error):
    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    q = str(sorted((synth_root / "query").glob("*.jpg"))[0])
    argv = ["search", str(idx), "--query", q, "--checkpoint", str(rel_weights), "--device", "cpu"]
    assert cli_inproc(argv).returncode == 0
    seg = _manifest(idx)["segments"][0]["file"]
    _flip_bit(idx / seg)
    line = one_line_error(cli_inproc(argv), seg, "damaged index segment")
    assert "sha256" in line


def test_digests_follow_adds_and_removals(index):
    before = {s["file"]: s["sha256"] for s in _manifest(index)["segments"]}
    add_to_index(index, torch.randn(3, DIM), ["c0", "c1", "c2"], [{}] * 3)
    after_add = {s["file"]: s["sha256"] for s in _manifest(index)["segments"]}
    kept = set(before) & set(after_add)
    assert kept and all(after_add[f] == before[f] for f in kept)  # a segment kept keeps its digest
    removed, total = remove_from_index(index, ["a0"])  # rewrites the first segment
    assert removed == ["a0"] and total == 52
    m = _manifest(index)
    assert m["segments"][0]["file"] not in before
    for seg in m["segments"]:  # every segment's digest is that of its file as it is now
        assert seg["sha256"] == _sha256(index / seg["file"])
    assert len(Gallery.load(index)) == 52


def test_a_manifest_without_digests_loads_and_its_next_write_adds_them(index):
    m = _manifest(index)
    m["format_version"] = 3
    for seg in m["segments"]:
        del seg["sha256"]
    (index / "manifest.json").write_text(json.dumps(m))
    assert len(Gallery.load(index)) == 50  # format 3: read unchecked
    add_to_index(index, torch.randn(1, DIM), ["d"], [{}])
    m = _manifest(index)
    assert m["format_version"] == 4
    for seg in m["segments"]:
        assert seg["sha256"] == _sha256(index / seg["file"])


@pytest.mark.parametrize("digest", ["", "XYZ", 7, None, "0" * 63])
def test_a_malformed_digest_is_a_damaged_manifest(index, digest):
    m = _manifest(index)
    m["segments"][0]["sha256"] = digest
    (index / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReidkitError, match="sha256"):
        Gallery.load(index)
