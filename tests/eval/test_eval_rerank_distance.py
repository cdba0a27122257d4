"""Distances against float64 brute force; k-reciprocal re-ranking against a dense reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_impls import dense_re_ranking, exact_dist

from reidkit.errors import ReidkitError
from reidkit.eval import evaluate, evaluate_distmat, iter_distance_blocks, pairwise_distance
from reidkit.eval.rerank import neighbour_lists, rerank_blocks, rerank_distance


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "sqeuclidean"])
def test_pairwise_distance_matches_brute_force(metric: str) -> None:
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((23, 12)), rng.standard_normal((31, 12))
    ref = exact_dist(q, g, "cosine" if metric == "cosine" else "euclidean")
    if metric == "sqeuclidean":
        ref = ref**2
    for chunk in (1, 5, None):
        d = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), metric, chunk_size=chunk)
        np.testing.assert_allclose(d.numpy(), ref, atol=1e-9)
    d32 = pairwise_distance(torch.from_numpy(q).float(), torch.from_numpy(g).float(), metric)
    assert d32.dtype == torch.float32
    np.testing.assert_allclose(d32.numpy(), ref, atol=1e-4, rtol=1e-4)


def test_distance_blocks_are_bounded_and_cover_rows() -> None:
    q, g = torch.randn(10, 4), torch.randn(7, 4)
    seen = []
    for sl, block in iter_distance_blocks(q, g, "euclidean", chunk_size=3):
        assert block.shape[0] <= 3 and block.shape[1] == 7
        seen.extend(range(sl.start, sl.stop))
    assert seen == list(range(10))
    with pytest.raises(ReidkitError, match="metric 'manhattan'"):
        pairwise_distance(q, g, "manhattan")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matmul_through_numpy_equals_torch(dtype: torch.dtype) -> None:
    from reidkit.eval.distance import matmul_t

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 6, generator=g, dtype=dtype), torch.randn(13, 6, generator=g, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(matmul_t(a, b), a @ b.t(), atol=tol, rtol=tol)
    # non-contiguous operands (a transposed copy's view, every other row)
    at, bs = a.t().contiguous().t(), torch.randn(26, 6, generator=g, dtype=dtype)[::2]
    torch.testing.assert_close(matmul_t(at, bs), at @ bs.t(), atol=tol, rtol=tol)
    # operands that need gradients stay in autograd
    w = a.clone().requires_grad_(True)
    matmul_t(w, b).sum().backward()
    torch.testing.assert_close(w.grad, b.sum(0).expand_as(a), atol=tol, rtol=tol)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "sqeuclidean"])
def test_distance_slices_do_not_change_values(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from reidkit.eval import distance

    q, g = torch.randn(11, 5, dtype=torch.float64), torch.randn(17, 5, dtype=torch.float64)
    whole = pairwise_distance(q, g, metric, chunk_size=None)
    monkeypatch.setattr(distance, "SLICE_ELEMENTS", 20)  # one row per slice
    torch.testing.assert_close(pairwise_distance(q, g, metric, chunk_size=4), whole, atol=0, rtol=0)


def _problem(seed: int, Q: int, G: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((Q, D)).astype(np.float32), rng.standard_normal((G, D)).astype(np.float32)


@pytest.mark.parametrize(
    ("metric", "Q", "G", "D", "k1", "k2", "lam"),
    [
        ("euclidean", 30, 120, 16, 20, 6, 0.3),
        ("euclidean", 12, 50, 8, 5, 3, 0.5),
        ("euclidean", 20, 70, 32, 7, 1, 0.3),
        ("euclidean", 4, 10, 4, 20, 6, 0.3),  # fewer items than k1 + 1
        ("cosine", 25, 90, 16, 20, 6, 0.3),
        ("cosine", 10, 40, 8, 3, 2, 0.0),
    ],
)
def test_rerank_matches_dense_reference(metric, Q, G, D, k1, k2, lam) -> None:
    q, g = _problem(Q * 7 + G, Q, G, D)
    ref = dense_re_ranking(exact_dist(q, g, metric), exact_dist(q, q, metric), exact_dist(g, g, metric),
                           k1, k2, lam)
    ours = rerank_distance(torch.from_numpy(q), torch.from_numpy(g), metric=metric, k1=k1, k2=k2,
                           lambda_value=lam, block_size=7)
    assert ours.shape == (Q, G)
    assert float(np.abs(ours.numpy() - ref).max()) < 1e-5


def test_rerank_blocks_stream_the_same_rows() -> None:
    q, g = _problem(1, 17, 60, 8)
    full = rerank_distance(torch.from_numpy(q), torch.from_numpy(g), k1=6, k2=3)
    rows = []
    for sl, block in rerank_blocks(torch.from_numpy(q), torch.from_numpy(g), k1=6, k2=3, block_size=5,
                                   chunk_size=13):
        assert block.shape[0] <= 5
        np.testing.assert_allclose(block.numpy(), full[sl].numpy(), atol=1e-6)
        rows.extend(range(sl.start, sl.stop))
    assert rows == list(range(17))


def test_neighbour_lists_match_argsort() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((53, 6)).astype(np.float32)
    d2 = exact_dist(x, x) ** 2
    for chunk in (4, 17, 100):
        _v, idx, rowmax = neighbour_lists(torch.from_numpy(x), 9, "euclidean", chunk_size=chunk)
        np.testing.assert_array_equal(idx.numpy(), np.argsort(d2, axis=1, kind="stable")[:, :9])
        np.testing.assert_allclose(rowmax.numpy(), d2.max(1), rtol=1e-5)


def test_evaluate_with_rerank_uses_reranked_distances() -> None:
    q, g = _problem(2, 15, 60, 8)
    rng = np.random.default_rng(2)
    qp, gp = rng.integers(0, 5, 15), rng.integers(0, 5, 60)
    qc, gc = rng.integers(0, 3, 15), rng.integers(0, 3, 60)
    ref_d = dense_re_ranking(exact_dist(q, g), exact_dist(q, q), exact_dist(g, g), 20, 6, 0.3)
    expected = evaluate_distmat(ref_d, qp, gp, qc, gc)
    got = evaluate(torch.from_numpy(q), torch.from_numpy(g), qp, gp, qc, gc, rerank=True)
    assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert got["cmc"] == pytest.approx(expected["cmc"], abs=1e-6)


def test_rerank_argument_errors() -> None:
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ReidkitError, match="k1"):
        rerank_distance(q, g, k1=0)
    with pytest.raises(ReidkitError, match="lambda"):
        rerank_distance(q, g, lambda_value=1.5)
