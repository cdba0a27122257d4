"""Features files on disk: safetensors tensors plus JSON metadata (paths, model description).

Two layouts (see ARCHITECTURE.md, "Files on disk"), each with one writer and one reader:

- a **folder** file: ``feats`` (N×D float32), ``pids``, ``camids`` (int64, -1 when unknown) and the image
  paths in the metadata (``{"paths": json list}``);
- a **dataset** file: ``query_feats``, ``query_pids``, ``query_camids``, ``gallery_feats``,
  ``gallery_pids``, ``gallery_camids``, with ``query_paths`` / ``gallery_paths`` in the metadata when known.

The model that made the features is stored under the metadata key ``"reidkit"`` (the same JSON dict as in
a ``model.safetensors`` file). Every file is written atomically.

Examples:
    >>> import torch
    >>> save_folder_features("f.safetensors", torch.zeros(2, 4), ["a.jpg", "b.jpg"])  # doctest: +SKIP
    >>> read_folder_features("f.safetensors").paths  # doctest: +SKIP
    ['a.jpg', 'b.jpg']
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reidkit.errors import CheckpointError
from reidkit.inference.modelfile import check_model_meta
from reidkit.utils.atomic import atomic_path

DATASET_KEYS = ("query_feats", "query_pids", "query_camids", "gallery_feats", "gallery_pids", "gallery_camids")
FOLDER_KEYS = ("feats", "pids", "camids")


@dataclass
class FolderFeatures:
    """Features of a folder (or CSV list) of images: one row per path; pid/camid -1 when unknown;
    ``identity_names[pid]`` the name of identity ``pid`` when the list named its identities."""

    feats: torch.Tensor
    paths: list[str]
    pids: torch.Tensor
    camids: torch.Tensor
    model_meta: dict[str, Any] | None = None
    identity_names: list[str] | None = None


@dataclass
class DatasetFeatures:
    """Query and gallery features of a benchmark, as ``reidkit eval --features`` reads them."""

    query_feats: torch.Tensor
    query_pids: torch.Tensor
    query_camids: torch.Tensor
    gallery_feats: torch.Tensor
    gallery_pids: torch.Tensor
    gallery_camids: torch.Tensor
    query_paths: list[str] | None = None
    gallery_paths: list[str] | None = None
    model_meta: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                 metadata: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` to a safetensors file atomically; metadata values are stored as JSON strings.

    Examples:
        >>> save_tensors("x.safetensors", {"a": torch.ones(2)}, {"note": "hi"})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    meta = {k: json.dumps(v) for k, v in (metadata or {}).items() if v is not None}
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file; returns (tensors, metadata with JSON values decoded).

    Raises ``CheckpointError`` naming the file when it is missing or not a safetensors file.

    Examples:
        >>> tensors, meta = load_tensors("x.safetensors")  # doctest: +SKIP
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: features file not found (expected a .safetensors file)")
    try:
        tensors: dict[str, torch.Tensor] = {}
        if _utf8(p):
            with safe_open(str(p), framework="pt") as fh:
                raw_meta = fh.metadata() or {}
                for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensors[key] = fh.get_tensor(key)
        else:  # safe_open takes UTF-8 paths only: read a file named in other bytes whole
            from safetensors.torch import load

            data = p.read_bytes()
            tensors = load(data)
            (size,) = struct.unpack("<Q", data[:8])
            raw_meta = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except Exception as exc:  # safetensors raises several private error types
        raise CheckpointError(f"{p}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    meta: dict[str, Any] = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError, RecursionError):  # not JSON: kept as the text it is
            meta[k] = v
    return tensors, meta


def _utf8(p: Path) -> bool:
    try:
        os.fspath(p).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_finite(feats: torch.Tensor, what: str) -> None:
    """Raise ``CheckpointError`` if ``feats`` holds NaN or infinite values (``what`` names the source)."""
    if feats.is_floating_point() and not bool(torch.isfinite(feats).all()):
        bad = int((~torch.isfinite(feats)).any(dim=-1).sum()) if feats.dim() > 1 else 1
        raise CheckpointError(f"{what}: {bad} feature row(s) contain NaN or infinite values; expected finite numbers")


def _ids(values: Any, n: int) -> torch.Tensor:
    if values is None:
        return torch.full((n,), -1, dtype=torch.int64)
    return torch.as_tensor(list(values) if not torch.is_tensor(values) else values, dtype=torch.int64).reshape(n)


def save_folder_features(path: str | os.PathLike[str], feats: torch.Tensor, paths: list[str],
                         pids: Any = None, camids: Any = None,
                         model_meta: dict[str, Any] | None = None,
                         identity_names: list[str] | None = None) -> None:
    """Write the features of a folder of images (``feats``, ``pids``, ``camids``; the paths, and the
    identity names when pids stand for names, in the metadata).

    Examples:
        >>> save_folder_features("feats.safetensors", torch.randn(2, 8), ["a.jpg", "b.jpg"])  # doctest: +SKIP
    """
    n = int(feats.shape[0])
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} feature rows")
    save_tensors(path, {"feats": feats.float(), "pids": _ids(pids, n), "camids": _ids(camids, n)},
                 {"paths": list(map(str, paths)), "reidkit": model_meta, "identity_names": identity_names})


def read_folder_features(path: str | os.PathLike[str]) -> FolderFeatures:
    """Read a file written by ``save_folder_features`` (``reidkit extract --images``), checked as
    ``read_dataset_features`` checks its files (float N×D features without NaN or infinite values, integer
    labels with one entry per row, the paths a list of N strings when present, a valid model description).

    Examples:
        >>> ff = read_folder_features("feats.safetensors")  # doctest: +SKIP
    """
    tensors, meta = load_tensors(path)
    if "feats" not in tensors:
        raise CheckpointError(f"{path}: no 'feats' tensor; expected a folder features file from "
                              "'reidkit extract --images'")
    feats = _feature_matrix(tensors["feats"], path, "feats", min_rows=0)
    n = feats.shape[0]
    paths = _path_list(meta, "paths", n, path)
    pids = _labels(tensors.get("pids"), n, path, "pids")
    names = meta.get("identity_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(x, str) for x in names)
                              or (n and int(pids.max()) >= len(names))):
        raise CheckpointError(f"{path}: damaged metadata: 'identity_names' must be a list of strings, one per pid")
    return FolderFeatures(feats, paths if paths is not None else [f"#{i}" for i in range(n)], pids,
                          _labels(tensors.get("camids"), n, path, "camids"), _model_meta(meta, path), names)


def _feature_matrix(t: torch.Tensor, path: Any, key: str, min_rows: int = 1) -> torch.Tensor:
    """``t`` as float32 features: a floating N×D tensor (N >= ``min_rows``, D >= 1) of finite values."""
    if not t.is_floating_point():
        raise CheckpointError(f"{path}: {key} has dtype {t.dtype}; expected float features")
    if t.dim() != 2 or t.shape[0] < min_rows or t.shape[1] < 1:
        split = key.rpartition("_")[0]
        rows = f"at least one {split + ' ' if split else ''}row" if min_rows else "rows"
        raise CheckpointError(f"{path}: {key} has shape {tuple(t.shape)}; expected {rows} (N×D)")
    out = t.float()
    check_finite(out, f"{path}: {key}")
    return out


def _labels(t: torch.Tensor | None, n: int, path: Any, key: str) -> torch.Tensor:
    """Integer labels, one per feature row (all -1 when ``t`` is None)."""
    if t is None:
        return torch.full((n,), -1, dtype=torch.int64)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise CheckpointError(f"{path}: {key} has dtype {t.dtype}; expected int64")
    if t.numel() != n:
        split, _, what = key.rpartition("_")
        raise CheckpointError(f"{path}: {split + ' has ' if split else ''}{n} features but {t.numel()} {what}; "
                              "expected equal lengths")
    return t.long().flatten()


def _path_list(meta: dict[str, Any], key: str, n: int, path: Any) -> list[str] | None:
    """Metadata ``key``: None when absent, else a list of ``n`` strings."""
    v = meta.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != n or not all(isinstance(p, str) for p in v):
        raise CheckpointError(f"{path}: damaged metadata: '{key}' must be a list of {n} paths")
    return v


def _model_meta(meta: dict[str, Any], path: Any) -> dict[str, Any] | None:
    v = meta.get("reidkit")
    return None if v is None else check_model_meta(v, path, registered=False)


def save_dataset_features(path: str | os.PathLike[str], data: DatasetFeatures) -> None:
    """Write query/gallery features with their pids and camids (the file ``reidkit eval --features`` reads).

    Examples:
        >>> save_dataset_features("market_feats.safetensors", DatasetFeatures(...))  # doctest: +SKIP
    """
    tensors = {
        "query_feats": data.query_feats.float(),
        "query_pids": _ids(data.query_pids, data.query_feats.shape[0]),
        "query_camids": _ids(data.query_camids, data.query_feats.shape[0]),
        "gallery_feats": data.gallery_feats.float(),
        "gallery_pids": _ids(data.gallery_pids, data.gallery_feats.shape[0]),
        "gallery_camids": _ids(data.gallery_camids, data.gallery_feats.shape[0]),
    }
    meta: dict[str, Any] = {"query_paths": data.query_paths, "gallery_paths": data.gallery_paths,
                            "reidkit": data.model_meta}
    meta.update(data.extra)
    save_tensors(path, tensors, meta)


def read_dataset_features(path: str | os.PathLike[str]) -> DatasetFeatures:
    """Read a dataset features file, checked: the six tensors present, float features with at least one row
    and the same width on both sides, integer pids and camids with one entry per row, no NaN or infinite
    value. Every problem is a one-line ``CheckpointError`` naming the file.

    Examples:
        >>> df = read_dataset_features("market_feats.safetensors")  # doctest: +SKIP
        >>> df.query_feats.shape  # doctest: +SKIP
    """
    tensors, meta = load_tensors(path)
    missing = [k for k in DATASET_KEYS if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}; expected a dataset features file "
                              "from 'reidkit extract --dataset'")
    out: dict[str, torch.Tensor] = {}
    for split in ("query", "gallery"):
        feats = out[f"{split}_feats"] = _feature_matrix(tensors[f"{split}_feats"], path, f"{split}_feats")
        for what in ("pids", "camids"):
            out[f"{split}_{what}"] = _labels(tensors[f"{split}_{what}"], feats.shape[0], path, f"{split}_{what}")
    if out["query_feats"].shape[1] != out["gallery_feats"].shape[1]:
        raise CheckpointError(f"{path}: query_feats width {out['query_feats'].shape[1]} != gallery_feats width "
                              f"{out['gallery_feats'].shape[1]}; expected the same embedding size")
    nq, ng = out["query_feats"].shape[0], out["gallery_feats"].shape[0]
    return DatasetFeatures(
        out["query_feats"], out["query_pids"], out["query_camids"],
        out["gallery_feats"], out["gallery_pids"], out["gallery_camids"],
        _path_list(meta, "query_paths", nq, path), _path_list(meta, "gallery_paths", ng, path),
        _model_meta(meta, path), _embedding_notes(meta),
    )


def _embedding_notes(meta: dict[str, Any]) -> dict[str, Any]:
    """How the features were embedded, as ``embed_dataset`` records it (``dataset``, ``flip``, ``multi_query``);
    an entry of the wrong type is left out (unknown), never trusted."""
    notes: dict[str, Any] = {}
    if isinstance(meta.get("flip"), bool):
        notes["flip"] = meta["flip"]
    if meta.get("multi_query") in ("none", "mean", "max"):
        notes["multi_query"] = meta["multi_query"]
    if isinstance(meta.get("dataset"), str) and len(meta["dataset"]) <= 200:
        notes["dataset"] = meta["dataset"]
    return notes
