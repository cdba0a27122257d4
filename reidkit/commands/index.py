"""``reidkit index``: build a gallery index from a folder of images once, add images to it later.

Examples::

    reidkit index build --checkpoint runs/stadb/model.safetensors --images gallery/ --out my_index
    reidkit index add my_index --images new_crops/
    reidkit search my_index --query person.jpg --k 10

The index folder holds the embeddings (safetensors) and ``manifest.json`` (the model that made them, its
file, the image paths and their pids/camids when known); see :class:`reidkit.Gallery`. ``add`` reuses the
model recorded in the index (or ``--checkpoint``/``--onnx``, which must be the same model) and skips
images already indexed. Every write replaces the index atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from reidkit.commands.extract import add_model_arguments, collect_images, report_bad
from reidkit.errors import DatasetError, ReidkitError


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--csv", metavar="FILE", help="CSV list with a 'path' column (optional pid, camid)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit index build`` and ``reidkit index add``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="embed a folder of images into a new index (replaces an existing one)")
    add_model_arguments(b)
    _add_source_arguments(b)
    b.add_argument("--out", required=True, metavar="INDEX_DIR", help="index folder to write")
    b.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                   help="distance used by searches (default euclidean)")
    a = sub.add_parser("add", help="embed more images into an existing index")
    a.add_argument("index", metavar="INDEX_DIR", help="index folder made by 'reidkit index build'")
    add_model_arguments(a, required=False)
    _add_source_arguments(a)


def embedder_for_index(gallery: Any, index_dir: str, args: argparse.Namespace) -> Any:
    """The embedder of ``--checkpoint``/``--onnx`` if given, else the model file recorded in the index;
    refuses a model other than the one that built the index."""
    from reidkit.api import load

    meta = gallery.model_meta or {}
    given = getattr(args, "onnx", None) or getattr(args, "checkpoint", None)
    source = given or meta.get("source")
    if not source:
        raise ReidkitError(f"{index_dir}: the index does not record its model file; pass --checkpoint PATH")
    if not given and not Path(source).exists():
        raise ReidkitError(f"{index_dir}: the model file recorded in the index ({source}) is gone; "
                           "pass --checkpoint PATH (the same model)")
    emb = load(source, device=getattr(args, "device", None))
    gallery.check_model(emb.meta, what=f"model {source}")
    return emb


def _embed_into(gallery: Any, emb: Any, args: argparse.Namespace, flip: bool) -> tuple[int, int, int]:
    paths, pids, camids = collect_images(args.images, args.csv)
    known = set(gallery.ids)
    todo = [(os.path.abspath(p), a, b) for p, a, b in zip(paths, pids, camids, strict=True)
            if os.path.abspath(p) not in known]
    dup = len(paths) - len(todo)
    if not todo:
        return 0, dup, 0
    feats, kept, bad = emb.embed_paths([t[0] for t in todo], args.batch_size, flip, args.workers,
                                       not args.no_progress)
    report_bad(bad)
    labels = {t[0]: t for t in todo}
    gallery.add(feats, ids=kept, metadata=[{"path": p, "pid": labels[p][1], "camid": labels[p][2]}
                                           for p in kept])
    return len(kept), dup, len(bad)


def run(args: argparse.Namespace) -> int:
    """Build or extend an index."""
    from reidkit.api import load
    from reidkit.index import Gallery

    if args.action == "build":
        emb = load(args.onnx or args.checkpoint, device=args.device)
        source = os.path.abspath(args.onnx or args.checkpoint)
        meta = dict(emb.meta, source=source, flip=bool(args.flip))
        gallery = Gallery(emb.embedding_dim or None, metric=args.metric, model_meta=meta)
        n, _dup, nbad = _embed_into(gallery, emb, args, bool(args.flip))
        if n == 0:
            raise DatasetError(f"{args.images or args.csv}: none of the images could be read")
        gallery.save(args.out)
        print(f"built index {args.out}: {n} images, {gallery.embedding_dim}-d, metric {args.metric}"
              + (f" ({nbad} unreadable skipped)" if nbad else ""))
        return 0
    gallery = Gallery.load(args.index)
    emb = embedder_for_index(gallery, args.index, args)
    flip = bool((gallery.model_meta or {}).get("flip", False))
    n, dup, nbad = _embed_into(gallery, emb, args, flip)
    if n:
        gallery.save(args.index)
    print(f"index {args.index}: added {n} images ({dup} already indexed, {nbad} unreadable), now {len(gallery)}")
    return 0
