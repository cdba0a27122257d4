"""``reidkit eval``: mAP, CMC and mINP from saved features or from a checkpoint and a dataset.

Examples:
    reidkit eval --features market.safetensors
    reidkit eval --features market.safetensors --rerank --json
    reidkit eval --checkpoint runs/stadb/model.safetensors --dataset market1501 --root data/ --out runs/stadb/eval
    reidkit eval --checkpoint runs/mancs/checkpoint.pt --dataset market1501 --root data/ --multi-query mean
    reidkit eval --checkpoint runs/md --dataset market1501 --root data/market1501 --dataset dukemtmcreid \
        --root data/dukemtmc-reid --dataset msmt17 --root data/msmt17 --out runs/md/cross

Several ``--dataset`` (each with its ``--root``, and the ``--option`` given after it) evaluate the model on each
test set in turn and print one table, a row per test set (``reidkit.inference.dataset.evaluate_test_sets``, the
path a training run's ``eval.datasets`` takes); ``--json`` prints its record and ``--out DIR`` writes
``test_sets.json``, ``test_sets.md`` and ``cmc.png`` (a curve per test set).

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

from reidkit.commands.argtypes import float_in, int_in, path_arg, seed
from reidkit.commands.options import add_dataset_source_arguments, dataset_features_from_args
from reidkit.errors import ReidkitError
from reidkit.inference.dataset import MULTI_QUERY, evaluate_features
from reidkit.utils.limits import MAX_RANK, MAX_REPEATS, MAX_RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``reidkit eval`` options."""
    add_dataset_source_arguments(parser, several=True)
    parser.add_argument("--multi-query", choices=MULTI_QUERY, default="none",
                        help="Market-1501 multi-query: pool gt_bbox features per (pid, camera) (default none)")
    parser.add_argument("--save-features", type=path_arg, metavar="FILE", help="also write the extracted features file")
    m = parser.add_argument_group("metrics")
    m.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean", help="distance (default euclidean)")
    m.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking (Zhong et al. 2017)")
    m.add_argument("--k1", type=int_in(1, MAX_RESULTS), default=20, help="re-ranking k1 (default 20)")
    m.add_argument("--k2", type=int_in(1, MAX_RESULTS), default=6, help="re-ranking k2 (default 6)")
    m.add_argument("--lambda", dest="lambda_value", type=float_in(0.0, 1.0), default=0.3, help="re-ranking lambda (default 0.3)")
    m.add_argument("--ap", choices=("noninterp", "official"), default="noninterp",
                   help="AP: noninterp (torchreid/fast-reid, default) or official (Market-1501 MATLAB)")
    m.add_argument("--max-rank", type=int_in(1, MAX_RANK), default=50, help="CMC length (default 50)")
    m.add_argument("--single-shot", action="store_true",
                   help="also report the CUHK03 single-gallery-shot CMC (1367/100 protocol)")
    m.add_argument("--repeats", type=int_in(1, MAX_REPEATS), default=10, help="single-shot repeats (default 10)")
    m.add_argument("--seed", type=seed(), default=0, help="single-shot random seed (default 0)")
    o = parser.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    o.add_argument("--out", type=path_arg, metavar="DIR",
                   help="write metrics.json and cmc.png into DIR (several --dataset: test_sets.json, test_sets.md "
                        "and cmc.png)")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print/write the metrics; returns 0."""
    from reidkit.eval import cuhk03_single_shot_cmc, pairwise_distance, rank_k

    if bool(args.features) == bool(args.checkpoint or args.onnx):
        raise ReidkitError("give either --features FILE or --checkpoint PATH (with --dataset and --root)")
    from reidkit.utils.atomic import output_file, output_folder

    if args.dataset and len(args.dataset) > 1:
        return run_test_sets(args)
    if args.out:
        output_folder(args.out, "metrics.json and cmc.png", create=False)
    if args.save_features:
        output_file(args.save_features, "the features file")
    features = dataset_features_from_args(args, args.multi_query)
    if args.save_features and not args.features:
        from reidkit.inference import save_dataset_features

        save_dataset_features(args.save_features, features)
    common = {"metric": args.metric, "k1": args.k1, "k2": args.k2, "lambda_value": args.lambda_value, "ap": args.ap,
              "max_rank": args.max_rank}
    results: dict[str, dict[str, Any]] = {"plain": evaluate_features(features, **common)}
    if args.rerank:
        results["rerank"] = evaluate_features(features, rerank=True, **common)
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
        d = pairwise_distance(features.query_feats, features.gallery_feats, args.metric)
        cmc = cuhk03_single_shot_cmc(d, features.query_pids, features.gallery_pids, features.query_camids,
                                     features.gallery_camids, repeats=args.repeats, seed=args.seed,
                                     max_rank=args.max_rank)
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
        from reidkit.eval.summary import results_table

        print(results_table({name: to_percent(r) for name, r in results.items()}))
        if args.single_shot:
            ss = payload["single_shot"]
            print(f"single-gallery-shot ({args.repeats} repeats): R1 {ss['rank1']:.2f}  "
                  f"R5 {ss['rank5']:.2f}  R10 {ss['rank10']:.2f}")
        if args.out:
            print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'cmc.png'}")
    return 0


def run_test_sets(args: argparse.Namespace) -> int:
    """Several ``--dataset``: evaluate on each test set, print one table (row per test set) or its JSON record,
    write ``test_sets.json``, ``test_sets.md`` and ``cmc.png`` with ``--out``; returns 0."""
    from reidkit.commands.options import dataset_sources_from_args, embedder_from_args
    from reidkit.data.multi import first_repeat, source_labels
    from reidkit.eval.summary import save_test_set_results, table_of_test_sets
    from reidkit.inference.dataset import evaluate_test_sets
    from reidkit.utils.atomic import output_folder

    if args.features:
        raise ReidkitError("several --dataset need --checkpoint (or --onnx), not --features")
    for flag, given in (("--multi-query", args.multi_query != "none"), ("--single-shot", args.single_shot),
                        ("--save-features", bool(args.save_features))):
        if given:
            raise ReidkitError(f"{flag} takes one --dataset; with several, evaluate that test set on its own")
    if args.checkpoint and args.onnx:
        raise ReidkitError("give --checkpoint or --onnx, not both")
    sources = dataset_sources_from_args(args)
    repeat = first_repeat(sources)
    if repeat is not None:
        raise ReidkitError(f"--dataset {sources[repeat[1]].dataset} --root {sources[repeat[1]].root}: the same test set "
                           f"as --dataset number {repeat[0] + 1}; expected each test set once")
    if args.out:
        output_folder(args.out, "test_sets.json, test_sets.md and cmc.png", create=False)
    datasets = [s.load() for s in sources]  # every test set read before any is embedded
    emb = embedder_from_args(args, sum(len(d.query) + len(d.gallery) for d in datasets))
    record = evaluate_test_sets(emb, list(zip(source_labels(sources), datasets, strict=True)),
                                batch_size=args.batch_size, flip=args.flip, workers=args.workers,
                                progress=not args.no_progress, metric=args.metric, rerank=args.rerank, k1=args.k1,
                                k2=args.k2, lambda_value=args.lambda_value, ap=args.ap, max_rank=args.max_rank)
    if args.out:
        from reidkit.viz.curves import plot_cmc

        out = output_folder(args.out, "test_sets.json, test_sets.md and cmc.png")
        json_path, md_path = save_test_set_results(out, record)
        plot_cmc({r["name"]: [c / 100.0 for c in r["cmc"]] for r in record["test_sets"]}, out / "cmc.png",
                 title="CMC")
    if args.json:
        print(json.dumps(record))
    else:
        print(table_of_test_sets(record))
        if args.out:
            print(f"wrote {json_path}, {md_path} and {out / 'cmc.png'}")
    return 0
