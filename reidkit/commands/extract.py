"""``reidkit extract``: embed a folder, a CSV list or a dataset's query/gallery into a features file.

Examples::

    reidkit extract --checkpoint runs/stadb/model.safetensors --images crops/ --out feats.safetensors
    reidkit extract --onnx model.onnx --csv list.csv --out feats.safetensors --flip
    reidkit extract --checkpoint runs/stadb/checkpoint.pt --dataset market1501 --root data/ --out market.safetensors
    reidkit extract --checkpoint runs/stadb/model.safetensors --images crops/ --out f.safetensors --engine torch

A folder or CSV gives a file with ``feats``, ``pids``, ``camids`` and the paths in the metadata (pids and
camids come from Market-1501 style names ``0002_c3s1_...jpg``, the custom layout ``<pid>/<camid>_x.jpg``
or the CSV's ``pid``/``camid`` columns; -1 when unknown). A dataset gives the file ``reidkit eval
--features`` reads (``query_feats``, ``query_pids``, ..., ``gallery_camids``).

Engines (``--engine``): on a CPU, ``auto`` (the default) runs a checkpoint through ONNX Runtime — several
times faster than PyTorch eager there (``benchmarks/bench_extract.py``, BENCHMARKS.md) — when a dataset or
at least :data:`AUTO_ONNX_MIN_IMAGES` images are embedded, or when the model was exported before: the
model is exported once (with the parity check of :func:`reidkit.export.export_onnx`) into the cache
folder (``$REIDKIT_CACHE/onnx``, default ``~/.cache/reidkit/onnx``), named by a hash of the model
description and its weights digest, and reused afterwards. If the export fails or does not match
PyTorch, ``auto`` falls back to PyTorch with a warning. ``torch`` is eager PyTorch, ``onnx`` forces the
export, ``compile`` wraps the model in ``torch.compile`` (minutes of compilation on a CPU). On a GPU
``auto`` is PyTorch. ``--threads`` sets the CPU threads of both (default: the free physical cores, see
:func:`reidkit.engine.features.default_cpu_threads`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from reidkit.errors import DatasetError, ReidkitError

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
CAM_RE = re.compile(r"^[cC]?(\d+)_")
ENGINES = ("auto", "torch", "onnx", "compile")
AUTO_ONNX_MIN_IMAGES = 256  # below this (and no cached export) the export would cost more than it saves


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint`` / ``--onnx`` (one of them), ``--device``, ``--batch-size``, ``--flip``, ``--workers``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint", metavar="PATH",
                       help="model file: training checkpoint .pt, model.safetensors or a run folder")
    group.add_argument("--onnx", metavar="PATH", help="ONNX model written by 'reidkit export'")
    add_runtime_arguments(parser)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--batch-size``, ``--flip``, ``--workers``: how a model embeds images."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's features")
    parser.add_argument("--workers", type=int, default=4, help="image decoding threads (default 4)")


def load_embedder(args: argparse.Namespace) -> Any:
    """The :class:`reidkit.api.Embedder` named by ``--checkpoint`` or ``--onnx``."""
    from reidkit.api import load

    if args.batch_size < 1:
        raise ReidkitError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    return load(args.onnx or args.checkpoint, device=args.device)


def onnx_cache_dir() -> Path:
    """Where ``--engine auto/onnx`` keeps exported models: ``$REIDKIT_CACHE/onnx``, else
    ``$XDG_CACHE_HOME/reidkit/onnx``, else ``~/.cache/reidkit/onnx``."""
    env = os.environ.get("REIDKIT_CACHE")
    if env:
        return Path(env) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reidkit" / "onnx"


def cached_onnx_path(meta: dict[str, Any]) -> Path:
    """The cache file of a model description (name, options, input size, weights digest, version)."""
    from reidkit.export import DEFAULT_OPSET

    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
    h, w = (int(v) for v in meta["input_size"])
    return onnx_cache_dir() / f"{meta.get('model', 'model')}-{h}x{w}-opset{DEFAULT_OPSET}-{key}.onnx"


def _set_onnx_threads(emb: Any, threads: int) -> None:
    """Give an ONNX embedder's session ``threads`` intra-op threads (onnxruntime's default is every core)."""
    runner = getattr(emb, "_onnx", None)
    if runner is None or emb.source is None:
        return
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        runner.session = ort.InferenceSession(str(emb.source), opts, providers=runner.session.get_providers())
    except Exception:  # keep the session onnxruntime already made
        return


def select_engine(args: argparse.Namespace, emb: Any, n_images: int | None) -> Any:
    """The embedder to use for ``--engine`` (see the module doc); ``n_images`` None means "many" (a dataset).

    Sets the CPU threads (``--threads``) of PyTorch and of an ONNX Runtime session.
    """
    from reidkit.api import Embedder
    from reidkit.engine.features import configure_cpu_threads

    if not hasattr(args, "engine"):  # commands without --engine/--threads keep their PyTorch embedder
        return emb
    engine = args.engine or "auto"
    if engine not in ENGINES:
        raise ReidkitError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    on_cpu = emb.device.type == "cpu"
    threads = configure_cpu_threads(getattr(args, "threads", None)) if on_cpu else 0
    if emb.model is None:  # --onnx FILE
        if engine in ("torch", "compile"):
            raise ReidkitError(f"--engine {engine} needs --checkpoint; --onnx runs with onnxruntime")
        if on_cpu:
            _set_onnx_threads(emb, threads)
        return emb
    if engine == "torch":
        return emb
    if engine == "compile":
        import torch

        emb.model = torch.compile(emb.model)
        return emb
    if engine == "auto":
        if not on_cpu:
            return emb
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return emb
    path = cached_onnx_path(emb.meta)
    if engine == "auto" and not path.is_file() and n_images is not None and n_images < AUTO_ONNX_MIN_IMAGES:
        return emb
    if not path.is_file():
        from reidkit.export import export_onnx

        print(f"reidkit: exporting the model to ONNX once for faster CPU extraction: {path}", file=sys.stderr)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(emb.model, path)
        except (ReidkitError, OSError, RuntimeError) as exc:
            if engine == "onnx":
                raise ReidkitError(f"--engine onnx: the ONNX export failed: {str(exc).splitlines()[0]}") from exc
            print(f"reidkit: warning: ONNX export failed ({str(exc).splitlines()[0]}); using PyTorch",
                  file=sys.stderr)
            return emb
    try:
        onnx_emb = Embedder(device=emb.device, onnx_path=path)
    except ReidkitError as exc:  # a damaged cache file: export again next time
        path.unlink(missing_ok=True)
        if engine == "onnx":
            raise
        print(f"reidkit: warning: cached ONNX model unusable ({exc}); using PyTorch", file=sys.stderr)
        return emb
    if on_cpu:
        _set_onnx_threads(onnx_emb, threads)
    onnx_emb.meta = dict(emb.meta)  # the checkpoint's description, exactly as the PyTorch path writes it
    return onnx_emb


def parse_labels(path: str) -> tuple[int, int]:
    """(pid, camid) from a file's name: Market-1501 ``0002_c3s1_...`` → (2, 2) (0-based camera, as the
    Market reader), custom layout ``<pid>/<camid>_x.jpg`` → (pid, camid as written); (-1, -1) when unknown.

    Example:
        >>> parse_labels("/x/0002_c3s1_000451_03.jpg")
        (2, 2)
        >>> parse_labels("/x/17/4_a.jpg")
        (17, 4)
        >>> parse_labels("/x/photo.jpg")
        (-1, -1)
    """
    p = Path(path)
    m = MARKET_RE.match(p.name)
    if m:
        return int(m.group(1)), int(m.group(2)) - 1
    c = CAM_RE.match(p.name)
    if c and p.parent.name.isdigit():
        return int(p.parent.name), int(c.group(1))
    return -1, -1


def list_folder(directory: str) -> list[str]:
    """Every image file under ``directory`` (recursive, sorted); a one-line error when there is none."""
    from reidkit.data.datasets._common import walk_files

    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"{d}: not a folder; expected a folder of images (.jpg, .png, ...)")
    paths = walk_files(d)
    if not paths:
        raise DatasetError(f"{d}: no images found; expected .jpg/.jpeg/.png/.bmp/.webp/.tif files")
    return paths


def read_csv_list(csv_path: str) -> tuple[list[str], list[int], list[int]]:
    """Paths, pids and camids from a CSV with a ``path`` column (optional ``pid``, ``camid``; paths relative
    to the CSV's folder). Missing labels are -1."""
    p = Path(csv_path)
    if not p.is_file():
        raise DatasetError(f"{p}: CSV file not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise DatasetError(f"{p}: no 'path' column in the header; expected path[,pid,camid]")
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{p}: not a readable CSV file ({type(exc).__name__})") from exc
    paths, pids, camids = [], [], []
    for line, row in enumerate(rows, start=2):
        if not row.get("path"):
            continue
        q = Path(row["path"])
        paths.append(str(q if q.is_absolute() else p.parent / q))
        try:
            pids.append(int(row["pid"]) if row.get("pid") not in (None, "") else -1)
            camids.append(int(row["camid"]) if row.get("camid") not in (None, "") else -1)
        except ValueError as exc:
            raise DatasetError(f"{p}:{line}: pid and camid must be integers") from exc
    if not paths:
        raise DatasetError(f"{p}: the CSV lists no images")
    return paths, pids, camids


def collect_images(images: str | None, csv_path: str | None) -> tuple[list[str], list[int], list[int]]:
    """(paths, pids, camids) of ``--images DIR`` or ``--csv FILE``."""
    if csv_path:
        return read_csv_list(csv_path)
    assert images is not None
    paths = list_folder(images)
    labels = [parse_labels(q) for q in paths]
    return paths, [a for a, _ in labels], [b for _, b in labels]


def report_bad(bad: list[str], limit: int = 20) -> None:
    """Print the unreadable images that were skipped (to stderr)."""
    if not bad:
        return
    print(f"reidkit: skipped {len(bad)} unreadable image(s):", file=sys.stderr)
    for b in bad[:limit]:
        print(f"  {b}", file=sys.stderr)
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more", file=sys.stderr)


def embed_dataset(emb: Any, name: str, root: str, batch_size: int = 64, flip: bool = False, workers: int = 4,
                  progress: bool = True, ds: Any = None) -> Any:
    """Embed a dataset's query and gallery with an :class:`reidkit.api.Embedder`; returns
    :class:`reidkit.io_features.DatasetFeatures` (unreadable images are listed on stderr and left out)."""
    import torch

    from reidkit.data.datasets import load as load_dataset
    from reidkit.io_features import DatasetFeatures

    if ds is None:
        ds = load_dataset(name, root)
    parts: dict[str, Any] = {}
    for split in ("query", "gallery"):
        recs = ds.split(split)
        if not recs:
            raise DatasetError(f"{root}: dataset {name!r} has no {split} images")
        feats, kept, bad = emb.embed_paths([r.path for r in recs], batch_size, flip, workers, progress)
        report_bad(bad)
        keep = set(kept)
        rows = [r for r in recs if r.path in keep]
        parts[split] = (feats, torch.tensor([r.pid for r in rows], dtype=torch.int64),
                        torch.tensor([r.camid for r in rows], dtype=torch.int64), [r.path for r in rows])
    q, g = parts["query"], parts["gallery"]
    return DatasetFeatures(q[0], q[1], q[2], g[0], g[1], g[2], q[3], g[3], emb.meta, {"dataset": name})


def add_dataset_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--features FILE`` or ``--checkpoint/--onnx`` with ``--dataset NAME --root DIR``."""
    parser.add_argument("--features", metavar="FILE", help="dataset features file from 'reidkit extract --dataset'")
    parser.add_argument("--checkpoint", metavar="PATH", help="model file (with --dataset and --root)")
    parser.add_argument("--onnx", metavar="PATH", help="ONNX model (with --dataset and --root)")
    parser.add_argument("--dataset", metavar="NAME", help="dataset name, e.g. market1501")
    parser.add_argument("--root", metavar="DIR", help="dataset root folder")
    add_runtime_arguments(parser)


def dataset_features_from_args(args: argparse.Namespace) -> Any:
    """The :class:`reidkit.io_features.DatasetFeatures` named by :func:`add_dataset_source_arguments`."""
    from reidkit.io_features import read_dataset_features

    if args.features:
        if args.checkpoint or args.onnx or args.dataset:
            raise ReidkitError("give either --features FILE or --checkpoint PATH --dataset NAME --root DIR")
        return read_dataset_features(args.features)
    if not ((args.checkpoint or args.onnx) and args.dataset and args.root):
        raise ReidkitError("expected --features FILE, or --checkpoint PATH (or --onnx) with --dataset NAME "
                           "--root DIR")
    if args.checkpoint and args.onnx:
        raise ReidkitError("give --checkpoint or --onnx, not both")
    emb = select_engine(args, load_embedder(args), None)  # a no-op unless args has --engine
    return embed_dataset(emb, args.dataset, args.root, args.batch_size, args.flip, args.workers, True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit extract``."""
    add_model_arguments(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--csv", metavar="FILE", help="CSV list with a 'path' column (optional pid, camid)")
    src.add_argument("--dataset", metavar="NAME", help="a dataset's query and gallery (with --root)")
    parser.add_argument("--root", metavar="DIR", help="dataset root folder for --dataset")
    parser.add_argument("--out", required=True, metavar="FILE", help="features file to write (.safetensors)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto (default: ONNX Runtime on CPU for a dataset or >= "
                             f"{AUTO_ONNX_MIN_IMAGES} images, exported once to the cache; else PyTorch), "
                             "torch, onnx, compile (torch.compile)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch / ONNX Runtime (default: the free physical cores)")


def run(args: argparse.Namespace) -> int:
    """Embed and write the features file."""
    from reidkit.io_features import save_dataset_features, save_folder_features

    if args.dataset and not args.root:
        raise ReidkitError("--dataset needs --root DIR (the folder holding the dataset)")
    progress = not args.no_progress
    emb = load_embedder(args)
    if args.dataset:
        from reidkit.data.datasets import load as load_dataset

        ds = load_dataset(args.dataset, args.root)
        emb = select_engine(args, emb, len(ds.split("query")) + len(ds.split("gallery")))
        data = embed_dataset(emb, args.dataset, args.root, args.batch_size, args.flip, args.workers, progress, ds)
        save_dataset_features(args.out, data)
        print(f"wrote {args.out}: {data.query_feats.shape[0]} query and {data.gallery_feats.shape[0]} gallery "
              f"features of size {data.query_feats.shape[1]}")
        return 0
    paths, pids, camids = collect_images(args.images, args.csv)
    emb = select_engine(args, emb, len(paths))
    feats, kept, bad = emb.embed_paths(paths, args.batch_size, args.flip, args.workers, progress)
    report_bad(bad)
    if not kept:
        raise DatasetError(f"{args.images or args.csv}: none of the {len(paths)} images could be read")
    label = {p: (a, b) for p, a, b in zip(paths, pids, camids, strict=True)}
    save_folder_features(args.out, feats, kept, [label[p][0] for p in kept], [label[p][1] for p in kept],
                         emb.meta)
    print(f"wrote {args.out}: {len(kept)} features of size {feats.shape[1]}"
          + (f" ({len(bad)} unreadable skipped)" if bad else ""))
    return 0
