"""``reidkit index``: build a gallery index from a folder of images once, add images to it later.

Examples:
    reidkit index build --checkpoint runs/stadb/model.safetensors --images gallery/ --out my_index
    reidkit index add my_index --images new_crops/
    reidkit search my_index --query person.jpg --k 10

The index folder holds the embeddings (safetensors), ``manifest.json`` (the model's description, the image
paths and their pids/camids when known) and the model itself (``model.safetensors`` or ``model.onnx``); see
``reidkit.inference.gallery``. ``add`` reuses the index's model (or ``--checkpoint``/``--onnx``, which must
be the same model) and skips images already indexed. Every write replaces the index atomically under the
index's lock, and ``add`` merges: two at once both land.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from reidkit.commands.options import add_model_arguments, embedder_for_index, load_embedder
from reidkit.errors import DatasetError


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--csv", metavar="FILE", help="CSV list with a 'path' column (optional pid, camid)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit index build`` and ``reidkit index add``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="embed a folder of images into a new index")
    add_model_arguments(b)
    _add_source_arguments(b)
    b.add_argument("--out", required=True, metavar="INDEX_DIR", help="index folder to write")
    b.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                   help="distance used by searches (default euclidean)")
    b.add_argument("--force", action="store_true",
                   help="replace an index already in INDEX_DIR (its entries are lost); without it that is refused")
    a = sub.add_parser("add", help="embed more images into an existing index")
    a.add_argument("index", metavar="INDEX_DIR", help="index folder made by 'reidkit index build'")
    add_model_arguments(a, required=False)
    _add_source_arguments(a)


def _new_images(gallery: Any, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """The entries of ``--images``/``--csv`` not yet in ``gallery`` (absolute ``path``, ``pid``, ``camid``;
    ``identity`` instead of a pid when the CSV names its identities, since numbers given to names in one
    list would not match another's), and how many already were."""
    from reidkit.inference.sources import collect_images

    images = collect_images(args.images, args.csv)
    known = set(gallery.ids)
    names = images.identity_names
    todo = [{"path": os.path.abspath(p), "pid": -1 if names and a >= 0 else a, "camid": b}
            | ({"identity": names[a]} if names and a >= 0 else {})
            for p, a, b in zip(images.paths, images.pids, images.camids, strict=True)
            if os.path.abspath(p) not in known]
    return todo, len(images) - len(todo)


def _embed(emb: Any, args: argparse.Namespace, todo: list[dict[str, Any]], flip: bool
           ) -> tuple[Any, list[str], list[dict[str, Any]], int]:
    """Embed ``todo``: (features, kept paths, their metadata, unreadable count)."""
    from reidkit.inference.sources import report_bad

    if not todo:
        return None, [], [], 0
    feats, kept, bad = emb.embed_paths([t["path"] for t in todo], args.batch_size, flip, args.workers,
                                       not args.no_progress)
    report_bad(bad)
    labels = {t["path"]: t for t in todo}
    return feats, kept, [labels[p] for p in kept], len(bad)


def run(args: argparse.Namespace) -> int:
    """Build or extend an index."""
    from reidkit.inference import Gallery
    from reidkit.inference.gallery import add_to_index

    if args.action == "build":
        from reidkit.inference.gallery import MANIFEST
        from reidkit.utils.atomic import output_folder, refuse_to_replace

        output_folder(args.out, "the index", create=False)
        if not args.force:
            refuse_to_replace(args.out, [MANIFEST], "an index", "--force")
        gallery = Gallery(metric=args.metric)
        emb = load_embedder(args)
        todo, _dup = _new_images(gallery, args)
        emb.use_engine(args.engine, len(todo), args.threads)
        source = os.path.abspath(args.onnx or args.checkpoint)
        gallery.model_meta = dict(emb.meta, source=source, flip=bool(args.flip))
        gallery.embedding_dim = emb.embedding_dim or None
        feats, kept, metadata, nbad = _embed(emb, args, todo, bool(args.flip))
        if not kept:
            raise DatasetError(f"{args.images or args.csv}: none of the images could be read")
        gallery.add(feats, ids=kept, metadata=metadata)
        gallery.save(args.out, model=emb.model if emb.model is not None else source)
        print(f"built index {args.out}: {len(kept)} images, {gallery.embedding_dim}-d, metric {args.metric}"
              + (f" ({nbad} unreadable skipped)" if nbad else ""))
        return 0
    gallery = Gallery.load(args.index)
    todo, dup = _new_images(gallery, args)
    emb = embedder_for_index(gallery, args.index, args, len(todo))
    flip = bool((gallery.model_meta or {}).get("flip", False))
    feats, kept, metadata, nbad = _embed(emb, args, todo, flip)
    added, total = add_to_index(args.index, feats, kept, metadata, gallery.model_meta) if kept else (0, len(gallery))
    dup += len(kept) - added  # added meanwhile by another writer
    print(f"index {args.index}: added {added} images ({dup} already indexed, {nbad} unreadable), now {total}")
    return 0
