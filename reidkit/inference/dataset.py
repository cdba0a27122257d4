"""A benchmark's query and gallery embedded with an ``reidkit.inference.embedder.Embedder``: the features
``reidkit eval``, ``reidkit extract --dataset``, ``reidkit visualize ranklist`` and ``reidkit report`` work on;
and several test sets embedded and evaluated in turn (``evaluate_test_sets``, each by ``evaluate_features``), the one path of ``reidkit eval``
with several ``--dataset`` and of a training run's ``eval.datasets``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from reidkit.errors import DatasetError, ReidkitError
from reidkit.inference.features import DatasetFeatures
from reidkit.inference.sources import report_bad

MULTI_QUERY = ("none", "mean", "max")


def embed_dataset(emb: Any, ds: Any, batch_size: int = 64, flip: bool = False, workers: int = 4,
                  progress: bool = True, multi_query: str = "none") -> DatasetFeatures:
    """Embed ``ds``'s query and gallery (a ``reidkit.data.records.ReidDataset``) with ``emb``.

    Unreadable images are listed on stderr and left out. ``multi_query`` ``"mean"``/``"max"`` replaces each
    query's feature by the pool over the Market-1501 ``gt_bbox`` images of its identity and camera
    (``reidkit.eval.multiquery``).
    """
    if multi_query not in MULTI_QUERY:
        raise ReidkitError(f"--multi-query: expected one of {', '.join(MULTI_QUERY)}, got {multi_query!r}")
    parts: dict[str, Any] = {}
    for split in ("query", "gallery"):
        recs = ds.split(split)
        if not recs:
            raise DatasetError(f"{ds.root}: the {ds.name} {split} split is empty; expected images")
        feats, kept, bad = emb.embed_paths([r.path for r in recs], batch_size, flip, workers, progress)
        report_bad(bad)
        keep = set(kept)
        rows = [r for r in recs if r.path in keep]
        if not rows:
            raise DatasetError(f"{ds.root}: none of the {ds.name} {split} images could be read")
        parts[split] = (feats, torch.tensor([r.pid for r in rows], dtype=torch.int64),
                        torch.tensor([r.camid for r in rows], dtype=torch.int64), [r.path for r in rows])
    q, g = parts["query"], parts["gallery"]
    query_feats = q[0]
    if multi_query != "none":
        groups = ds.extras.get("multi_query")
        if not groups:
            raise DatasetError(f"{ds.root}: --multi-query needs Market-1501's gt_bbox/ folder (no groups found)")
        from reidkit.eval.multiquery import group_features, pool_multi_query

        paths = sorted({p for ps in groups.values() for p in ps})
        feats, good, bad = emb.embed_paths(paths, batch_size, flip, workers, progress)
        bad_set = set(bad)
        clean = {k: [p for p in v if p not in bad_set] for k, v in groups.items()}
        gf = group_features({k: v for k, v in clean.items() if v}, good, feats)
        query_feats = pool_multi_query(q[1], q[2], gf, multi_query, query_feats=query_feats)
    return DatasetFeatures(query_feats, q[1], q[2], g[0], g[1], g[2], q[3], g[3], emb.meta,
                           {"dataset": ds.name, "flip": bool(flip), "multi_query": multi_query})


def evaluate_features(f: DatasetFeatures, *, metric: str = "euclidean", rerank: bool = False, k1: int = 20,
                      k2: int = 6, lambda_value: float = 0.3, ap: str = "noninterp",
                      max_rank: int = 50) -> dict[str, Any]:
    """A test set's metrics from its features (``reidkit.eval.evaluate`` of the query against the gallery with
    these settings): what ``reidkit eval`` reports for a features file, a checkpoint and each of several test
    sets (``evaluate_test_sets``)."""
    from reidkit.eval import evaluate

    return evaluate(f.query_feats, f.gallery_feats, f.query_pids, f.gallery_pids, f.query_camids, f.gallery_camids,
                    metric=metric, rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value, ap=ap, max_rank=max_rank)


def evaluate_test_sets(emb: Any, test_sets: Iterable[tuple[str, Any]], *, batch_size: int = 64, flip: bool = False,
                       workers: int = 4, progress: bool = True, metric: str = "euclidean", rerank: bool = False,
                       k1: int = 20, k2: int = 6, lambda_value: float = 0.3, ap: str = "noninterp",
                       max_rank: int = 50) -> dict[str, Any]:
    """Embed each test set's query and gallery with ``emb`` (``embed_dataset``) and evaluate it
    (``reidkit.eval.evaluate`` with these settings): ``test_sets`` holds ``(label, ReidDataset)`` pairs. Returns
    the record the table is printed and saved from (``reidkit.eval.summary.record_of_test_sets``): percent, the
    settings, one entry per test set in the given order, each what evaluating that set alone gives."""
    from reidkit.eval.summary import evaluation_settings, record_of_test_sets, to_percent

    rows = []
    for label, ds in test_sets:
        f = embed_dataset(emb, ds, batch_size, flip, workers, progress)
        res = evaluate_features(f, metric=metric, rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value, ap=ap,
                                max_rank=max_rank)
        rows.append({"name": label, "dataset": ds.name, "root": str(ds.root), **to_percent(res)})
    settings = evaluation_settings(metric=metric, flip=flip, rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value,
                                   ap=ap, max_rank=max_rank, multi_query="none")
    return record_of_test_sets(rows, settings)
