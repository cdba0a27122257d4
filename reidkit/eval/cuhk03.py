"""CUHK03 1367/100 protocol: single-gallery-shot CMC, averaged over repeats and over the 20 splits.

For each repeat, one gallery image per identity is drawn at random (seeded, so runs are
reproducible); each query is ranked against that one-shot gallery and the CMC is the fraction of
queries whose true match is within rank k. Gallery items with the query's pid and camera are left
out before drawing (in 1367/100 queries and gallery come from different camera views, so normally
none are). Queries without a valid match are skipped. Mancs Table 3 reports rank 1/5/10 of the mean
over the 20 splits (``average_cmc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.eval.distance import pairwise_distance
from reidkit.eval.metrics import as_labels
from reidkit.utils.limits import MAX_RANK


def cuhk03_single_shot_cmc(
    distmat: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any = None,
    gallery_camids: Any = None,
    *,
    repeats: int = 10,
    seed: int = 0,
    max_rank: int = 50,
) -> np.ndarray:
    """Single-gallery-shot CMC (length ``max_rank``, fractions) from a Q×G distance matrix.

    Ties in distance are broken by gallery order. ``repeats`` random one-per-identity galleries are
    drawn with ``numpy.random.default_rng(seed)``; the CMC is averaged over them.
    """
    d = distmat if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    d = d.double().cpu()
    qp, gp = as_labels(query_pids, "query_pids"), as_labels(gallery_pids, "gallery_pids")
    if d.dim() != 2 or tuple(d.shape) != (len(qp), len(gp)):
        raise ReidkitError(f"distmat: expected shape ({len(qp)}, {len(gp)}), got {tuple(d.shape)}")
    if len(qp) == 0 or len(gp) == 0:
        raise ReidkitError("CUHK03: expected non-empty query and gallery")
    if repeats < 1 or not 1 <= max_rank <= MAX_RANK:
        raise ReidkitError(f"CUHK03: expected repeats >= 1 and 1 <= max_rank <= {MAX_RANK}, got {repeats}, "
                           f"{max_rank}")
    if not bool(torch.isfinite(d).all()):
        raise ReidkitError("distmat: expected finite values, found NaN or inf")
    qc = as_labels(query_camids, "query_camids") if query_camids is not None else torch.full_like(qp, -1)
    gc = as_labels(gallery_camids, "gallery_camids") if gallery_camids is not None else torch.full_like(gp, -2)
    Q, G = d.shape
    same = qp.unsqueeze(1) == gp.unsqueeze(0)
    kept = ~(same & (qc.unsqueeze(1) == gc.unsqueeze(0)))
    valid = (same & kept).any(1)
    if not bool(valid.any()):
        raise ReidkitError("CUHK03: no query has a valid match in the gallery")
    _, pid_index = torch.unique(gp, return_inverse=True)
    P = int(pid_index.max()) + 1
    rng = np.random.default_rng(seed)
    gidx = torch.arange(G)
    hist = np.zeros(max_rank, dtype=np.float64)
    for _ in range(repeats):
        key = torch.from_numpy(rng.random(G))
        k = torch.where(kept, key.unsqueeze(0), torch.tensor(float("inf"), dtype=torch.float64))
        best = torch.full((Q, P), float("inf"), dtype=torch.float64)
        best.scatter_reduce_(1, pid_index.expand(Q, G), k, reduce="amin")
        chosen = kept & (k == best.gather(1, pid_index.expand(Q, G)))
        # distance of the chosen true match for each query
        match = chosen & same
        has = match.any(1) & valid
        mpos = torch.argmax(match.int(), 1)
        md = d.gather(1, mpos.unsqueeze(1))
        before = chosen & ((d < md) | ((d == md) & (gidx.unsqueeze(0) < mpos.unsqueeze(1))))
        rank = before.sum(1)  # 0-based
        r = rank[has].numpy()
        r = r[r < max_rank]
        hist += np.bincount(r, minlength=max_rank)
    return np.cumsum(hist) / (repeats * int(valid.sum()))


def cuhk03_single_shot_cmc_feats(
    query_feats: Any,
    gallery_feats: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any = None,
    gallery_camids: Any = None,
    *,
    metric: str = "euclidean",
    repeats: int = 10,
    seed: int = 0,
    max_rank: int = 50,
) -> np.ndarray:
    """``cuhk03_single_shot_cmc`` from features (distances computed with ``metric``)."""
    d = pairwise_distance(torch.as_tensor(query_feats), torch.as_tensor(gallery_feats), metric)
    return cuhk03_single_shot_cmc(d, query_pids, gallery_pids, query_camids, gallery_camids,
                                  repeats=repeats, seed=seed, max_rank=max_rank)


def average_cmc(cmcs: Sequence[Any]) -> np.ndarray:
    """Mean of per-split CMC curves (CUHK03 1367/100 reports the mean over its 20 splits)."""
    if not cmcs:
        raise ReidkitError("average_cmc: expected at least one CMC curve")
    arr = [np.asarray(c, dtype=np.float64) for c in cmcs]
    n = min(len(a) for a in arr)
    return np.mean(np.stack([a[:n] for a in arr]), axis=0)


def rank_k(cmc: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"rank1": .., "rank5": .., "rank10": ..}`` from a CMC curve (entry k-1 is rank k)."""
    c = np.asarray(cmc, dtype=np.float64)
    return {f"rank{k}": float(c[min(k, len(c)) - 1]) for k in ks}
