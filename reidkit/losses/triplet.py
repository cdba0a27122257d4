"""Triplet losses: batch-hard (soft-margin or hinge; STADB eq. 7–8) and Mancs' curriculum sampling (eq. 3–6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def euclidean_dist(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise Euclidean distances ``(M, N)`` between rows of ``a (M, D)`` and ``b (N, D)`` (float32).

    Squared distances are clamped at 1e-12 before the square root so the gradient stays finite.
    """
    a, b = a.float(), b.float()
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.t()
    return d2.clamp_min(1e-12).sqrt()


def _masks(pids: Tensor) -> tuple[Tensor, Tensor]:
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    return same & ~eye, ~same


def batch_hard_triplet_loss(feats: Tensor, pids: Tensor, margin: float | None = None) -> Tensor:
    """Batch-hard triplet loss, mean over anchors.

    For each anchor ``i``: ``d_p`` = distance to its farthest positive (same pid, not itself), ``d_n`` =
    distance to its nearest negative; loss ``log(1 + exp(d_p - d_n))`` when ``margin`` is ``None`` (soft
    margin, STADB eq. 7) else ``max(0, margin + d_p - d_n)``. Anchors with no positive or no negative in
    the batch are skipped (a zero loss with a gradient path when none is left).
    """
    dist = euclidean_dist(feats, feats)
    pos, neg = _masks(pids.to(feats.device))
    d_p = dist.masked_fill(~pos, float("-inf")).amax(dim=1)
    d_n = dist.masked_fill(~neg, float("inf")).amin(dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        return feats.float().sum() * 0.0
    diff = d_p[valid] - d_n[valid]
    loss = F.softplus(diff) if margin is None else F.relu(margin + diff)
    return loss.mean()


def curriculum_mu_sigma(t: float, n_neg: int, t0: float = 30, t1: float = 60, a: float = 15,
                        b: float = 0.001) -> tuple[float, float]:
    """Mancs eq. 3–4: ``μ = [N_n − N_n·t/t0]_+`` and ``σ = a · b^[⌈(t−t0)/(t1−t0)⌉]_+`` (``[x]_+ = max(x, 0)``).

    So σ = a up to t0, a·b for t0 < t ≤ t1 and a·b² after t1 (for t ≤ 2·t1 − t0), while μ slides from
    the easiest position ``N_n`` down to the hardest, 0, at t0.
    """
    mu = max(n_neg - n_neg * t / t0, 0.0)
    expo = max(math.ceil((t - t0) / (t1 - t0)), 0)
    return float(mu), float(a * b**expo)


def curriculum_sample(dist: Tensor, pids: Tensor, epoch: float, generator: torch.Generator | None = None,
                      t0: float = 30, t1: float = 60, a: float = 15, b: float = 0.001) -> dict[str, Tensor]:
    """Mancs curriculum sampling of triplet indices (no gradient; runs on the CPU).

    For every anchor ``i`` and each of its positives ``j`` (row-major order), one negative is drawn from
    the anchor's negatives sorted by distance ascending (position 0 = hardest) with probability
    ``∝ N(position; μ, σ)`` (Gaussian density over positions 0..N_n−1, μ and σ from
    ``curriculum_mu_sigma`` with N_n = the anchor's number of negatives). PK batches give
    P·K·(K−1) triplets.

    Returns a dict of int64 CPU tensors ``anchor``, ``positive``, ``negative`` (batch indices) and
    ``position`` (the drawn negative's rank among the anchor's negatives).
    """
    d = dist.detach().to("cpu", torch.float64)
    p = pids.detach().to("cpu")
    n = len(p)
    pos, neg = _masks(p)
    n_neg = neg.sum(dim=1)
    # negatives first, sorted by distance; non-negatives pushed to the end
    order = torch.argsort(d.masked_fill(~neg, float("inf")), dim=1, stable=True)
    ks = torch.arange(n, dtype=torch.float64)
    logits = torch.full((n, n), float("-inf"), dtype=torch.float64)
    for count in n_neg.unique().tolist():
        if count == 0:
            continue
        mu, sigma = curriculum_mu_sigma(epoch, count, t0, t1, a, b)
        row = -((ks - mu) ** 2) / (2.0 * sigma**2)
        row[count:] = float("-inf")
        logits[n_neg == count] = row
    pairs = (pos & (n_neg > 0)[:, None]).nonzero()
    anchor, positive = pairs[:, 0], pairs[:, 1]
    if len(anchor) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return {"anchor": empty, "positive": empty, "negative": empty, "position": empty}
    probs = torch.softmax(logits[anchor], dim=1)
    position = torch.multinomial(probs, 1, generator=generator)[:, 0]
    negative = order[anchor, position]
    return {"anchor": anchor, "positive": positive, "negative": negative, "position": position}


def curriculum_triplet_loss(feats: Tensor, pids: Tensor, epoch: float, generator: torch.Generator | None = None,
                            margin: float = 0.5, t0: float = 30, t1: float = 60, a: float = 15,
                            b: float = 0.001) -> Tensor:
    """Mancs eq. 5: mean over the sampled triplets of ``[m + D(a, p) − D(a, n)]_+`` (Euclidean D).

    Triplets come from ``curriculum_sample`` (drawn from ``generator`` or the global RNG).
    """
    dist = euclidean_dist(feats, feats)
    trip = curriculum_sample(dist, pids, epoch, generator, t0, t1, a, b)
    if len(trip["anchor"]) == 0:
        return feats.float().sum() * 0.0
    ai, pi, ni = (trip[k].to(dist.device) for k in ("anchor", "positive", "negative"))
    return F.relu(margin + dist[ai, pi] - dist[ai, ni]).mean()
