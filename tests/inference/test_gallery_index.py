"""The gallery's FAISS index (issue 17): approximate search against exact on identity-structured data, remove and
update, incremental add, persistence, damaged and crafted FAISS files, and life without FAISS.

Data: seeded identity centres plus noise (the structure of ``benchmarks/bench_eval.py``'s generator, small),
so each entry's nearest neighbours are mostly its identity's other entries. Exact references are brute force
in float64. Recall bounds are for the default parameters of each index (``IndexSpec``) and hold with margin
for these seeds (measured: see each test).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.errors import ReidkitError
from reidkit.eval import knn as knn_mod
from reidkit.inference.faiss_file import FaissLayoutError, check_layout
from reidkit.inference.faiss_index import HNSW_REBUILD_FRACTION, IndexSpec
from reidkit.inference.gallery import (
    Gallery,
    add_to_index,
    rebuild_index,
    remove_from_index,
    update_index,
)

APPROX = ["hnsw", "ivfpq"]


def identities(n: int, dim: int, seed: int, per_id: int = 10, noise: float = 0.35) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` rows of ``n // per_id`` identities (unit-variance centres plus ``noise``), and their pids."""
    gen = torch.Generator().manual_seed(seed)
    n_ids = max(1, n // per_id)
    centres = torch.randn(n_ids, dim, generator=gen)
    pids = torch.randint(0, n_ids, (n,), generator=gen)
    return centres[pids] + noise * torch.randn(n, dim, generator=gen), pids.numpy()


def exact(q: torch.Tensor, g: torch.Tensor, k: int, metric: str) -> np.ndarray:
    if metric == "cosine":
        qn, gn = torch.nn.functional.normalize(q.double(), dim=1), torch.nn.functional.normalize(g.double(), dim=1)
        d = 1 - qn @ gn.T
    else:
        d = torch.cdist(q.double(), g.double())
    return torch.argsort(d, dim=1, stable=True)[:, :k].numpy()


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall@1: the exact nearest is first, recall@10: share of the exact top 10 found in the top 10)."""
    r1 = float(np.mean(found[:, 0] == truth[:, 0]))
    r10 = float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)]))
    return r1, r10


def gallery_of(kind: str | IndexSpec, n: int, dim: int, seed: int = 0, metric: str = "euclidean"
               ) -> tuple[Gallery, torch.Tensor]:
    g_emb, pids = identities(n, dim, seed)
    gal = Gallery(metric=metric, index=kind)
    gal.add(g_emb, ids=[f"e{i}" for i in range(n)], metadata=[{"pid": int(p)} for p in pids])
    return gal, g_emb


# default parameters, (gallery size, width): IVF-PQ needs 39 × 256 = 9,984 vectors to train 8-bit codebooks
SIZES = {"hnsw": (4000, 64), "ivfpq": (10000, 32)}
# measured on these seeds (recall@1 / recall@10): hnsw 1.00 / 1.00 (both metrics); ivfpq 1.00 / 0.98 euclidean,
# 0.995 / 0.97 cosine (its candidates alone, without the exact re-scoring of refine: 0.92 / 0.97 and 0.86 / 0.97)
BOUNDS = {"hnsw": (0.95, 0.95), "ivfpq": (0.95, 0.9)}
# everything else uses small indexes that train in a second: 4-bit IVF-PQ codes need 39 × 16 = 624 vectors
SMALL = {"flat": ("flat", 2000), "hnsw": ("hnsw", 2000), "ivfpq": (IndexSpec.make("ivfpq", nbits=4), 2000)}


@pytest.mark.faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("kind", APPROX)
def test_approximate_recall_against_exact(kind: str, metric: str) -> None:
    """Default parameters, 200 queries from the same identities: recall@1 and recall@10 against brute force
    stay above ``BOUNDS``; distances are the exact ones (the index only picks candidates)."""
    n, dim = SIZES[kind]
    gal, g_emb = gallery_of(kind, n, dim, metric=metric)
    q, _ = identities(200, dim, seed=0)  # same centres (same seed), fresh noise for 200 rows
    q = q + 0.2 * torch.randn(q.shape, generator=torch.Generator().manual_seed(9))
    truth = exact(q, g_emb, 10, metric)
    dist, idx = gal.search_arrays(q, k=10)
    r1, r10 = recall(idx.numpy(), truth)
    assert r1 >= BOUNDS[kind][0] and r10 >= BOUNDS[kind][1], (kind, metric, r1, r10)
    if metric == "euclidean":
        want = torch.cdist(q.double(), g_emb.double()).gather(1, idx).float()
    else:
        qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g_emb, dim=1)
        want = (1 - qn @ gn.T).gather(1, idx)
    torch.testing.assert_close(dist, want, atol=2e-4, rtol=1e-4)
    assert torch.all(dist[:, 1:] >= dist[:, :-1])  # sorted
    # a wider search finds at least as much (IVF-PQ: re-scoring fewer candidates finds at most as much)
    wide = {"ivfpq": {"nprobe": 64}, "hnsw": {"ef_search": 256}}[kind]
    r1w, r10w = recall(gal.search_arrays(q, k=10, **wide)[1].numpy(), truth)
    assert r10w >= r10 - 1e-9 and r1w >= r1 - 0.01
    if kind == "ivfpq":
        assert recall(gal.search_arrays(q, k=10, refine=1)[1].numpy(), truth)[1] <= r10 + 1e-9


@pytest.mark.faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_index_equals_brute_force_and_add_after_build_equals_build_of_union(metric: str, tmp_path: Path) -> None:
    """The exact index ranks as brute force; built from A then B added (in memory, and through add_to_index on
    disk) it returns exactly the results of one built from A ∪ B: same rows, same distances."""
    emb, pids = identities(600, 32, seed=1)
    q, _ = identities(40, 32, seed=1)
    ids = [f"e{i}" for i in range(600)]
    meta = [{"pid": int(p)} for p in pids]
    union = Gallery(metric=metric)
    union.add(emb, ids=ids, metadata=meta)
    d_u, i_u = union.search_arrays(q, k=10)
    assert (i_u.numpy() == exact(q, emb, 10, metric)).all()
    grown = Gallery(metric=metric)
    grown.add(emb[:400], ids=ids[:400], metadata=meta[:400])
    grown.search_arrays(q, k=1)  # the FAISS index is built now: the next add goes into it incrementally
    grown.add(emb[400:], ids=ids[400:], metadata=meta[400:])
    d_g, i_g = grown.search_arrays(q, k=10)
    assert torch.equal(i_g, i_u) and torch.equal(d_g, d_u)
    first = Gallery(metric=metric)
    first.add(emb[:400], ids=ids[:400], metadata=meta[:400])
    first.save(tmp_path / "idx")
    assert add_to_index(tmp_path / "idx", emb[400:], ids[400:], meta[400:]) == (200, 600)
    back = Gallery.load(tmp_path / "idx")
    d_b, i_b = back.search_arrays(q, k=10)
    assert torch.equal(i_b, i_u) and torch.equal(d_b, d_u) and back.ids == ids


@pytest.mark.faiss
@pytest.mark.parametrize("kind", ["flat", *APPROX])
def test_remove_and_update_then_search(kind: str, tmp_path: Path) -> None:
    """After removing an identity and updating entries, no search returns a removed entry, and the updated
    entries are found at their new vectors — in memory, after a save/load, and through the folder functions."""
    spec, n = SMALL[kind]
    gal, g_emb = gallery_of(spec, n, 32, seed=2)
    dim = 32
    gal.save(tmp_path / "idx")
    pid0 = gal.metadata[0]["pid"]
    gone = [x for x, m in zip(gal.ids, gal.metadata, strict=True) if m["pid"] == pid0]
    new_vecs = torch.randn(3, dim, generator=torch.Generator().manual_seed(5)) * 4
    targets = [*[x for x in gal.ids if x not in gone][:2], "fresh"]
    for where in ("memory", "disk"):
        if where == "memory":
            assert gal.remove(pids=[pid0]) == gone
            assert gal.update(new_vecs, ids=targets, metadata=[{"pid": -1}] * 3) == (2, 1)
            g = gal
        else:
            assert remove_from_index(tmp_path / "idx", pids=[pid0]) == (gone, n - len(gone))
            assert update_index(tmp_path / "idx", new_vecs, targets, [{"pid": -1}] * 3) == (2, 1, n - len(gone) + 1)
            g = Gallery.load(tmp_path / "idx")
        assert len(g) == n - len(gone) + 1 and not set(gone) & set(g.ids) and g.ids[-3:] == targets
        hits = g.search(torch.cat([g_emb[:50], new_vecs]), k=10)
        assert not {h.id for row in hits for h in row} & set(gone)
        assert [row[0].id for row in hits[-3:]] == targets  # each updated entry is its own vector's nearest
        assert all(row[0].distance < 1e-2 * float(new_vecs.norm(dim=1).min()) for row in hits[-3:])  # float32
        old_row = int(targets[0][1:])
        assert g.search(g_emb[old_row], k=1)[0][0].id != targets[0]  # its old vector is gone
    reloaded = Gallery.load(tmp_path / "idx")
    assert reloaded.describe_index().startswith(kind)


@pytest.mark.faiss
def test_hnsw_tombstones_survive_a_save_and_are_rebuilt_past_the_threshold(tmp_path: Path) -> None:
    """HNSW keeps removed vectors as tombstones (in its file too, never returned) until they pass
    HNSW_REBUILD_FRACTION of the graph; then the graph is rebuilt from the live rows only."""
    gal, g_emb = gallery_of("hnsw", 1000, 16, seed=3)
    gal.save(tmp_path / "idx")
    few = [f"e{i}" for i in range(900, 1000)]  # the highest keys: a new key must not take one of theirs
    remove_from_index(tmp_path / "idx", few)
    g = Gallery.load(tmp_path / "idx")
    assert g._vindex is not None and g._vindex.ntotal == 1000 and g._vindex.dead.tolist() == list(range(900, 1000))
    assert not {h.id for row in g.search(g_emb[900:], k=5) for h in row} & set(few)
    g.add(torch.zeros(1, 16), ids=["z"])
    assert int(g.keys[-1]) == 1000 and g.search(torch.zeros(1, 16), k=1)[0][0].id == "z"
    many = [f"e{i}" for i in range(int(HNSW_REBUILD_FRACTION * 1000))]
    remove_from_index(tmp_path / "idx", many)
    g = Gallery.load(tmp_path / "idx")
    assert g._vindex is not None and g._vindex.ntotal == len(g) == 1000 - 100 - len(many)
    assert not len(g._vindex.dead)


def _level0(hnsw) -> tuple[np.ndarray, np.ndarray, int]:  # type: ignore[no-untyped-def]
    import faiss

    nb = faiss.vector_to_array(hnsw.neighbors)
    off = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    return nb, off, int(hnsw.nb_neighbors(0))


@pytest.mark.faiss
def test_hnsw_entries_no_search_reaches_are_reconnected() -> None:
    """An entry whose every incoming level-0 link is cut (made here by hand, as FAISS's pruning does on its own:
    BENCHMARKS.md) is not found even by its own vector at ef_search 4096; ``reconnect_unreachable`` links it
    from a reachable neighbour of its own, keeping each list within its size and ending at its first -1."""
    import faiss

    from reidkit.inference.faiss_index import reconnect_unreachable

    emb, _ = identities(600, 16, seed=21)
    graph = faiss.IndexHNSWFlat(16, 8)
    graph.add(emb.numpy())
    x = emb.numpy()
    params = faiss.SearchParametersHNSW(efSearch=4096)
    assert (graph.search(x, 1, params=params)[1][:, 0] == np.arange(600)).all()
    nb, off, width = _level0(graph.hnsw)
    victim = next(u for u in range(600) if u != graph.hnsw.entry_point)
    levels = faiss.vector_to_array(graph.hnsw.levels)
    for u in range(600):  # cut every link to the victim, on every level, keeping each list contiguous
        for level in range(int(levels[u])):
            lo = int(off[u]) + graph.hnsw.cum_nb_neighbors(level)
            hi = int(off[u]) + graph.hnsw.cum_nb_neighbors(level + 1)
            kept = [v for v in nb[lo:hi] if v >= 0 and v != victim]
            nb[lo:hi] = -1
            nb[lo : lo + len(kept)] = kept
    faiss.copy_array_to_vector(nb, graph.hnsw.neighbors)
    assert graph.search(x[victim : victim + 1], 1, params=params)[1][0, 0] != victim
    assert reconnect_unreachable(graph.hnsw) == 1 and reconnect_unreachable(graph.hnsw) == 0
    assert (graph.search(x, 1, params=params)[1][:, 0] == np.arange(600)).all()
    nb, off, width = _level0(graph.hnsw)
    for u in range(600):
        row = nb[off[u] : off[u] + width]
        filled = int((row >= 0).sum())
        assert (row[:filled] >= 0).all() and (row[:filled] < 600).all()  # links first, then -1: a valid list


@pytest.mark.faiss
def test_hnsw_gallery_over_points_on_a_line_finds_every_entry() -> None:
    """Points evenly spaced on a line, with ef_construction 128: FAISS alone leaves an entry no search reaches
    at 338 points (BENCHMARKS.md); the gallery's graph finds every entry by its own vector."""
    n = 338
    emb = torch.full((n, 64), float(n - 1)) + torch.arange(float(n)).unsqueeze(1) / 1000
    g = Gallery(index=IndexSpec.make("hnsw", ef_construction=128))
    g.add(emb, ids=list(range(n)))
    assert [row[0].id for row in g.search(emb, k=1, ef_search=4096)] == list(range(n))


@pytest.mark.faiss
def test_ivfpq_trains_once_and_adds_only_new_vectors(tmp_path: Path) -> None:
    """IVF-PQ is trained when built, on the first rows; a later add_to_index encodes the new vectors with the
    same training (coarse centroids unchanged, trained_on unchanged, the manifest records both)."""
    gal, _ = gallery_of("ivfpq", 10000, 32, seed=4)
    gal.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    built = manifest["index"]["built"]
    assert manifest["index"]["kind"] == "ivfpq" and built["trained_on"] == 10000
    assert built["nlist"] == 10000 // 39 and built["m"] == 32  # 4·√N capped at N/39; the largest divisor ≤ 64
    before = Gallery.load(tmp_path / "idx")._vindex
    centroids = before.index.quantizer.reconstruct_n(0, before.index.nlist)
    extra, _ = identities(500, 32, seed=40)
    assert add_to_index(tmp_path / "idx", extra, [f"x{i}" for i in range(500)], [{}] * 500) == (500, 10500)
    after = Gallery.load(tmp_path / "idx")
    assert after.trained_on == 10000 and after._vindex.ntotal == 10500
    np.testing.assert_array_equal(after._vindex.index.quantizer.reconstruct_n(0, after._vindex.index.nlist),
                                  centroids)
    assert [h[0].id for h in after.search(extra[:20], k=1)] == [f"x{i}" for i in range(20)]
    small = Gallery(index="ivfpq")
    small.add(torch.randn(100, 32))
    with pytest.raises(ReidkitError, match=r"100 vectors are too few to train .*9,984"):
        small.save(tmp_path / "small")
    assert not (tmp_path / "small" / "manifest.json").exists()
    with pytest.raises(ReidkitError, match="must divide the embedding width 32"):
        Gallery(index=IndexSpec.make("ivfpq", m=5)).add(torch.randn(3, 32))


@pytest.mark.faiss
def test_rebuild_changes_kind_and_retrains(tmp_path: Path) -> None:
    """rebuild_index: flat → hnsw → ivfpq (retrained on the whole gallery, nlist chosen again) → flat, the
    entries untouched and search results valid after each."""
    gal, g_emb = gallery_of("flat", 2000, 16, seed=6)
    gal.save(tmp_path / "idx")
    assert rebuild_index(tmp_path / "idx", "hnsw", ef_search=80)[0] == \
        "hnsw (hnsw_m 64, ef_construction 40, ef_search 80)"
    assert Gallery.load(tmp_path / "idx").search(g_emb[7], k=1)[0][0].id == "e7"
    text, total = rebuild_index(tmp_path / "idx", "ivfpq", nbits=4)
    assert (text, total) == ("ivfpq (nlist 51, m 16, nbits 4, nprobe 16, refine 4; trained on 2,000 vectors)", 2000)
    with pytest.raises(ReidkitError, match="ef_search is a parameter of the hnsw index, not of the ivfpq index"):
        rebuild_index(tmp_path / "idx", ef_search=10)
    assert rebuild_index(tmp_path / "idx", nprobe=32)[0].startswith("ivfpq (nlist 51, m 16, nbits 4, nprobe 32")
    assert rebuild_index(tmp_path / "idx", "flat")[0] == "flat (exact)"
    g = Gallery.load(tmp_path / "idx")
    assert g.ids == [f"e{i}" for i in range(2000)] and (g.search_arrays(g_emb[:5], k=1)[1].squeeze(1) ==
                                                        torch.arange(5)).all()


@pytest.mark.faiss
@pytest.mark.parametrize("kind", APPROX)
def test_search_parameters_are_checked_and_overridable(kind: str, tmp_path: Path) -> None:
    spec, n = SMALL[kind]
    gal, g_emb = gallery_of(spec, n, 16, seed=7)
    mine, other = ("nprobe", "ef_search") if kind == "ivfpq" else ("ef_search", "nprobe")
    gal.search_arrays(g_emb[:3], k=5, **{mine: 1})
    with pytest.raises(ReidkitError, match=f"{other} applies to an"):
        gal.search_arrays(g_emb[:3], k=5, **{other: 4})
    with pytest.raises(ReidkitError, match=f"{mine} must be an integer between 1"):
        gal.search_arrays(g_emb[:3], k=5, **{mine: 0})
    with pytest.raises(ReidkitError, match="nprobe applies to an ivfpq index; this index is flat"):
        gallery_of("flat", 10, 4)[0].search_arrays(torch.zeros(1, 4), k=1, nprobe=3)


@pytest.mark.faiss
@pytest.mark.parametrize("kind", APPROX)
def test_missing_or_damaged_faiss_file_is_rebuilt_with_one_warning(kind: str, tmp_path: Path) -> None:
    """The embeddings are the source of truth: a missing, truncated or foreign FAISS file gives one warning, the
    gallery searches with an index rebuilt from its embeddings, and the next write stores a good one."""
    spec, n = SMALL[kind]
    dim = 16
    gal, g_emb = gallery_of(spec, n, dim, seed=8)
    gal.save(tmp_path / "idx")
    want = gal.search_arrays(g_emb[:20], k=5)[1]
    name = json.loads((tmp_path / "idx" / "manifest.json").read_text())["index"]["file"]
    path = tmp_path / "idx" / name
    good = path.read_bytes()
    for damage in ("missing", "truncated", "garbage", "other kind"):
        path.unlink(missing_ok=True)
        if damage == "truncated":
            path.write_bytes(good[: len(good) // 2])
        elif damage == "garbage":
            path.write_bytes(os.urandom(4096))
        elif damage == "other kind":
            import faiss  # a whole FAISS file of the same width and the wrong kind

            faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatL2(dim)), str(path))
        with pytest.warns(UserWarning, match=rf"damaged {kind} index .*rebuilt from the embeddings") as caught:
            g = Gallery.load(tmp_path / "idx")
        assert len(caught) == 1 and "\n" not in str(caught[0].message)
        got = g.search_arrays(g_emb[:20], k=5)[1]
        assert (got[:, 0] == torch.arange(20)).all() and float((got == want).float().mean()) > 0.9
    with pytest.warns(UserWarning, match="damaged"):  # the damaged file stays until the next write ...
        add_to_index(tmp_path / "idx", torch.randn(1, dim), ["new"], [{}])
    with warnings.catch_warnings():  # ... which stores a good index
        warnings.simplefilter("error")
        assert len(Gallery.load(tmp_path / "idx")) == n + 1


def _flat_bytes(n: int = 20, d: int = 8) -> bytes:
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatL2(d))
    index.add_with_ids(np.random.default_rng(0).standard_normal((n, d)).astype("float32"), np.arange(n) * 2)
    return faiss.serialize_index(index).tobytes()


@pytest.mark.faiss
def test_crafted_faiss_files_are_refused_before_faiss_reads_them() -> None:
    """A size field asking for petabytes, an HNSW neighbour outside the graph, trailing bytes, another index type:
    check_layout refuses each without allocating what the file asks for (FAISS's own reader would allocate and
    zero the announced size first: 4 GB for the first case)."""
    import struct

    import faiss

    good = _flat_bytes()
    assert check_layout(good).ids.tolist() == list(range(0, 40, 2))
    pos = good.find(struct.pack("<Q", 20 * 8))  # the flat vectors' length field (in floats)
    bomb = good[:pos] + struct.pack("<Q", 1 << 58) + good[pos + 8:]
    with pytest.raises(FaissLayoutError, match="floats for 20 vectors"):
        check_layout(bomb)
    ids_at = len(good) - 8 * 20 - 8  # the id map's length field
    with pytest.raises(FaissLayoutError, match="elements announced"):
        check_layout(good[:ids_at] + struct.pack("<Q", 1 << 61) + good[ids_at + 8:])
    with pytest.raises(FaissLayoutError, match="after the end"):
        check_layout(good + b"\0")
    with pytest.raises(FaissLayoutError, match="expected IxM2"):
        check_layout(faiss.serialize_index(faiss.IndexFlatL2(8)).tobytes())
    graph = faiss.IndexIDMap2(faiss.IndexHNSWFlat(8, 4))
    graph.add_with_ids(np.random.default_rng(1).standard_normal((50, 8)).astype("float32"), np.arange(50))
    data = bytearray(faiss.serialize_index(graph).tobytes())
    layout = check_layout(bytes(data))
    assert layout.kind == "hnsw" and layout.params["hnsw_m"] == 4
    # the neighbours array follows the offsets (uint64 × 51); point its first entry at node 10**6
    offsets_len = struct.pack("<Q", 51)
    at = data.find(offsets_len) + 8 + 51 * 8 + 8
    data[at:at + 4] = struct.pack("<i", 10**6)
    with pytest.raises(FaissLayoutError, match="neighbour outside the graph"):
        check_layout(bytes(data))


@pytest.mark.faiss
def test_random_damage_to_a_faiss_file_is_refused_or_harmless() -> None:
    """200 seeded random byte changes of HNSW and IVF-PQ files: check_layout refuses the file, or FAISS reads it
    and searches it without crashing (a change inside a vector or a code only moves distances)."""
    import faiss

    rng = np.random.default_rng(17)
    x = rng.standard_normal((400, 8)).astype("float32")
    graph = faiss.IndexIDMap2(faiss.IndexHNSWFlat(8, 4))
    graph.add_with_ids(x, np.arange(400))
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(8), 8, 4, 4, 4)
    ivf.train(np.tile(x, (7, 1)))
    ivf.add_with_ids(x, np.arange(400))
    refused = 0
    for index in (graph, ivf):
        good = faiss.serialize_index(index).tobytes()
        for _ in range(100):
            data = bytearray(good)
            for at in rng.integers(0, len(data), int(rng.integers(1, 4))):
                data[at] = int(rng.integers(0, 256))
            try:
                check_layout(bytes(data))
            except FaissLayoutError:
                refused += 1
                continue
            try:
                read = faiss.deserialize_index(np.frombuffer(bytes(data), dtype=np.uint8))
                read.search(x[:5], 3)
            except RuntimeError:  # FAISS's own refusal: an error, not a crash (the gallery warns and rebuilds)
                refused += 1
    assert 0 < refused < 200


def test_without_faiss_exact_search_still_works_and_approximate_asks_for_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss_available() False: the exact gallery searches by torch with the same results and writes no FAISS
    file; asking for an approximate index is one line saying what to install; an approximate index made
    elsewhere is searched exactly (one warning) and refuses writes with that line."""
    emb, _ = identities(300, 16, seed=9)
    q = emb[:10] + 0.01
    with_faiss = None
    if knn_mod.faiss_available():
        ref = Gallery()
        ref.add(emb)
        with_faiss = ref.search_arrays(q, k=5)
        hnsw = Gallery(index="hnsw")
        hnsw.add(emb)
        hnsw.save(tmp_path / "hnsw")
    monkeypatch.setattr(knn_mod, "faiss_available", lambda: False)
    gal = Gallery()
    gal.add(emb)
    d, i = gal.search_arrays(q, k=5)
    assert (i.numpy() == exact(q, emb, 5, "euclidean")).all()
    if with_faiss is not None:
        assert torch.equal(i, with_faiss[1]) and torch.allclose(d, with_faiss[0], atol=1e-4)
    gal.save(tmp_path / "exact")
    manifest = json.loads((tmp_path / "exact" / "manifest.json").read_text())
    assert manifest["index"] == {"kind": "flat", "file": None}
    assert sorted(p.name for p in (tmp_path / "exact").iterdir() if not p.name.startswith(".")) == \
        sorted([*(seg["file"] for seg in manifest["segments"]), "manifest.json"])
    for kind in APPROX:
        with pytest.raises(ReidkitError, match=rf"a {kind} index needs FAISS, which is not installed: pip install"):
            Gallery(index=kind)
    if with_faiss is None:
        return
    with pytest.warns(UserWarning, match="FAISS is not installed: this hnsw index is searched exactly"):
        _, i2 = Gallery.load(tmp_path / "hnsw").search_arrays(q, k=5)
    assert (i2.numpy() == exact(q, emb, 5, "euclidean")).all()
    with pytest.raises(ReidkitError, match="writing a hnsw index needs FAISS, which is not installed"):
        add_to_index(tmp_path / "hnsw", torch.randn(1, 16), ["new"], [{}])
    monkeypatch.undo()
    assert len(Gallery.load(tmp_path / "hnsw")) == 300  # untouched


@pytest.mark.faiss
def test_format_1_index_reads_and_orphans_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """An index written before FAISS files (format 1: no keys, no 'index') reads as an exact index; the next
    write upgrades it. Generation files a killed writer left (never named by the manifest) go at that write."""
    from reidkit.inference.features import save_tensors

    emb, _ = identities(50, 8, seed=10)
    idx = tmp_path / "idx"
    idx.mkdir()
    save_tensors(idx / "embeddings-0123456789ab.safetensors", {"embeddings": emb})
    (idx / "manifest.json").write_text(json.dumps({
        "format": "reidkit-index", "format_version": 1, "metric": "euclidean", "embedding_dim": 8, "count": 50,
        "embeddings_file": "embeddings-0123456789ab.safetensors", "model": None,
        "ids": [f"e{i}" for i in range(50)], "metadata": [{}] * 50}))
    old = Gallery.load(idx)
    assert old.keys.tolist() == list(range(50)) and old.search(emb[3], k=1)[0][0].id == "e3"
    for orphan in ("embeddings-ffffffffffff.safetensors", "faiss-ffffffffffff.index",
                   ".faiss-eeeeeeeeeeee.index.x1y2.tmp"):
        (idx / orphan).write_bytes(b"left by a killed writer")
    (idx / "mine.txt").write_text("not the index's")
    assert add_to_index(idx, torch.zeros(1, 8), ["z"], [{}]) == (1, 51)
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["format_version"] == 4 and manifest["index"]["file"] is None  # the exact index: no file
    files = [seg["file"] for seg in manifest["segments"]]
    assert [seg["rows"] for seg in manifest["segments"]] == [50, 1]
    assert "embeddings-0123456789ab.safetensors" not in files  # it had no keys: rewritten
    assert sorted(p.name for p in idx.iterdir()) == sorted([".reidkit-index.lock", *files, "manifest.json", "mine.txt"])
    assert Gallery.load(idx).keys.tolist() == list(range(51))


@pytest.mark.parametrize(("index", "problem"), [
    ({"kind": "annoy"}, "kind is flat, ivfpq or hnsw"),
    ({"kind": "ivfpq", "nlist": -3}, "nlist must be an integer between 1"),
    ({"kind": "ivfpq", "nbits": 99}, "nbits must be an integer between 1 and 16"),
    ({"kind": "ivfpq", "m": 3}, "must divide the embedding width 8"),
    ({"kind": "hnsw", "hnsw_m": "32"}, "hnsw_m must be an integer"),
    ({"kind": "flat", "file": "../../etc/passwd"}, "'index.file' must be faiss-0123456789ab.index"),
    ({"kind": "flat", "file": "faiss-aaaaaaaaaaaa.index"}, "'index.file' must be faiss-0123456789ab.index"),
    ({"kind": "ivfpq", "built": {"trained_on": -1}}, "trained_on' must be a non-negative integer"),
    ({"kind": "ivfpq", "built": {"nlist": 1e9}}, "nlist must be an integer"),
    ([1, 2], "kind is flat, ivfpq or hnsw"),
])
def test_crafted_index_section_is_one_line(index: object, problem: str, tmp_path: Path) -> None:
    from reidkit.inference.features import save_tensors

    idx = tmp_path / "idx"
    idx.mkdir()
    save_tensors(idx / "embeddings-0123456789ab.safetensors", {"embeddings": torch.zeros(2, 8)})
    (idx / "manifest.json").write_text(json.dumps({
        "format": "reidkit-index", "format_version": 2, "metric": "euclidean", "embedding_dim": 8, "count": 2,
        "embeddings_file": "embeddings-0123456789ab.safetensors", "index": index, "model": None,
        "ids": ["a", "b"], "metadata": [{}, {}]}))
    with pytest.raises(ReidkitError, match=problem) as err:
        Gallery.load(idx)
    assert "\n" not in str(err.value)


def test_keys_in_the_embeddings_file_are_checked(tmp_path: Path) -> None:
    from reidkit.inference.features import save_tensors

    cases = ((torch.tensor([0, 0]), "keys repeated"), (torch.tensor([0.0, 1.0]), "keys of dtype"),
             (torch.tensor([-1, 2]), "outside"), (torch.tensor([1, 2, 3]), "shape"))
    for case, (keys, problem) in enumerate(cases):
        idx = tmp_path / f"idx{case}"
        idx.mkdir()
        save_tensors(idx / "embeddings-0123456789ab.safetensors", {"embeddings": torch.zeros(2, 4), "keys": keys})
        (idx / "manifest.json").write_text(json.dumps({
            "format": "reidkit-index", "format_version": 2, "metric": "euclidean", "embedding_dim": 4, "count": 2,
            "embeddings_file": "embeddings-0123456789ab.safetensors", "model": None,
            "ids": ["a", "b"], "metadata": [{}, {}]}))
        with pytest.raises(ReidkitError, match=problem):
            Gallery.load(idx)


def test_matching_tells_ids_pids_and_paths_apart() -> None:
    gal = Gallery()
    gal.add(torch.eye(6), ids=[1, 1.0, "1", True, "/data/cam1/a.jpg", "/data/cam10/b.jpg"],
            metadata=[{"pid": 3}, {"pid": True}, {}, {"pid": "3"}, {"pid": 3}, {}])
    assert gal.matching(ids=[1]).tolist() == [True, False, False, False, False, False]
    assert gal.matching(pids=[3]).tolist() == [True, False, False, False, True, False]  # not True, not "3"
    assert gal.matching(paths=["/data/cam1"]).tolist() == [False] * 4 + [True, False]  # not cam10
    assert gal.matching(paths=["/data/cam10/b.jpg"]).tolist() == [False] * 5 + [True]
    assert gal.remove(["nothing"]) == [] and len(gal) == 6
