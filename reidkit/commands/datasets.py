"""``reidkit datasets NAME --root DIR``: read a dataset and print its statistics table (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from reidkit.commands.argtypes import int_in, path_arg
from reidkit.errors import DatasetError
from reidkit.utils.limits import MAX_LABEL

NAMES = ("market1501", "dukemtmcreid", "msmt17", "cuhk03", "celebreid", "folder", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``datasets`` subcommand's arguments to ``parser``."""
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help=f"dataset: {', '.join(NAMES)} (omit to list the names)")
    parser.add_argument("--root", type=path_arg, metavar="DIR",
                        help="the dataset's folder or the folder holding it (for csv: the CSV file)")
    parser.add_argument("--json", action="store_true",
                        help='print {"train": {"ids", "images", "cameras"}, "query": ..., "gallery": ...}')
    parser.add_argument("--cuhk03-detected", action="store_true", help="cuhk03: detected boxes (default labeled)")
    parser.add_argument("--cuhk03-classic", action="store_true",
                        help="cuhk03: classic 1367/100 protocol with 20 splits (default the 767/700 protocol)")
    parser.add_argument("--split-id", type=int_in(0, 19), default=0, metavar="N", help="cuhk03 classic: split 0-19")
    parser.add_argument("--cuhk03-classic-query", choices=("view1", "all"), default="view1",
                        help="cuhk03 classic: queries from view 1 and gallery from view 2 (default), or every "
                             "test image in both")
    parser.add_argument("--msmt17-train-lists", default="train,val", metavar="LISTS",
                        help="msmt17: lists merged into train, 'train,val' (default, 32,621 images) or 'train'")
    parser.add_argument("--verify-images", choices=("full", "header", "none"), default=None,
                        help="image check: full decode (default for folder/csv), header (default for "
                             "benchmarks) or none")
    parser.add_argument("--default-camid", type=int_in(0, MAX_LABEL), default=None, metavar="N",
                        help="folder/csv: the camera of images that name none (a file name without <camid>_, "
                             "an empty camid); default: such images are left out")


def _options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.verify_images is not None:
        opts["verify_images"] = args.verify_images
    if name == "cuhk03":
        opts.update(labeled=not args.cuhk03_detected, protocol="classic" if args.cuhk03_classic else "new",
                    split_id=args.split_id, classic_query=args.cuhk03_classic_query)
    elif args.cuhk03_detected or args.cuhk03_classic or args.split_id:
        raise DatasetError(f"--cuhk03-* and --split-id apply to cuhk03 only, not {name}")
    if args.default_camid is not None:
        if name not in ("folder", "csv"):
            raise DatasetError(f"--default-camid applies to folder and csv only, not {name}")
        opts["default_camid"] = args.default_camid
    if name == "msmt17":
        opts["train_lists"] = tuple(t.strip() for t in args.msmt17_train_lists.split(",") if t.strip())
    return opts


def run(args: argparse.Namespace) -> int:
    """Load the dataset and print its table (or JSON); warnings about skipped files go to stderr."""
    from reidkit.data import datasets

    if not args.name:
        print("\n".join(datasets.names()))
        return 0
    if not args.root:
        raise DatasetError(f"reidkit datasets {args.name}: --root DIR is required (the dataset's folder)")
    name = datasets.canonical_name(args.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", datasets.DatasetWarning)
        ds = datasets.load(name, args.root, **_options(args, name))
    for w in caught:
        if issubclass(w.category, datasets.DatasetWarning):
            print(f"reidkit: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.json:
        print(json.dumps(ds.stats()))
    else:
        print(ds.stats_table())
    return 0
