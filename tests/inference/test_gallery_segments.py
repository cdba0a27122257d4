"""A gallery on disk is stored in segment files (issue 17): a write rewrites only what changed.

With ``SEGMENT_ROWS`` made small, every test checks the index against a plain in-memory reference (ids in
order and their vectors), and what a write put on disk: the files it kept are byte-for-byte the old ones
(same inode), and the rows it rewrote are bounded by what it was asked to change plus one merge.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from reidkit.inference import gallery as gallery_mod
from reidkit.inference.gallery import (
    Gallery,
    _planned_segments,
    _Segment,
    add_to_index,
    remove_from_index,
    update_index,
)

ROWS = 8  # SEGMENT_ROWS in these tests
DIM = 4


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_mod, "SEGMENT_ROWS", ROWS)


def vec(i: float) -> torch.Tensor:
    """Row ``i``'s vector: every coordinate ``i`` (distinct rows stay apart)."""
    return torch.full((1, DIM), float(i))


def segments(idx: Path) -> list[tuple[str, int]]:
    m = json.loads((idx / "manifest.json").read_text())
    return [(s["file"], s["rows"]) for s in m["segments"]]


def inodes(idx: Path) -> dict[str, int]:
    return {name: os.stat(idx / name).st_ino for name, _ in segments(idx)}


def check(idx: Path, ref: dict[str, float]) -> Gallery:
    """The index holds exactly ``ref`` (id -> value) in insertion order, and only the files it names."""
    g = Gallery.load(idx)
    assert g.ids == list(ref)
    assert torch.equal(g.embeddings, torch.tensor([[v] * DIM for v in ref.values()]).reshape(-1, DIM))
    segs = segments(idx)
    assert sum(r for _, r in segs) == len(ref) and all(1 <= r <= ROWS for _, r in segs)
    on_disk = sorted(p.name for p in idx.glob("embeddings-*"))
    assert on_disk == sorted(name for name, _ in segs)
    if ref:
        assert [h[0].id for h in g.search(g.embeddings, k=1)] == g.ids  # the FAISS index agrees
    return g


def test_a_save_splits_and_an_add_writes_only_new_rows(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    g = Gallery(embedding_dim=DIM)
    g.add(torch.cat([vec(i) for i in range(20)]), ids=[f"e{i}" for i in range(20)])
    g.save(idx)
    assert [r for _, r in segments(idx)] == [8, 8, 4]
    ref = {f"e{i}": float(i) for i in range(20)}
    before = inodes(idx)
    add_to_index(idx, vec(100), ["n0"], [{}])
    ref["n0"] = 100.0
    check(idx, ref)
    assert [r for _, r in segments(idx)] == [8, 8, 4, 1]  # 4 > 2 × 1: the new row has a file of its own
    assert {n: i for n, i in inodes(idx).items() if n in before} == before  # the old files untouched
    add_to_index(idx, vec(101), ["n1"], [{}])
    ref["n1"] = 101.0
    check(idx, ref)
    # 1 + 1 merge, then 4 and 2 merge: [8, 8, 6]; the two full segments are still the first files
    assert [r for _, r in segments(idx)] == [8, 8, 6]
    assert [n for n, _ in segments(idx)][:2] == list(before)[:2]


def test_a_remove_rewrites_only_the_segment_that_held_the_row(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    g = Gallery(embedding_dim=DIM)
    g.add(torch.cat([vec(i) for i in range(24)]), ids=[f"e{i}" for i in range(24)])
    g.save(idx)
    old = segments(idx)
    assert [r for _, r in old] == [8, 8, 8]
    remove_from_index(idx, ["e10"])
    new = segments(idx)
    assert [r for _, r in new] == [8, 7, 8] and new[0] == old[0] and new[2] == old[2] and new[1][0] != old[1][0]
    check(idx, {f"e{i}": float(i) for i in range(24) if i != 10})


def test_a_gallery_saved_elsewhere_writes_all_its_rows(tmp_path: Path) -> None:
    g = Gallery(embedding_dim=DIM)
    g.add(torch.cat([vec(i) for i in range(10)]), ids=list(range(10)))
    g.save(tmp_path / "a")
    g.add(vec(10), ids=[10])
    g.save(tmp_path / "b")  # nothing of "a" is in "b": every segment is written there
    ref = {i: float(i) for i in range(11)}
    check(tmp_path / "b", ref)
    check(tmp_path / "a", {i: float(i) for i in range(10)})
    g.save(tmp_path / "a")
    check(tmp_path / "a", ref)


def test_planned_segments_merge_rule() -> None:
    """Hand-worked plans: pieces of at most SEGMENT_ROWS; a tail more than half of the segment before merges."""
    def plan(*segs: _Segment) -> list[tuple[int, bool]]:
        return [(s.rows, s.file is not None) for s in _planned_segments(list(segs), lambda s: s.file == "on")]

    assert plan(_Segment(20)) == [(8, False), (8, False), (4, False)]
    assert plan(_Segment(8, "on"), _Segment(3, "on"), _Segment(2)) == [(8, True), (5, False)]
    assert plan(_Segment(8, "on"), _Segment(6, "on"), _Segment(1)) == [(8, True), (6, True), (1, False)]
    assert plan(_Segment(8, "gone"), _Segment(1)) == [(8, False), (1, False)]  # a missing file is rewritten
    assert plan(_Segment(4, "on"), _Segment(4, "on")) == [(8, False)]  # two halves make a full one
    assert plan() == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_writes_match_a_reference_and_rewrite_little(seed: int, tmp_path: Path) -> None:
    """Seeded random adds, removes and updates through the index's writers: after each, the index is the
    reference; a write rewrites at most the rows it changed plus SEGMENT_ROWS (a merge or a touched segment
    per removed row); the files stay O(log n) beyond the full segments."""
    rng = random.Random(seed)
    idx = tmp_path / "idx"
    ref: dict[str, float] = {}
    counter = 0
    g = Gallery(embedding_dim=DIM)
    g.save(idx)
    check(idx, ref)
    for _ in range(60):
        before = dict(segments(idx))
        op = rng.choice(["add", "add", "remove", "update"]) if ref else "add"
        if op == "add":
            n = rng.choice([1, 1, 2, 3, 9])
            ids = [f"r{counter + j}" for j in range(n)]
            add_to_index(idx, torch.cat([vec(counter + j) for j in range(n)]), ids, [{}] * n)
            ref.update({x: float(counter + j) for j, x in enumerate(ids)})
            counter += n
            budget = n + ROWS
        elif op == "remove":
            gone = rng.sample(list(ref), min(len(ref), rng.choice([1, 2])))
            remove_from_index(idx, gone)
            for x in gone:
                del ref[x]
            budget = len(gone) * ROWS + ROWS
        else:
            x = rng.choice(list(ref))
            update_index(idx, vec(1000 + counter), [x], [{}])
            del ref[x]
            ref[x] = float(1000 + counter)
            counter += 1
            budget = 2 * ROWS + 1
        check(idx, ref)
        rewritten = sum(r for name, r in segments(idx) if name not in before)
        assert rewritten <= budget, (op, before, segments(idx))
        n_rows = len(ref)
        assert len(segments(idx)) <= n_rows // ROWS + 2 * max(n_rows, 1).bit_length() + 2


def test_keys_must_match_their_own_segment(tmp_path: Path) -> None:
    """Two segments whose keys are swapped in length (3 keys for 5 rows, 5 for 3: the totals agree) would
    label rows with other rows' keys: refused in one line."""
    from reidkit.errors import ReidkitError
    from reidkit.inference.features import save_tensors

    idx = tmp_path / "idx"
    idx.mkdir()
    save_tensors(idx / "embeddings-aaaaaaaaaaaa.safetensors", {"embeddings": torch.zeros(5, DIM),
                                                              "keys": torch.arange(3)})
    save_tensors(idx / "embeddings-bbbbbbbbbbbb.safetensors", {"embeddings": torch.ones(3, DIM),
                                                              "keys": torch.arange(3, 8)})
    (idx / "manifest.json").write_text(json.dumps({
        "format": "reidkit-index", "format_version": 3, "metric": "euclidean", "embedding_dim": DIM, "count": 8,
        "generation": "0123456789ab", "segments": [{"file": "embeddings-aaaaaaaaaaaa.safetensors", "rows": 5},
                                                   {"file": "embeddings-bbbbbbbbbbbb.safetensors", "rows": 3}],
        "index": {"kind": "flat", "file": None}, "model": None, "ids": list(range(8)), "metadata": [{}] * 8}))
    with pytest.raises(ReidkitError, match=r"shape \(3,\) in a segment of 5 rows") as err:
        Gallery.load(idx)
    assert "\n" not in str(err.value)
