"""The dense, obviously-correct evaluator: every distance in memory, a stable sort of every row, a loop over
queries written from the Market-1501 protocol. The fast evaluator (``reidkit.eval.metrics``) is tested
against it and ``benchmarks/bench_eval.py`` times it as the baseline. Use ``reidkit.eval.evaluate`` for
real work."""

from __future__ import annotations

from typing import Any

import numpy as np


def dense_distance(query: Any, gallery: Any, metric: str = "euclidean") -> np.ndarray:
    """The full Q×G float32 matrix: squared Euclidean ranked as Euclidean (``"euclidean"``, ``"sqeuclidean"``)
    or 1 − cosine (``"cosine"``)."""
    q, g = np.asarray(query, dtype=np.float32), np.asarray(gallery, dtype=np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return 1.0 - q @ g.T
    return (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2 * q @ g.T


def dense_evaluate(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, *, max_rank: int = 50,
                   ignore: Any = None, ap: str = "noninterp") -> dict[str, Any]:
    """mAP, mINP, CMC and the valid-query count from a Q×G distance matrix (same protocol and AP variants as
    ``reidkit.eval.evaluate``; ``ignore``: a (G,) or (Q, G) bool mask of gallery items to leave out)."""
    dist = np.asarray(distmat)
    q_pids, g_pids, q_camids, g_camids = (np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids))
    indices = np.argsort(dist, axis=1, kind="stable")
    aps, inps, cmcs = [], [], []
    for i, order in enumerate(indices):
        junk = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        if ignore is not None:
            junk |= (ignore if np.ndim(ignore) == 1 else ignore[i])[order]
        raw = (g_pids[order] == q_pids[i])[~junk]  # the matches along the kept ranking
        if not raw.any():
            continue
        hits = np.nonzero(raw)[0] + 1  # ranks of the matches, from 1
        m = len(hits)
        cmc = np.zeros(max_rank)
        cmc[hits[0] - 1:] = 1.0
        cmcs.append(cmc)
        inps.append(m / hits[-1])
        precision = np.arange(1, m + 1) / hits
        if ap == "official":  # compute_AP.m: the trapezoid between the precision before and at each match
            before = np.where(hits > 1, np.arange(m) / np.maximum(hits - 1, 1), 1.0)
            precision = (before + precision) / 2
        aps.append(precision.mean())
    if not aps:
        return {"mAP": float("nan"), "mINP": float("nan"), "cmc": np.zeros(max_rank), "num_valid_queries": 0}
    return {"mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)), "cmc": np.mean(cmcs, axis=0),
            "num_valid_queries": len(aps)}
