"""Concurrent writers and readers of one gallery index: nothing is lost, nothing is seen half-done.

- two ``reidkit index add`` on one index at once both land (they used to both say "now 16" and leave 16
  entries instead of 20): writers take the index's lock, and ``add_to_index`` re-reads the index under it
  and merges; so do an ``index add`` and an ``index remove`` at once, and the FAISS index (HNSW here, whose
  file each writer rewrites) holds exactly the entries the manifest lists;
- a reader that loads the index while a writer replaces it never sees a false "damaged index": when the
  embeddings file it was told about is removed under it, it reads the manifest again;
- a writer that waits too long for the lock gets one line naming the process that holds it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch


def _image_sets(synth_root: Path, tmp_path: Path, n_sets: int, per_set: int) -> list[Path]:
    """``n_sets`` folders of ``per_set`` distinct crops each (copies of the synthetic gallery)."""
    files = sorted((synth_root / "bounding_box_test").glob("*.jpg")) + sorted((synth_root / "query").glob("*.jpg"))
    assert len(files) >= n_sets * per_set
    sets = []
    for i in range(n_sets):
        d = tmp_path / f"set{i}"
        d.mkdir()
        for f in files[i * per_set:(i + 1) * per_set]:
            shutil.copy(f, d / f.name)
        sets.append(d)
    return sets


def _whole(idx: Path):  # type: ignore[no-untyped-def]
    """The index, loaded without any warning (its FAISS file is the manifest's generation and whole), checked:
    the FAISS index holds exactly its rows, each row its own nearest entry."""
    from reidkit.inference.gallery import Gallery

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = Gallery.load(idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    assert sorted(p.name for p in idx.glob("embeddings-*")) == sorted(s["file"] for s in manifest["segments"])
    assert sorted(p.name for p in idx.glob("faiss-*")) == [manifest["index"]["file"]]
    if g._vindex is not None:
        assert g._vindex.ntotal - len(g._vindex.dead) == len(g)
    assert [h[0].id for h in g.search(g.embeddings, k=1)] == g.ids
    return g


@pytest.mark.faiss
def test_two_index_adds_at_once_lose_nothing(rel_weights, synth_root, tmp_path, cli, child_env):
    """Two 'reidkit index add' processes started together on one HNSW index, each adding its own images: both
    exit 0 and the index holds every image once (it used to keep only the last writer's), in its FAISS index
    too."""
    base, first, second = _image_sets(synth_root, tmp_path, 3, 4)
    idx = tmp_path / "index"
    res = cli(["index", "build", "--checkpoint", rel_weights, "--images", base, "--out", idx, "--device", "cpu",
               "--no-progress", "--engine", "torch", "--approx", "hnsw"], timeout=300)
    assert res.returncode == 0, res.stderr
    assert (idx / "model.safetensors").is_file()  # the index carries its model: 'add' needs nothing else
    procs = [subprocess.Popen([sys.executable, "-m", "reidkit", "index", "add", str(idx), "--images", str(d),
                               "--device", "cpu", "--no-progress", "--engine", "torch", "--workers", "0"],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in (first, second)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "added 4 images" in out, out
    totals = sorted(int(out.rsplit("now ", 1)[1]) for out, _ in outs)
    assert totals[-1] == 12 and totals[0] in (8, 12)
    g = _whole(idx)
    want = {str(p.resolve()) for d in (base, first, second) for p in d.glob("*.jpg")}
    assert len(g) == 12 and set(g.ids) == want and len(set(g.ids)) == 12 and g.index_spec.kind == "hnsw"


@pytest.mark.faiss
def test_an_add_and_a_remove_at_once_both_land(rel_weights, synth_root, tmp_path, cli, child_env):
    """'reidkit index add' and 'reidkit index remove' started together on one HNSW index: the added images are
    in, the removed ones out, whichever took the lock first."""
    base, extra = _image_sets(synth_root, tmp_path, 2, 4)
    idx = tmp_path / "index"
    res = cli(["index", "build", "--checkpoint", rel_weights, "--images", base, "--out", idx, "--device", "cpu",
               "--no-progress", "--engine", "torch", "--approx", "hnsw"], timeout=300)
    assert res.returncode == 0, res.stderr
    gone = sorted(base.glob("*.jpg"))[:2]
    procs = [subprocess.Popen([sys.executable, "-m", "reidkit", "index", *argv], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in (["add", str(idx), "--images", str(extra), "--device", "cpu", "--no-progress", "--engine",
                           "torch", "--workers", "0"],
                          ["remove", str(idx), "--paths", *map(str, gone)])]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert "added 4 images" in outs[0][0] and "removed 2 entries" in outs[1][0]
    g = _whole(idx)
    want = {str(p.resolve()) for p in [*base.glob("*.jpg"), *extra.glob("*.jpg")]} - {str(p.resolve()) for p in gone}
    assert set(g.ids) == want and len(g) == 6

def test_interleaved_writers_merge(tmp_path):
    """The read-embed-write of two writers interleaved by hand (both read the index, then both write):
    add_to_index re-reads under the lock and keeps both; a row another writer already added is not doubled;
    a remove and an update of writers that read the index before those adds keep the adds."""
    from reidkit.inference.gallery import Gallery, add_to_index, remove_from_index, update_index

    idx = tmp_path / "index"
    g = Gallery(embedding_dim=4)
    g.add(torch.zeros(2, 4), ids=["a", "b"], metadata=[{}, {}])
    g.save(idx)
    seen_by_one, seen_by_two = Gallery.load(idx), Gallery.load(idx)
    assert len(seen_by_one) == len(seen_by_two) == 2
    assert add_to_index(idx, torch.ones(2, 4), ["c", "d"], [{"w": 1}, {"w": 1}]) == (2, 4)
    assert add_to_index(idx, torch.full((2, 4), 2.0), ["d", "e"], [{"w": 2}, {"w": 2}]) == (1, 5)
    final = Gallery.load(idx)
    assert final.ids == ["a", "b", "c", "d", "e"]
    assert final.metadata[3] == {"w": 1} and final.metadata[4] == {"w": 2}
    assert torch.equal(final.embeddings[4], torch.full((4,), 2.0))
    assert remove_from_index(idx, ["a", "zz"]) == (["a"], 4)
    assert update_index(idx, torch.full((2, 4), 3.0), ["c", "f"], [{"w": 3}, {"w": 3}]) == (1, 1, 5)
    final = Gallery.load(idx)
    assert final.ids == ["b", "d", "e", "c", "f"] and final.metadata[3] == {"w": 3}
    assert [h[0].id for h in final.search(torch.full((1, 4), 2.9), k=1)] in (["c"], ["f"])


def test_a_reader_racing_a_writer_never_sees_a_damaged_index(tmp_path, monkeypatch):
    """The race a reader loses once in ~150k loads, made to happen every time: between the reader's look at
    the manifest and its read of the embeddings file, a writer replaces the index (new embeddings file, new
    manifest, old file removed). The reader reads the new index instead of reporting damage."""
    import reidkit.inference.gallery as gallery_mod
    from reidkit.inference.gallery import Gallery

    idx = tmp_path / "index"
    old = Gallery(embedding_dim=3)
    old.add(torch.zeros(1, 3), ids=["old"])
    old.save(idx)
    new = Gallery(embedding_dim=3)
    new.add(torch.ones(2, 3), ids=["new1", "new2"])
    real = gallery_mod.load_tensors
    raced = []

    def writer_gets_in_first(path):
        if not raced:
            raced.append(path)
            new.save(idx)  # replaces the manifest and removes the file this reader is about to open
        return real(path)

    monkeypatch.setattr(gallery_mod, "load_tensors", writer_gets_in_first)
    g = Gallery.load(idx)
    assert raced and not Path(raced[0]).exists()
    assert g.ids == ["new1", "new2"] and torch.equal(g.embeddings, torch.ones(2, 3))


HOLD_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the index lock is a POSIX flock")
def test_a_writer_held_off_too_long_names_the_other(rel_weights, synth_root, tmp_path, cli_inproc, monkeypatch):
    """Another process holds the index's lock: 'reidkit index add' waits (here 0.3 s instead of two minutes),
    then stops with one line naming that process; the index is unchanged."""
    import reidkit.inference.gallery as gallery_mod
    from reidkit.inference.gallery import LOCK, Gallery

    (images,) = _image_sets(synth_root, tmp_path, 1, 3)
    idx = tmp_path / "index"
    g = Gallery(embedding_dim=4)
    g.add(torch.zeros(1, 4), ids=["x"])
    g.save(idx)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(idx / LOCK)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(gallery_mod, "LOCK_WAIT_SECONDS", 0.3)
        before = (idx / "manifest.json").read_bytes()
        res = cli_inproc(["index", "add", str(idx), "--images", str(images), "--checkpoint", str(rel_weights),
                          "--device", "cpu", "--no-progress", "--engine", "torch"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert f"process {holder.pid}" in res.error_lines()[0], res.error_lines()
    assert (idx / "manifest.json").read_bytes() == before
