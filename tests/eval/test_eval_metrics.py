"""Market-protocol metrics: hand-computed rankings, a brute-force reference, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit.errors import ReidkitError
from reidkit.eval import RankStrategy, evaluate, evaluate_distmat, pairwise_distance
from reidkit.eval.reference import dense_evaluate


def _one_query():
    # gallery:        0     1     2     3     4     5
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    g_pids = np.array([7, 7, 3, 7, 0, 5])  # item 0: same pid+cam (junk); item 4: distractor
    g_cams = np.array([1, 2, 2, 3, 4, 1])
    return dist, np.array([7]), g_pids, np.array([1]), g_cams


def test_hand_computed_ranking() -> None:
    dist, qp, gp, qc, gc = _one_query()
    # kept order: 1(match) 2 3(match) 4 5 -> matches at ranks 1 and 3
    r = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=5)
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r["mINP"] == pytest.approx(2 / 3)
    assert r["cmc"] == [1.0] * 5
    assert (r["num_valid_queries"], r["num_queries"]) == (1, 1)
    off = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=5, ap="official")
    # compute_AP.m: hit 1 at rank 1: (1 + 1)/2; hit 2 at rank 3: (1/2 + 2/3)/2; times recall step 1/2
    assert off["mAP"] == pytest.approx(0.5 * 1.0 + 0.5 * (0.5 + 2 / 3) / 2)


def test_first_match_late_and_distractors_count_as_wrong() -> None:
    dist = np.array([[1.0, 2.0, 3.0, 4.0]])
    r = evaluate_distmat(dist, [2], [0, 0, 5, 2], [0], [1, 1, 1, 1], max_rank=4)
    assert r["cmc"] == [0.0, 0.0, 0.0, 1.0]
    assert r["mAP"] == pytest.approx(1 / 4)
    assert r["mINP"] == pytest.approx(1 / 4)
    off = evaluate_distmat(dist, [2], [0, 0, 5, 2], [0], [1, 1, 1, 1], max_rank=4, ap="official")
    assert off["mAP"] == pytest.approx((0 / 3 + 1 / 4) / 2)


def test_ignore_mask_per_gallery_and_per_pair() -> None:
    dist = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    qp, qc = [1, 1], [0, 0]
    gp, gc = [-1, 1, 2], [1, 1, 1]
    plain = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=3)
    assert plain["cmc"] == [0.0, 1.0, 1.0]  # query 0 sees the pid -1 image first, query 1 the pid 2 one
    ign = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=3, ignore=np.array([True, False, False]))
    assert ign["cmc"] == [0.5, 1.0, 1.0]
    per_pair = np.array([[True, False, False], [False, False, False]])
    ign2 = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=3, ignore=per_pair)
    assert ign2["mAP"] == pytest.approx((1 + 1 / 2) / 2)  # query 1: item 2 (pid 2) first, then the match


def test_query_without_match_is_skipped_and_counted() -> None:
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    r = evaluate_distmat(dist, [1, 9], [1, 2], [0, 0], [1, 1], max_rank=2)
    assert (r["num_valid_queries"], r["num_queries"]) == (1, 2)
    assert r["mAP"] == pytest.approx(1.0)
    pq = evaluate_distmat(dist, [1, 9], [1, 2], [0, 0], [1, 1], max_rank=2, per_query=True)
    assert pq["ap_per_query"][0] == 1.0 and np.isnan(pq["ap_per_query"][1])


def test_ties_broken_by_gallery_order() -> None:
    dist = np.array([[0.5, 0.5, 0.5]])
    # match is item 1: item 0 (wrong) comes first in gallery order
    r = evaluate_distmat(dist, [1], [2, 1, 3], [0], [1, 1, 1], max_rank=3)
    assert r["cmc"] == [0.0, 1.0, 1.0]
    r = evaluate_distmat(dist, [1], [1, 2, 3], [0], [1, 1, 1], max_rank=3)
    assert r["cmc"] == [1.0, 1.0, 1.0]


def test_no_valid_query_raises() -> None:
    with pytest.raises(ReidkitError, match="valid match"):
        evaluate_distmat(np.zeros((1, 2)), [1], [1, 2], [0], [0, 0])


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_features_refused(bad: str) -> None:
    q = torch.randn(3, 4)
    q[1, 2] = float(bad)
    with pytest.raises(ReidkitError, match=r"query features.*NaN or inf"):
        evaluate(q, torch.randn(5, 4), [1, 2, 3], [1, 2, 3, 4, 5], [0, 0, 0], [1] * 5)


def test_shape_and_label_errors() -> None:
    q, g = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ReidkitError, match="3 feature rows but 2 pids"):
        evaluate(q, g, [1, 2], [1] * 5, [0, 0], [1] * 5)
    with pytest.raises(ReidkitError, match="query_camids"):
        evaluate(q, g, [1, 2, 3], [1] * 5, [0, 0], [1] * 5)
    with pytest.raises(ReidkitError, match="at least one row"):
        evaluate(q[:0], g, [], [1] * 5, [], [1] * 5)
    with pytest.raises(ReidkitError, match="at least one row"):
        evaluate(q, g[:0], [1, 2, 3], [], [0, 0, 0], [])
    with pytest.raises(ReidkitError, match="dimension"):
        evaluate(q, torch.randn(5, 3), [1, 2, 3], [1] * 5, [0, 0, 0], [1] * 5)
    with pytest.raises(ReidkitError, match="ap 'x'"):
        evaluate(q, g, [1, 2, 3], [1] * 5, [0, 0, 0], [1] * 5, ap="x")
    with pytest.raises(ReidkitError, match="ignore"):
        evaluate(q, g, [1, 2, 3], [1] * 5, [0, 0, 0], [1] * 5, ignore=np.zeros(4, dtype=bool))
    with pytest.raises(ReidkitError, match="distmat: expected shape"):
        evaluate_distmat(np.zeros((2, 2)), [1, 2, 3], [1, 2], [0, 0, 0], [1, 1])


# each rank strategy: sort the candidates; count in bins (fine, and so coarse that many items and matches
# share a bin), never falling back to sorting; one-row ranking slices
STRATEGIES: dict[str, str | RankStrategy] = {
    "sort": "sort",
    "bins": "bins",
    "coarse-bins": RankStrategy(sort_fraction=0.0, exact_fraction=1.0, max_bins=2),
    "small-slices": RankStrategy(slice_elements=7),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    nq=st.integers(1, 12),
    ng=st.integers(1, 40),
    levels=st.sampled_from([2, 3, 6, 0]),
    ap=st.sampled_from(["noninterp", "official"]),
    ignore_kind=st.sampled_from(["none", "gallery", "pair"]),
    chunk=st.integers(1, 5),
)
def test_matches_brute_force_with_ties(strategy, seed, nq, ng, levels, ap, ignore_kind, chunk) -> None:
    """Every rank strategy equals the dense reference, with many exact ties (levels > 0) or none (0)."""
    _check_against_brute_force(seed, nq, ng, levels, ap, ignore_kind, chunk, STRATEGIES[strategy])


def _check_against_brute_force(seed, nq, ng, levels, ap, ignore_kind, chunk, strategy) -> None:
    rng = np.random.default_rng(seed)
    if levels:
        dist = rng.integers(0, levels, (nq, ng)).astype(np.float64)  # many exact ties
    else:
        dist = rng.random((nq, ng)).astype(np.float32)
    qp, gp = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    ignore = None
    if ignore_kind == "gallery":
        ignore = rng.random(ng) < 0.2
    elif ignore_kind == "pair":
        ignore = rng.random((nq, ng)) < 0.2
    ref = dense_evaluate(dist, qp, gp, qc, gc, max_rank=10, ignore=ignore, ap=ap)
    try:
        ours = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=10, ignore=ignore, ap=ap, chunk_size=chunk,
                                strategy=strategy)
    except ReidkitError:
        assert ref["num_valid_queries"] == 0
        return
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert ours["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
    np.testing.assert_allclose(ours["cmc"], ref["cmc"], atol=1e-12)


def test_features_path_matches_distmat_and_is_block_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    qf, gf = torch.randn(40, 16, generator=g), torch.randn(150, 16, generator=g)
    qp, gp = torch.randint(0, 10, (40,), generator=g), torch.randint(0, 10, (150,), generator=g)
    qc, gc = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (150,), generator=g)
    for metric in ("euclidean", "cosine"):
        d = pairwise_distance(qf.double(), gf.double(), metric).numpy()
        ref = dense_evaluate(d, qp.numpy(), gp.numpy(), qc.numpy(), gc.numpy(), max_rank=50)
        for chunk in (1, 7, 1000):
            r = evaluate(qf, gf, qp, gp, qc, gc, metric=metric, chunk_size=chunk)
            assert r["mAP"] == pytest.approx(ref["mAP"], abs=1e-9)
            assert r["mINP"] == pytest.approx(ref["mINP"], abs=1e-9)
            np.testing.assert_allclose(r["cmc"], ref["cmc"])
            assert len(r["cmc"]) == 50 and all(0.0 <= c <= 1.0 for c in r["cmc"])
