"""``reidkit search``: find the k nearest gallery images of one or many query images in an index.

Examples:
    reidkit search my_index --query person.jpg --k 10
    reidkit search my_index --query queries/ --k 5 --format csv --out hits.csv --picture ranks.png
    reidkit search my_index --query person.jpg --rerank
    reidkit search big_index --query queries/ --nprobe 64

Output (stdout or ``--out``): JSON ``{"index", "metric", "k", "reranked", "index_kind", "results": [{"query",
"matches": [{"rank", "path", "distance", "pid", "camid"[, "identity"]}]}]}`` (``identity``: the entry's name when
the index was built from a CSV naming its identities) or CSV ``query,rank,path,distance,pid,camid``.
An approximate index (``index_kind`` ``ivfpq`` or ``hnsw``) picks the candidates; their distances are exact.
``--nprobe``/``--refine``/``--ef-search`` trade speed for recall for this search only.
``--picture`` draws each query's rank list (green frame: same pid as the query, red: another pid, grey:
unknown — pids come from Market-style names or the ``<pid>/<camid>_x.jpg`` layout). An index is untrusted
input: the gallery images drawn are read only inside the index folder or a ``--gallery-root DIR`` you name;
the others are drawn from the index's own thumbnails (``thumbs/``, written by ``index build/add/update``;
``reidkit.inference.thumbnails``), or blank when it has none (``reidkit.inference.gallery.readable_entry``). Entry paths recorded relative
are read from the index folder. Queries are embedded with the index's model (or ``--checkpoint``/``--onnx``,
which must be the same model).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from reidkit.commands.argtypes import int_in, path_arg
from reidkit.commands.options import add_runtime_arguments, embedder_for_index
from reidkit.errors import DatasetError, ReidkitError
from reidkit.inference.faiss_index import BOUNDS
from reidkit.utils.limits import MAX_RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit search``."""
    parser.add_argument("index", type=path_arg, metavar="INDEX_DIR", help="index folder made by 'reidkit index build'")
    parser.add_argument("--query", required=True, type=path_arg, metavar="IMG_or_DIR", help="a query image or a folder of them")
    parser.add_argument("--k", type=int_in(1, MAX_RESULTS), default=10, help="results per query (default 10)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, λ=0.3)")
    parser.add_argument("--nprobe", type=int_in(*BOUNDS["nprobe"]), default=None, metavar="N",
                        help="IVF-PQ lists searched per query (default: the index's, recorded when it was built)")
    parser.add_argument("--refine", type=int_in(*BOUNDS["refine"]), default=None, metavar="N",
                        help="IVF-PQ candidates per result scored exactly (default: the index's, recorded when it "
                             "was built)")
    parser.add_argument("--ef-search", type=int_in(*BOUNDS["ef_search"]), default=None, metavar="N",
                        help="HNSW candidate list per query (default: the index's, recorded when it was built)")
    parser.add_argument("--format", choices=["json", "csv"], default="json", help="output format (default json)")
    parser.add_argument("--out", type=path_arg, metavar="FILE", help="write the results here instead of stdout")
    parser.add_argument("--picture", type=path_arg, metavar="PNG", help="draw the rank lists (one row per query) into this PNG")
    parser.add_argument("--max-picture-queries", type=int_in(1, MAX_RESULTS), default=20,
                        help="queries drawn in --picture (default 20)")
    parser.add_argument("--gallery-root", action="append", default=[], type=path_arg, metavar="DIR",
                        help="a folder the index's gallery images may be read from for --picture (repeatable; "
                             "the index folder always is); others are drawn blank")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--checkpoint", type=path_arg, metavar="PATH", help="model file (default: the one recorded in the index)")
    group.add_argument("--onnx", type=path_arg, metavar="PATH", help="ONNX model of the same weights")
    add_runtime_arguments(parser, flip=False)  # the index records whether its images were flip-averaged


def format_results(results: list[dict[str, Any]], fmt: str, header: dict[str, Any]) -> str:
    """Results as JSON (with ``header`` fields) or CSV text."""
    if fmt == "json":
        return json.dumps({**header, "results": results}, indent=2) + "\n"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "rank", "path", "distance", "pid", "camid"])
    for r in results:
        for m in r["matches"]:
            w.writerow([r["query"], m["rank"], m["path"], f"{m['distance']:.6f}", m.get("pid"), m.get("camid")])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    """Embed the queries, search the index, print or write the results."""
    from reidkit.inference import Gallery
    from reidkit.inference.faiss_index import check_search_params
    from reidkit.inference.gallery import entry_path
    from reidkit.inference.sources import list_folder, report_bad
    from reidkit.utils.atomic import atomic_write_text, output_file

    if args.out:
        output_file(args.out, "the results")
    if args.picture:
        output_file(args.picture, "the rank-list picture")
    gallery = Gallery.load(args.index)
    if len(gallery) == 0:
        raise ReidkitError(f"{args.index}: the index is empty; add images with 'reidkit index add'")
    check_search_params(gallery.index_spec.kind, args.nprobe, args.ef_search, args.refine)  # before embedding
    q = Path(args.query)
    if q.is_dir():
        paths = list_folder(str(q))
    elif q.is_file():
        paths = [str(q)]
    else:
        raise DatasetError(f"{q}: no such image or folder")
    emb = embedder_for_index(gallery, args.index, args, len(paths))
    flip = bool((gallery.model_meta or {}).get("flip", False))
    feats, kept, bad = emb.embed_paths(paths, args.batch_size, flip, args.workers,
                                       progress=len(paths) > 50 and not args.no_progress)
    report_bad(bad)
    if not kept:
        raise DatasetError(f"{q}: none of the query images could be read")
    hits = gallery.search(feats, k=args.k, rerank=args.rerank, nprobe=args.nprobe, ef_search=args.ef_search,
                          refine=args.refine)
    results = []
    for path, row in zip(kept, hits, strict=True):
        matches = []
        for rank, h in enumerate(row, start=1):
            md = h.metadata or {}
            where = md.get("path", h.id)
            matches.append({"rank": rank, "path": entry_path(args.index, where) if isinstance(where, str) else where,
                            "distance": h.distance, "pid": _label(md.get("pid")), "camid": _label(md.get("camid"))}
                           | ({"identity": md["identity"]} if isinstance(md.get("identity"), str) else {}))
        results.append({"query": os.path.abspath(path), "matches": matches})
    header = {"index": os.path.abspath(args.index), "metric": gallery.metric, "k": args.k,
              "reranked": bool(args.rerank), "index_kind": gallery.index_spec.kind, "skipped": bad}
    text = format_results(results, args.format, header)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}: {len(results)} queries × top {min(args.k, len(gallery))}")
    else:
        print(text, end="")
    if args.picture:
        blank = _draw(results, args.picture, args.max_picture_queries, args.index, args.gallery_root)
        if blank:
            print(f"reidkit: warning: {blank} gallery image(s) in the picture lie outside the index folder and "
                  "every --gallery-root and have no thumbnail in the index; drawn blank (pass --gallery-root DIR "
                  "to draw them)", file=sys.stderr)
        if args.out:
            print(f"wrote {args.picture}")
    return 0


def _label(value: Any) -> int:
    """A pid or camid from an entry's metadata: an integer, else -1 (unknown)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _draw(results: list[dict[str, Any]], out_png: str, limit: int, index: str, roots: list[str]) -> int:
    """Draw the rank lists; returns how many gallery tiles were left blank (outside the readable folders)."""
    from PIL import Image

    from reidkit.inference.gallery import readable_entry
    from reidkit.inference.sources import parse_labels
    from reidkit.inference.thumbnails import readable_thumbnail
    from reidkit.viz.ranklist import TILE, render_rank_list, save_png, stack_pictures

    pics, blank = [], 0
    placeholder = Image.new("RGB", TILE, (200, 200, 200))
    for r in results[:max(1, limit)]:
        qpid, _ = parse_labels(r["query"])
        flags: list[bool | None] = [None if qpid < 0 or m["pid"] < 0 else m["pid"] == qpid for m in r["matches"]]
        tiles: list[Any] = []
        for m in r["matches"]:
            readable = (readable_entry(index, m["path"], roots) or readable_thumbnail(index, m["path"])
                        if isinstance(m["path"], str) else None)
            tiles.append(readable if readable is not None else placeholder)
            blank += readable is None
        pics.append(render_rank_list(r["query"], tiles, flags, [m["distance"] for m in r["matches"]],
                                     Path(r["query"]).name))
    save_png(stack_pictures(pics), out_png)
    return blank
