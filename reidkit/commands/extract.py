"""``reidkit extract``: embed a folder, a CSV list or a dataset's query/gallery into a features file.

Examples::

    reidkit extract --checkpoint runs/stadb/model.safetensors --images crops/ --out feats.safetensors
    reidkit extract --onnx model.onnx --csv list.csv --out feats.safetensors --flip
    reidkit extract --checkpoint runs/stadb/checkpoint.pt --dataset market1501 --root data/ --out market.safetensors

A folder or CSV gives a file with ``feats``, ``pids``, ``camids`` and the paths in the metadata (pids and
camids come from Market-1501 style names ``0002_c3s1_...jpg``, the custom layout ``<pid>/<camid>_x.jpg``
or the CSV's ``pid``/``camid`` columns; -1 when unknown). A dataset gives the file ``reidkit eval
--features`` reads (``query_feats``, ``query_pids``, ..., ``gallery_camids``).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path
from typing import Any

from reidkit.errors import DatasetError, ReidkitError

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
CAM_RE = re.compile(r"^[cC]?(\d+)_")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint`` / ``--onnx`` (one of them), ``--device``, ``--batch-size``, ``--flip``, ``--workers``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint", metavar="PATH",
                       help="model file: training checkpoint .pt, model.safetensors or a run folder")
    group.add_argument("--onnx", metavar="PATH", help="ONNX model written by 'reidkit export'")
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
                  progress: bool = True) -> Any:
    """Embed a dataset's query and gallery with an :class:`reidkit.api.Embedder`; returns
    :class:`reidkit.io_features.DatasetFeatures` (unreadable images are listed on stderr and left out)."""
    from reidkit.data.datasets import load as load_dataset
    from reidkit.io_features import DatasetFeatures

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
        parts[split] = (feats, [r.pid for r in rows], [r.camid for r in rows], [r.path for r in rows])
    q, g = parts["query"], parts["gallery"]
    return DatasetFeatures(q[0], q[1], q[2], g[0], g[1], g[2], q[3], g[3], emb.meta, {"dataset": name})


def add_dataset_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--features FILE`` or ``--checkpoint/--onnx`` with ``--dataset NAME --root DIR``."""
    parser.add_argument("--features", metavar="FILE", help="dataset features file from 'reidkit extract --dataset'")
    parser.add_argument("--checkpoint", metavar="PATH", help="model file (with --dataset and --root)")
    parser.add_argument("--onnx", metavar="PATH", help="ONNX model (with --dataset and --root)")
    parser.add_argument("--dataset", metavar="NAME", help="dataset name, e.g. market1501")
    parser.add_argument("--root", metavar="DIR", help="dataset root folder")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image's features")
    parser.add_argument("--workers", type=int, default=4, help="image decoding threads (default 4)")


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
    emb = load_embedder(args)
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


def run(args: argparse.Namespace) -> int:
    """Embed and write the features file."""
    from reidkit.io_features import save_dataset_features, save_folder_features

    if args.dataset and not args.root:
        raise ReidkitError("--dataset needs --root DIR (the folder holding the dataset)")
    progress = not args.no_progress
    emb = load_embedder(args)
    if args.dataset:
        data = embed_dataset(emb, args.dataset, args.root, args.batch_size, args.flip, args.workers, progress)
        save_dataset_features(args.out, data)
        print(f"wrote {args.out}: {data.query_feats.shape[0]} query and {data.gallery_feats.shape[0]} gallery "
              f"features of size {data.query_feats.shape[1]}")
        return 0
    paths, pids, camids = collect_images(args.images, args.csv)
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
