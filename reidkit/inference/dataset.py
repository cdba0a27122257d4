"""A benchmark's query and gallery embedded with an ``reidkit.inference.embedder.Embedder``: the features
``reidkit eval``, ``reidkit extract --dataset``, ``reidkit visualize ranklist`` and ``reidkit report`` work on."""

from __future__ import annotations

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
