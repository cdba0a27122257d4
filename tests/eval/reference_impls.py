"""Test-only dense references written from the published algorithms (not used by reidkit itself); the
evaluator's dense reference is :mod:`reidkit.eval.reference`."""

from __future__ import annotations

import numpy as np


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
