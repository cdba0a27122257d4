"""k nearest neighbours (FAISS vs torch), CUHK03 single-gallery-shot CMC, Market multi-query pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidkit.errors import ReidkitError
from reidkit.eval import average_cmc, cuhk03_single_shot_cmc, k_nearest, pool_multi_query, rank_k
from reidkit.eval import knn as knn_mod
from reidkit.eval.multiquery import group_features


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_torch_topk_matches_brute_force(metric: str) -> None:
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(20, 8, generator=g), torch.randn(300, 8, generator=g)
    d, i = k_nearest(q, gal, 5, metric, use_faiss=False, chunk_size=7)
    from reidkit.eval import pairwise_distance

    full = pairwise_distance(q.double(), gal.double(), metric)
    ref = torch.argsort(full, dim=1, stable=True)[:, :5]
    assert torch.equal(i, ref)
    np.testing.assert_allclose(d.numpy(), full.gather(1, ref).numpy(), atol=1e-4)


@pytest.mark.faiss
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_exact_equals_torch(metric: str) -> None:
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(25, 16, generator=g), torch.randn(400, 16, generator=g)
    dt, it = k_nearest(q, gal, 10, metric, use_faiss=False)
    df, i_f = k_nearest(q, gal, 10, metric, use_faiss=True)
    assert torch.equal(it, i_f)
    np.testing.assert_allclose(dt.numpy(), df.numpy(), atol=1e-4)
    _da, ia = k_nearest(q, gal, 10, metric, use_faiss=True, approximate="hnsw")
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(ia, it, strict=True)])
    assert recall > 0.8
    _di, ii = k_nearest(q, gal, 10, metric, use_faiss=True, approximate=True, nlist=4, nprobe=4)
    assert torch.equal(ii, it)  # all lists probed: exact


def test_search_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn_mod, "faiss_available", lambda: False)
    with pytest.raises(ReidkitError, match="faiss"):
        k_nearest(torch.randn(2, 3), torch.randn(4, 3), 2, use_faiss=True)
    with pytest.raises(ReidkitError, match="approximate"):
        k_nearest(torch.randn(2, 3), torch.randn(4, 3), 2, approximate=True)
    _d, i = k_nearest(torch.randn(2, 3), torch.randn(4, 3), 9)  # k clipped to the gallery
    assert i.shape == (2, 4)
    with pytest.raises(ReidkitError, match="NaN"):
        k_nearest(torch.full((1, 3), float("nan")), torch.randn(4, 3), 2)


def _brute_single_shot(d, qp, gp, qc, gc, repeats, seed, max_rank):
    rng = np.random.default_rng(seed)
    hist, nvalid = np.zeros(max_rank), 0
    keys = [rng.random(len(gp)) for _ in range(repeats)]
    for i in range(len(qp)):
        kept = [j for j in range(len(gp)) if not (gp[j] == qp[i] and gc[j] == qc[i])]
        if not any(gp[j] == qp[i] for j in kept):
            continue
        nvalid += 1
        for key in keys:
            chosen = []
            for pid in sorted(set(gp[j] for j in kept)):
                cands = [j for j in kept if gp[j] == pid]
                chosen.append(min(cands, key=lambda j: key[j]))
            order = sorted(chosen, key=lambda j: (d[i, j], j))
            rank = next(n for n, j in enumerate(order) if gp[j] == qp[i])
            if rank < max_rank:
                hist[rank:] += 1
    return hist / (repeats * nvalid)


def test_single_shot_matches_brute_force_and_is_reproducible() -> None:
    rng = np.random.default_rng(4)
    d = rng.integers(0, 8, (12, 40)).astype(np.float64)
    qp, gp = rng.integers(0, 6, 12), rng.integers(0, 6, 40)
    qc, gc = np.zeros(12, dtype=int), rng.integers(0, 2, 40)
    ours = cuhk03_single_shot_cmc(d, qp, gp, qc, gc, repeats=4, seed=3, max_rank=6)
    np.testing.assert_allclose(ours, _brute_single_shot(d, qp, gp, qc, gc, 4, 3, 6), atol=1e-12)
    again = cuhk03_single_shot_cmc(d, qp, gp, qc, gc, repeats=4, seed=3, max_rank=6)
    np.testing.assert_array_equal(ours, again)


def test_single_shot_one_image_per_identity_is_plain_cmc() -> None:
    d = np.array([[0.2, 0.1, 0.3], [0.1, 0.2, 0.3]])
    cmc = cuhk03_single_shot_cmc(d, [0, 2], [0, 1, 2], repeats=3, seed=0, max_rank=3)
    # query 0: its match is second; query 1: its match is third
    np.testing.assert_allclose(cmc, [0.0, 0.5, 1.0])
    assert rank_k(cmc, (1, 2)) == {"rank1": 0.0, "rank2": 0.5}
    np.testing.assert_allclose(average_cmc([cmc, np.ones(3)]), [0.5, 0.75, 1.0])
    with pytest.raises(ReidkitError):
        cuhk03_single_shot_cmc(d, [0], [0, 1, 2])


def test_multi_query_pooling() -> None:
    groups = {(1, 0): torch.tensor([[1.0, 4.0], [3.0, 0.0]]), (2, 1): torch.tensor([[5.0, 5.0]])}
    mean = pool_multi_query([1, 2, 1], [0, 1, 0], groups, "mean")
    assert torch.equal(mean, torch.tensor([[2.0, 2.0], [5.0, 5.0], [2.0, 2.0]]))
    mx = pool_multi_query([1], [0], groups, "max")
    assert torch.equal(mx, torch.tensor([[3.0, 4.0]]))
    own = pool_multi_query([9], [0], groups, query_feats=torch.tensor([[7.0, 7.0]]))
    assert torch.equal(own, torch.tensor([[7.0, 7.0]]))
    with pytest.raises(ReidkitError, match="pid 9 camera 0"):
        pool_multi_query([9], [0], groups)
    with pytest.raises(ReidkitError, match="mode"):
        pool_multi_query([1], [0], groups, "median")
    gf = group_features({(1, 0): ["b", "a"]}, ["a", "b"], torch.tensor([[1.0], [2.0]]))
    assert torch.equal(gf[(1, 0)], torch.tensor([[2.0], [1.0]]))
