"""``reidkit visualize``: attention maps and drop masks over input crops, and rank lists.

Examples:
    reidkit visualize attention --checkpoint runs/stadb/model.safetensors --images a.jpg b.jpg crops/ --out viz/
    reidkit visualize ranklist --features market.safetensors --queries 8 --worst --out viz/
    reidkit visualize ranklist --checkpoint runs/stadb/checkpoint.pt --dataset market1501 --root data/ \\
        --query-index 0 5 9 --k 10 --out viz/

``attention`` writes ``attention_000.png``, ... (one row per crop: the crop, then each map of the model's
``visual_maps`` as a jet heatmap over it — STADB: self-thresholding attention, drop mask, CBAM spatial
attention; Mancs: FAB masks). ``ranklist`` writes one ``ranklist_q<index>.png`` per query and
``ranklists.png`` with all of them (green frame: same person, red: another person).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reidkit.commands.argtypes import device_arg, int_in, path_arg, seed
from reidkit.commands.options import add_dataset_source_arguments, dataset_features_from_args
from reidkit.errors import DatasetError, ReidkitError
from reidkit.utils.limits import MAX_RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit visualize attention`` and ``reidkit visualize ranklist``."""
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    a = sub.add_parser("attention", help="attention maps / drop masks over the input crops")
    a.add_argument("--checkpoint", required=True, type=path_arg, metavar="PATH", help="model file (.pt, .safetensors)")
    a.add_argument("--images", required=True, nargs="+", type=path_arg, metavar="IMG_or_DIR", help="images or folders")
    a.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="folder for the PNG files")
    a.add_argument("--maps", nargs="+", metavar="NAME", help="maps to draw (default: all the model gives)")
    a.add_argument("--per-picture", type=int_in(1, 1000), default=8, help="crops per picture (default 8)")
    a.add_argument("--max-images", type=int_in(1, MAX_RESULTS), default=64, help="at most this many crops (default 64)")
    a.add_argument("--device", default="auto", type=device_arg, help="cpu, cuda, cuda:N or auto (default)")
    r = sub.add_parser("ranklist", help="queries and their top-k gallery images, framed green/red")
    add_dataset_source_arguments(r)
    r.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="folder for the PNG files")
    r.add_argument("--queries", type=int_in(1, MAX_RESULTS), default=8, help="number of queries to draw (default 8)")
    r.add_argument("--worst", action="store_true", help="the lowest-AP queries (default: random ones)")
    r.add_argument("--query-index", type=int_in(0, 2**31 - 1), nargs="+", metavar="I", help="draw these query indices")
    r.add_argument("--k", type=int_in(1, MAX_RESULTS), default=10, help="gallery images per query (default 10)")
    r.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    r.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    r.add_argument("--seed", type=seed(), default=0, help="seed of the random query choice")


def _images(items: list[str], limit: int) -> list[str]:
    from reidkit.inference.sources import list_folder

    out: list[str] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out.extend(list_folder(str(p)))
        elif p.is_file():
            out.append(str(p))
        else:
            raise DatasetError(f"{p}: no such image or folder")
    return out[:limit]


def run(args: argparse.Namespace) -> int:
    """Draw the pictures."""
    from reidkit.utils.atomic import output_folder

    out = output_folder(args.out, "the pictures", create=False)
    if args.kind == "attention":
        from reidkit.inference import load
        from reidkit.utils.images import ImageReadError, read_image
        from reidkit.viz.attention import map_order, render_attention_grid
        from reidkit.viz.ranklist import save_png

        emb = load(args.checkpoint, device=args.device)
        paths = _images(args.images, args.max_images)
        good, imgs = [], []
        for p in paths:
            try:
                imgs.append(read_image(p))
                good.append(p)
            except ImageReadError as exc:
                print(f"reidkit: skipped {exc}")
        if not good:
            raise DatasetError("none of the --images could be read")
        per = max(1, args.per_picture)
        for n, s in enumerate(range(0, len(good), per)):
            u8, maps = emb.visual_maps(imgs[s:s + per])
            keys = args.maps
            if keys:
                unknown = [k for k in keys if k not in maps]
                if unknown:
                    raise ReidkitError(f"--maps {unknown[0]}: model {emb.meta.get('model')} gives "
                                       f"{', '.join(maps)}")
            pic = render_attention_grid(u8, maps, [Path(p).name for p in good[s:s + per]], keys, scale=2)
            target = save_png(pic, out / f"attention_{n:03d}.png")
            print(f"wrote {target} ({', '.join(keys or map_order(list(maps)))})")
        return 0
    from reidkit.viz.ranklist import dataset_rank_rows, save_png, stack_pictures

    data = dataset_features_from_args(args)
    if data.query_paths is None or data.gallery_paths is None:
        raise ReidkitError(f"{args.features}: the file holds no image paths; re-extract it with "
                           "'reidkit extract --dataset'")
    metrics, rows = dataset_rank_rows(data, k=args.k, metric=args.metric, rerank=args.rerank,
                                      queries=args.queries, worst=args.worst, indices=args.query_index,
                                      seed=args.seed)
    pics = []
    for row in rows:
        pic = row.render()
        pics.append(pic)
        save_png(pic, out / f"ranklist_q{row.query_index:05d}.png")
    if pics:
        save_png(stack_pictures(pics), out / "ranklists.png")
    print(f"mAP {100 * metrics['mAP']:.2f}%  rank-1 {100 * metrics['cmc'][0]:.2f}%; wrote {len(pics)} rank "
          f"lists and {out / 'ranklists.png'}")
    return 0
