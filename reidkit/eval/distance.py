"""Pairwise distances between query and gallery features, computed block by block.

Metrics:

- ``"euclidean"``: ``||q - g||`` (square root of the squared distance, clamped at 0);
- ``"sqeuclidean"``: ``||q||² + ||g||² - 2 q·g`` clamped at 0 (torchreid's "euclidean"; same ranking);
- ``"cosine"``: ``1 - cos(q, g)`` after L2-normalising both sides (range [0, 2]).

Everything runs on the features' device in the features' floating dtype (float16/bfloat16 are
promoted to float32). ``iter_distance_blocks`` yields ``(row_slice, block)`` pairs so a caller
never holds more than ``chunk_size × G`` distances at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from reidkit.errors import ReidkitError

METRICS = ("euclidean", "sqeuclidean", "cosine")
# query rows per distance block by default: about this many distances (256 MB in float32); few, large
# matrix products (each product on CPU leaves BLAS threads spinning for a while after it)
BLOCK_ELEMENTS = 1 << 26
# on CPU, element-wise work and ranking go over row slices of about this many distances (they stay in cache)
SLICE_ELEMENTS = 1 << 21


def all_finite(t: torch.Tensor) -> bool:
    """True if no element of ``t`` is NaN or infinite (one reduction when they all are)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def slice_rows(block: torch.Tensor, elements: int | None = None) -> int:
    """Rows per cache-sized slice of a B×G ``block``: about ``elements`` distances (default
    ``SLICE_ELEMENTS``) on CPU, the whole block elsewhere."""
    if block.device.type != "cpu":
        return max(block.shape[0], 1)
    return max(1, (elements or SLICE_ELEMENTS) // max(block.shape[1], 1))


def block_rows(num_cols: int, chunk_size: int | None = None) -> int:
    """Rows per block: ``chunk_size`` if given, else about ``BLOCK_ELEMENTS`` / ``num_cols``."""
    if chunk_size is None:
        return max(1, BLOCK_ELEMENTS // max(num_cols, 1))
    if chunk_size < 1:
        raise ReidkitError(f"chunk_size: expected a positive integer, got {chunk_size}")
    return chunk_size


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of ``METRICS``, else raise ``ReidkitError``."""
    if metric not in METRICS:
        raise ReidkitError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metric


def as_float_features(x: object, name: str = "features") -> torch.Tensor:
    """``x`` (tensor or array-like, shape N×D) as a 2-D floating tensor (float32 unless float64)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dim() == 1:
        t = t.unsqueeze(1)
    if t.dim() != 2:
        raise ReidkitError(f"{name}: expected a 2-D N×D array, got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t


def prepare(q: torch.Tensor, g: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ready for ``distance_block``: same dtype/device, normalised for cosine."""
    check_metric(metric)
    q = as_float_features(q, "query features")
    g = as_float_features(g, "gallery features").to(device=q.device)
    if q.shape[1] != g.shape[1]:
        raise ReidkitError(f"features: query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    dtype = torch.promote_types(q.dtype, g.dtype)
    return normalized_for(q.to(dtype), metric), normalized_for(g.to(dtype), metric)


def normalized_for(x: torch.Tensor, metric: str) -> torch.Tensor:
    """Rows of ``x`` as ``metric`` compares them: L2-normalised for cosine, unchanged otherwise."""
    return F.normalize(x, dim=1) if metric == "cosine" else x


def matmul_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` as a new tensor; on CPU (float32/float64, no autograd) through numpy's BLAS.

    numpy's OpenBLAS is 1.3-1.6x faster than the MKL inside PyTorch's CPU wheel on the AMD
    machines measured in BENCHMARKS.md; on other devices this is ``torch.mm``.
    """
    if (a.device.type == "cpu" and a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64)
            and not (a.requires_grad or b.requires_grad)):
        out = torch.empty((a.shape[0], b.shape[0]), dtype=a.dtype)
        np.matmul(a.resolve_neg().numpy(), b.resolve_neg().numpy().T, out=out.numpy())
        return out
    return a @ b.t()


def distance_block(
    q: torch.Tensor,
    g: torch.Tensor,
    metric: str,
    g_sqnorm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distances between prepared rows ``q`` (B×D) and ``g`` (G×D) as a B×G tensor.

    ``g_sqnorm`` (G,) may be passed to avoid recomputing the gallery's squared norms per block.
    For ``cosine`` the inputs must already be L2-normalised (see ``prepare``).
    """
    d = matmul_t(-q if metric == "cosine" else -2.0 * q, g)  # scaling by -1 or -2 is exact
    if metric != "cosine" and g_sqnorm is None:
        g_sqnorm = (g * g).sum(1)
    q_sq = (q * q).sum(1, keepdim=True) if metric != "cosine" else None
    # the element-wise passes go over cache-sized row slices of the block
    step = slice_rows(d)
    for start in range(0, d.shape[0], step):
        part = d[start : start + step]
        if q_sq is None:
            part.add_(1.0)
            continue
        part.add_(q_sq[start : start + step]).add_(g_sqnorm).clamp_(min=0)
        if metric == "euclidean":
            part.sqrt_()
    return d


def candidate_distances(query: torch.Tensor, gallery: torch.Tensor, rows: torch.Tensor, metric: str,
                        chunk_size: int | None = None) -> torch.Tensor:
    """Distances (Q, C) between each query row and the gallery rows ``rows[i]`` (Q, C int64) named for it, by
    ``distance_block``'s formula: a few candidates per query scored exactly, without a Q×G block."""
    q, _ = prepare(query, gallery[:0], metric)
    out = torch.empty(rows.shape, dtype=q.dtype, device=q.device)
    step = max(1, block_rows(rows.shape[1] * q.shape[1], chunk_size))
    for start in range(0, q.shape[0], step):
        sl = slice(start, min(start + step, q.shape[0]))
        cand = normalized_for(as_float_features(gallery[rows[sl].reshape(-1)]).to(q), metric)
        cand = cand.reshape(rows[sl].shape[0], rows.shape[1], -1)
        dot = torch.bmm(cand, q[sl].unsqueeze(2)).squeeze(2)
        if metric == "cosine":
            out[sl] = 1.0 - dot
            continue
        d = ((q[sl] * q[sl]).sum(1, keepdim=True) + (cand * cand).sum(2) - 2.0 * dot).clamp_(min=0)
        out[sl] = d.sqrt_() if metric == "euclidean" else d
    return out


def iter_distance_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(row_slice, block)`` with ``block = distance(query[row_slice], gallery)``.

    ``chunk_size`` rows at a time (``None``: see ``block_rows``).
    """
    step = block_rows(len(gallery), chunk_size)
    q, g = prepare(query, gallery, metric)
    g_sq = (g * g).sum(1) if metric != "cosine" else None
    for start in range(0, q.shape[0], step):
        sl = slice(start, min(start + step, q.shape[0]))
        yield sl, distance_block(q[sl], g, metric, g_sq)


def pairwise_distance(
    query: torch.Tensor,
    gallery: torch.Tensor,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The full Q×G distance matrix, filled ``chunk_size`` query rows at a time (``None``: see ``block_rows``)."""
    step = block_rows(len(gallery), chunk_size)
    q, g = prepare(query, gallery, metric)
    out = torch.empty((q.shape[0], g.shape[0]), dtype=q.dtype, device=q.device)
    g_sq = (g * g).sum(1) if metric != "cosine" else None
    for start in range(0, q.shape[0], step):
        sl = slice(start, min(start + step, q.shape[0]))
        out[sl] = distance_block(q[sl], g, metric, g_sq)
    return out
