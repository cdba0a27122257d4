"""The k nearest gallery rows of each query (k-NN) for large galleries: FAISS when installed, chunked exact
torch otherwise.

Distances returned are the metric's own (``euclidean``: ‖q-g‖, ``sqeuclidean``: ‖q-g‖²,
``cosine``: 1-cos). Exact searches order ties by gallery index (torch path) or as FAISS does.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.eval.distance import (
    all_finite,
    as_float_features,
    block_rows,
    check_metric,
    distance_block,
    prepare,
)

FAISS_INSTALL = "pip install 'reidkit[faiss]' (or pip install faiss-cpu)"


def faiss_available() -> bool:
    """True when the ``faiss`` module can be imported."""
    return importlib.util.find_spec("faiss") is not None


def require_faiss(what: str) -> None:
    """A one-line ``ReidkitError`` saying that ``what`` needs FAISS and how to install it, when it is missing."""
    if not faiss_available():
        raise ReidkitError(f"{what} needs FAISS, which is not installed: {FAISS_INSTALL}")


def faiss_metric(metric: str) -> int:
    """The FAISS metric that ranks as ``metric`` does on ``prepare``d features: inner product for cosine
    (normalised rows), L2 (squared) otherwise."""
    import faiss

    return faiss.METRIC_INNER_PRODUCT if check_metric(metric) == "cosine" else faiss.METRIC_L2


def from_faiss_distances(raw: np.ndarray, metric: str) -> torch.Tensor:
    """FAISS's scores as the metric's distances: 1 - inner product for cosine, the square root of the (clamped)
    squared L2 for euclidean, the squared L2 itself for sqeuclidean."""
    dist = torch.from_numpy(np.ascontiguousarray(raw))
    if metric == "cosine":
        return 1.0 - dist
    dist = dist.clamp(min=0)
    return dist.sqrt() if metric == "euclidean" else dist


def _torch_topk(q: torch.Tensor, g: torch.Tensor, k: int, metric: str, chunk_size: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    g_sq = (g * g).sum(1) if metric != "cosine" else None
    out_d, out_i = [], []
    for s in range(0, q.shape[0], chunk_size):
        d = distance_block(q[s : s + chunk_size], g, metric, g_sq)
        # stable top-k: lowest distance first, ties by gallery index
        if k * 8 < d.shape[1]:
            v, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
            o = torch.argsort(i, dim=1)
            v, i = v.gather(1, o), i.gather(1, o)
            o = torch.argsort(v, dim=1, stable=True)
            v, i = v.gather(1, o), i.gather(1, o)
        else:
            i = torch.argsort(d, dim=1, stable=True)[:, :k]
            v = d.gather(1, i)
        out_d.append(v)
        out_i.append(i)
    return torch.cat(out_d), torch.cat(out_i)


def _faiss_topk(q: torch.Tensor, g: torch.Tensor, k: int, metric: str, approximate: bool,
                nlist: int | None, nprobe: int, hnsw_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    qn = np.ascontiguousarray(q.detach().cpu().numpy(), dtype=np.float32)
    gn = np.ascontiguousarray(g.detach().cpu().numpy(), dtype=np.float32)
    D = gn.shape[1]
    inner = metric == "cosine"
    ftype = faiss_metric(metric)
    if not approximate:
        index: Any = faiss.IndexFlatIP(D) if inner else faiss.IndexFlatL2(D)
    elif approximate == "hnsw":
        index = faiss.IndexHNSWFlat(D, hnsw_m, ftype)
    else:
        n_list = nlist or max(1, min(int(4 * np.sqrt(len(gn))), len(gn) // 39 or 1))
        quant = faiss.IndexFlatIP(D) if inner else faiss.IndexFlatL2(D)
        index = faiss.IndexIVFFlat(quant, D, n_list, ftype)
        index.train(gn)
        index.nprobe = min(nprobe, n_list)
    index.add(gn)
    dist, idx = index.search(qn, k)
    return from_faiss_distances(dist, metric).to(q.device), torch.from_numpy(idx).long().to(q.device)


def k_nearest(
    query: Any,
    gallery: Any,
    k: int,
    metric: str = "euclidean",
    use_faiss: bool | None = None,
    approximate: bool | str = False,
    chunk_size: int | None = None,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest gallery items of each query: ``(distances Q×k, indices Q×k int64)``.

    Args:
        use_faiss: True forces FAISS (error if missing), False forces torch, None uses FAISS if installed.
        approximate: False for exact search (FAISS IndexFlatL2 / IndexFlatIP); True or ``"ivf"`` for
            IndexIVFFlat (``nlist`` lists, ``nprobe`` probed), ``"hnsw"`` for IndexHNSWFlat. FAISS only.
    """
    check_metric(metric)
    if approximate not in (False, True, "ivf", "hnsw"):
        raise ReidkitError(f"approximate {approximate!r}: expected False, True, 'ivf' or 'hnsw'")
    q, g = prepare(query, gallery, metric)
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ReidkitError("search: expected non-empty query and gallery features")
    if not (all_finite(q) and all_finite(g)):
        raise ReidkitError("search: features contain NaN or inf")
    if k < 1:
        raise ReidkitError(f"k: expected a positive integer, got {k}")
    k = min(k, g.shape[0])
    if use_faiss:
        require_faiss("use_faiss=True")
    if use_faiss is None:
        use_faiss = faiss_available()
    if approximate and not use_faiss:
        require_faiss("approximate search")
        raise ReidkitError("approximate search needs FAISS; it cannot run with use_faiss=False")
    if use_faiss:
        return _faiss_topk(q, g, k, metric, "ivf" if approximate is True else approximate,
                           nlist, nprobe, hnsw_m)
    return _torch_topk(as_float_features(q), g, k, metric, block_rows(g.shape[0], chunk_size))
