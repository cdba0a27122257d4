"""Evaluation: distances, Market-protocol metrics, CUHK03 single-shot CMC, multi-query, re-ranking, search.

Main entry point: ``evaluate`` (features in, metrics dict out), processed in query blocks so
MSMT17-size problems fit in a few GB.
"""

from __future__ import annotations

from typing import Any

import torch

from reidkit.errors import ReidkitError
from reidkit.eval.cuhk03 import average_cmc, cuhk03_single_shot_cmc, cuhk03_single_shot_cmc_feats, rank_k
from reidkit.eval.distance import all_finite, iter_distance_blocks, pairwise_distance
from reidkit.eval.knn import faiss_available, k_nearest
from reidkit.eval.metrics import RankStrategy, check_ap_mode, check_labels, evaluate_blocks, evaluate_distmat
from reidkit.eval.multiquery import group_features, pool_multi_query
from reidkit.eval.rerank import rerank_blocks, rerank_distance
from reidkit.eval.summary import evaluation_settings, metrics_record, to_percent

__all__ = [
    "RankStrategy",
    "average_cmc",
    "check_features",
    "cuhk03_single_shot_cmc",
    "cuhk03_single_shot_cmc_feats",
    "evaluate",
    "evaluate_blocks",
    "evaluate_distmat",
    "evaluation_settings",
    "faiss_available",
    "group_features",
    "iter_distance_blocks",
    "k_nearest",
    "metrics_record",
    "pairwise_distance",
    "pool_multi_query",
    "rank_k",
    "rerank_blocks",
    "rerank_distance",
    "to_percent",
]


def check_features(feats: Any, name: str) -> torch.Tensor:
    """``feats`` as a non-empty, finite 2-D float tensor, else ``ReidkitError`` naming ``name``."""
    t = feats if isinstance(feats, torch.Tensor) else torch.as_tensor(feats)
    if t.dim() != 2:
        raise ReidkitError(f"{name}: expected a 2-D N×D array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ReidkitError(f"{name}: expected at least one row, got none")
    if not t.is_floating_point():
        raise ReidkitError(f"{name}: expected floating-point features, got dtype {t.dtype}")
    if not all_finite(t):
        raise ReidkitError(f"{name}: contains NaN or inf values")
    return t


def evaluate(
    query_feats: Any,
    gallery_feats: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    *,
    metric: str = "euclidean",
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    ap: str = "noninterp",
    max_rank: int = 50,
    ignore: Any = None,
    chunk_size: int | None = None,
    per_query: bool = False,
    strategy: str | RankStrategy | None = None,
) -> dict[str, Any]:
    """mAP, CMC (length ``max_rank``), mINP under the Market-1501 protocol, from features.

    Returns ``{"mAP", "mINP", "cmc", "num_valid_queries", "num_queries"}`` (fractions in [0, 1]; with
    ``per_query`` also ``"ap_per_query"``, NaN for skipped queries). ``rerank`` applies k-reciprocal
    re-ranking (k1, k2, lambda_value) first; ``ignore`` is a bool mask (G,) or (Q, G) of gallery items
    to leave out of the ranking (e.g. pid -1 junk). ``chunk_size`` query rows are ranked at a time
    (default: blocks of about 64M distances, see ``reidkit.eval.distance.block_rows``); ``strategy``
    chooses how ranks are counted (``reidkit.eval.metrics.RankStrategy``: the same result, another speed).
    """
    q = check_features(query_feats, "query features")
    g = check_features(gallery_feats, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ReidkitError(f"features: query dimension {q.shape[1]} != gallery dimension {g.shape[1]}")
    qp, gp, qc, gc = check_labels(query_pids, gallery_pids, query_camids, gallery_camids)
    if len(qp) != q.shape[0]:
        raise ReidkitError(f"query: {q.shape[0]} feature rows but {len(qp)} pids")
    if len(gp) != g.shape[0]:
        raise ReidkitError(f"gallery: {g.shape[0]} feature rows but {len(gp)} pids")
    check_ap_mode(ap)
    if rerank:
        blocks = rerank_blocks(q, g, metric=metric, k1=k1, k2=k2, lambda_value=lambda_value,
                               block_size=min(chunk_size or 512, 512))
    else:
        # squared Euclidean ranks exactly like Euclidean and skips the square root
        blocks = iter_distance_blocks(q, g, "sqeuclidean" if metric == "euclidean" else metric, chunk_size)
    return evaluate_blocks(blocks, qp, gp, qc, gc, ap=ap, max_rank=max_rank, ignore=ignore,
                           per_query=per_query, strategy=strategy)
