"""``reidkit eval``: mAP, CMC and mINP from saved features or from a checkpoint and a dataset.

Examples:
    reidkit eval --features market.safetensors
    reidkit eval --features market.safetensors --rerank --json
    reidkit eval --checkpoint runs/stadb/model.safetensors --dataset market1501 --root data/ --out runs/stadb/eval
    reidkit eval --checkpoint runs/mancs/checkpoint.pt --dataset market1501 --root data/ --multi-query mean

The features file holds ``query_feats`` (Q×D), ``query_pids``, ``query_camids``, ``gallery_feats``,
``gallery_pids``, ``gallery_camids`` (``reidkit extract --dataset`` writes it). From a checkpoint, the query
and gallery are embedded exactly as ``reidkit extract --dataset`` embeds them (same ``--engine``, progress bar). The default output is a
table (mAP, R1, R5, R10, mINP; with and without re-ranking when ``--rerank``); ``--json`` prints the
metrics as JSON and ``--out DIR`` writes the same into ``metrics.json`` (with ``cmc.png``): percent, as every
reidkit metrics file, with ``"units"`` and the evaluation ``"settings"`` beside the numbers
(``reidkit.eval.summary``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reidkit.commands.options import add_dataset_source_arguments, dataset_features_from_args
from reidkit.errors import ReidkitError
from reidkit.inference.dataset import MULTI_QUERY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``reidkit eval`` options."""
    add_dataset_source_arguments(parser)
    parser.add_argument("--multi-query", choices=MULTI_QUERY, default="none",
                        help="Market-1501 multi-query: pool gt_bbox features per (pid, camera) (default none)")
    parser.add_argument("--save-features", metavar="FILE", help="also write the extracted features file")
    m = parser.add_argument_group("metrics")
    m.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean", help="distance (default euclidean)")
    m.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking (Zhong et al. 2017)")
    m.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    m.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    m.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, help="re-ranking lambda (default 0.3)")
    m.add_argument("--ap", choices=("noninterp", "official"), default="noninterp",
                   help="AP: noninterp (torchreid/fast-reid, default) or official (Market-1501 MATLAB)")
    m.add_argument("--max-rank", type=int, default=50, help="CMC length (default 50)")
    m.add_argument("--single-shot", action="store_true",
                   help="also report the CUHK03 single-gallery-shot CMC (1367/100 protocol)")
    m.add_argument("--repeats", type=int, default=10, help="single-shot repeats (default 10)")
    m.add_argument("--seed", type=int, default=0, help="single-shot random seed (default 0)")
    o = parser.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    o.add_argument("--out", metavar="DIR", help="write metrics.json and cmc.png into DIR")


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A text table: one row per result (mAP, R1, R5, R10, mINP in percent)."""
    lines = [f"{'':<10} {'mAP':>6} {'R1':>6} {'R5':>6} {'R10':>6} {'mINP':>6}  valid queries"]
    for name, r in results.items():
        cmc = r["cmc"]

        def at(k: int, cmc: list[float] = cmc) -> float:
            return 100.0 * cmc[min(k, len(cmc)) - 1]

        lines.append(f"{name:<10} {100 * r['mAP']:6.2f} {at(1):6.2f} {at(5):6.2f} {at(10):6.2f} "
                     f"{100 * r['mINP']:6.2f}  {r['num_valid_queries']}/{r['num_queries']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print/write the metrics; returns 0."""
    from reidkit.eval import cuhk03_single_shot_cmc, evaluate, pairwise_distance, rank_k

    if bool(args.features) == bool(args.checkpoint or args.onnx):
        raise ReidkitError("give either --features FILE or --checkpoint PATH (with --dataset and --root)")
    if args.max_rank < 1:
        raise ReidkitError(f"--max-rank: expected a positive integer, got {args.max_rank}")
    from reidkit.utils.atomic import output_file, output_folder

    if args.out:
        output_folder(args.out, "metrics.json and cmc.png", create=False)
    if args.save_features:
        output_file(args.save_features, "the features file")
    features = dataset_features_from_args(args, args.multi_query)
    if args.save_features and not args.features:
        from reidkit.inference import save_dataset_features

        save_dataset_features(args.save_features, features)
    data = {k: getattr(features, k) for k in ("query_feats", "query_pids", "query_camids", "gallery_feats",
                                              "gallery_pids", "gallery_camids")}
    labels = (data["query_pids"], data["gallery_pids"], data["query_camids"], data["gallery_camids"])
    common = {"metric": args.metric, "ap": args.ap, "max_rank": args.max_rank}
    results: dict[str, dict[str, Any]] = {}
    results["plain"] = evaluate(data["query_feats"], data["gallery_feats"], *labels, **common)
    if args.rerank:
        results["rerank"] = evaluate(data["query_feats"], data["gallery_feats"], *labels, rerank=True,
                                     k1=args.k1, k2=args.k2, lambda_value=args.lambda_value, **common)
    main = results["rerank" if args.rerank else "plain"]
    from reidkit.eval.summary import evaluation_settings, metrics_record, to_percent

    if args.features:  # the features file says how it was embedded (None: it does not say)
        flip, multi_query = features.extra.get("flip"), features.extra.get("multi_query")
    else:
        flip, multi_query = bool(args.flip), args.multi_query
    settings = evaluation_settings(metric=args.metric, flip=flip, rerank=args.rerank, k1=args.k1, k2=args.k2,
                                   lambda_value=args.lambda_value, ap=args.ap, max_rank=args.max_rank,
                                   multi_query=multi_query)
    payload = metrics_record(main, settings)
    if args.rerank:
        payload["without_rerank"] = to_percent(results["plain"])
    if args.single_shot:
        d = pairwise_distance(data["query_feats"], data["gallery_feats"], args.metric)
        cmc = cuhk03_single_shot_cmc(d, *labels, repeats=args.repeats, seed=args.seed, max_rank=args.max_rank)
        payload["single_shot"] = {"cmc": [100.0 * float(c) for c in cmc],
                                  **{k: 100.0 * v for k, v in rank_k(cmc).items()},
                                  "repeats": args.repeats, "seed": args.seed}
    if args.out:
        from reidkit.utils.atomic import atomic_write_json
        from reidkit.viz.curves import plot_cmc

        out = output_folder(args.out, "metrics.json and cmc.png")
        atomic_write_json(out / "metrics.json", payload)
        curves = {name: r["cmc"] for name, r in results.items()}
        plot_cmc(curves, out / "cmc.png", title="CMC")
    if args.json:
        print(json.dumps(payload))
    else:
        print(format_table(results))
        if args.single_shot:
            ss = payload["single_shot"]
            print(f"single-gallery-shot ({args.repeats} repeats): R1 {ss['rank1']:.2f}  "
                  f"R5 {ss['rank5']:.2f}  R10 {ss['rank10']:.2f}")
        if args.out:
            print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'cmc.png'}")
    return 0
