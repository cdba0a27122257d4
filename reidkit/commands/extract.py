"""``reidkit extract``: embed a folder, a CSV list or a dataset's query/gallery into a features file.

Examples:
    reidkit extract --checkpoint runs/stadb/model.safetensors --images crops/ --out feats.safetensors
    reidkit extract --onnx model.onnx --csv list.csv --out feats.safetensors --flip
    reidkit extract --checkpoint runs/stadb/checkpoint.pt --dataset market1501 --root data/ --out market.safetensors
    reidkit extract --checkpoint runs/stadb/model.safetensors --images crops/ --out f.safetensors --engine torch

A folder or CSV gives a file with ``feats``, ``pids``, ``camids`` and the paths in the metadata (pids and
camids come from Market-1501 style names ``0002_c3s1_...jpg``, the custom layout ``<pid>/<camid>_x.jpg``
or the CSV's ``pid``/``camid`` columns; -1 when unknown). A dataset gives the file ``reidkit eval
--features`` reads (``query_feats``, ``query_pids``, ..., ``gallery_camids``). ``--engine`` and
``--threads``: see ``reidkit.inference.engines``.
"""

from __future__ import annotations

import argparse

from reidkit.commands.argtypes import path_arg
from reidkit.commands.options import add_model_arguments, load_embedder, parse_reader_options
from reidkit.errors import DatasetError, ReidkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit extract``."""
    add_model_arguments(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=path_arg, metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--csv", type=path_arg, metavar="FILE", help="CSV list with a 'path' column (optional pid, camid)")
    src.add_argument("--dataset", metavar="NAME", help="a dataset's query and gallery (with --root)")
    parser.add_argument("--root", type=path_arg, metavar="DIR", help="dataset root folder for --dataset")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset reader option for --dataset, e.g. split_id=3 (repeatable)")
    parser.add_argument("--out", required=True, type=path_arg, metavar="FILE", help="features file to write (.safetensors)")


def run(args: argparse.Namespace) -> int:
    """Embed and write the features file."""
    from reidkit.inference import embed_dataset, save_dataset_features, save_folder_features
    from reidkit.inference.sources import collect_images, report_bad
    from reidkit.utils.atomic import output_file

    progress = not args.no_progress
    if args.dataset and not args.root:
        raise ReidkitError("--dataset needs --root DIR (the folder holding the dataset)")
    output_file(args.out, "the features file")
    emb = load_embedder(args)
    if args.dataset:
        from reidkit.data.datasets import load as load_dataset

        ds = load_dataset(args.dataset, args.root, **parse_reader_options(args.option))
        emb.use_engine(args.engine, len(ds.query) + len(ds.gallery), args.threads)
        data = embed_dataset(emb, ds, args.batch_size, args.flip, args.workers, progress)
        save_dataset_features(args.out, data)
        print(f"wrote {args.out}: {data.query_feats.shape[0]} query and {data.gallery_feats.shape[0]} gallery "
              f"features of size {data.query_feats.shape[1]}")
        return 0
    images = collect_images(args.images, args.csv)
    emb.use_engine(args.engine, len(images), args.threads)
    feats, kept, bad = emb.embed_paths(images.paths, args.batch_size, args.flip, args.workers, progress)
    report_bad(bad)
    if not kept:
        raise DatasetError(f"{args.images or args.csv}: none of the {len(images)} images could be read")
    label = {p: (a, b) for p, a, b in zip(images.paths, images.pids, images.camids, strict=True)}
    save_folder_features(args.out, feats, kept, [label[p][0] for p in kept], [label[p][1] for p in kept],
                         emb.meta, images.identity_names)
    print(f"wrote {args.out}: {len(kept)} features of size {feats.shape[1]}"
          + (f" ({len(bad)} unreadable skipped)" if bad else ""))
    return 0
