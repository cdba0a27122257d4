"""Test-only dense references written from the published algorithms (not used by reidkit itself)."""

from __future__ import annotations

import numpy as np


def dense_market_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ignore=None, ap="noninterp"):
    """Straightforward per-query loop over a stable argsort (the Market-1501 protocol)."""
    distmat = np.asarray(distmat, dtype=np.float64)
    aps, inps, cmcs = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        junk = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        if ignore is not None:
            ig = ignore if ignore.ndim == 1 else ignore[i]
            junk |= ig[order]
        good = (g_pids[order] == q_pids[i]) & ~junk
        raw = good[~junk].astype(np.int64)
        if not raw.any():
            continue
        m = raw.sum()
        first = np.argmax(raw)
        c = np.zeros(max_rank)
        c[first:] = 1.0
        cmcs.append(c)
        hit_pos = np.nonzero(raw)[0]
        inps.append(m / (hit_pos[-1] + 1))
        if ap == "noninterp":
            aps.append(sum((j + 1) / (p + 1) for j, p in enumerate(hit_pos)) / m)
        else:  # walk as compute_AP.m does
            old_recall, old_precision, a, hits = 0.0, 1.0, 0.0, 0
            for n, flag in enumerate(raw):
                hits += int(flag)
                recall = hits / m
                precision = hits / (n + 1)
                a += (recall - old_recall) * ((old_precision + precision) / 2)
                old_recall, old_precision = recall, precision
                if hits == m:
                    break
            aps.append(a)
    if not aps:
        return {"mAP": float("nan"), "mINP": float("nan"), "cmc": np.zeros(max_rank), "num_valid_queries": 0}
    return {
        "mAP": float(np.mean(aps)),
        "mINP": float(np.mean(inps)),
        "cmc": np.mean(cmcs, axis=0),
        "num_valid_queries": len(aps),
    }


def dense_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Dense k-reciprocal re-ranking following the structure of Zhong et al.'s published code."""
    top = np.concatenate([q_q_dist, q_g_dist], axis=1)
    bottom = np.concatenate([q_g_dist.T, g_g_dist], axis=1)
    original = np.concatenate([top, bottom], axis=0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    V = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = original.shape[0]
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        krec = forward[np.where(backward == i)[0]]
        expansion = krec
        for cand in krec:
            cf = initial_rank[cand, :half]
            cb = initial_rank[cf, :half]
            ckrec = cf[np.where(cb == cand)[0]]
            if len(np.intersect1d(ckrec, krec)) > 2.0 / 3 * len(ckrec):
                expansion = np.append(expansion, ckrec)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original = original[:query_num]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros((1, all_num), dtype=np.float32)
        nz = np.where(V[i, :] != 0)[0]
        for j in nz:
            imgs = inv_index[j]
            temp_min[0, imgs] = temp_min[0, imgs] + np.minimum(V[i, j], V[imgs, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:query_num, query_num:]


def exact_dist(a, b, metric="euclidean"):
    """Float64 pairwise distances (euclidean: not squared; cosine: 1 - cos)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1 - a @ b.T
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d)
