"""A searchable gallery of embeddings, in memory and on disk (the ``reidkit index`` / ``search`` commands).

``Gallery`` holds N×D float32 embeddings with one id and one JSON metadata dict per row. ``search``
returns the k nearest rows per query (FAISS when installed, an exact chunked search otherwise, both through
``reidkit.eval.knn.k_nearest``), optionally re-ranked with k-reciprocal re-ranking.

On disk a gallery is a folder:
    INDEX_DIR/manifest.json                    metric, dimension, ids, metadata, model description, file name
    INDEX_DIR/embeddings-<generation>.safetensors

A save writes a new embeddings file, then replaces ``manifest.json`` atomically, then removes the old
embeddings file, so a reader always sees a complete, consistent index.

Examples:
    >>> import torch
    >>> g = Gallery(metric="euclidean")
    >>> g.add(torch.eye(3), ids=["a", "b", "c"])
    ['a', 'b', 'c']
    >>> g.search(torch.tensor([[0.9, 0.1, 0.0]]), k=1)[0][0].id
    'a'
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.eval.distance import check_metric
from reidkit.eval.knn import k_nearest
from reidkit.inference.features import check_finite, load_tensors, save_tensors
from reidkit.utils.atomic import atomic_write_json, output_folder

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class GalleryIndexError(ReidkitError):
    """A gallery index folder that is missing, damaged or made by another model."""


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
    """Embeddings with ids and metadata, searchable by k nearest neighbours, saved as safetensors + JSON.

    Args:
        embedding_dim: width D of the embeddings (taken from the first ``add`` when None).
        metric: ``"euclidean"`` or ``"cosine"``.
        model_meta: description of the model that made the embeddings (name, options, input size); an index
            refuses queries from a different model (see ``check_model``).
        use_faiss: None = FAISS when installed, True/False to force.

    Examples:
        >>> g = Gallery(embedding_dim=4)
        >>> _ = g.add(torch.randn(10, 4), metadata=[{"path": f"{i}.jpg"} for i in range(10)])
        >>> len(g)
        10
        >>> hits = g.search(torch.randn(4), k=3)[0]  # one list of 3 SearchResult per query
    """

    def __init__(self, embedding_dim: int | None = None, metric: str = "euclidean",
                 model_meta: dict[str, Any] | None = None, use_faiss: bool | None = None) -> None:
        check_metric(metric)
        self.metric = metric
        self.embedding_dim = embedding_dim
        self.model_meta = model_meta
        self.use_faiss = use_faiss
        self._chunks: list[torch.Tensor] = []
        self._emb: torch.Tensor | None = None
        self.ids: list[Any] = []
        self.metadata: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ content
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Gallery({len(self)} × {self.embedding_dim}, metric={self.metric!r})"

    @property
    def embeddings(self) -> torch.Tensor:
        """All embeddings as one (N, D) float32 tensor."""
        if self._emb is None or self._emb.shape[0] != len(self):
            d = self.embedding_dim or 0
            self._emb = torch.cat(self._chunks) if self._chunks else torch.zeros(0, d)
            self._chunks = [self._emb] if len(self) else []
        return self._emb

    def add(self, embeddings: Any, ids: Sequence[Any] | None = None,
            metadata: Sequence[dict[str, Any]] | None = None) -> list[Any]:
        """Append embeddings (N×D tensor/array, or one D vector); returns their ids (default 0, 1, 2, ...).

        Examples:
            >>> g = Gallery()
            >>> g.add(torch.randn(2, 3), ids=["x", "y"], metadata=[{"cam": 1}, {"cam": 2}])
            ['x', 'y']
        """
        emb = _as_matrix(embeddings, "Gallery.add")
        check_finite(emb, "Gallery.add")
        if self.embedding_dim is None:
            self.embedding_dim = int(emb.shape[1])
        elif emb.shape[1] != self.embedding_dim:
            raise ReidkitError(f"Gallery.add: embeddings have width {emb.shape[1]}, the gallery holds "
                               f"{self.embedding_dim}-d embeddings (same model expected)")
        n = int(emb.shape[0])
        new_ids = list(range(len(self), len(self) + n)) if ids is None else list(ids)
        if len(new_ids) != n:
            raise ReidkitError(f"Gallery.add: {len(new_ids)} ids for {n} embeddings")
        meta = [{} for _ in range(n)] if metadata is None else [dict(m or {}) for m in metadata]
        if len(meta) != n:
            raise ReidkitError(f"Gallery.add: {len(meta)} metadata entries for {n} embeddings")
        self._chunks.append(emb)
        self._emb = None
        self.ids.extend(new_ids)
        self.metadata.extend(meta)
        return new_ids

    def check_model(self, model_meta: dict[str, Any] | None, what: str = "query model") -> None:
        """Raise ``ReidkitError`` if ``model_meta`` describes a different model than the index's."""
        if self.model_meta is None or model_meta is None:
            return
        mine, theirs = model_fingerprint(self.model_meta), model_fingerprint(model_meta)
        if mine != theirs:
            raise GalleryIndexError(f"{what} ({describe_model(model_meta)}) differs from the model that built the "
                              f"index ({describe_model(self.model_meta)}); embed queries with the same model")

    # ------------------------------------------------------------------ search
    def search_arrays(self, query: Any, k: int = 10, rerank: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances (Q, k') and row indices (Q, k') of the nearest rows, k' = min(k, len(self)).

        With ``rerank=True`` the distances are k-reciprocal re-ranked (Zhong et al. 2017; exact, O(N²) memory
        in the gallery size, meant for galleries up to a few tens of thousands).
        """
        q = _as_matrix(query, "Gallery.search")
        check_finite(q, "Gallery.search query")
        if len(self) == 0:
            raise ReidkitError("Gallery.search: the gallery is empty; add embeddings first")
        if q.shape[1] != self.embedding_dim:
            raise ReidkitError(f"Gallery.search: query width {q.shape[1]} differs from the gallery's "
                               f"{self.embedding_dim}")
        g = self.embeddings
        check_finite(g, "Gallery.search gallery")
        if k < 1:
            raise ReidkitError(f"Gallery.search: k must be at least 1, got {k}")
        if not rerank:
            dists, idx = k_nearest(q, g, k, self.metric, use_faiss=self.use_faiss)
            return dists.float().cpu(), idx.long().cpu()
        from reidkit.eval.rerank import rerank_distance

        d = rerank_distance(q, g, metric=self.metric).float().cpu()
        dv, iv = torch.topk(d, min(k, len(self)), dim=1, largest=False, sorted=True)
        return dv, iv

    def search(self, query: Any, k: int = 10, rerank: bool = False) -> list[list[SearchResult]]:
        """The k nearest gallery entries for each query row (a single D vector counts as one query).

        Examples:
            >>> g = Gallery(); _ = g.add(torch.eye(2), ids=["a", "b"])
            >>> [r.id for r in g.search(torch.tensor([0.0, 1.0]), k=2)[0]]
            ['b', 'a']
        """
        dists, idx = self.search_arrays(query, k, rerank)
        return [[SearchResult(self.ids[j], float(d), self.metadata[j], int(j))
                 for d, j in zip(drow.tolist(), irow.tolist(), strict=True)]
                for drow, irow in zip(dists, idx, strict=True)]

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the gallery to ``directory`` (created if needed); an existing index is replaced atomically.

        Examples:
            >>> g.save("my_index")  # doctest: +SKIP
        """
        out = output_folder(directory, "the index")
        old = _read_manifest(out) if (out / MANIFEST).is_file() else None
        name = f"embeddings-{uuid.uuid4().hex[:12]}.safetensors"
        emb = self.embeddings
        save_tensors(out / name, {"embeddings": emb})
        manifest = {
            "format": "reidkit-index",
            "format_version": FORMAT_VERSION,
            "metric": self.metric,
            "embedding_dim": self.embedding_dim,
            "count": len(self),
            "embeddings_file": name,
            "model": self.model_meta,
            "ids": self.ids,
            "metadata": self.metadata,
        }
        try:
            json.dumps(manifest)
        except (TypeError, ValueError) as exc:
            (out / name).unlink(missing_ok=True)
            raise ReidkitError(f"{out}: ids and metadata must be JSON values (str, int, float, lists, dicts): "
                               f"{exc}") from exc
        atomic_write_json(out / MANIFEST, manifest, indent=1)
        if old and old["embeddings_file"] != name:
            (out / old["embeddings_file"]).unlink(missing_ok=True)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], use_faiss: bool | None = None) -> Gallery:
        """Read a gallery saved by ``save``.

        Examples:
            >>> g = Gallery.load("my_index")  # doctest: +SKIP
        """
        d = Path(directory)
        m = _read_manifest(d)
        try:
            tensors, _ = load_tensors(d / m["embeddings_file"])
            emb = tensors["embeddings"].float()
            ids, meta = list(m["ids"]), list(m["metadata"])
            metric = str(m["metric"])
        except (KeyError, TypeError, CheckpointError) as exc:
            raise GalleryIndexError(f"{d}: damaged index ({exc}); rebuild it with 'reidkit index build'") from exc
        if not (emb.shape[0] == len(ids) == len(meta) == int(m.get("count", len(ids)))):
            raise GalleryIndexError(f"{d}: damaged index ({emb.shape[0]} embeddings, {len(ids)} ids, {len(meta)} "
                              "metadata entries); rebuild it with 'reidkit index build'")
        g = cls(embedding_dim=int(m.get("embedding_dim") or emb.shape[1]), metric=metric,
                model_meta=m.get("model"), use_faiss=use_faiss)
        if emb.shape[0]:
            g._chunks = [emb]
        g.ids, g.metadata = ids, [dict(x) for x in meta]
        return g


_EMBEDDINGS_NAME = re.compile(r"embeddings-[0-9a-f]+\.safetensors")


def _read_manifest(d: Path) -> dict[str, Any]:
    path = d / MANIFEST
    if not path.is_file():
        raise GalleryIndexError(f"{d}: no {MANIFEST}; expected an index folder made by 'reidkit index build'")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GalleryIndexError(f"{path}: not valid JSON ({exc}); expected a reidkit index manifest") from exc
    if not isinstance(m, dict) or m.get("format") != "reidkit-index":
        raise GalleryIndexError(f"{path}: not a reidkit index manifest")
    # the manifest names a file inside the index folder, never a path that leads elsewhere
    if not isinstance(m.get("embeddings_file"), str) or not _EMBEDDINGS_NAME.fullmatch(m["embeddings_file"]):
        raise GalleryIndexError(f"{path}: 'embeddings_file' must be a file name like "
                                "embeddings-<hex>.safetensors inside the index folder")
    return m


def model_fingerprint(meta: dict[str, Any]) -> str:
    """A string identifying a model's architecture and weights (name, options, input size, dimension, digest)."""
    keys = ("model", "input_size", "embedding_dim", "weights_digest")
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
    return " ".join(parts)
