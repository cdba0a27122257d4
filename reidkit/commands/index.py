"""``reidkit index``: build a gallery index from a folder of images once; add, remove, update entries later;
rebuild its FAISS index.

Examples:
    reidkit index build --checkpoint runs/stadb/model.safetensors --images gallery/ --out my_index
    reidkit index build --checkpoint runs/stadb/model.safetensors --images gallery/ --out big --approx ivfpq
    reidkit index add my_index --images new_crops/
    reidkit index remove my_index --pids 17 42
    reidkit index update my_index --images refreshed_crops/
    reidkit index rebuild my_index --approx hnsw
    reidkit search my_index --query person.jpg --k 10

The index folder holds the embeddings (safetensors), their FAISS index (exact by default; ``--approx
ivfpq`` or ``hnsw``), ``manifest.json`` (the model's description, the index's parameters, the image paths
and their pids/camids when known) and the model itself (``model.safetensors`` or ``model.onnx``); see
``reidkit.inference.gallery``, and a 64×128 thumbnail of each entry (``thumbs/``, for ``search --picture``;
``remove`` deletes those of the entries it removes). An entry's id is its image's absolute path. ``add`` and ``update`` reuse the
index's model (or ``--checkpoint``/``--onnx``, which must be the same model); ``add`` skips images already
indexed, ``update`` re-embeds and replaces them. Every write replaces the index atomically under the
index's lock and merges with what other writers did meanwhile.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from reidkit.commands.argtypes import int_in, path_arg
from reidkit.commands.options import add_model_arguments, embedder_for_index, load_embedder
from reidkit.errors import DatasetError, ReidkitError
from reidkit.inference.faiss_index import BOUNDS
from reidkit.utils.limits import MAX_LABEL

APPROX = ("none", "ivfpq", "hnsw")
# option -> (IndexSpec field, the kind it belongs to, help)
INDEX_OPTIONS = {
    "--nlist": ("nlist", "ivfpq", "IVF-PQ inverted lists (default: 4·√N, at most N/39, for N images)"),
    "--m": ("m", "ivfpq", "IVF-PQ sub-quantisers, a divisor of the embedding width (default: the largest "
                          "divisor up to 64)"),
    "--nbits": ("nbits", "ivfpq", "bits per IVF-PQ sub-quantiser code (default 8)"),
    "--nprobe": ("nprobe", "ivfpq", "IVF-PQ lists searched per query (default 16)"),
    "--refine": ("refine", "ivfpq", "IVF-PQ candidates per result scored exactly (default 4)"),
    "--hnsw-m": ("hnsw_m", "hnsw", "HNSW links per node (default 64)"),
    "--ef-construction": ("ef_construction", "hnsw", "HNSW candidate list while building (default 40)"),
    "--ef-search": ("ef_search", "hnsw", "HNSW candidate list while searching (default 64)"),
}
GROWTH_NOTE = 10  # `add` suggests retraining once an IVF-PQ index holds this many times its training set


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=path_arg, metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--csv", type=path_arg, metavar="FILE", help="CSV list with a 'path' column (optional pid, camid)")


def _add_index_arguments(parser: argparse.ArgumentParser, approx_help: str, approx_default: str | None) -> None:
    parser.add_argument("--approx", choices=APPROX, default=approx_default, help=approx_help)
    for option, (field, _kind, text) in INDEX_OPTIONS.items():
        parser.add_argument(option, type=int_in(*BOUNDS[field]), default=None, metavar="N", help=text)


def _on_index(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """The subcommand ``name`` of an existing index: its parser with the INDEX_DIR positional."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("index", type=path_arg, metavar="INDEX_DIR", help="index folder made by 'reidkit index build'")
    return p


def _embedding_action(parser: argparse.ArgumentParser) -> None:
    """The options of an action that embeds images into an index (its model is the default)."""
    add_model_arguments(parser, required=False)
    _add_source_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit index build``, ``add``, ``remove``, ``update`` and ``rebuild``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="embed a folder of images into a new index")
    add_model_arguments(b)
    _add_source_arguments(b)
    b.add_argument("--out", required=True, type=path_arg, metavar="INDEX_DIR", help="index folder to write")
    b.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"],
                   help="distance used by searches (default euclidean)")
    b.add_argument("--force", action="store_true",
                   help="replace an index already in INDEX_DIR (its entries are lost); without it that is refused")
    _add_index_arguments(b, "approximate FAISS index: ivfpq or hnsw (default none: exact)", "none")
    _embedding_action(_on_index(sub, "add", "embed more images into an existing index"))
    r = _on_index(sub, "remove", "remove entries from an index (by id, image path or pid)")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--ids", nargs="+", metavar="ID", help="entry ids as the index holds them (for 'reidkit "
                      "index' entries, absolute image paths; a whole number also matches that integer id)")
    what.add_argument("--paths", nargs="+", type=path_arg, metavar="PATH",
                      help="images or folders (relative to the current folder): their entries, or every entry "
                           "under a folder")
    what.add_argument("--csv", type=path_arg, metavar="FILE", help="CSV list with a 'path' column: the entries of those images")
    what.add_argument("--pids", nargs="+", type=int_in(-1, MAX_LABEL), metavar="PID", help="every entry of these identities")
    _embedding_action(_on_index(sub, "update", "re-embed images and replace their entries (new ones are added)"))
    rb = _on_index(sub, "rebuild", "rebuild the FAISS index from the stored embeddings (retrain, or change it)")
    _add_index_arguments(rb, "index kind to rebuild as: none (exact), ivfpq or hnsw (default: the current kind)",
                         None)


def _index_params(args: argparse.Namespace, kind: str | None) -> dict[str, int]:
    """The index options given, checked to belong to ``kind`` (None: the index's current kind, checked by it)."""
    given = {}
    for option, (name, owner, _help) in INDEX_OPTIONS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if kind is not None and owner != kind:
            raise ReidkitError(f"{option} applies to --approx {owner}" + (", not to an exact index" if kind == "flat"
                                                                          else f", not to --approx {kind}"))
        given[name] = value
    return given


def _kind(approx: str | None) -> str | None:
    return None if approx is None else ("flat" if approx == "none" else approx)


def _new_images(gallery: Any, args: argparse.Namespace, skip_known: bool = True
                ) -> tuple[list[dict[str, Any]], int]:
    """The entries of ``--images``/``--csv`` not yet in ``gallery`` (all of them when ``skip_known`` is False):
    absolute ``path``, ``pid``, ``camid``, and ``identity`` instead of a pid when the CSV names its identities
    (numbers given to names in one list would not match another's); and how many were left out as already
    indexed."""
    from reidkit.inference.sources import collect_images

    images = collect_images(args.images, args.csv)
    known = set(gallery.ids) if skip_known else set()
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


def _entry_paths(index_dir: str) -> list[str]:
    """The image paths of the entries of the index in ``index_dir`` (none when there is no readable index)."""
    from reidkit.inference import Gallery, GalleryIndexError
    from reidkit.inference.gallery import entry_path

    if not os.path.isfile(os.path.join(index_dir, "manifest.json")):
        return []
    try:
        g = Gallery.load(index_dir, use_faiss=False)
    except (GalleryIndexError, ReidkitError):
        return []
    return [entry_path(index_dir, md["path"]) for md in g.metadata if isinstance((md or {}).get("path"), str)]


def _build(args: argparse.Namespace) -> int:
    from reidkit.eval.knn import require_faiss
    from reidkit.inference import Gallery
    from reidkit.inference.faiss_index import IndexSpec
    from reidkit.inference.gallery import MANIFEST
    from reidkit.inference.thumbnails import remove_thumbnails, write_thumbnails
    from reidkit.utils.atomic import output_folder, refuse_to_replace

    output_folder(args.out, "the index", create=False)
    if not args.force:
        refuse_to_replace(args.out, [MANIFEST], "an index", "--force")
    old_paths = _entry_paths(args.out)
    kind = _kind(args.approx) or "flat"
    spec = IndexSpec.make(kind, **_index_params(args, kind))
    if kind != "flat":
        require_faiss(f"--approx {kind}")
    gallery = Gallery(metric=args.metric, index=spec)
    emb = load_embedder(args)
    todo, _dup = _new_images(gallery, args)
    if emb.embedding_dim:  # the one-line errors (m, too few images) before any image is embedded
        spec.resolved(emb.embedding_dim, len(todo))
    emb.use_engine(args.engine, len(todo), args.threads)
    source = os.path.abspath(args.onnx or args.checkpoint)
    gallery.model_meta = dict(emb.meta, source=source, flip=bool(args.flip))
    gallery.embedding_dim = emb.embedding_dim or None
    feats, kept, metadata, nbad = _embed(emb, args, todo, bool(args.flip))
    if not kept:
        raise DatasetError(f"{args.images or args.csv}: none of the images could be read")
    gallery.add(feats, ids=kept, metadata=metadata)
    gallery.save(args.out, model=emb.model if emb.model is not None else source)
    remove_thumbnails(args.out, old_paths)  # --force over another index: none of its entries' pictures stay
    write_thumbnails(args.out, kept)
    print(f"built index {args.out}: {len(kept)} images, {gallery.embedding_dim}-d, metric {args.metric}, "
          f"{gallery.describe_index()}" + (f" ({nbad} unreadable skipped)" if nbad else ""))
    return 0


def _add_or_update(args: argparse.Namespace) -> int:
    from reidkit.inference import Gallery
    from reidkit.inference.gallery import add_to_index, update_index
    from reidkit.inference.thumbnails import write_thumbnails

    gallery = Gallery.load(args.index, use_faiss=False)  # ids and model only: the FAISS file is read under the lock
    update = args.action == "update"
    todo, dup = _new_images(gallery, args, skip_known=not update)
    emb = embedder_for_index(gallery, args.index, args, len(todo))
    flip = bool((gallery.model_meta or {}).get("flip", False))
    feats, kept, metadata, nbad = _embed(emb, args, todo, flip)
    if update:
        replaced, added, total = (update_index(args.index, feats, kept, metadata, gallery.model_meta) if kept
                                  else (0, 0, len(gallery)))
        write_thumbnails(args.index, kept)
        print(f"index {args.index}: replaced {replaced} images, added {added} ({nbad} unreadable), now {total}")
        return 0
    added, total = add_to_index(args.index, feats, kept, metadata, gallery.model_meta) if kept else (0, len(gallery))
    write_thumbnails(args.index, kept)
    dup += len(kept) - added  # added meanwhile by another writer
    print(f"index {args.index}: added {added} images ({dup} already indexed, {nbad} unreadable), now {total}")
    trained = gallery.trained_on
    if trained and total > GROWTH_NOTE * trained:
        print(f"note: its ivfpq index was trained on {trained:,} vectors and now holds {total:,}; "
              f"'reidkit index rebuild {args.index}' retrains it on all of them")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from reidkit.inference.gallery import entry_path, remove_from_index
    from reidkit.inference.thumbnails import remove_thumbnails

    ids: list[Any] = []
    paths: list[str] = []
    if args.ids:
        ids = [*args.ids, *(int(x) for x in args.ids if re.fullmatch(r"-?\d+", x))]
    elif args.paths:
        paths = [os.path.abspath(p) for p in args.paths]
    elif args.csv:
        from reidkit.inference.sources import collect_images

        ids = [os.path.abspath(p) for p in collect_images(None, args.csv).paths]
    removed, total = remove_from_index(args.index, ids, pids=args.pids or (), paths=paths)
    remove_thumbnails(args.index, [entry_path(args.index, i) for i in removed if isinstance(i, str)])
    what = "ids" if args.ids else "paths" if args.paths else "pids" if args.pids else "CSV's paths"
    tail = f" (no entry matched the {what} given)" if not removed else ""
    print(f"index {args.index}: removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}{tail}, now {total}")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from reidkit.inference.gallery import rebuild_index

    kind = _kind(args.approx)
    description, total = rebuild_index(args.index, kind, **_index_params(args, kind))
    print(f"index {args.index}: rebuilt its FAISS index over {total} entries: {description}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Build, extend, shrink, refresh or re-index an index."""
    if args.action == "build":
        return _build(args)
    if args.action in ("add", "update"):
        return _add_or_update(args)
    if args.action == "remove":
        return _remove(args)
    return _rebuild(args)
