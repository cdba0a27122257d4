"""A gallery's FAISS file read as untrusted input: its layout checked before FAISS reads it.

FAISS's own reader trusts a file's sizes: a crafted vector length makes it allocate (and zero) that much
memory before it finds the file too short, and a crafted HNSW graph makes searches read outside their
arrays. ``check_layout`` walks the bytes of the three layouts a gallery writes, without allocating
anything a size field asks for:

- ``IxM2`` (``IndexIDMap2``) over ``IxF2``/``IxFI`` (``IndexFlatL2``/``IndexFlatIP``): the exact index;
- ``IwPQ`` (``IndexIVFPQ``, a flat coarse quantizer, no direct map, array inverted lists);
- ``IxM2`` over ``IHNf`` (``IndexHNSWFlat``) over a flat storage.

Every vector must fit in the bytes that remain, the file must end where its layout does, the parts must
agree with one another (dimensions, counts, list sizes, code sizes) and an HNSW graph must only point at
nodes that exist. Anything else, including a layout another FAISS version might write, is a
``FaissLayoutError`` (the gallery then rebuilds the index from its embeddings: ``reidkit.inference.gallery``).

Examples:
    >>> import faiss, numpy as np  # doctest: +SKIP
    >>> index = faiss.IndexIDMap2(faiss.IndexFlatL2(4))  # doctest: +SKIP
    >>> index.add_with_ids(np.eye(4, dtype="float32"), np.arange(4))  # doctest: +SKIP
    >>> check_layout(faiss.serialize_index(index).tobytes()).ids  # doctest: +SKIP
    array([0, 1, 2, 3])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

METRIC_IP, METRIC_L2 = 0, 1  # faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2
MAX_HNSW_LEVELS = 64  # faiss draws levels with probability exp(-level / ln M): 64 is never reached
MAX_HNSW_LINKS = 512  # links per node (reidkit.inference.faiss_index.BOUNDS["hnsw_m"])
MAX_HNSW_EF = 1 << 16  # candidate lists (BOUNDS["ef_construction"], BOUNDS["ef_search"])


class FaissLayoutError(ValueError):
    """A FAISS file that is not one of the layouts a gallery writes, or whose parts disagree."""


@dataclass
class FaissLayout:
    """What ``check_layout`` found: the kind (``flat``, ``ivfpq``, ``hnsw``), width ``d``, vectors held
    ``ntotal``, ``metric`` (0 inner product, 1 L2), the int64 labels of the vectors (``ids``, a copy) and the
    kind's parameters (``nlist``, ``m``, ``nbits``, ``nprobe``; ``hnsw_m``, ``ef_construction``,
    ``ef_search``)."""

    kind: str
    d: int
    ntotal: int
    metric: int
    ids: np.ndarray
    params: dict[str, int] = field(default_factory=dict)


class _Bytes:
    """A cursor over the file's bytes; every read is checked against what remains."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > len(self.data) - self.pos:
            raise FaissLayoutError(f"{what}: {n} bytes announced, {len(self.data) - self.pos} left in the file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str) -> int | float:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def fourcc(self) -> str:
        return bytes(self.take(4, "type code")).decode("latin-1")

    def vector(self, dtype: str, what: str) -> np.ndarray:
        """A FAISS vector: its length (uint64, in elements), then its elements."""
        n = int(self.scalar("Q", what))
        item = np.dtype(dtype).itemsize
        if n > (len(self.data) - self.pos) // item:
            raise FaissLayoutError(f"{what}: {n} elements announced, the file holds fewer")
        return np.frombuffer(self.take(n * item, what), dtype=dtype)


def _header(b: _Bytes, where: str) -> tuple[int, int, int, int]:
    """An index header: (d, ntotal, is_trained, metric)."""
    d = int(b.scalar("i", where))
    ntotal = int(b.scalar("q", where))
    b.take(16, where)  # two unused fields
    trained = int(b.scalar("B", where))
    metric = int(b.scalar("i", where))
    if metric not in (METRIC_IP, METRIC_L2):
        raise FaissLayoutError(f"{where}: metric {metric}; expected inner product (0) or L2 (1)")
    if d < 1 or ntotal < 0 or trained not in (0, 1):
        raise FaissLayoutError(f"{where}: dimension {d}, {ntotal} vectors, trained flag {trained}")
    return d, ntotal, trained, metric


def _flat(b: _Bytes, where: str) -> tuple[int, int, int]:
    """``IxF2``/``IxFI``: (d, ntotal, metric), its vectors skipped."""
    code = b.fourcc()
    if code not in ("IxF2", "IxFI"):
        raise FaissLayoutError(f"{where}: index type {code!r}; expected a flat index (IxF2 or IxFI)")
    d, ntotal, _, metric = _header(b, where)
    if (code == "IxFI") != (metric == METRIC_IP):
        raise FaissLayoutError(f"{where}: {code} with metric {metric}")
    units = int(b.scalar("Q", where))  # the vectors' bytes / 4
    if units != d * ntotal:
        raise FaissLayoutError(f"{where}: {units} floats for {ntotal} vectors of width {d}")
    b.take(4 * units, where)
    return d, ntotal, metric


def _hnsw_graph(b: _Bytes, ntotal: int) -> dict[str, int]:
    """An HNSW graph, checked to point only at nodes 0..ntotal-1; returns its parameters."""
    probas = b.vector("<f8", "hnsw levels' probabilities")
    cum = b.vector("<i4", "hnsw neighbours per level").astype(np.int64)
    levels = b.vector("<i4", "hnsw node levels").astype(np.int64)
    offsets = b.vector("<u8", "hnsw offsets")
    neighbors = b.vector("<i4", "hnsw neighbours")
    entry, max_level, ef_construction, ef_search, _upper_beam = (int(b.scalar("i", "hnsw")) for _ in range(5))
    links = int(cum[1]) // 2 if len(cum) > 1 else 0  # M: 2·M neighbours on level 0, M on each level above
    if not 1 <= len(probas) <= MAX_HNSW_LEVELS or len(cum) != len(probas) + 1 or cum[0] != 0 \
            or not 2 <= links <= MAX_HNSW_LINKS or cum[1] != 2 * links or np.any(np.diff(cum[1:]) != links):
        raise FaissLayoutError("hnsw: inconsistent level tables")
    if len(levels) != ntotal or len(offsets) != ntotal + 1:
        raise FaissLayoutError(f"hnsw: {len(levels)} levels and {len(offsets)} offsets for {ntotal} nodes")
    if ntotal and (levels.min() < 1 or levels.max() > len(probas)):
        raise FaissLayoutError("hnsw: a node's level lies outside the level table")
    if offsets[0] != 0 or not np.array_equal(np.diff(offsets.astype(np.int64)), cum[levels]) \
            or int(offsets[-1]) != len(neighbors):
        raise FaissLayoutError("hnsw: offsets disagree with the nodes' levels")
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= ntotal):
        raise FaissLayoutError("hnsw: a neighbour outside the graph")
    top = int(levels.max()) - 1 if ntotal else -1
    if max_level != top or not (-1 <= entry < ntotal) or (ntotal > 0) != (entry >= 0) \
            or (ntotal and levels[entry] - 1 != max_level):
        raise FaissLayoutError("hnsw: entry point or top level outside the graph")
    if not (1 <= ef_construction <= MAX_HNSW_EF and 1 <= ef_search <= MAX_HNSW_EF):
        raise FaissLayoutError(f"hnsw: search depths {ef_construction}, {ef_search}; expected 1 to {MAX_HNSW_EF}")
    return {"hnsw_m": links, "ef_construction": ef_construction, "ef_search": ef_search}


def _id_map(b: _Bytes) -> FaissLayout:
    """``IxM2`` over a flat index or an HNSW graph with a flat storage."""
    d, ntotal, _, metric = _header(b, "IndexIDMap2")
    inner = bytes(b.data[b.pos : b.pos + 4])
    params: dict[str, int] = {}
    if inner == b"IHNf":
        b.take(4, "type code")
        hd, hn, _, hm = _header(b, "IndexHNSWFlat")
        params = _hnsw_graph(b, hn)
        sd, sn, sm = _flat(b, "hnsw storage")
        if (sd, sn, sm) != (hd, hn, hm):
            raise FaissLayoutError("hnsw: its storage disagrees with the graph (width, count or metric)")
        kind, sub = "hnsw", (hd, hn, hm)
    else:
        kind, sub = "flat", _flat(b, "IndexIDMap2 storage")
    if sub != (d, ntotal, metric):
        raise FaissLayoutError(f"IndexIDMap2: holds {ntotal} vectors of width {d}, its index {sub[1]} of width {sub[0]}")
    ids = b.vector("<i8", "ids")
    if len(ids) != ntotal:
        raise FaissLayoutError(f"IndexIDMap2: {len(ids)} ids for {ntotal} vectors")
    return FaissLayout(kind, d, ntotal, metric, ids.astype(np.int64), params)  # a copy: the bytes may go


def _ivfpq(b: _Bytes) -> FaissLayout:
    """``IwPQ`` with a flat coarse quantizer, no direct map and array inverted lists."""
    d, ntotal, trained, metric = _header(b, "IndexIVFPQ")
    nlist, nprobe = int(b.scalar("Q", "nlist")), int(b.scalar("Q", "nprobe"))
    qd, qn, qm = _flat(b, "coarse quantizer")
    if (qd, qn, qm) != (d, nlist, metric) or trained != 1 or nlist < 1 or nprobe < 1:
        raise FaissLayoutError(f"IndexIVFPQ: coarse quantizer of {qn} centroids (width {qd}) for {nlist} lists "
                               f"of width {d}, trained flag {trained}")
    direct_map = int(b.scalar("B", "direct map"))
    if direct_map != 0 or len(b.vector("<i8", "direct map")):
        raise FaissLayoutError("IndexIVFPQ: a direct map (a gallery writes none)")
    b.take(1, "by_residual")
    code_size = int(b.scalar("Q", "code size"))
    pq_d, m, nbits = (int(b.scalar("Q", "product quantizer")) for _ in range(3))
    if pq_d != d or not 1 <= m <= d or d % m or not 1 <= nbits <= 16 or code_size != (m * nbits + 7) // 8:
        raise FaissLayoutError(f"IndexIVFPQ: product quantizer of width {pq_d}, {m} parts of {nbits} bits, "
                               f"code size {code_size}")
    if len(b.vector("<f4", "product quantizer centroids")) != d * (1 << nbits):
        raise FaissLayoutError("IndexIVFPQ: product quantizer centroids of the wrong size")
    if b.fourcc() != "ilar" or int(b.scalar("Q", "lists")) != nlist or int(b.scalar("Q", "lists")) != code_size:
        raise FaissLayoutError("IndexIVFPQ: inverted lists of another kind, count or code size")
    layout = b.fourcc()
    sizes = b.vector("<u8", "list sizes").astype(np.int64)
    if layout == "full" and len(sizes) == nlist:
        counts = sizes
    elif layout == "sprs" and len(sizes) % 2 == 0:
        lists, counts = sizes[0::2], sizes[1::2]
        if len(lists) and (lists.min() < 0 or lists.max() >= nlist or np.any(np.diff(lists) <= 0)):
            raise FaissLayoutError("IndexIVFPQ: a list number outside the lists")
    else:
        raise FaissLayoutError(f"IndexIVFPQ: list sizes in layout {layout!r} of length {len(sizes)}")
    if np.any(counts < 0) or int(counts.sum()) != ntotal:
        raise FaissLayoutError(f"IndexIVFPQ: lists hold {int(counts.sum())} vectors, the index {ntotal}")
    ids = []
    for n in counts[counts > 0].tolist():
        b.take(n * code_size, "list codes")
        ids.append(np.frombuffer(b.take(8 * n, "list ids"), dtype="<i8"))
    all_ids = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)  # a copy
    return FaissLayout("ivfpq", d, ntotal, metric, all_ids,
                       {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe})


def check_layout(data: bytes | memoryview) -> FaissLayout:
    """Walk a FAISS file's bytes (see the module docstring); raise ``FaissLayoutError`` naming the first
    part that is not as a gallery writes it."""
    b = _Bytes(data)
    code = b.fourcc()
    if code == "IxM2":
        found = _id_map(b)
    elif code == "IwPQ":
        found = _ivfpq(b)
    else:
        raise FaissLayoutError(f"index type {code!r}; expected IxM2 (flat, HNSW) or IwPQ (IVF-PQ)")
    if b.pos != len(b.data):
        raise FaissLayoutError(f"{len(b.data) - b.pos} bytes after the end of the index")
    return found
