"""A searchable gallery of embeddings, in memory and on disk (the ``reidkit index`` / ``search`` commands).

``Gallery`` holds N×D float32 embeddings with one id, one JSON metadata dict and one *key* per row (an int64
that labels the row's vector in the FAISS index; never reused within an index), and a FAISS index over them
(``reidkit.inference.faiss_index``): exact flat by default, or approximate (``index="ivfpq"`` or
``"hnsw"``). ``search`` returns the k nearest rows per query: through the FAISS index when FAISS is
installed, else by an exact chunked torch search (``reidkit.eval.knn.k_nearest``); optionally re-ranked with
k-reciprocal re-ranking (exact, over all embeddings). The exact index ranks and measures as the torch search
does; an approximate one picks the k candidates, whose distances are then computed exactly from the
embeddings (and a query for which it finds fewer than k is searched exactly).

Entries are added (``add``), removed (``remove``: by id, by pid, or by image path) and replaced
(``update``: by id). An entry's *id* is what ``add`` was given: ``reidkit index`` gives each image its
absolute path; the metadata holds ``path``, ``pid`` and ``camid``.

On disk a gallery is a folder:
    INDEX_DIR/manifest.json                    metric, dimension, ids, metadata, model description, the index
                                               kind with its parameters, the generation and its files (each
                                               segment with its rows and SHA-256 digest)
    INDEX_DIR/embeddings-<hex>.safetensors     segments of the embeddings and their keys, in row order: the
                                               source of truth
    INDEX_DIR/faiss-<generation>.index         the approximate FAISS index of the generation (when FAISS is
                                               installed; the exact index is the embeddings, it has no file)
    INDEX_DIR/model.safetensors (or model.onnx) the model that made the embeddings (``reidkit index build``)
    INDEX_DIR/.reidkit-index.lock              taken by writers (``index_lock``)

A segment file is never changed once written: a save writes only the segments that are new or changed since
the gallery was read (rows added, rows removed from them, or small ones merged, so a gallery keeps few
files; none holds more than ``SEGMENT_ROWS`` rows), then the FAISS file, then replaces ``manifest.json``
atomically, then removes the files the old generation named and the new one does not. An ``index add``
to a large gallery thus writes its new rows, the manifest and an approximate index's file, not the whole
gallery. A reader always sees a complete, consistent index: a SIGKILL at any moment leaves the old
generation or the new one. ``Gallery.load`` reads the manifest again when a writer removed the files it
named in between. Writers take the index's lock;
``add_to_index``, ``remove_from_index``, ``update_index`` and ``rebuild_index`` re-read the index under it
and change only what they were asked to, so concurrent writers all land (POSIX systems; elsewhere writes
are not serialised), and remove the files a killed writer left behind (never named by a manifest).

The embeddings are the source of truth: the exact index is always rebuilt from them when the gallery is
read (cheaper than reading and checking its file, which is kept for other FAISS tools); an approximate
index is read from its file, and a missing or damaged one is rebuilt from the embeddings with one warning
(IVF-PQ is then retrained) and stored by the next write.

Each segment's SHA-256 digest is in the manifest (format 4) and is checked when the segment is read: a
segment whose bytes changed since it was written (one flipped bit) is a one-line ``GalleryIndexError`` naming
it, never a different ranking. A manifest of format 3 or older has no digests: its segments are read
unchecked (and get digests when the next write rewrites the manifest).

The index is untrusted input: its manifest is checked (types, counts, the model description, sizes, index
parameters), its FAISS file's layout is checked before FAISS reads it (``reidkit.inference.faiss_file``),
and it names only files inside the folder: the generation files are plain names, never symbolic links; the
model is read only from the folder's own ``model.safetensors``/``model.onnx`` (``index_model_file``), never
from the path the manifest records; entry paths are labels, and ``readable_entry`` lets a command read an
entry's image only inside the index folder or a folder the user names.

Examples:
    >>> import torch
    >>> g = Gallery(metric="euclidean")
    >>> g.add(torch.eye(3), ids=["a", "b", "c"])
    ['a', 'b', 'c']
    >>> g.search(torch.tensor([[0.9, 0.1, 0.0]]), k=1)[0][0].id
    'a'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from reidkit.errors import CheckpointError, OutputError, ReidkitError
from reidkit.eval import knn
from reidkit.eval.distance import candidate_distances, check_metric
from reidkit.eval.knn import from_faiss_distances, k_nearest
from reidkit.inference.faiss_index import (
    BOUNDS,
    IndexSpec,
    VectorIndex,
    check_param,
    check_search_params,
)
from reidkit.inference.features import check_finite, load_tensors, save_tensors
from reidkit.inference.modelfile import check_model_meta
from reidkit.utils.atomic import atomic_path, atomic_write_json, output_folder
from reidkit.utils.limits import MAX_EMBEDDING_DIM, MAX_MANIFEST_BYTES
from reidkit.utils.paths import inside, within
from reidkit.utils.textfile import read_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 4  # 2: keys in the embeddings file, the FAISS index in the manifest; 3: embedding segments;
#                    4: a SHA-256 digest per segment
DIGEST = "sha256"  # of each segment file (docs/gallery.md, "Segment digests": why SHA-256, what it costs)
_DIGEST_HEX = re.compile(r"[0-9a-f]{64}")
SEGMENT_ROWS = 1 << 16  # the most rows a segment file holds (400 MB of 1,536-d float32)
LOCK = ".reidkit-index.lock"
MODEL_FILES = ("model.safetensors", "model.onnx")  # the index's own model, in the order they are looked for
LOCK_WAIT_SECONDS = 120.0  # how long a writer waits for another one (a save takes seconds)
MAX_KEY = 1 << 62  # keys stay far from int64 overflow however many rows are added
_LOAD_ATTEMPTS = 20  # manifest re-reads when writers keep replacing the embeddings file under a reader
T = TypeVar("T")


class GalleryIndexError(ReidkitError):
    """A gallery index folder that is missing, damaged or made by another model."""


@dataclass(frozen=True)
class _Segment:
    """``rows`` consecutive gallery rows, stored in the segment ``file`` (None: not written yet) whose bytes have
    the SHA-256 ``digest`` (hex)."""

    rows: int
    file: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class SearchResult:
    """One hit: the gallery row's ``id``, its ``distance`` to the query, its ``metadata`` and row ``index``."""

    id: Any
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)
    index: int = -1


def _as_matrix(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().to("cpu")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ReidkitError(f"{what}: expected an (N, D) matrix of embeddings, got shape {tuple(t.shape)}")
    return t.float().contiguous()


class Gallery:
    """Embeddings with ids and metadata, searchable by k nearest neighbours through a FAISS index (exact by
    default), saved as safetensors + a FAISS file + JSON.

    Args:
        embedding_dim: width D of the embeddings (taken from the first ``add`` when None).
        metric: ``"euclidean"`` or ``"cosine"``.
        model_meta: description of the model that made the embeddings (name, options, input size); an index
            refuses queries from a different model (see ``check_model``).
        use_faiss: None = FAISS when installed, True/False to force (False: exact torch search, no FAISS file;
            only for the exact index).
        index: the FAISS index to keep: ``"flat"`` (exact, the default), ``"ivfpq"``, ``"hnsw"``, or an
            ``IndexSpec`` with parameters. An approximate one needs FAISS.

    Examples:
        >>> g = Gallery(embedding_dim=4)
        >>> _ = g.add(torch.randn(10, 4), metadata=[{"path": f"{i}.jpg"} for i in range(10)])
        >>> len(g)
        10
        >>> hits = g.search(torch.randn(4), k=3)[0]  # one list of 3 SearchResult per query
        >>> big = Gallery(index=IndexSpec.make("hnsw", ef_search=128))  # doctest: +SKIP
    """

    def __init__(self, embedding_dim: int | None = None, metric: str = "euclidean",
                 model_meta: dict[str, Any] | None = None, use_faiss: bool | None = None,
                 index: str | IndexSpec | None = None) -> None:
        check_metric(metric)
        self.metric = metric
        self.embedding_dim = embedding_dim
        self.model_meta = model_meta
        self.use_faiss = use_faiss
        self.index_spec = IndexSpec.make(index)
        if self.index_spec.kind != "flat":
            self._require_faiss(f"a {self.index_spec.kind} index")
        self._chunks: list[torch.Tensor] = []
        self._emb: torch.Tensor | None = None
        self._key_chunks: list[np.ndarray] = []
        self._keys: np.ndarray | None = None
        self._segments: list[_Segment] = []  # the rows in order, by the segment file that holds them
        self._next_key = 0
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # (argsort of keys, sorted keys)
        self._vindex: VectorIndex | None = None  # the built FAISS index (None: built when first needed)
        self._built_spec: IndexSpec | None = None  # the resolved spec of the last index built or read
        self._stored_trained_on: int | None = None  # what the manifest read said, until an index is attached
        self._version = 0  # bumped by every change of content or index
        self._finite_version = -1  # the version whose embeddings were last checked for NaN/inf
        self.ids: list[Any] = []
        self.metadata: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Gallery({len(self)} × {self.embedding_dim}, metric={self.metric!r}, index={self.index_spec.kind!r})"

    @property
    def embeddings(self) -> torch.Tensor:
        """All embeddings as one (N, D) float32 tensor."""
        if self._emb is None or self._emb.shape[0] != len(self):
            d = self.embedding_dim or 0
            self._emb = torch.cat(self._chunks) if self._chunks else torch.zeros(0, d)
            self._chunks = [self._emb] if len(self) else []
        return self._emb

    @property
    def keys(self) -> np.ndarray:
        """Each row's key (int64): the label of its vector in the FAISS index."""
        if self._keys is None or len(self._keys) != len(self):
            self._keys = np.concatenate(self._key_chunks) if self._key_chunks else np.zeros(0, dtype=np.int64)
            self._key_chunks = [self._keys] if len(self) else []
        return self._keys

    def _changed(self) -> None:
        self._emb, self._keys, self._lookup = None, None, None
        self._version += 1

    def _checked_rows(self, embeddings: Any, ids: Sequence[Any] | None, metadata: Sequence[dict[str, Any]] | None,
                      what: str) -> tuple[torch.Tensor, list[Any], list[dict[str, Any]]]:
        emb = _as_matrix(embeddings, what)
        check_finite(emb, what)
        if self.embedding_dim is not None and emb.shape[1] != self.embedding_dim:
            raise ReidkitError(f"{what}: embeddings have width {emb.shape[1]}, the gallery holds "
                               f"{self.embedding_dim}-d embeddings (same model expected)")
        self.index_spec.check_width(int(emb.shape[1]))
        n = int(emb.shape[0])
        new_ids = list(range(len(self), len(self) + n)) if ids is None else list(ids)
        if len(new_ids) != n:
            raise ReidkitError(f"{what}: {len(new_ids)} ids for {n} embeddings")
        meta = [{} for _ in range(n)] if metadata is None else [dict(m or {}) for m in metadata]
        if len(meta) != n:
            raise ReidkitError(f"{what}: {len(meta)} metadata entries for {n} embeddings")
        return emb, new_ids, meta

    def _append(self, emb: torch.Tensor, ids: list[Any], meta: list[dict[str, Any]]) -> None:
        n = int(emb.shape[0])
        if self.embedding_dim is None:
            self.embedding_dim = int(emb.shape[1])
        keys = np.arange(self._next_key, self._next_key + n, dtype=np.int64)
        if self._vindex is not None:
            self._vindex.add(emb, keys)  # only the new rows: no retraining, no rebuild
        self._next_key += n
        self._chunks.append(emb)
        self._key_chunks.append(keys)
        self._segments.append(_Segment(n))
        self.ids.extend(ids)
        self.metadata.extend(meta)
        self._changed()

    def add(self, embeddings: Any, ids: Sequence[Any] | None = None,
            metadata: Sequence[dict[str, Any]] | None = None) -> list[Any]:
        """Append embeddings (N×D tensor/array, or one D vector); returns their ids (default 0, 1, 2, ...). A
        built FAISS index gets only the new vectors.

        Examples:
            >>> g = Gallery()
            >>> g.add(torch.randn(2, 3), ids=["x", "y"], metadata=[{"cam": 1}, {"cam": 2}])
            ['x', 'y']
        """
        emb, new_ids, meta = self._checked_rows(embeddings, ids, metadata, "Gallery.add")
        self._append(emb, new_ids, meta)
        return new_ids

    def matching(self, ids: Iterable[Any] = (), pids: Iterable[int] = (), paths: Iterable[str] = ()) -> np.ndarray:
        """A boolean mask of the rows whose id is one of ``ids`` (ids compare with their type: 1, 1.0, "1" and
        True are four ids), whose metadata ``pid`` is one of ``pids``, or whose id is an absolute path at or
        under one of ``paths`` (absolute; how ``reidkit index`` records images)."""
        want = {_typed(x) for x in ids}
        want_pids = {int(p) for p in pids}
        roots = [os.path.normpath(os.fspath(p)) for p in paths]
        mask = np.zeros(len(self), dtype=bool)
        for row, (x, md) in enumerate(zip(self.ids, self.metadata, strict=True)):
            pid = md.get("pid")
            mask[row] = (_typed(x) in want
                         or (isinstance(pid, int) and not isinstance(pid, bool) and pid in want_pids)
                         or (isinstance(x, str) and os.path.isabs(x) and any(within(x, r) for r in roots)))
        return mask

    def remove(self, ids: Iterable[Any] = (), *, pids: Iterable[int] = (), paths: Iterable[str] = ()) -> list[Any]:
        """Remove the entries ``matching`` ``ids``, ``pids`` or ``paths``; returns their ids (gallery order). Flat
        and IVF-PQ indexes drop their vectors; an HNSW graph keeps them as tombstones that searches skip, and is
        rebuilt from the live rows when they pass ``HNSW_REBUILD_FRACTION`` of it.

        Examples:
            >>> g = Gallery(); _ = g.add(torch.eye(3), ids=["a", "b", "c"], metadata=[{"pid": 1}, {"pid": 2}, {"pid": 1}])
            >>> g.remove(pids=[1]), g.ids
            (['a', 'c'], ['b'])
        """
        mask = self.matching(ids, pids, paths)
        if not mask.any():
            return []
        removed = [x for x, m in zip(self.ids, mask, strict=True) if m]
        keep = ~mask
        if self._vindex is not None:
            self._vindex.remove(self.keys[mask])
            if self._vindex.needs_rebuild:
                self._vindex = None  # rebuilt from the live rows when next needed
        emb, keys = self.embeddings[torch.from_numpy(keep)], self.keys[keep]
        self._chunks, self._key_chunks = ([emb], [keys]) if len(keys) else ([], [])
        segments, first = [], 0
        for seg in self._segments:
            kept = int(keep[first : first + seg.rows].sum())
            first += seg.rows
            if kept:
                segments.append(seg if kept == seg.rows else _Segment(kept))
        self._segments = segments
        self.ids = [x for x, k in zip(self.ids, keep, strict=True) if k]
        self.metadata = [x for x, k in zip(self.metadata, keep, strict=True) if k]
        self._changed()
        return removed

    def update(self, embeddings: Any, ids: Sequence[Any], metadata: Sequence[dict[str, Any]] | None = None
               ) -> tuple[int, int]:
        """Replace the entries with these ``ids`` by the new rows (every row holding such an id goes; the new
        ones are appended, with new keys); ids the gallery does not hold are added. Returns (replaced, added).

        Examples:
            >>> g = Gallery(); _ = g.add(torch.eye(2), ids=["a", "b"])
            >>> g.update(torch.ones(2, 2), ids=["a", "c"]), g.ids
            ((1, 1), ['b', 'a', 'c'])
        """
        emb, new_ids, meta = self._checked_rows(embeddings, ids, metadata, "Gallery.update")
        held = {_typed(x) for x in self.ids}
        old = [x for x in new_ids if _typed(x) in held]
        self.remove(old)
        self._append(emb, new_ids, meta)
        return len(old), len(new_ids) - len(old)

    def check_model(self, model_meta: dict[str, Any] | None, what: str = "query model") -> None:
        """Raise ``ReidkitError`` if ``model_meta`` describes a different model than the index's."""
        if self.model_meta is None or model_meta is None:
            return
        mine, theirs = model_fingerprint(self.model_meta), model_fingerprint(model_meta)
        if mine != theirs:
            raise GalleryIndexError(f"{what} ({describe_model(model_meta)}) differs from the model that built the "
                              f"index ({describe_model(self.model_meta)}); embed queries with the same model")

    # ------------------------------------------------------------------ the FAISS index
    def _require_faiss(self, what: str) -> None:
        if self.use_faiss is False:
            raise ReidkitError(f"{what} needs FAISS; use_faiss=False allows only the exact index")
        knn.require_faiss(what)

    def _faiss_on(self) -> bool:
        if self.use_faiss:
            knn.require_faiss("use_faiss=True")
        return self.use_faiss is not False and knn.faiss_available()

    def _ensure_index(self) -> VectorIndex:
        """The FAISS index, built from the embeddings when there is none yet (IVF-PQ trains then)."""
        if self._vindex is None:
            spec = self._built_spec or self.index_spec
            self._vindex = VectorIndex.build(spec, self.embeddings, self.keys, self.metric)
            self._built_spec = self._vindex.spec
        return self._vindex

    def rebuild_index(self, index: str | IndexSpec | None = None, **params: int | None) -> None:
        """Build the FAISS index again from the embeddings: ``index`` (a kind or an ``IndexSpec``) to change it,
        ``params`` (``IndexSpec`` fields) to change parameters of the kind; without them, the same kind and
        parameters (those left to be chosen at build time, like IVF-PQ's ``nlist``, chosen again for the
        gallery's current size), so IVF-PQ retrains on the current gallery and HNSW drops its tombstones.

        Examples:
            >>> g.rebuild_index("hnsw", ef_search=128)  # doctest: +SKIP
        """
        spec = IndexSpec.make(index if index is not None else self.index_spec, **params)
        self._require_faiss(f"a {spec.kind} index")
        self._vindex = VectorIndex.build(spec, self.embeddings, self.keys, self.metric)
        self.index_spec, self._built_spec = spec, self._vindex.spec
        self._version += 1

    @property
    def trained_on(self) -> int | None:
        """How many vectors trained the IVF-PQ index (None for other kinds, or before it is built)."""
        return self._vindex.trained_on if self._vindex is not None else self._stored_trained_on

    def describe_index(self) -> str:
        """The index kind with its parameters, for messages: ``"ivfpq (nlist 400, m 64, nbits 8, nprobe 16,
        refine 4; trained on 25,600 vectors)"``."""
        spec = self._vindex.spec if self._vindex is not None else self.index_spec
        fields = ", ".join(f"{k} {v}" for k, v in spec.fields().items() if v is not None)
        text = spec.kind + (" (exact)" if spec.kind == "flat" else f" ({fields}")
        if spec.kind != "flat":
            text += f"; trained on {self.trained_on:,} vectors)" if self.trained_on else ")"
        return text

    def _check_gallery_finite(self) -> None:
        if self._finite_version != self._version:
            check_finite(self.embeddings, "Gallery.search gallery")
            self._finite_version = self._version

    def _rows_of(self, found: np.ndarray) -> np.ndarray:
        """Gallery rows of the keys FAISS found (-1 for none or an unknown key)."""
        if self._lookup is None:
            order = np.argsort(self.keys, kind="stable")
            self._lookup = (order, self.keys[order])
        order, sorted_keys = self._lookup
        pos = np.searchsorted(sorted_keys, found).clip(max=max(len(sorted_keys) - 1, 0))
        rows = order[pos] if len(order) else np.full(found.shape, -1)
        rows[(found < 0) | (sorted_keys[pos] != found)] = -1
        return rows.astype(np.int64)

    # ------------------------------------------------------------------ search
    def search_arrays(self, query: Any, k: int = 10, rerank: bool = False, nprobe: int | None = None,
                      ef_search: int | None = None, refine: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances (Q, k') and row indices (Q, k') of the nearest rows, k' = min(k, len(self)).

        ``nprobe``, ``refine`` (IVF-PQ) and ``ef_search`` (HNSW) override the index's search parameters for this
        call (``IndexSpec``).
        With ``rerank=True`` the distances are k-reciprocal re-ranked (Zhong et al. 2017; exact over all
        embeddings, O(N²) memory in the gallery size, meant for galleries up to a few tens of thousands; the
        FAISS index is not used).
        """
        q = _as_matrix(query, "Gallery.search")
        check_finite(q, "Gallery.search query")
        if len(self) == 0:
            raise ReidkitError("Gallery.search: the gallery is empty; add embeddings first")
        if q.shape[1] != self.embedding_dim:
            raise ReidkitError(f"Gallery.search: query width {q.shape[1]} differs from the gallery's "
                               f"{self.embedding_dim}")
        g = self.embeddings
        self._check_gallery_finite()
        if k < 1:
            raise ReidkitError(f"Gallery.search: k must be at least 1, got {k}")
        kind = self.index_spec.kind
        check_search_params(kind, nprobe, ef_search, refine)
        if rerank:
            from reidkit.eval.rerank import rerank_distance

            d = rerank_distance(q, g, metric=self.metric).float().cpu()
            dv, iv = torch.topk(d, min(k, len(self)), dim=1, largest=False, sorted=True)
            return dv, iv
        if not self._faiss_on():
            if kind != "flat" and self.use_faiss is None:
                warnings.warn(f"FAISS is not installed: this {kind} index is searched exactly, by torch "
                              f"({knn.FAISS_INSTALL})", stacklevel=2)
            dists, idx = k_nearest(q, g, k, self.metric, use_faiss=False)
            return dists.float().cpu(), idx.long().cpu()
        k = min(k, len(self))
        vindex = self._ensure_index()
        fetch = min(len(self), k * (refine or vindex.spec.refine)) if kind == "ivfpq" else k
        raw, found = vindex.search(q, fetch, nprobe, ef_search)
        rows = self._rows_of(found)
        if kind == "flat" and bool((rows >= 0).all()):
            return from_faiss_distances(raw, self.metric).float(), torch.from_numpy(rows)
        return self._rescored(q, g, rows, k)

    def _rescored(self, q: torch.Tensor, g: torch.Tensor, rows: np.ndarray, k: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best of the candidates ``rows`` (Q×C, -1: none) scored exactly, sorted; a query with fewer
        than k candidates is searched exactly instead."""
        short = torch.from_numpy((rows >= 0).sum(axis=1) < k)
        cand = torch.from_numpy(rows.clip(min=0))
        dist = candidate_distances(q, g, cand, self.metric).float()
        dist[torch.from_numpy(rows < 0)] = float("inf")
        order = torch.argsort(dist, dim=1, stable=True)[:, :k]
        dist, idx = dist.gather(1, order), cand.gather(1, order)
        if bool(short.any()):
            d_ex, i_ex = k_nearest(q[short], g, k, self.metric, use_faiss=False)
            dist[short], idx[short] = d_ex.float(), i_ex.long()
        return dist, idx

    def search(self, query: Any, k: int = 10, rerank: bool = False, nprobe: int | None = None,
               ef_search: int | None = None, refine: int | None = None) -> list[list[SearchResult]]:
        """The k nearest gallery entries for each query row (a single D vector counts as one query);
        ``nprobe``, ``ef_search`` and ``refine`` as in ``search_arrays``.

        Examples:
            >>> g = Gallery(); _ = g.add(torch.eye(2), ids=["a", "b"])
            >>> [r.id for r in g.search(torch.tensor([0.0, 1.0]), k=2)[0]]
            ['b', 'a']
        """
        dists, idx = self.search_arrays(query, k, rerank, nprobe, ef_search, refine)
        return [[SearchResult(self.ids[j], float(d), self.metadata[j], int(j))
                 for d, j in zip(drow.tolist(), irow.tolist(), strict=True)]
                for drow, irow in zip(dists, idx, strict=True)]

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike[str], model: torch.nn.Module | str | os.PathLike[str] | None = None
             ) -> Path:
        """Write the gallery to ``directory`` (created if needed); an existing index is replaced atomically,
        under the index's lock. ``model``, the network that made the embeddings (a PyTorch model, or the
        path of its ONNX file), is stored in the index as ``model.safetensors`` (or ``model.onnx``), so that
        adding to it and searching it need nothing else. An approximate FAISS index is built first if it is
        not yet (IVF-PQ trains then); only the segments of rows that are new or changed since the gallery
        was read from ``directory`` are written.

        Examples:
            >>> g.save("my_index")  # doctest: +SKIP
        """
        out = output_folder(directory, "the index")
        with index_lock(out):
            if model is not None:
                _store_model(model, out)
            self._save_locked(out)
        return out

    def _save_locked(self, out: Path) -> None:
        old = None
        if os.path.lexists(out / MANIFEST):
            with contextlib.suppress(GalleryIndexError):  # a damaged index being replaced: its files stay
                old = _read_manifest(out)
        kind = self.index_spec.kind
        vindex = None
        if kind != "flat":  # the exact index has no file: it is built from the embeddings when searched
            if not self._faiss_on():
                self._require_faiss(f"writing a {kind} index")
            vindex = self._ensure_index()
        generation = uuid.uuid4().hex[:12]
        faiss_name = f"faiss-{generation}.index" if vindex is not None else None
        stored = {(seg["file"], seg["rows"]) for seg in old["segments"]} if old else set()
        segments = _planned_segments(self._segments, lambda seg: (seg.file, seg.rows) in stored
                                     and _is_regular(out / str(seg.file)))
        index: dict[str, Any] = {"kind": kind, **self.index_spec.fields(), "file": faiss_name}
        if vindex is not None and vindex.built():
            index["built"] = vindex.built()
        manifest = {
            "format": "reidkit-index",
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "embedding_dim": self.embedding_dim,
            "count": len(self),
            "generation": generation,
            "segments": [],
            "index": index,
            "model": self.model_meta,
            "ids": self.ids,
            "metadata": self.metadata,
        }
        try:
            json.dumps(manifest)
        except (TypeError, ValueError) as exc:
            raise ReidkitError(f"{out}: ids and metadata must be JSON values (str, int, float, lists, dicts): "
                               f"{exc}") from exc
        if old:
            _remove_orphans(out, _files_of(old))
        written: list[Path] = []
        try:
            first = 0
            for i, seg in enumerate(segments):
                if seg.file is None:
                    name = f"embeddings-{uuid.uuid4().hex[:12]}.safetensors"
                    written.append(out / name)
                    save_tensors(out / name, {"embeddings": self.embeddings[first : first + seg.rows],
                                              "keys": torch.from_numpy(self.keys[first : first + seg.rows])})
                    segments[i] = _Segment(seg.rows, name, file_digest(out / name))
                elif seg.digest is None:  # kept from a manifest without digests, and not read by this gallery
                    segments[i] = _Segment(seg.rows, seg.file, file_digest(out / str(seg.file)))
                first += seg.rows
            manifest["segments"] = [{"file": seg.file, "rows": seg.rows, DIGEST: seg.digest} for seg in segments]
            if vindex is not None and faiss_name is not None:
                written.append(out / faiss_name)
                with atomic_path(out / faiss_name) as tmp:
                    vindex.write(tmp)
            atomic_write_json(out / MANIFEST, manifest, indent=1)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        self._segments = segments
        if old:
            for stale in _files_of(old) - _files_of(manifest):
                (out / str(stale)).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], use_faiss: bool | None = None) -> Gallery:
        """Read a gallery saved by ``save``, checked as untrusted input (see the module docstring).

        Examples:
            >>> g = Gallery.load("my_index")  # doctest: +SKIP
        """
        d = Path(directory)
        for _ in range(_LOAD_ATTEMPTS):
            m = _read_manifest(d)
            try:
                parts, digests = [], []
                for seg in m["segments"]:
                    read = _read_generation_file(d, m, seg["file"], _segment_reader(seg.get(DIGEST)))
                    if read is None:
                        raise GalleryIndexError(f"{d}: damaged index (its embeddings file {seg['file']} is "
                                                "missing); rebuild it with 'reidkit index build'")
                    parts.append(read[0])
                    digests.append(read[1])
                g = cls._from_manifest(d, m, parts, use_faiss, digests)
                g._read_index(d, m)
            except _Replaced:
                continue
            return g
        raise GalleryIndexError(f"{d}: the index kept changing while it was read ({_LOAD_ATTEMPTS} times); "
                                "try again when its writers have finished")

    def _read_index(self, d: Path, m: dict[str, Any]) -> None:
        """Attach the approximate index of the manifest's generation (the exact one is rebuilt from the
        embeddings when first needed); a missing or damaged file is one warning, and a rebuild."""
        spec, name = self.index_spec, m["index"]["file"]
        if spec.kind == "flat" or not (self.use_faiss is not False and knn.faiss_available()):
            return
        why = "it names no FAISS file"
        if name is not None:
            def read(path: Path) -> VectorIndex:
                return VectorIndex.read(path, spec, self.embedding_dim or 0, self.metric, self.keys,
                                        m["index"]["built"])
            try:
                vindex = _read_generation_file(d, m, name, read)
            except (ValueError, RuntimeError, MemoryError, OSError) as exc:  # FaissLayoutError is a ValueError
                vindex, why = None, f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            else:
                why = f"{name} is missing"
            if vindex is not None:
                self._vindex, self._built_spec = vindex, vindex.spec
                if len(vindex.dead):
                    self._next_key = max(self._next_key, int(vindex.dead.max()) + 1)
                return
        built = m["index"]["built"]
        if spec.kind == "ivfpq" and built.get("nlist") and built.get("m"):
            self._built_spec = IndexSpec.make(spec, nlist=built["nlist"], m=built["m"])
        warnings.warn(f"{d}: damaged {spec.kind} index ({why}); rebuilt from the embeddings in memory (the next "
                      "write to the index stores it)", stacklevel=3)

    @classmethod
    def _from_manifest(cls, d: Path, m: dict[str, Any], parts: list[dict[str, torch.Tensor]],
                       use_faiss: bool | None, digests: list[str]) -> Gallery:
        """The gallery of manifest ``m`` and its segments' tensors ``parts`` (whose files have ``digests``),
        checked against each other."""
        width = None
        for seg, tensors in zip(m["segments"], parts, strict=True):
            emb = tensors.get("embeddings")
            if emb is None:
                raise GalleryIndexError(f"{d}: damaged index (no 'embeddings' tensor in {seg['file']}); rebuild "
                                        "it with 'reidkit index build'")
            if not emb.is_floating_point() or emb.dim() != 2 or (width is not None and emb.shape[1] != width):
                raise GalleryIndexError(f"{d}: damaged index (embeddings of dtype {emb.dtype} and shape "
                                        f"{tuple(emb.shape)} in {seg['file']}; expected float N×D)")
            width = int(emb.shape[1])
            if seg["rows"] is not None and emb.shape[0] != seg["rows"]:
                raise GalleryIndexError(f"{d}: damaged index ({seg['file']} holds {emb.shape[0]} rows, the "
                                        f"manifest says {seg['rows']}); rebuild it with 'reidkit index build'")
        sizes = [int(t["embeddings"].shape[0]) for t in parts]
        n = sum(sizes)
        if not (n == len(m["ids"]) == len(m["metadata"]) == m["count"]):
            raise GalleryIndexError(f"{d}: damaged index ({n} embeddings, {len(m['ids'])} ids, "
                                    f"{len(m['metadata'])} metadata entries, count {m['count']}); rebuild it "
                                    "with 'reidkit index build'")
        if n and m["embedding_dim"] is not None and m["embedding_dim"] != width:
            raise GalleryIndexError(f"{d}: damaged index (embeddings of width {width}, manifest says "
                                    f"{m['embedding_dim']})")
        key_parts = [t.get("keys") for t in parts]
        keys = _checked_keys(None if len(parts) == 1 and key_parts[0] is None else key_parts, sizes, d)
        g = cls(embedding_dim=m["embedding_dim"] or (width if n else None), metric=m["metric"],
                model_meta=m["model"], use_faiss=use_faiss)
        g.index_spec = m["index"]["spec"]  # set here: reading (and searching exactly) needs no FAISS
        g._stored_trained_on = m["index"]["built"].get("trained_on")
        if n:
            emb = torch.empty(n, width or 0)  # filled segment by segment: no second copy of the gallery
            first = 0
            for t, rows in zip(parts, sizes, strict=True):
                emb[first : first + rows] = t["embeddings"]
                first += rows
            g._chunks, g._key_chunks = [emb], [keys]
            g._next_key = int(keys.max()) + 1
            # a file of format 1 (no keys) or 2 (over SEGMENT_ROWS rows) is rewritten by the next save
            g._segments = [_Segment(rows, seg["file"], digest) if t.get("keys") is not None and rows <= SEGMENT_ROWS
                           else _Segment(rows)
                           for seg, t, rows, digest in zip(m["segments"], parts, sizes, digests, strict=True) if rows]
        g.ids, g.metadata = list(m["ids"]), [dict(x) for x in m["metadata"]]
        return g


@contextlib.contextmanager
def index_lock(directory: str | os.PathLike[str], wait: float | None = None) -> Iterator[None]:
    """Hold the index's writer lock (``fcntl.flock`` on ``LOCK``; released by the system if the process dies)
    while the block runs; after ``wait`` seconds (default ``LOCK_WAIT_SECONDS``) of another writer holding
    it, a one-line ``GalleryIndexError`` naming that writer's process id. A no-op where ``fcntl`` does not
    exist."""
    wait = LOCK_WAIT_SECONDS if wait is None else wait
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    path = Path(directory) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"{directory}: cannot take the index's lock ({exc.strerror or type(exc).__name__})") \
            from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    raise GalleryIndexError(f"{directory}: another reidkit (process {holder}) has been writing "
                                            f"this index for over {wait:.0f} s; try again when it has finished") \
                        from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _edit_index(directory: str | os.PathLike[str], change: Callable[[Gallery], T]) -> tuple[T, int]:
    """Under the index's lock: read the index as it is now, apply ``change``, save a new generation if it
    changed anything. Returns (what ``change`` returned, rows in the index now)."""
    d = Path(directory)
    with index_lock(d):
        g = Gallery.load(d)
        before = g._version
        result = change(g)
        if g._version != before:
            g._save_locked(d)
        return result, len(g)


def add_to_index(directory: str | os.PathLike[str], embeddings: Any, ids: Sequence[Any],
                 metadata: Sequence[dict[str, Any]], model_meta: dict[str, Any] | None = None) -> tuple[int, int]:
    """Add rows to the index in ``directory`` without losing anyone else's: under the index's lock, read the
    index as it is now, append the rows whose id it does not hold yet (only their vectors go into its FAISS
    index), save. ``model_meta`` (the model that made ``embeddings``) must still be the index's. Returns (rows
    added, rows in the index now).

    Examples:
        >>> add_to_index("my_index", feats, ["a.jpg"], [{"path": "a.jpg"}])  # doctest: +SKIP
        (1, 21)
    """
    def change(g: Gallery) -> int:
        g.check_model(model_meta, what="the model of these embeddings")
        known = {_typed(x) for x in g.ids}
        keep = [i for i, x in enumerate(ids) if _typed(x) not in known]
        if keep:
            rows = _as_matrix(embeddings, "add_to_index")
            g.add(rows[keep], ids=[ids[i] for i in keep], metadata=[metadata[i] for i in keep])
        return len(keep)

    return _edit_index(directory, change)


def remove_from_index(directory: str | os.PathLike[str], ids: Iterable[Any] = (), *, pids: Iterable[int] = (),
                      paths: Iterable[str] = ()) -> tuple[list[Any], int]:
    """Remove entries from the index in ``directory`` (``Gallery.remove``: by id, pid or image path), under its
    lock, as it is at that moment. Returns (the removed entries' ids, rows in the index now).

    Examples:
        >>> remove_from_index("my_index", pids=[17])  # doctest: +SKIP
        (['/data/crops/0017_c1_01.jpg', '/data/crops/0017_c3_02.jpg'], 19)
    """
    ids, pids, paths = list(ids), list(pids), list(paths)  # the change may run after other writers
    return _edit_index(directory, lambda g: g.remove(ids, pids=pids, paths=paths))


def update_index(directory: str | os.PathLike[str], embeddings: Any, ids: Sequence[Any],
                 metadata: Sequence[dict[str, Any]], model_meta: dict[str, Any] | None = None
                 ) -> tuple[int, int, int]:
    """Replace (or add) entries by id in the index in ``directory`` (``Gallery.update``), under its lock, as it is
    at that moment. ``model_meta`` must still be the index's. Returns (replaced, added, rows in the index now).

    Examples:
        >>> update_index("my_index", feats, ["/data/crops/a.jpg"], [{"path": "/data/crops/a.jpg"}])  # doctest: +SKIP
        (1, 0, 20)
    """
    def change(g: Gallery) -> tuple[int, int]:
        g.check_model(model_meta, what="the model of these embeddings")
        return g.update(embeddings, ids, metadata)

    (replaced, added), total = _edit_index(directory, change)
    return replaced, added, total


def rebuild_index(directory: str | os.PathLike[str], index: str | IndexSpec | None = None,
                  **params: int | None) -> tuple[str, int]:
    """Rebuild the FAISS index of the index in ``directory`` from its embeddings (``Gallery.rebuild_index``:
    another kind or parameters, or a retraining), under its lock. Returns (``describe_index()``, rows).

    Examples:
        >>> rebuild_index("my_index", "ivfpq", nlist=1024)  # doctest: +SKIP
        ('ivfpq (nlist 1024, m 64, nbits 8, nprobe 16; trained on 65,536 vectors)', 250000)
    """
    def change(g: Gallery) -> str:
        g.rebuild_index(index, **params)
        return g.describe_index()

    return _edit_index(directory, change)


def _store_model(model: torch.nn.Module | str | os.PathLike[str], out: Path) -> None:
    """Write ``model`` as the index's own model file, replacing the index's earlier one (of either kind)."""
    if isinstance(model, torch.nn.Module):
        from reidkit.models.io import save_weights

        name = "model.safetensors"
        save_weights(model, out / name)  # type: ignore[arg-type]
    else:
        import shutil

        from reidkit.utils.atomic import atomic_path

        name = "model.onnx"
        with atomic_path(out / name) as tmp:
            shutil.copyfile(model, tmp)
    for other in MODEL_FILES:
        if other != name:
            (out / other).unlink(missing_ok=True)


def index_model_file(directory: str | os.PathLike[str]) -> Path | None:
    """The index's own model file (``model.safetensors`` or ``model.onnx`` in the folder), or None. A link or
    a special file there is a one-line ``GalleryIndexError``: an index reads only its own files."""
    for name in MODEL_FILES:
        p = Path(directory) / name
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise GalleryIndexError(f"{p}: not a regular file (a link or a special file); an index reads only "
                                    "its own files")
        return p
    return None


def entry_path(directory: str | os.PathLike[str], path: str) -> str:
    """Where an entry's recorded ``path`` leads: relative paths from the index folder (not the current one);
    no file is opened."""
    return os.path.normpath(os.path.join(os.path.abspath(os.fspath(directory)), path))


def readable_entry(directory: str | os.PathLike[str], path: str,
                   roots: Sequence[str | os.PathLike[str]] = ()) -> str | None:
    """``entry_path`` when it leads (symbolic links resolved) inside the index folder or one of ``roots`` (the
    folders the user named), else None: a manifest cannot make reidkit read a file anywhere else."""
    full = entry_path(directory, path)
    return full if any(inside(full, r) for r in (directory, *roots)) else None


_EMBEDDINGS_NAME = re.compile(r"embeddings-([0-9a-f]+)\.safetensors")
# a generation's files, and the temporary files of a writer killed while writing them (``atomic_path``)
_GENERATION_FILE = re.compile(r"\.?(embeddings-[0-9a-f]+\.safetensors|faiss-[0-9a-f]+\.index)(\.[^/]+\.tmp)?")


class _Replaced(Exception):
    """A generation file vanished because a writer replaced the index meanwhile: read the manifest again."""


def _typed(x: Any) -> tuple[str, Any]:
    """An id as a set member that tells 1, 1.0, True and "1" apart."""
    return type(x).__name__, x


def _read_generation_file(d: Path, m: dict[str, Any], name: str, reader: Callable[[Path], T]) -> T | None:
    """``reader(path)`` of the generation file ``name`` named by the manifest ``m``; None when it is missing
    (and the manifest still names it); ``_Replaced`` when a writer replaced the generation meanwhile; a
    one-line error for a link or a special file."""
    path = d / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if _read_manifest(d)["generation"] != m["generation"]:
            raise _Replaced from None
        return None
    if not stat.S_ISREG(st.st_mode):
        raise GalleryIndexError(f"{path}: not a regular file (a link or a special file); an index reads only its "
                                "own files")
    try:
        return reader(path)
    except (ReidkitError, ValueError, RuntimeError, OSError):
        if not path.exists() and _read_manifest(d)["generation"] != m["generation"]:
            raise _Replaced from None  # removed by a writer while we read it
        raise


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 digest (hex) of the file at ``path``, read in pieces (what ``sha256sum`` prints)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, DIGEST).hexdigest()


def _segment_reader(expected: str | None) -> Callable[[Path], tuple[dict[str, torch.Tensor], str]]:
    """A reader of one segment file: its digest, checked against ``expected`` (the manifest's; None: a manifest
    without digests, nothing to check) before its tensors are read; returns (tensors, digest)."""
    def read(path: Path) -> tuple[dict[str, torch.Tensor], str]:
        digest = file_digest(path)
        if expected is not None and digest != expected:
            raise GalleryIndexError(f"{path}: damaged index segment (its {DIGEST} digest is not the one the "
                                    "manifest recorded when it was written: the file changed on disk); rebuild the "
                                    "index with 'reidkit index build'")
        return _load_embeddings(path), digest

    return read


def _load_embeddings(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(path)[0]
    except CheckpointError as exc:
        raise GalleryIndexError(f"{path.parent}: damaged index ({exc}); rebuild it with 'reidkit index build'") \
            from None


def _checked_keys(keys: list[torch.Tensor | None] | None, rows: list[int], d: Path) -> np.ndarray:
    """The rows' keys from the segments' files (each segment holding ``rows[i]`` rows; None: an index written
    before keys existed, keyed 0..n-1), checked: int64, one per row of their segment, distinct, within
    0..MAX_KEY."""
    n = sum(rows)
    if keys is None:
        return np.arange(n, dtype=np.int64)
    parts = []
    for k, r in zip(keys, rows, strict=True):
        if k is None or k.dtype != torch.int64 or tuple(k.shape) != (r,):
            what = "no keys" if k is None else f"keys of dtype {k.dtype} and shape {tuple(k.shape)}"
            raise GalleryIndexError(f"{d}: damaged index ({what} in a segment of {r} rows; expected {r} int64)")
        parts.append(k.numpy())
    out = np.concatenate(parts).astype(np.int64, copy=True) if parts else np.zeros(0, dtype=np.int64)
    if n and (out.min() < 0 or out.max() >= MAX_KEY or len(np.unique(out)) != n):
        raise GalleryIndexError(f"{d}: damaged index (keys repeated or outside 0..2^62)")
    return out


def _planned_segments(segments: list[_Segment], on_disk: Callable[[_Segment], bool]) -> list[_Segment]:
    """The segments a save leaves: those whose file is ``on_disk`` as they are; the others (new rows, rows
    removed, or files gone) to be written, in pieces of at most ``SEGMENT_ROWS``; a segment that is more than
    half the one before it merges into it (so a gallery grown by many small adds keeps O(log N) files, each
    row rewritten O(log N) times), up to ``SEGMENT_ROWS`` rows."""
    plan: list[_Segment] = []
    for seg in segments:
        if seg.file is not None and not on_disk(seg):
            seg = _Segment(seg.rows)
        pieces = [seg] if seg.file is not None else [
            _Segment(min(SEGMENT_ROWS, seg.rows - s)) for s in range(0, seg.rows, SEGMENT_ROWS)]
        for piece in pieces:
            plan.append(piece)
            while (len(plan) >= 2 and plan[-2].rows <= 2 * plan[-1].rows
                   and plan[-2].rows + plan[-1].rows <= SEGMENT_ROWS):
                last = plan.pop()
                plan[-1] = _Segment(plan[-1].rows + last.rows)
    return plan


def _files_of(m: dict[str, Any]) -> set[str]:
    """The generation files a manifest names: its segments and its FAISS file."""
    return {seg["file"] for seg in m["segments"]} | ({m["index"]["file"]} if m["index"]["file"] else set())


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_orphans(out: Path, current: set[str | None]) -> None:
    """Remove the generation files (and their temporary files) a killed writer left in ``out``: under the lock,
    any such file the manifest does not name was never part of a published generation."""
    with contextlib.suppress(OSError):
        for p in out.iterdir():
            if _GENERATION_FILE.fullmatch(p.name) and p.name not in current and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()


def _read_manifest(d: Path) -> dict[str, Any]:
    path = d / MANIFEST
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise GalleryIndexError(f"{d}: no {MANIFEST}; expected an index folder made by 'reidkit index build'") \
            from None
    except OSError as exc:
        raise GalleryIndexError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise GalleryIndexError(f"{path}: not a regular file (a link or a special file); an index reads only its "
                                "own files")
    try:
        m = json.loads(read_bytes(path, limit=MAX_MANIFEST_BYTES, what="a reidkit index manifest",
                                  error=GalleryIndexError).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise GalleryIndexError(f"{path}: not valid JSON ({type(exc).__name__}); expected a reidkit index "
                                "manifest") from None
    return _check_manifest(m, path)


def _check_manifest(m: Any, path: Path) -> dict[str, Any]:
    """The manifest's fields, checked: types, counts, sizes, a plain embeddings file name, the model."""
    def bad(what: str) -> GalleryIndexError:
        return GalleryIndexError(f"{path}: damaged index manifest ({what}); rebuild it with 'reidkit index "
                                 "build'")

    if not isinstance(m, dict) or m.get("format") != "reidkit-index":
        raise GalleryIndexError(f"{path}: not a reidkit index manifest")
    version = m.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("'format_version' must be a positive integer")
    if version > FORMAT_VERSION:
        raise GalleryIndexError(f"{path}: index format {version} is newer than this reidkit reads "
                                f"({FORMAT_VERSION}); upgrade reidkit")
    _check_segments(m, version, path)
    if m.get("metric") not in ("euclidean", "cosine"):
        raise bad("'metric' must be euclidean or cosine")
    dim = m.get("embedding_dim")
    if dim is not None and not (isinstance(dim, int) and not isinstance(dim, bool) and 1 <= dim <= MAX_EMBEDDING_DIM):
        raise bad(f"'embedding_dim' must be an integer between 1 and {MAX_EMBEDDING_DIM}")
    ids, meta = m.get("ids"), m.get("metadata")
    if not isinstance(ids, list) or not all(isinstance(x, (str, int, float, bool, type(None))) for x in ids):
        raise bad("'ids' must be a list of strings or numbers")
    if not isinstance(meta, list) or not all(isinstance(x, dict) for x in meta):
        raise bad("'metadata' must be a list of mappings")
    count = m.get("count", len(ids))
    if not isinstance(count, int) or isinstance(count, bool):
        raise bad("'count' must be an integer")
    m["count"], m["embedding_dim"] = count, dim
    if version >= 3 and sum(seg["rows"] for seg in m["segments"]) != count:
        raise bad(f"its segments hold {sum(seg['rows'] for seg in m['segments'])} rows, 'count' is {count}")
    m["index"] = _check_index_section(m.get("index"), m["generation"], dim, bad, path)
    if m.get("model") is not None:
        check_model_meta(m["model"], path, registered=False)
    else:
        m["model"] = None
    return m


def _check_segments(m: dict[str, Any], version: int, path: Path) -> None:
    """Sets ``m["segments"]`` (a list of ``{"file", "rows", "sha256"}``; rows None: as the file says; no digest
    before format 4) and
    ``m["generation"]``, checked: plain file names inside the index folder, never a path that leads elsewhere
    (before format 3: the one ``embeddings_file``, whose name gives the generation)."""
    name_rule = "a file name like embeddings-<hex>.safetensors inside the index folder"
    if version < 3:
        if not isinstance(m.get("embeddings_file"), str) or not _EMBEDDINGS_NAME.fullmatch(m["embeddings_file"]):
            raise GalleryIndexError(f"{path}: 'embeddings_file' must be {name_rule}")
        m["segments"] = [{"file": m["embeddings_file"], "rows": None}]
        m["generation"] = _EMBEDDINGS_NAME.fullmatch(m["embeddings_file"]).group(1)  # type: ignore[union-attr]
        return
    generation, segments = m.get("generation"), m.get("segments")
    if not isinstance(generation, str) or not re.fullmatch(r"[0-9a-f]{1,64}", generation):
        raise GalleryIndexError(f"{path}: damaged index manifest ('generation' must be a hex string); rebuild "
                                "it with 'reidkit index build'")
    fields = {"file", "rows", DIGEST} if version >= 4 else {"file", "rows"}
    if not isinstance(segments, list) or not all(
            isinstance(seg, dict) and set(seg) == fields for seg in segments):
        raise GalleryIndexError(f"{path}: damaged index manifest ('segments' must be a list of "
                                f"{{{', '.join(sorted(fields))}}}); rebuild it with 'reidkit index build'")
    for seg in segments:
        if not isinstance(seg["file"], str) or not _EMBEDDINGS_NAME.fullmatch(seg["file"]):
            raise GalleryIndexError(f"{path}: each segment's 'file' must be {name_rule}")
        rows = seg["rows"]
        if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= SEGMENT_ROWS:
            raise GalleryIndexError(f"{path}: damaged index manifest (a segment's 'rows' must be an integer "
                                    f"from 1 to {SEGMENT_ROWS}); rebuild it with 'reidkit index build'")
        if version >= 4 and not (isinstance(seg[DIGEST], str) and _DIGEST_HEX.fullmatch(seg[DIGEST])):
            raise GalleryIndexError(f"{path}: damaged index manifest (a segment's '{DIGEST}' must be 64 hex "
                                    "digits); rebuild it with 'reidkit index build'")
    if len({seg["file"] for seg in segments}) != len(segments):
        raise GalleryIndexError(f"{path}: damaged index manifest (a segment file named twice); rebuild it with "
                                "'reidkit index build'")


def _check_index_section(sec: Any, generation: str, dim: int | None, bad: Callable[[str], Exception],
                         path: Path) -> dict[str, Any]:
    """The manifest's ``index`` (absent before format 2: an exact index without a file) as ``{"spec":
    IndexSpec, "file": name or None, "built": {...}}``, checked: a known kind, parameters within bounds, a FAISS
    file of the embeddings' generation."""
    if sec is None:
        return {"spec": IndexSpec(), "file": None, "built": {}}
    if not isinstance(sec, dict) or sec.get("kind") not in ("flat", "ivfpq", "hnsw"):
        raise bad("'index' must be a mapping whose kind is flat, ivfpq or hnsw")
    params = {k: sec.get(k) for k in IndexSpec.make(sec["kind"]).fields()}
    try:
        spec = IndexSpec.make(sec["kind"], **params)
        if dim:
            spec.check_width(dim)
    except ReidkitError as exc:
        raise bad(f"'index': {exc}") from None
    name = sec.get("file")
    if name is not None and name != f"faiss-{generation}.index":
        raise GalleryIndexError(f"{path}: 'index.file' must be faiss-{generation}.index (the manifest's "
                                "generation) inside the index folder, or null")
    built = sec.get("built", {})
    if not isinstance(built, dict) or set(built) - {"nlist", "m", "trained_on"}:
        raise bad("'index.built' must be a mapping of nlist, m and trained_on")
    try:
        for key in ("nlist", "m"):
            check_param(key, built.get(key), "'index.built'")
    except ReidkitError as exc:
        raise bad(str(exc)) from None
    trained = built.get("trained_on")
    if trained is not None and not (isinstance(trained, int) and not isinstance(trained, bool)
                                    and 0 <= trained <= BOUNDS["nlist"][1] * 65_536):
        raise bad("'index.built.trained_on' must be a non-negative integer")
    return {"spec": spec, "file": name, "built": built}


def model_fingerprint(meta: dict[str, Any]) -> str:
    """A string identifying a model's architecture and weights (name, options, input size, dimension, digest)
    and, for an INT8 ONNX file, its quantization (mode, settings and the digest of the quantized tensors).

    A PyTorch model and its float32 ONNX export share a fingerprint (the same embeddings up to float32
    rounding); an INT8 copy does not: its embeddings are close to the float32 ones (cosine ~0.99, checked at
    export) but not equal, and distances between an INT8 query and float32 gallery rows would mix two
    embedding functions, so an index refuses them (docs/export.md, "INT8 and gallery indexes")."""
    keys = ("model", "input_size", "embedding_dim", "weights_digest", "quantization")
    out = {k: meta.get(k) for k in keys}
    opts = meta.get("options")
    out["options"] = {k: v for k, v in opts.items() if k != "pretrained"} if isinstance(opts, dict) else opts
    return json.dumps(out, sort_keys=True, default=str)


def describe_model(meta: dict[str, Any]) -> str:
    """A short human description of a model meta dict, for messages."""
    opts = meta.get("options") or {}
    bb = opts.get("backbone") if isinstance(opts, dict) else None
    size = meta.get("input_size")
    dig = meta.get("weights_digest")
    parts = [str(meta.get("model", "?"))]
    if bb:
        parts.append(str(bb))
    if size:
        parts.append("x".join(map(str, size)))
    if meta.get("embedding_dim"):
        parts.append(f"{meta['embedding_dim']}-d")
    if dig:
        parts.append(f"weights {str(dig)[:8]}")
    quant = meta.get("quantization")
    if isinstance(quant, dict):
        parts.append(f"int8 {quant.get('mode', '')}".strip())
    return " ".join(parts)
