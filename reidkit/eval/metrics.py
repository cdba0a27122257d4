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

Speed: no full sort of the gallery is done. A match's rank only needs the number of kept items
before it. When few kept items lie no farther than a query's hardest match (good features), those
few are sorted; otherwise every distance of the row goes into a histogram of distance bins and only
the items sharing a bin with a match are compared with it exactly. Queries are processed in row
slices small enough for these passes to run in cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.eval.distance import all_finite, slice_rows
from reidkit.utils.limits import MAX_RANK

AP_MODES = ("noninterp", "official")


@dataclass(frozen=True)
class RankStrategy:
    """How ``match_ranks`` counts ranks. Every strategy gives identical results; they differ in speed.

    - ``sort_fraction``: the candidates (kept items no farther than a row's hardest match) are sorted when they
      are at most about this share of a block, else counted in distance bins (``inf``: always sort; 0: bins
      whenever possible);
    - ``max_bins``: bins per row for the histogram (at most);
    - ``exact_fraction``: the share of a block that may need an exact comparison before the sort is used
      instead (many equal distances);
    - ``slice_elements``: queries are ranked in row slices of about this many distances (None:
      ``reidkit.eval.distance.SLICE_ELEMENTS``, sized for the CPU cache).
    """

    sort_fraction: float = 0.04
    max_bins: int = 16384
    exact_fraction: float = 0.25
    slice_elements: int | None = None


# by name: "auto" picks per block by cost; "sort" and "bins" force one strategy (tests, benchmarks)
STRATEGIES = {"auto": RankStrategy(), "sort": RankStrategy(sort_fraction=float("inf")),
              "bins": RankStrategy(sort_fraction=0.0, exact_fraction=1.0)}


def rank_strategy(strategy: str | RankStrategy | None) -> RankStrategy:
    """A ``RankStrategy`` from itself, one of the names of ``STRATEGIES``, or None ("auto")."""
    if strategy is None:
        return STRATEGIES["auto"]
    if isinstance(strategy, RankStrategy):
        return strategy
    if strategy not in STRATEGIES:
        raise ReidkitError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)} or a RankStrategy")
    return STRATEGIES[strategy]


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
    strategy: RankStrategy | None = None,
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
    (hard queries, whose last match sits deep in the gallery) the kept items are counted in a
    per-row histogram of distance bins and only the items sharing a bin with a match are compared
    with it (see ``_ranks_by_bins``). Both give identical ranks (tested against brute force).
    """
    B = dist.shape[0]
    dev = dist.device
    npos = torch.bincount(pos_rows, minlength=B)
    M = int(npos.max()) if B else 0
    if M == 0:
        return torch.zeros((B, 0), dtype=torch.long, device=dev), npos
    hardest = torch.full((B,), float("-inf"), dtype=dist.dtype, device=dev)
    hardest.scatter_reduce_(0, pos_rows, dist[pos_rows, pos_cols], reduce="amax")
    # the share of items no farther than the row's hardest match, estimated on every 16th column
    # (it only picks the faster strategy)
    sample = dist[:, ::16]
    strategy = strategy or STRATEGIES["auto"]
    if int(torch.count_nonzero(sample <= hardest.unsqueeze(1))) > strategy.sort_fraction * sample.numel():
        ranks = _ranks_by_bins(dist, hardest, pos_rows, pos_cols, junk_rows, junk_cols, ignore, npos, M, strategy)
        if ranks is not None:
            return ranks, npos
    cand = dist <= hardest.unsqueeze(1)
    cand[junk_rows, junk_cols] = False
    if ignore is not None:
        cand &= ~ignore
    return _ranks_by_sort(dist, cand, pos_rows, pos_cols, npos, M), npos


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


def _ranks_by_bins(dist: torch.Tensor, hardest: torch.Tensor, pos_rows: torch.Tensor, pos_cols: torch.Tensor, junk_rows: torch.Tensor,
                   junk_cols: torch.Tensor, ignore: torch.Tensor | None, npos: torch.Tensor,
                   M: int, strategy: RankStrategy) -> torch.Tensor | None:
    """Ranks from a per-row histogram of distance bins; ``None`` when too many items share a match's bin.

    A distance falls in bin ``trunc(min((d - row_min) * scale, K))`` with ``hardest`` (B,), the row's
    farthest match, mapped to bin K-1. IEEE subtraction, multiplication by a positive number, ``min``
    and truncation are each non-decreasing, so an item in a lower bin than a match is strictly nearer
    and one in a higher bin strictly farther, whatever the rounding. A match's rank is
    1 + the kept items in lower bins + the kept items of its own bin that precede it, these few
    compared exactly (distance, then gallery index).
    """
    B, G = dist.shape
    dev = dist.device
    K = max(2, min(G // 4, strategy.max_bins))
    stride = K + 1  # slot K of each row collects the items that precede no match: junk, ignored, farther
    # the bins span [row minimum, row's hardest match]; what maps beyond bin K-1 is farther than every match
    lo = dist.amin(1)
    span = hardest - lo
    scale = (K - 1) / span
    scale = torch.where(torch.isfinite(scale) & (span > 0), scale, torch.zeros_like(scale))
    key = torch.sub(dist, lo.unsqueeze(1)).mul_(scale.unsqueeze(1)).clamp_(max=K).to(torch.int32)
    key[junk_rows, junk_cols] = K
    if ignore is not None:
        key.masked_fill_(ignore, K)
    key += (torch.arange(B, dtype=torch.int32, device=dev) * stride).unsqueeze(1)
    flat = key.view(-1)
    hist = torch.bincount(flat, minlength=B * stride)
    before_slot = hist.cumsum(0) - hist  # items of the block before each (row, bin) slot
    # the matches, ordered by row, then distance, then gallery index (pairs arrive by row, index increasing)
    t = dist[pos_rows, pos_cols]
    o = torch.argsort(t, stable=True)
    o = o[torch.argsort(pos_rows[o], stable=True)]
    mr, mc, mt = pos_rows[o], pos_cols[o], t[o]
    mk = key[mr, mc].long()  # non-decreasing
    marked = torch.zeros(B * stride, dtype=torch.bool, device=dev)
    marked[mk] = True
    share = marked.index_select(0, flat).view(B, G)  # items in a bin that holds a match (matches included)
    sr, sc = share.nonzero(as_tuple=True)
    if len(sr) > strategy.exact_fraction * B * G:
        return None
    sk, sd = key[sr, sc].long(), dist[sr, sc]
    del share, flat, key
    # the matches of an item's bin form the run [jlo, jhi) of the ordered matches; those at or before
    # the item (distance, then gallery index) are a prefix of it, and the item precedes the rest
    jlo = torch.searchsorted(mk, sk, right=False)
    jhi = torch.searchsorted(mk, sk, right=True)
    P = len(mk)
    first_after = jlo.clone()
    for k in range(int((jhi - jlo).max())):
        j = jlo + k
        jc = j.clamp(max=P - 1)
        at_or_before = (mt[jc] < sd) | ((mt[jc] == sd) & (mc[jc] <= sc))
        first_after += (j < jhi) & at_or_before
    # +1 for every match in [first_after, jhi): a difference array over the ordered matches
    diff = torch.zeros(P + 1, dtype=torch.long, device=dev)
    diff.index_add_(0, first_after, torch.ones_like(first_after))
    diff.index_add_(0, jhi, torch.full_like(jhi, -1))
    in_bin = diff.cumsum(0)[:P]
    in_lower_bins = before_slot[mk] - before_slot[mr * stride]
    slot = torch.arange(P, device=dev) - (npos.cumsum(0) - npos)[mr]
    ranks = torch.zeros((B, M), dtype=torch.long, device=dev)
    ranks[mr, slot] = 1 + in_lower_bins + in_bin
    return ranks


class MetricAccumulator:
    """Running sums of AP, INP and the first-match rank histogram over query blocks.

    Built once per gallery (its pids and camids); ``add_block`` takes B×G distance blocks.
    """

    def __init__(
        self,
        gallery_pids: torch.Tensor,
        gallery_camids: torch.Tensor,
        max_rank: int = 50,
        ap_mode: str = "noninterp",
        per_query: bool = False,
        strategy: str | RankStrategy | None = None,
    ) -> None:
        if not 1 <= max_rank <= MAX_RANK:
            raise ReidkitError(f"max_rank: expected an integer between 1 and {MAX_RANK}, got {max_rank}")
        self.max_rank = max_rank
        self.ap_mode = check_ap_mode(ap_mode)
        self.per_query = per_query
        self.strategy = rank_strategy(strategy)
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
        if not all_finite(dist):
            raise ReidkitError("distances: expected finite values, found NaN or inf")
        dev = dist.device
        if self.g_order.device != dev:
            self.g_order, self.g_sorted = self.g_order.to(dev), self.g_sorted.to(dev)
            self.g_cams = self.g_cams.to(dev)
        q_pids, q_cams = q_pids.to(dev), q_cams.to(dev)
        if ignore is not None:
            ignore = ignore.to(dev)
            ignore = ignore.unsqueeze(0) if ignore.dim() == 1 else ignore
        step = slice_rows(dist, self.strategy.slice_elements)  # cache-sized on CPU
        for s in range(0, dist.shape[0], step):
            sl = slice(s, s + step)
            ign = ignore if ignore is None or ignore.shape[0] == 1 else ignore[sl]
            self._add_slice(dist[sl], q_pids[sl], q_cams[sl], ign)

    def _add_slice(self, dist: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor,
                   ign: torch.Tensor | None) -> None:
        """``add_block`` for a slice of rows (``ign``: None, (1, G) or (B, G) on the device)."""
        rows, cols = same_pid_pairs(q_pids, self.g_order, self.g_sorted)
        junk = q_cams[rows] == self.g_cams[cols]
        if ign is not None:
            pos = ~junk & ~(ign[0, cols] if ign.shape[0] == 1 else ign[rows, cols])
        else:
            pos = ~junk
        ranks, npos = match_ranks(dist, rows[pos], cols[pos], rows[junk], cols[junk], ign, self.strategy)
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
    strategy: str | RankStrategy | None = None,
) -> dict[str, Any]:
    """Metrics from a stream of ``(row_slice, B×G distance block)`` covering every query row once; ``strategy``
    chooses how ranks are counted (``RankStrategy``; the result is the same)."""
    qp, gp, qc, gc = check_labels(query_pids, gallery_pids, query_camids, gallery_camids)
    ign = check_ignore(ignore, len(qp), len(gp))
    acc = MetricAccumulator(gp, gc, max_rank=max_rank, ap_mode=ap, per_query=per_query, strategy=strategy)
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
    strategy: str | RankStrategy | None = None,
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
        ap=ap, max_rank=max_rank, ignore=ignore, per_query=per_query, strategy=strategy,
    )
