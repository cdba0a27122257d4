"""A searchable gallery of embeddings, in memory and on disk (the ``reidkit index`` / ``search`` commands).

``Gallery`` holds N×D float32 embeddings with one id and one JSON metadata dict per row. ``search``
returns the k nearest rows per query (FAISS when installed, an exact chunked search otherwise, both through
``reidkit.eval.knn.k_nearest``), optionally re-ranked with k-reciprocal re-ranking.

On disk a gallery is a folder:
    INDEX_DIR/manifest.json                    metric, dimension, ids, metadata, model description, file name
    INDEX_DIR/embeddings-<generation>.safetensors
    INDEX_DIR/model.safetensors (or model.onnx) the model that made the embeddings (``reidkit index build``)
    INDEX_DIR/.reidkit-index.lock              taken by writers (``index_lock``)

A save writes a new embeddings file, then replaces ``manifest.json`` atomically, then removes the old
embeddings file, so a reader always sees a complete, consistent index (``Gallery.load`` reads the manifest
again when a writer removed the embeddings file it named in between). Writers take the index's lock;
``add_to_index`` re-reads the index under it and adds only what is new, so two ``reidkit index add`` at
once both land (POSIX systems; elsewhere writes are not serialised).

The index is untrusted input: its manifest is checked (types, counts, the model description, sizes) and
names only files inside the folder: ``embeddings_file`` is a plain name, never a symbolic link; the model is
read only from the folder's own ``model.safetensors``/``model.onnx`` (``index_model_file``), never from the
path the manifest records; entry paths are labels, and ``readable_entry`` lets a command read an entry's
image only inside the index folder or a folder the user names.

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
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.errors import CheckpointError, OutputError, ReidkitError
from reidkit.eval.distance import check_metric
from reidkit.eval.knn import k_nearest
from reidkit.inference.features import check_finite, load_tensors, save_tensors
from reidkit.inference.modelfile import check_model_meta
from reidkit.utils.atomic import atomic_write_json, output_folder
from reidkit.utils.limits import MAX_EMBEDDING_DIM
from reidkit.utils.paths import inside

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
LOCK = ".reidkit-index.lock"
MODEL_FILES = ("model.safetensors", "model.onnx")  # the index's own model, in the order they are looked for
LOCK_WAIT_SECONDS = 120.0  # how long a writer waits for another one (a save takes seconds)
_LOAD_ATTEMPTS = 20  # manifest re-reads when writers keep replacing the embeddings file under a reader


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
    def save(self, directory: str | os.PathLike[str], model: torch.nn.Module | str | os.PathLike[str] | None = None
             ) -> Path:
        """Write the gallery to ``directory`` (created if needed); an existing index is replaced atomically,
        under the index's lock. ``model``, the network that made the embeddings (a PyTorch model, or the
        path of its ONNX file), is stored in the index as ``model.safetensors`` (or ``model.onnx``), so that
        adding to it and searching it need nothing else.

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
        name = f"embeddings-{uuid.uuid4().hex[:12]}.safetensors"
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
            raise ReidkitError(f"{out}: ids and metadata must be JSON values (str, int, float, lists, dicts): "
                               f"{exc}") from exc
        save_tensors(out / name, {"embeddings": self.embeddings})
        try:
            atomic_write_json(out / MANIFEST, manifest, indent=1)
        except BaseException:
            (out / name).unlink(missing_ok=True)
            raise
        if old and old["embeddings_file"] != name:
            (out / old["embeddings_file"]).unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], use_faiss: bool | None = None) -> Gallery:
        """Read a gallery saved by ``save``, checked as untrusted input (see the module docstring).

        Examples:
            >>> g = Gallery.load("my_index")  # doctest: +SKIP
        """
        d = Path(directory)
        for _ in range(_LOAD_ATTEMPTS):
            m = _read_manifest(d)
            emb_path = d / m["embeddings_file"]
            try:
                st = os.lstat(emb_path)
            except FileNotFoundError:
                # a writer replaced the manifest and removed this generation since we read it: read it again
                if _read_manifest(d)["embeddings_file"] != m["embeddings_file"]:
                    continue
                raise GalleryIndexError(f"{d}: damaged index (its embeddings file {m['embeddings_file']} is "
                                        "missing); rebuild it with 'reidkit index build'") from None
            if not stat.S_ISREG(st.st_mode):
                raise GalleryIndexError(f"{emb_path}: not a regular file (a link or a special file); an index "
                                        "reads only its own files")
            try:
                tensors, _ = load_tensors(emb_path)
            except CheckpointError as exc:
                if not emb_path.exists() and _read_manifest(d)["embeddings_file"] != m["embeddings_file"]:
                    continue  # removed by a writer while we opened it
                raise GalleryIndexError(f"{d}: damaged index ({exc}); rebuild it with 'reidkit index build'") \
                    from None
            return cls._from_manifest(d, m, tensors, use_faiss)
        raise GalleryIndexError(f"{d}: the index kept changing while it was read ({_LOAD_ATTEMPTS} times); "
                                "try again when its writers have finished")

    @classmethod
    def _from_manifest(cls, d: Path, m: dict[str, Any], tensors: dict[str, torch.Tensor],
                       use_faiss: bool | None) -> Gallery:
        emb = tensors.get("embeddings")
        if emb is None:
            raise GalleryIndexError(f"{d}: damaged index (no 'embeddings' tensor); rebuild it with "
                                    "'reidkit index build'")
        if not emb.is_floating_point() or emb.dim() != 2:
            raise GalleryIndexError(f"{d}: damaged index (embeddings of dtype {emb.dtype} and shape "
                                    f"{tuple(emb.shape)}; expected float N×D)")
        n, width = int(emb.shape[0]), int(emb.shape[1])
        if not (n == len(m["ids"]) == len(m["metadata"]) == m["count"]):
            raise GalleryIndexError(f"{d}: damaged index ({n} embeddings, {len(m['ids'])} ids, "
                                    f"{len(m['metadata'])} metadata entries, count {m['count']}); rebuild it "
                                    "with 'reidkit index build'")
        if n and m["embedding_dim"] is not None and m["embedding_dim"] != width:
            raise GalleryIndexError(f"{d}: damaged index (embeddings of width {width}, manifest says "
                                    f"{m['embedding_dim']})")
        g = cls(embedding_dim=m["embedding_dim"] or (width if n else None), metric=m["metric"],
                model_meta=m["model"], use_faiss=use_faiss)
        if n:
            g._chunks = [emb.float()]
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


def add_to_index(directory: str | os.PathLike[str], embeddings: Any, ids: Sequence[Any],
                 metadata: Sequence[dict[str, Any]], model_meta: dict[str, Any] | None = None) -> tuple[int, int]:
    """Add rows to the index in ``directory`` without losing anyone else's: under the index's lock, read the
    index as it is now, append the rows whose id it does not hold yet, save. ``model_meta`` (the model that
    made ``embeddings``) must still be the index's. Returns (rows added, rows in the index now).

    Examples:
        >>> add_to_index("my_index", feats, ["a.jpg"], [{"path": "a.jpg"}])  # doctest: +SKIP
        (1, 21)
    """
    d = Path(directory)
    with index_lock(d):
        g = Gallery.load(d)
        g.check_model(model_meta, what="the model of these embeddings")
        known = set(g.ids)
        keep = [i for i, x in enumerate(ids) if x not in known]
        if keep:
            rows = _as_matrix(embeddings, "add_to_index")
            g.add(rows[keep], ids=[ids[i] for i in keep], metadata=[metadata[i] for i in keep])
            g._save_locked(d)
        return len(keep), len(g)


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


_EMBEDDINGS_NAME = re.compile(r"embeddings-[0-9a-f]+\.safetensors")


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
        m = json.loads(path.read_bytes().decode("utf-8"))
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
    # the manifest names a file inside the index folder, never a path that leads elsewhere
    if not isinstance(m.get("embeddings_file"), str) or not _EMBEDDINGS_NAME.fullmatch(m["embeddings_file"]):
        raise GalleryIndexError(f"{path}: 'embeddings_file' must be a file name like "
                                "embeddings-<hex>.safetensors inside the index folder")
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
    if m.get("model") is not None:
        check_model_meta(m["model"], path, registered=False)
    else:
        m["model"] = None
    return m


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
