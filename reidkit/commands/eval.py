"""``reidkit eval``: mAP, CMC and mINP from saved features or from a checkpoint and a dataset.

Examples::

    reidkit eval --features market.safetensors
    reidkit eval --features market.safetensors --rerank --json
    reidkit eval --checkpoint runs/stadb/model.safetensors --dataset market1501 --root data/ --out runs/stadb/eval
    reidkit eval --checkpoint runs/mancs/checkpoint.pt --dataset market1501 --root data/ --multi-query mean

The features file holds ``query_feats`` (Q×D), ``query_pids``, ``query_camids``, ``gallery_feats``,
``gallery_pids``, ``gallery_camids`` (``reidkit extract --dataset`` writes it). The default output is a
table (mAP, R1, R5, R10, mINP; with and without re-ranking when ``--rerank``); ``--json`` prints the
metrics as JSON (fractions in [0, 1]); ``--out DIR`` writes ``metrics.json`` and ``cmc.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from reidkit.errors import CheckpointError, ReidkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``reidkit eval`` options."""
    src = parser.add_argument_group("input (either --features, or --checkpoint with --dataset and --root)")
    src.add_argument("--features", metavar="FILE", help="features file (.safetensors) with query/gallery tensors")
    src.add_argument("--checkpoint", metavar="PATH", help="checkpoint.pt, model.safetensors or a run folder")
    src.add_argument("--dataset", metavar="NAME", help="dataset name (market1501, dukemtmcreid, msmt17, ...)")
    src.add_argument("--root", metavar="DIR", help="folder holding the dataset")
    src.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="dataset reader option, e.g. protocol=classic or split_id=3 (repeatable)")
    src.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default) for extraction")
    src.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    src.add_argument("--flip", action="store_true", help="average features with the mirrored image's")
    src.add_argument("--multi-query", choices=("none", "mean", "max"), default="none",
                     help="Market-1501 multi-query: pool gt_bbox features per (pid, camera) (default none)")
    src.add_argument("--save-features", metavar="FILE", help="also write the extracted features file")
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


def _check_split(path: str, split: str, feats: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor) -> None:
    if feats.dim() != 2 or feats.shape[0] == 0:
        raise CheckpointError(f"{path}: {split}_feats has shape {tuple(feats.shape)}; expected at least one "
                              f"{split} row (N×D)")
    if pids.numel() != feats.shape[0] or camids.numel() != feats.shape[0]:
        raise CheckpointError(f"{path}: {split} has {feats.shape[0]} features but {pids.numel()} pids and "
                              f"{camids.numel()} camids; expected equal lengths")
    if not bool(torch.isfinite(feats).all()):
        bad = int((~torch.isfinite(feats)).any(1).sum())
        raise CheckpointError(f"{path}: {split}_feats has {bad} row(s) with NaN or inf; expected finite numbers")


def load_features_file(path: str) -> dict[str, torch.Tensor]:
    """The six tensors of a dataset features file, validated (one-line errors naming the file)."""
    from reidkit.io_features import DATASET_KEYS, load_tensors

    tensors, _meta = load_tensors(path)
    missing = [k for k in DATASET_KEYS if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}; expected keys {', '.join(DATASET_KEYS)}")
    out = {k: tensors[k] for k in DATASET_KEYS}
    for split in ("query", "gallery"):
        f = out[f"{split}_feats"]
        if not f.is_floating_point():
            raise CheckpointError(f"{path}: {split}_feats has dtype {f.dtype}; expected float features")
        out[f"{split}_feats"] = f.float()
        for what in ("pids", "camids"):
            t = out[f"{split}_{what}"]
            if t.is_floating_point() or t.dtype == torch.bool:
                raise CheckpointError(f"{path}: {split}_{what} has dtype {t.dtype}; expected int64")
            out[f"{split}_{what}"] = t.long().flatten()
        _check_split(path, split, out[f"{split}_feats"], out[f"{split}_pids"], out[f"{split}_camids"])
    if out["query_feats"].shape[1] != out["gallery_feats"].shape[1]:
        raise CheckpointError(f"{path}: query_feats width {out['query_feats'].shape[1]} != gallery_feats width "
                              f"{out['gallery_feats'].shape[1]}; expected the same embedding size")
    return out


def _parse_options(items: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ReidkitError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except ValueError:
            opts[k.strip()] = v
    return opts


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def extract_from_checkpoint(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Load the model and dataset, embed query and gallery (and multi-query groups when asked)."""
    if not args.dataset or not args.root:
        raise ReidkitError("--checkpoint needs --dataset NAME and --root DIR")
    from reidkit.data import datasets
    from reidkit.engine.features import extract_features
    from reidkit.models.io import load_model

    ds = datasets.load(args.dataset, args.root, **_parse_options(args.option))
    device = _device(args.device)
    model = load_model(args.checkpoint, device=device)
    size = tuple(model.input_size)
    out: dict[str, torch.Tensor] = {}
    kept_paths: dict[str, list[str]] = {}
    for split, recs in (("query", ds.query), ("gallery", ds.gallery)):
        if not recs:
            raise ReidkitError(f"{args.root}: the {ds.name} {split} split is empty; expected images")
        feats, bad = extract_features(model, [r.path for r in recs], size, args.batch_size, device, args.flip)
        bad_set = set(bad)
        kept = [r for r in recs if r.path not in bad_set]
        out[f"{split}_feats"] = feats.float().cpu()
        out[f"{split}_pids"] = torch.tensor([r.pid for r in kept], dtype=torch.long)
        out[f"{split}_camids"] = torch.tensor([r.camid for r in kept], dtype=torch.long)
        kept_paths[split] = [r.path for r in kept]
    if args.multi_query != "none":
        groups = ds.extras.get("multi_query")
        if not groups:
            raise ReidkitError(f"{args.root}: --multi-query needs Market-1501's gt_bbox/ folder (no groups found)")
        from reidkit.eval.multiquery import group_features, pool_multi_query

        paths = sorted({p for ps in groups.values() for p in ps})
        feats, bad = extract_features(model, paths, size, args.batch_size, device, args.flip)
        bad_set = set(bad)
        good = [p for p in paths if p not in bad_set]
        clean = {k: [p for p in v if p not in bad_set] for k, v in groups.items()}
        gf = group_features({k: v for k, v in clean.items() if v}, good, feats.float().cpu())
        out["query_feats"] = pool_multi_query(out["query_pids"], out["query_camids"], gf, args.multi_query,
                                              query_feats=out["query_feats"])
    if args.save_features:
        from reidkit.io_features import DatasetFeatures, save_dataset_features

        save_dataset_features(args.save_features, DatasetFeatures(
            out["query_feats"], out["query_pids"], out["query_camids"],
            out["gallery_feats"], out["gallery_pids"], out["gallery_camids"],
            kept_paths["query"], kept_paths["gallery"],
        ))
    for split in ("query", "gallery"):
        _check_split(str(args.checkpoint), split, out[f"{split}_feats"], out[f"{split}_pids"],
                     out[f"{split}_camids"])
    return out


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

    if bool(args.features) == bool(args.checkpoint):
        raise ReidkitError("give either --features FILE or --checkpoint PATH (with --dataset and --root)")
    if args.max_rank < 1:
        raise ReidkitError(f"--max-rank: expected a positive integer, got {args.max_rank}")
    if args.features:
        if args.multi_query != "none":
            raise ReidkitError("--multi-query needs --checkpoint and --dataset (features files hold single queries)")
        data = load_features_file(args.features)
    else:
        data = extract_from_checkpoint(args)
    labels = (data["query_pids"], data["gallery_pids"], data["query_camids"], data["gallery_camids"])
    common = {"metric": args.metric, "ap": args.ap, "max_rank": args.max_rank}
    results: dict[str, dict[str, Any]] = {}
    results["plain"] = evaluate(data["query_feats"], data["gallery_feats"], *labels, **common)
    if args.rerank:
        results["rerank"] = evaluate(data["query_feats"], data["gallery_feats"], *labels, rerank=True,
                                     k1=args.k1, k2=args.k2, lambda_value=args.lambda_value, **common)
    main = results["rerank" if args.rerank else "plain"]
    payload: dict[str, Any] = {
        "mAP": main["mAP"], "mINP": main["mINP"], "cmc": main["cmc"],
        "num_valid_queries": main["num_valid_queries"], "num_queries": main["num_queries"],
        "metric": args.metric, "ap": args.ap, "rerank": bool(args.rerank),
    }
    if args.rerank:
        payload["without_rerank"] = {k: results["plain"][k] for k in ("mAP", "mINP", "cmc", "num_valid_queries")}
        payload["rerank_params"] = {"k1": args.k1, "k2": args.k2, "lambda": args.lambda_value}
    if args.single_shot:
        d = pairwise_distance(data["query_feats"], data["gallery_feats"], args.metric)
        cmc = cuhk03_single_shot_cmc(d, *labels, repeats=args.repeats, seed=args.seed, max_rank=args.max_rank)
        payload["single_shot"] = {"cmc": [float(c) for c in cmc], **rank_k(cmc), "repeats": args.repeats,
                                  "seed": args.seed}
    if args.out:
        from reidkit.utils.atomic import atomic_write_json
        from reidkit.viz.curves import plot_cmc

        out = Path(args.out)
        atomic_write_json(out / "metrics.json", payload)
        curves = {name: r["cmc"] for name, r in results.items()}
        plot_cmc(curves, out / "cmc.png", title="CMC")
    if args.json:
        print(json.dumps(payload))
    else:
        print(format_table(results))
        if args.single_shot:
            ss = payload["single_shot"]
            print(f"single-gallery-shot ({args.repeats} repeats): R1 {100 * ss['rank1']:.2f}  "
                  f"R5 {100 * ss['rank5']:.2f}  R10 {100 * ss['rank10']:.2f}")
        if args.out:
            print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'cmc.png'}")
    return 0
