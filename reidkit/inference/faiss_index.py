"""A gallery's FAISS index: what to build (``IndexSpec``) and the index itself (``VectorIndex``).

Three kinds, every vector labelled with its gallery row's int64 *key* (``reidkit.inference.gallery``):

- ``flat``: exact, ``IndexIDMap2`` over ``IndexFlatL2`` (euclidean) or ``IndexFlatIP`` on L2-normalised
  rows (cosine): the same ranking as the exact torch search;
- ``ivfpq``: ``IndexIVFPQ`` (``nlist`` inverted lists, ``m`` sub-quantisers of ``nbits`` bits, ``nprobe``
  lists searched; the gallery scores ``refine`` × k of its candidates exactly and keeps the k best). It is
  trained once, when it is built, on the gallery's first
  ``TRAIN_POINTS_PER_CENTROID × max(nlist, 2**nbits)`` rows; vectors added later are encoded with that
  training. Training needs ``MIN_POINTS_PER_CENTROID × max(nlist, 2**nbits)`` rows (9,984 for the
  default 8 bits): fewer is a one-line error;
- ``hnsw``: ``IndexIDMap2`` over ``IndexHNSWFlat`` (``hnsw_m`` links per node, ``ef_construction``,
  ``ef_search``). A graph cannot lose nodes: a removed vector stays in it as a *tombstone*, skipped by
  every search (a FAISS ID selector), until tombstones exceed ``HNSW_REBUILD_FRACTION`` of the graph;
  then the gallery rebuilds it from its live rows. FAISS's graph can leave a node that no search reaches
  (every link to it pruned when its neighbours' lists filled: measured in BENCHMARKS.md); after each add,
  ``reconnect_unreachable`` links every such node from one of its own reachable neighbours.

Flat and IVF-PQ indexes remove vectors for real (``remove_ids``). Vectors are added in chunks of
``ADD_CHUNK`` rows, so building never holds a second copy of the whole gallery.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.errors import ReidkitError
from reidkit.eval.distance import normalized_for
from reidkit.eval.knn import faiss_metric, require_faiss
from reidkit.inference.faiss_file import FaissLayout, FaissLayoutError, check_layout

KINDS = ("flat", "ivfpq", "hnsw")
PARAMS = {"flat": (), "ivfpq": ("nlist", "m", "nbits", "nprobe", "refine"),
          "hnsw": ("hnsw_m", "ef_construction", "ef_search")}
SEARCH_PARAMS = {"nprobe": "ivfpq", "refine": "ivfpq", "ef_search": "hnsw"}
# bounds of every parameter (also what a manifest may hold)
BOUNDS = {"nlist": (1, 1 << 20), "m": (1, 65_536), "nbits": (1, 16), "nprobe": (1, 1 << 20), "refine": (1, 1024),
          "hnsw_m": (2, 512), "ef_construction": (1, 1 << 16), "ef_search": (1, 1 << 16)}
MIN_POINTS_PER_CENTROID = 39  # FAISS's k-means warns with fewer training points per centroid
TRAIN_POINTS_PER_CENTROID = 64  # training rows per centroid (coarse lists or PQ codewords, the larger)
MAX_AUTO_M = 64  # default sub-quantisers: the largest divisor of the width up to this (64 for 1,536-d)
HNSW_REBUILD_FRACTION = 0.25
ADD_CHUNK = 65_536


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index a gallery keeps, with its parameters (``None``: chosen when the index is built).

    Args:
        kind: ``flat`` (exact, the default), ``ivfpq`` or ``hnsw``.
        nlist: IVF-PQ inverted lists (default: 4·√N, at most N/39, for N vectors at training).
        m: IVF-PQ sub-quantisers, a divisor of the embedding width (default: the largest divisor up to 64).
        nbits: bits per sub-quantiser code (default 8).
        nprobe: lists searched per query (default 16; a search may ask for another number).
        refine: IVF-PQ candidates per result that the gallery scores exactly from its embeddings, keeping the k
            best (default 4; a search may ask for another number). PQ distances are coarse: this is what
            makes IVF-PQ's top results right.
        hnsw_m: HNSW links per node (default 64: on 1,536-d embeddings 32 links found far less; see
            docs/gallery.md).
        ef_construction: HNSW candidate list while building (default 40; large galleries need more: see
            docs/gallery.md).
        ef_search: HNSW candidate list while searching (default 64; a search may ask for another).

    Examples:
        >>> IndexSpec.make("ivfpq", nlist=1024).fields()
        {'nlist': 1024, 'm': None, 'nbits': 8, 'nprobe': 16, 'refine': 4}
    """

    kind: str = "flat"
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    nprobe: int = 16
    refine: int = 4
    hnsw_m: int = 64
    ef_construction: int = 40
    ef_search: int = 64

    @classmethod
    def make(cls, kind: str | IndexSpec | None = None, **params: int | None) -> IndexSpec:
        """A checked spec of ``kind`` (a name, a spec, or None for ``flat``) with ``params`` (None values are left
        at their defaults); a parameter of another kind is a one-line ``ReidkitError``."""
        base = kind if isinstance(kind, IndexSpec) else None
        name = base.kind if base is not None else (kind or "flat")
        if name not in KINDS:
            raise ReidkitError(f"index kind {name!r}: expected one of {', '.join(KINDS)}")
        given = {k: v for k, v in params.items() if v is not None}
        for key in given:
            if key not in BOUNDS:
                raise ReidkitError(f"index parameter {key!r}: expected one of {', '.join(BOUNDS)}")
            if key not in PARAMS[name]:
                owner = next(k for k, names in PARAMS.items() if key in names)
                raise ReidkitError(f"{key} is a parameter of the {owner} index, not of the {name} index")
        spec = replace(base or cls(kind=name), **given)
        for key in PARAMS[name]:
            check_param(key, getattr(spec, key), "index")
        return spec

    def fields(self) -> dict[str, int | None]:
        """This kind's parameters (what the manifest records beside ``kind``)."""
        return {k: v for k, v in asdict(self).items() if k in PARAMS[self.kind]}

    def check_width(self, dim: int) -> None:
        """A one-line ``ReidkitError`` when ``m`` does not divide the embedding width ``dim``."""
        if self.kind == "ivfpq" and self.m is not None and dim % self.m:
            raise ReidkitError(f"ivfpq: m={self.m} sub-quantisers must divide the embedding width {dim}; "
                               f"choose one of {', '.join(map(str, _divisors(dim)[-6:]))}, ...")

    def min_vectors(self) -> int:
        """Vectors needed to train this index (0 for kinds that need no training; ``nlist`` counted as 1 when
        it is chosen at training)."""
        if self.kind != "ivfpq":
            return 0
        return MIN_POINTS_PER_CENTROID * max(self.nlist or 1, 1 << self.nbits)

    def resolved(self, dim: int, n: int) -> IndexSpec:
        """The spec with ``nlist`` and ``m`` chosen for ``n`` vectors of width ``dim``; checks that ``n`` is
        enough to train."""
        self.check_width(dim)
        if self.kind != "ivfpq":
            return self
        need = self.min_vectors()
        if n < need:
            lists = f"{self.nlist} lists and " if self.nlist else ""
            raise ReidkitError(f"ivfpq: {n:,} vectors are too few to train {lists}{1 << self.nbits} codewords per "
                               f"sub-quantiser (at least {MIN_POINTS_PER_CENTROID} per centroid: {need:,}); use "
                               "the exact index (no --approx) or hnsw until the gallery is larger, or fewer "
                               "--nlist/--nbits")
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))
        m = self.m or max(x for x in _divisors(dim) if x <= MAX_AUTO_M)
        return replace(self, nlist=nlist, m=m)

    def training_rows(self, n: int) -> int:
        """How many of the first rows train a resolved IVF-PQ spec."""
        return min(n, TRAIN_POINTS_PER_CENTROID * max(self.nlist or 1, 1 << self.nbits))


def check_param(key: str, value: Any, where: str) -> int | None:
    """``value`` if it is an integer within ``BOUNDS[key]`` (or None), else a one-line ``ReidkitError``."""
    low, high = BOUNDS[key]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
        raise ReidkitError(f"{where}: {key} must be an integer between {low} and {high}, got {value!r}"[:200])
    return value


def check_search_params(kind: str, nprobe: int | None = None, ef_search: int | None = None,
                        refine: int | None = None) -> None:
    """A one-line ``ReidkitError`` for a search parameter of another kind of index, or out of bounds."""
    for key, value in (("nprobe", nprobe), ("ef_search", ef_search), ("refine", refine)):
        if value is None:
            continue
        if SEARCH_PARAMS[key] != kind:
            raise ReidkitError(f"{key} applies to an {SEARCH_PARAMS[key]} index; this index is {kind}")
        check_param(key, value, "search")


def _divisors(n: int) -> list[int]:
    return [x for x in range(1, n + 1) if n % x == 0]


def _faiss() -> Any:
    """The ``faiss`` module, its OpenMP threads set to torch's (``reidkit.utils.threads``: on a busy machine more
    threads than free cores spin at every barrier; FAISS's IVF-PQ training ran 5x slower so)."""
    import faiss

    if faiss.omp_get_max_threads() != torch.get_num_threads():
        faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


def _f32(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class VectorIndex:
    """A built FAISS index of a gallery: its resolved ``spec``, width ``dim``, ``metric``, the vectors it
    holds labelled by key, and (HNSW) the keys removed but still in the graph (``dead``).

    Build with ``VectorIndex.build``, read a file with ``VectorIndex.read``."""

    def __init__(self, spec: IndexSpec, dim: int, metric: str, index: Any, trained_on: int | None = None,
                 dead: np.ndarray | None = None) -> None:
        self.spec, self.dim, self.metric, self.index = spec, dim, metric, index
        self.trained_on = trained_on
        self.dead = np.zeros(0, dtype=np.int64) if dead is None else np.unique(dead.astype(np.int64))

    # ---------------------------------------------------------------------------------------------- build
    @classmethod
    def build(cls, spec: IndexSpec, embeddings: torch.Tensor, keys: np.ndarray, metric: str) -> VectorIndex:
        """A new index of ``spec`` over ``embeddings`` (N×D, as the gallery holds them) labelled ``keys``;
        IVF-PQ is trained on the first rows (see the module docstring)."""
        require_faiss(f"a {spec.kind} index")
        faiss = _faiss()
        n, dim = int(embeddings.shape[0]), int(embeddings.shape[1])
        spec = spec.resolved(dim, n)
        fm = faiss_metric(metric)
        trained_on = None
        if spec.kind == "flat":
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim))
        elif spec.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, spec.hnsw_m, fm)
            graph.hnsw.efConstruction = spec.ef_construction
            graph.hnsw.efSearch = spec.ef_search
            index = faiss.IndexIDMap2(graph)
        else:
            quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.m, spec.nbits, fm)
            trained_on = spec.training_rows(n)
            index.train(_f32(normalized_for(embeddings[:trained_on].float(), metric)))
            index.nprobe = spec.nprobe
        built = cls(spec, dim, metric, index, trained_on)
        built.add(embeddings, keys)
        return built

    def add(self, embeddings: torch.Tensor, keys: np.ndarray) -> None:
        """Add rows (N×D, as the gallery holds them) labelled ``keys`` (no retraining)."""
        _faiss()
        for s in range(0, int(embeddings.shape[0]), ADD_CHUNK):
            rows = _f32(normalized_for(embeddings[s : s + ADD_CHUNK].float(), self.metric))
            self.index.add_with_ids(rows, np.ascontiguousarray(keys[s : s + ADD_CHUNK], dtype=np.int64))
        if self.spec.kind == "hnsw" and len(keys):
            reconnect_unreachable(_faiss().downcast_index(self.index.index).hnsw)

    def remove(self, keys: np.ndarray) -> None:
        """Remove the vectors labelled ``keys``: for real (flat, IVF-PQ), as tombstones (HNSW)."""
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if not len(keys):
            return
        _faiss()
        if self.spec.kind == "hnsw":
            self.dead = np.union1d(self.dead, keys)
        else:
            self.index.remove_ids(keys)

    @property
    def ntotal(self) -> int:
        """Vectors in the FAISS index (tombstones included)."""
        return int(self.index.ntotal)

    @property
    def needs_rebuild(self) -> bool:
        """True when tombstones exceed ``HNSW_REBUILD_FRACTION`` of an HNSW graph."""
        return len(self.dead) > HNSW_REBUILD_FRACTION * max(self.ntotal, 1)

    # --------------------------------------------------------------------------------------------- search
    def search(self, query: torch.Tensor, k: int, nprobe: int | None = None, ef_search: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's scores (Q×k: squared L2, or inner products for cosine) and the keys found (-1 where fewer
        than k were found), skipping tombstones; ``nprobe``/``ef_search`` override the spec's for this call."""
        faiss = _faiss()

        q = _f32(normalized_for(query.float(), self.metric))
        params: Any = None
        if self.spec.kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.spec.nprobe, self.spec.nlist or 1))
        elif self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=ef_search or self.spec.ef_search)
            if len(self.dead):
                batch = faiss.IDSelectorBatch(self.dead)
                skip = faiss.IDSelectorNot(batch)  # both stay referenced here until the search returns
                params.sel = skip
        dist, keys = self.index.search(q, k, params=params)
        return dist, keys

    # ----------------------------------------------------------------------------------------------- disk
    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` (a temporary file the caller renames; see ``Gallery.save``)."""
        import faiss

        faiss.write_index(self.index, os.fspath(path))

    @classmethod
    def read(cls, path: Path, spec: IndexSpec, dim: int, metric: str, live_keys: np.ndarray,
             built: dict[str, Any]) -> VectorIndex:
        """The index in ``path``, its layout checked before FAISS reads it (``check_layout``) and checked against
        the gallery: kind, width, metric, parameters (``built``: what the manifest says was built), and the
        keys (the live ones, plus tombstones in an HNSW graph). Raises ``ValueError`` saying what is wrong."""
        faiss = _faiss()
        with open(path, "rb") as fh:  # one open file: what FAISS reads is what was checked
            layout = _mapped_layout(fh)
            resolved = _check_against(layout, spec, dim, metric, built)
            held = np.sort(layout.ids)
            if len(held) and np.any(held[1:] == held[:-1]):
                raise ValueError("a key is held twice")
            live = np.sort(np.asarray(live_keys, dtype=np.int64))
            missing = np.setdiff1d(live, held, assume_unique=True)
            if len(missing):
                raise ValueError(f"{len(missing)} of the gallery's rows are not in it")
            dead = np.setdiff1d(held, live, assume_unique=True)
            if len(dead) and spec.kind != "hnsw":
                raise ValueError(f"it holds {len(dead)} vectors the gallery does not")
            del layout, held
            fh.seek(0)
            index = faiss.read_index(faiss.PyCallbackIOReader(fh.read, 1 << 20))
        return cls(resolved, dim, metric, index, built.get("trained_on"), dead)

    def built(self) -> dict[str, Any]:
        """What the manifest records of the built index beside the spec (the resolved IVF-PQ ``nlist`` and
        ``m``, and ``trained_on``)."""
        if self.spec.kind != "ivfpq":
            return {}
        return {"nlist": self.spec.nlist, "m": self.spec.m, "trained_on": self.trained_on}


def _reached(level0: np.ndarray, entry: int) -> np.ndarray:
    """Which nodes a walk along level-0 links (rows of ``level0``, -1: no link) reaches from ``entry``."""
    seen = np.zeros(len(level0), dtype=bool)
    seen[entry] = True
    frontier = np.array([entry])
    while len(frontier):
        nxt = level0[frontier].ravel()
        nxt = np.unique(nxt[nxt >= 0])
        frontier = nxt[~seen[nxt]]
        seen[frontier] = True
    return seen


def reconnect_unreachable(hnsw: Any, rounds: int = 8) -> int:
    """Give every node of a FAISS HNSW graph (``index.hnsw``) that no search reaches — no path of level-0 links
    from the entry point — a level-0 link from one of its own out-neighbours that is reached: a free slot of
    that neighbour's list, else the last link whose target keeps another incoming link. Returns the links
    added. Lists stay within their size; a search then finds every node at a wide enough ``ef_search``."""
    import faiss

    n = int(hnsw.levels.size())
    if n < 2:
        return 0
    nb = faiss.vector_to_array(hnsw.neighbors)
    off = faiss.vector_to_array(hnsw.offsets).astype(np.int64)[:n]
    width = int(hnsw.nb_neighbors(0))
    level0 = nb[off[:, None] + np.arange(width)]  # a copy: n × width, -1 = empty (a list ends at its first -1)
    linked = 0
    for _ in range(rounds):
        seen = _reached(level0, int(hnsw.entry_point))
        orphans = np.flatnonzero(~seen)
        if not len(orphans):
            break
        indegree = np.bincount(level0[level0 >= 0], minlength=n)
        for u in orphans:
            outs = level0[u][level0[u] >= 0]
            hosts = outs[seen[outs]]
            if not len(hosts):
                continue  # linked through another orphan in a later round
            v = int(hosts[0])  # the nearest such: FAISS keeps a node's own links nearest first
            row = level0[v]
            free = np.flatnonzero(row < 0)
            spare = free[:1] if len(free) else [s for s in range(width - 1, -1, -1) if indegree[row[s]] > 1][:1]
            if not len(spare):
                continue
            slot = int(spare[0])
            if row[slot] >= 0:
                indegree[row[slot]] -= 1
            row[slot], nb[off[v] + slot] = u, u
            indegree[u] += 1
            seen[u] = True
            linked += 1
    if linked:
        faiss.copy_array_to_vector(nb, hnsw.neighbors)
    return linked


def _mapped_layout(fh: Any) -> FaissLayout:
    """``check_layout`` of an open file, through a read-only memory map (pages, not a copy of the file)."""
    if not os.fstat(fh.fileno()).st_size:
        raise FaissLayoutError("an empty file")
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        try:
            return check_layout(mapped)
        except Exception as exc:  # any fault in the walk is a refusal
            why = str(exc) or type(exc).__name__
        # raised here, outside the handler: its traceback no longer holds views of the map, which can close
        raise FaissLayoutError(why)


def _check_against(layout: FaissLayout, spec: IndexSpec, dim: int, metric: str, built: dict[str, Any]
                   ) -> IndexSpec:
    """The resolved spec of a file whose layout matches the gallery's ``spec``, width and metric."""
    want_metric = 0 if metric == "cosine" else 1
    if layout.kind != spec.kind or layout.d != dim or layout.metric != want_metric:
        raise ValueError(f"a {layout.kind} index of width {layout.d}, metric {layout.metric}; the gallery is "
                         f"{spec.kind}, width {dim}, metric {metric}")
    if spec.kind == "hnsw":
        if layout.params["hnsw_m"] != spec.hnsw_m:
            raise ValueError(f"hnsw_m {layout.params['hnsw_m']}, the manifest says {spec.hnsw_m}")
        return spec
    if spec.kind == "ivfpq":
        for key in ("nlist", "m"):
            want = getattr(spec, key) or built.get(key)
            if layout.params[key] != want:
                raise ValueError(f"{key} {layout.params[key]}, the manifest says {want}")
        if layout.params["nbits"] != spec.nbits:
            raise ValueError(f"nbits {layout.params['nbits']}, the manifest says {spec.nbits}")
        return replace(spec, nlist=layout.params["nlist"], m=layout.params["m"])
    return spec
