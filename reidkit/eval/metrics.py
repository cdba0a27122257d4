"""mAP, CMC and mINP under the Market-1501 protocol, computed query block by query block.

Protocol (Market-1501, DukeMTMC-reID, MSMT17, Celeb-reID):

- for each query, gallery items with the query's pid **and** camera are ignored (junk), as are items
  flagged in the optional ``ignore`` mask (e.g. Market-1501's pid -1 images when they are kept);
- every other gallery item with a different pid (distractors included) is a wrong match;
- gallery items are ranked by increasing distance, ties broken by gallery order (a stable sort), so
  results do not depend on the platform;
- a query with no valid match is skipped and reported through ``num_valid_queries``.

AP variants (``ap=``):

- ``"noninterp"`` (default, what torchreid and fast-reid report): with the i-th match at rank r_i
  among the kept items and m matches, ``AP = (1/m) Σ_i i / r_i``;
- ``"official"``: the official Market-1501 MATLAB ``compute_AP.m``, which walks the kept ranking and
  adds ``(recall - old_recall) * (old_precision + precision) / 2`` at every position, with
  ``old_precision`` starting at 1. Recall only changes at matches, so
  ``AP = (1/m) Σ_i (p_old_i + i / r_i) / 2`` with ``p_old_i = (i-1)/(r_i-1)`` (precision one position
  before the match) or 1 when ``r_i = 1``.

mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook") is the mean over
valid queries of ``m / r_m`` (the number of matches over the rank of the hardest match).

Speed: no full sort of the gallery is done. For each query block, only the kept items no farther
than the query's hardest match can come before a match, so only those are sorted (by distance, then
gallery index: the same order as a stable argsort of the whole row). For a useful model that is a few
dozen items per query instead of the whole gallery; the worst case (random features) costs about one
full sort.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from reidkit.errors import ReidkitError

AP_MODES = ("noninterp", "official")
# sort the candidates when they are at most this share of a block, else search (see match_ranks)
SORT_FRACTION = 0.05


def as_labels(x: Any, name: str) -> torch.Tensor:
    """A 1-D int64 tensor of ids (pids or camids) from a tensor, array or list."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 1:
        raise ReidkitError(f"{name}: expected a 1-D array of integer ids, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.is_floating_point() and bool(torch.all(t == t.round())):
            return t.long()
        raise ReidkitError(f"{name}: expected integer ids, got dtype {t.dtype}")
    return t.long()


def check_ap_mode(ap: str) -> str:
    """Return ``ap`` if it names a known AP variant."""
    if ap not in AP_MODES:
        raise ReidkitError(f"ap {ap!r}: expected one of {', '.join(AP_MODES)}")
    return ap


def check_ignore(ignore: Any, num_query: int, num_gallery: int) -> torch.Tensor | None:
    """The ``ignore`` mask as a bool tensor of shape (G,) or (Q, G), or ``None``."""
    if ignore is None:
        return None
    t = ignore if isinstance(ignore, torch.Tensor) else torch.as_tensor(np.asarray(ignore))
    if t.dtype != torch.bool:
        raise ReidkitError(f"ignore: expected a bool mask, got dtype {t.dtype}")
    if tuple(t.shape) not in ((num_gallery,), (num_query, num_gallery)):
        raise ReidkitError(
            f"ignore: expected shape ({num_gallery},) or ({num_query}, {num_gallery}), got {tuple(t.shape)}"
        )
    return t


def check_labels(
    query_pids: Any, gallery_pids: Any, query_camids: Any, gallery_camids: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and convert the four label arrays (lengths must agree pairwise; neither side empty)."""
    qp, gp = as_labels(query_pids, "query_pids"), as_labels(gallery_pids, "gallery_pids")
    qc, gc = as_labels(query_camids, "query_camids"), as_labels(gallery_camids, "gallery_camids")
    if len(qp) != len(qc):
        raise ReidkitError(f"query labels: {len(qp)} query_pids but {len(qc)} query_camids")
    if len(gp) != len(gc):
        raise ReidkitError(f"gallery labels: {len(gp)} gallery_pids but {len(gc)} gallery_camids")
    if len(qp) == 0:
        raise ReidkitError("query: expected at least one query item, got none")
    if len(gp) == 0:
        raise ReidkitError("gallery: expected at least one gallery item, got none")
    return qp, gp, qc, gc


def same_pid_pairs(
    q_pids: torch.Tensor, g_order: torch.Tensor, g_sorted: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (query row, gallery index) pairs with equal pids, from the gallery sorted by pid.

    ``g_order`` is a stable argsort of the gallery pids and ``g_sorted`` the sorted pids. Pairs come
    grouped by query row, gallery indices increasing within a row.
    """
    lo = torch.searchsorted(g_sorted, q_pids, right=False)
    hi = torch.searchsorted(g_sorted, q_pids, right=True)
    cnt = hi - lo
    rows = torch.repeat_interleave(torch.arange(len(q_pids), device=q_pids.device), cnt)
    offs = torch.arange(len(rows), device=q_pids.device) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
    cols = g_order[lo[rows] + offs]
    return rows, cols


def match_ranks(
    dist: torch.Tensor,
    pos_rows: torch.Tensor,
    pos_cols: torch.Tensor,
    junk_rows: torch.Tensor,
    junk_cols: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of every match among the kept gallery items, for a block of B queries.

    Args:
        dist: B×G distances (finite).
        pos_rows, pos_cols: the (row, gallery index) pairs that are matches.
        junk_rows, junk_cols: pairs left out of the ranking (same pid and camera).
        ignore: optional (G,) or (B, G) bool mask of further items left out.

    Returns:
        ``(ranks, npos)``: ``ranks`` is B×M int64 (M = max matches in the block), row b holding the
        1-based ranks of its ``npos[b]`` matches in increasing order (entries past ``npos[b]`` are 0);
        ties are broken by gallery order, as a stable argsort of the row would.

    A match's rank is 1 + the kept items strictly nearer + the kept items at the same distance with a
    smaller gallery index. Two exact strategies, chosen per block by cost: when few kept items lie
    no farther than each row's hardest match (good features), only those are sorted; otherwise
    (hard queries, whose last match sits deep in the gallery) every distance is located among the
    row's sorted matches with one batched ``searchsorted`` and counted with a histogram, which
    costs the same whatever the ranking. Both give identical ranks (tested against brute force).
    """
    B = dist.shape[0]
    dev = dist.device
    npos = torch.bincount(pos_rows, minlength=B)
    M = int(npos.max()) if B else 0
    if M == 0:
        return torch.zeros((B, 0), dtype=torch.long, device=dev), npos
    hardest = torch.full((B,), float("-inf"), dtype=dist.dtype, device=dev)
    hardest.scatter_reduce_(0, pos_rows, dist[pos_rows, pos_cols], reduce="amax")
    cand = dist <= hardest.unsqueeze(1)
    cand[junk_rows, junk_cols] = False
    if ignore is not None:
        cand &= ~ignore
    if int(cand.sum()) <= SORT_FRACTION * cand.numel():
        return _ranks_by_sort(dist, cand, pos_rows, pos_cols, npos, M), npos
    del cand
    return _ranks_by_search(dist, pos_rows, pos_cols, junk_rows, junk_cols, ignore, npos, M), npos


def _ranks_by_sort(dist: torch.Tensor, cand: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor,
                   npos: torch.Tensor, M: int) -> torch.Tensor:
    """Ranks from sorting the candidates (kept items no farther than the row's hardest match)."""
    B, G = dist.shape
    dev = dist.device
    r, c = cand.nonzero(as_tuple=True)  # row-major: by row, then gallery index
    del cand
    o = torch.argsort(dist[r, c], stable=True)
    o = o[torch.argsort(r[o], stable=True)]
    r, c = r[o], c[o]
    del o
    counts = torch.bincount(r, minlength=B)
    position = torch.arange(len(r), device=dev) - (counts.cumsum(0) - counts)[r]
    pos_mask = torch.zeros((B, G), dtype=torch.bool, device=dev)
    pos_mask[pos_rows, pos_cols] = True
    is_pos = pos_mask[r, c]
    del pos_mask
    pr, prank = r[is_pos], position[is_pos] + 1
    k = torch.arange(len(pr), device=dev) - (npos.cumsum(0) - npos)[pr]
    ranks = torch.zeros((B, M), dtype=torch.long, device=dev)
    ranks[pr, k] = prank
    return ranks


def _ranks_by_search(dist: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor, junk_rows: torch.Tensor,
                     junk_cols: torch.Tensor, ignore: torch.Tensor | None, npos: torch.Tensor, M: int) -> torch.Tensor:
    """Ranks from locating every kept distance among the row's sorted matches (no sort of the gallery)."""
    B, G = dist.shape
    dev = dist.device
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dev)
    # kept distances: junk and ignored items moved to +inf, beyond every (finite) match
    d = dist.clone()
    d[junk_rows, junk_cols] = inf
    if ignore is not None:
        d = torch.where(ignore, inf, d)
    # the matches of each row, padded with +inf, sorted by distance; pairs arrive grouped by row with
    # gallery indices increasing, so a stable sort orders equal distances by gallery index
    slot = torch.arange(len(pos_rows), device=dev) - (npos.cumsum(0) - npos)[pos_rows]
    thr = torch.full((B, M), float("inf"), dtype=dist.dtype, device=dev)
    idx = torch.full((B, M), G, dtype=torch.long, device=dev)
    thr[pos_rows, slot] = dist[pos_rows, pos_cols]
    idx[pos_rows, slot] = pos_cols
    thr, order = torch.sort(thr, dim=1, stable=True)
    idx = idx.gather(1, order)
    # items nearer than the j-th match: #{i : (#matches <= d_i) < j}
    right = torch.searchsorted(thr, d, right=True)  # B×G, in 0..M
    hist = torch.bincount((torch.arange(B, device=dev).unsqueeze(1) * (M + 1) + right).reshape(-1),
                          minlength=B * (M + 1)).view(B, M + 1)
    ranks = hist.cumsum(1)[:, :M] + 1
    # exact ties: an item at the same distance as a match and with a smaller gallery index precedes it
    at = thr.gather(1, (right - 1).clamp(min=0))
    eq_r, eq_c = ((right > 0) & (d == at)).nonzero(as_tuple=True)
    if len(eq_r):
        dv = d[eq_r, eq_c]
        lo = torch.searchsorted(thr[eq_r], dv.unsqueeze(1), right=False).squeeze(1)
        hi = right[eq_r, eq_c]
        n = hi - lo
        pr = torch.repeat_interleave(eq_r, n)
        pc = torch.repeat_interleave(eq_c, n)
        pj = torch.repeat_interleave(lo, n) + torch.arange(len(pr), device=dev) - torch.repeat_interleave(
            n.cumsum(0) - n, n)
        before = pc < idx[pr, pj]
        ranks.index_put_((pr[before], pj[before]), torch.ones_like(pr[before]), accumulate=True)
    valid = torch.arange(M, device=dev).unsqueeze(0) < npos.unsqueeze(1)
    return torch.where(valid, ranks, torch.zeros_like(ranks))


class MetricAccumulator:
    """Running sums of AP, INP and the first-match rank histogram over query blocks.

    Built once per gallery (its pids and camids); :meth:`add_block` takes B×G distance blocks.
    """

    def __init__(
        self,
        gallery_pids: torch.Tensor,
        gallery_camids: torch.Tensor,
        max_rank: int = 50,
        ap_mode: str = "noninterp",
        per_query: bool = False,
    ) -> None:
        if max_rank < 1:
            raise ReidkitError(f"max_rank: expected a positive integer, got {max_rank}")
        self.max_rank = max_rank
        self.ap_mode = check_ap_mode(ap_mode)
        self.per_query = per_query
        self.g_pids = gallery_pids
        self.g_cams = gallery_camids
        self.g_order = torch.argsort(gallery_pids, stable=True)
        self.g_sorted = gallery_pids[self.g_order].contiguous()
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0
        self.num_queries = 0
        self.first_hist = np.zeros(max_rank, dtype=np.int64)
        self.ap_list: list[np.ndarray] = []

    def add_block(
        self,
        dist: torch.Tensor,
        q_pids: torch.Tensor,
        q_cams: torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> None:
        """Add a block of B queries: ``dist`` B×G and the block's query pids and camids.

        ``ignore`` is None, a (G,) or a (B, G) bool mask of gallery items to leave out.
        """
        if not bool(torch.isfinite(dist.sum())) and not bool(torch.isfinite(dist).all()):
            raise ReidkitError("distances: expected finite values, found NaN or inf")
        dev = dist.device
        if self.g_order.device != dev:
            self.g_order, self.g_sorted = self.g_order.to(dev), self.g_sorted.to(dev)
            self.g_cams = self.g_cams.to(dev)
        q_pids, q_cams = q_pids.to(dev), q_cams.to(dev)
        rows, cols = same_pid_pairs(q_pids, self.g_order, self.g_sorted)
        junk = q_cams[rows] == self.g_cams[cols]
        ign = None
        if ignore is not None:
            ign = ignore.to(dev)
            ign = ign.unsqueeze(0) if ign.dim() == 1 else ign
            pos = ~junk & ~(ign[0, cols] if ign.shape[0] == 1 else ign[rows, cols])
        else:
            pos = ~junk
        ranks, npos = match_ranks(dist, rows[pos], cols[pos], rows[junk], cols[junk], ign)
        self.num_queries += dist.shape[0]
        valid = npos > 0
        ap_full = np.full(dist.shape[0], np.nan)
        if bool(valid.any()):
            r = ranks[valid].double().cpu().clamp(min=1)  # padding entries are 0
            m = npos[valid].cpu()
            M = r.shape[1]
            k = torch.arange(1, M + 1, dtype=torch.float64).unsqueeze(0)
            in_range = k <= m.unsqueeze(1).double()
            p_new = k / r
            if self.ap_mode == "noninterp":
                terms = p_new
            else:
                p_old = torch.where(r > 1, (k - 1) / (r - 1).clamp(min=1), torch.ones_like(r))
                terms = (p_old + p_new) / 2
            ap = (terms * in_range).sum(1) / m.double()
            hardest = r.gather(1, (m - 1).unsqueeze(1)).squeeze(1)
            inp = m.double() / hardest
            first = r[:, 0].long()
            self.ap_sum += float(ap.sum())
            self.inp_sum += float(inp.sum())
            self.num_valid += int(valid.sum())
            first = first[first <= self.max_rank].numpy() - 1
            self.first_hist += np.bincount(first, minlength=self.max_rank)
            ap_full[valid.cpu().numpy()] = ap.numpy()
        if self.per_query:
            self.ap_list.append(ap_full)

    def result(self) -> dict[str, Any]:
        """The metrics dict: mAP, mINP, cmc (length max_rank), num_valid_queries, num_queries."""
        if self.num_valid == 0:
            raise ReidkitError(
                f"evaluation: none of the {self.num_queries} queries has a valid match in the gallery "
                "(same pid seen by another camera)"
            )
        cmc = np.cumsum(self.first_hist) / self.num_valid
        out: dict[str, Any] = {
            "mAP": self.ap_sum / self.num_valid,
            "mINP": self.inp_sum / self.num_valid,
            "cmc": [float(c) for c in cmc],
            "num_valid_queries": self.num_valid,
            "num_queries": self.num_queries,
        }
        if self.per_query:
            out["ap_per_query"] = [float(a) for a in np.concatenate(self.ap_list)]
        return out


def evaluate_blocks(
    blocks: Iterable[tuple[slice, torch.Tensor]],
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    *,
    ap: str = "noninterp",
    max_rank: int = 50,
    ignore: Any = None,
    per_query: bool = False,
) -> dict[str, Any]:
    """Metrics from a stream of ``(row_slice, B×G distance block)`` covering every query row once."""
    qp, gp, qc, gc = check_labels(query_pids, gallery_pids, query_camids, gallery_camids)
    ign = check_ignore(ignore, len(qp), len(gp))
    acc = MetricAccumulator(gp, gc, max_rank=max_rank, ap_mode=ap, per_query=per_query)
    covered = 0
    for sl, block in blocks:
        if block.shape[1] != len(gp):
            raise ReidkitError(f"distances: expected {len(gp)} gallery columns, got {block.shape[1]}")
        ig = ign[sl] if ign is not None and ign.dim() == 2 else ign
        acc.add_block(block, qp[sl], qc[sl], ig)
        covered += block.shape[0]
    if covered != len(qp):
        raise ReidkitError(f"distances: expected {len(qp)} query rows, got {covered}")
    return acc.result()


def evaluate_distmat(
    distmat: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_camids: Any,
    gallery_camids: Any,
    *,
    ap: str = "noninterp",
    max_rank: int = 50,
    ignore: Any = None,
    chunk_size: int = 1024,
    per_query: bool = False,
) -> dict[str, Any]:
    """mAP / CMC / mINP from a precomputed Q×G distance matrix (tensor or array), in row blocks."""
    d = distmat if isinstance(distmat, torch.Tensor) else torch.as_tensor(np.asarray(distmat))
    if d.dim() != 2:
        raise ReidkitError(f"distmat: expected a 2-D Q×G matrix, got shape {tuple(d.shape)}")
    if not d.is_floating_point():
        d = d.double()
    nq = len(as_labels(query_pids, "query_pids"))
    ng = len(as_labels(gallery_pids, "gallery_pids"))
    if tuple(d.shape) != (nq, ng):
        raise ReidkitError(f"distmat: expected shape ({nq}, {ng}) from the labels, got {tuple(d.shape)}")

    def blocks() -> Iterable[tuple[slice, torch.Tensor]]:
        for start in range(0, d.shape[0], chunk_size):
            sl = slice(start, min(start + chunk_size, d.shape[0]))
            yield sl, d[sl].contiguous()

    return evaluate_blocks(
        blocks(), query_pids, gallery_pids, query_camids, gallery_camids,
        ap=ap, max_rank=max_rank, ignore=ignore, per_query=per_query,
    )
