"""Market-1501 multi-query: a query's feature pooled over the gt_bbox images of its pid and camera.

Mancs (Table 1) reports Market-1501 "multi-query" results: each query is represented by the pooled
feature of all the hand-drawn boxes (``gt_bbox``) of that person in that camera. The dataset reader
puts ``extras["multi_query"] = {(pid, camid): [paths]}``; embed those images once, then pool here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reidkit.errors import ReidkitError
from reidkit.eval.metrics import as_labels

POOL_MODES = ("mean", "max")


def pool_multi_query(
    query_pids: Any,
    query_camids: Any,
    group_feats: Mapping[tuple[int, int], torch.Tensor],
    mode: str = "mean",
    query_feats: torch.Tensor | None = None,
) -> torch.Tensor:
    """One pooled feature per query: ``mode`` ("mean" or "max") over ``group_feats[(pid, camid)]`` (n×D).

    A query whose group is missing or empty uses its own row of ``query_feats`` when given, and is an
    error otherwise.
    """
    if mode not in POOL_MODES:
        raise ReidkitError(f"multi-query mode {mode!r}: expected one of {', '.join(POOL_MODES)}")
    pids = as_labels(query_pids, "query_pids").tolist()
    cams = as_labels(query_camids, "query_camids").tolist()
    if len(pids) != len(cams):
        raise ReidkitError(f"multi-query: {len(pids)} query_pids but {len(cams)} query_camids")
    pooled: dict[tuple[int, int], torch.Tensor] = {}
    for key, f in group_feats.items():
        t = f if isinstance(f, torch.Tensor) else torch.as_tensor(f)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.shape[0] == 0:
            continue
        t = t.float()
        pooled[(int(key[0]), int(key[1]))] = t.mean(0) if mode == "mean" else t.max(0).values
    rows = []
    for n, (p, c) in enumerate(zip(pids, cams, strict=True)):
        v = pooled.get((p, c))
        if v is None:
            if query_feats is None:
                raise ReidkitError(f"multi-query: no gt_bbox features for pid {p} camera {c}")
            v = torch.as_tensor(query_feats[n]).float()
        rows.append(v)
    if not rows:
        raise ReidkitError("multi-query: expected at least one query")
    return torch.stack(rows)


def group_features(
    groups: Mapping[tuple[int, int], Sequence[str]],
    paths: Sequence[str],
    feats: torch.Tensor,
) -> dict[tuple[int, int], torch.Tensor]:
    """Map ``groups`` ((pid, camid) -> paths) to feature stacks using ``feats[i]`` for ``paths[i]``."""
    if len(paths) != len(feats):
        raise ReidkitError(f"multi-query: {len(paths)} paths but {len(feats)} feature rows")
    where = {p: i for i, p in enumerate(paths)}
    out: dict[tuple[int, int], torch.Tensor] = {}
    for key, ps in groups.items():
        missing = [p for p in ps if p not in where]
        if missing:
            raise ReidkitError(f"multi-query: no feature for {missing[0]}")
        idx = torch.tensor([where[p] for p in ps], dtype=torch.long)
        out[(int(key[0]), int(key[1]))] = feats[idx]
    return out
