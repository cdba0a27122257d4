"""``reidkit report``: a single self-contained HTML evaluation page.

Examples:
    reidkit report --features market.safetensors --out report.html
    reidkit report --checkpoint runs/stadb/model.safetensors --dataset market1501 --root data/ --out report.html

The page holds the metrics table (mAP, mINP, Rank-1/5/10/20), the CMC curve and the rank lists of the
worst queries (lowest AP), with every picture embedded as a base64 data URI: it opens anywhere, offline.
"""

from __future__ import annotations

import argparse

from reidkit.commands.argtypes import int_in, path_arg
from reidkit.commands.options import add_dataset_source_arguments, dataset_features_from_args
from reidkit.utils.limits import MAX_RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit report``."""
    add_dataset_source_arguments(parser)
    parser.add_argument("--out", required=True, type=path_arg, metavar="FILE", help="HTML file to write")
    parser.add_argument("--worst", type=int_in(0, MAX_RESULTS), default=8, help="worst queries shown (default 8)")
    parser.add_argument("--k", type=int_in(1, MAX_RESULTS), default=10, help="gallery images per rank list (default 10)")
    parser.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"])
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--title", default="reidkit evaluation report", help="page title")


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the page."""
    from reidkit.utils.atomic import output_file
    from reidkit.viz.report import write_report

    output_file(args.out, "the HTML report")
    data = dataset_features_from_args(args)
    info = {"features": args.features} if args.features else {"dataset": f"{args.dataset} ({args.root})"}
    path, metrics = write_report(args.out, data, k=args.k, worst=args.worst, metric=args.metric,
                                 rerank=args.rerank, title=args.title, info=info)
    print(f"wrote {path}: mAP {100 * metrics['mAP']:.2f}%  rank-1 {100 * metrics['cmc'][0]:.2f}%")
    return 0
