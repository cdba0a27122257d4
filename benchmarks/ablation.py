"""Accuracy ablation: the global baseline, BDB, Mancs and STADB's variants, trained alike on one dataset.

Every variant trains from scratch on the same Market-1501-layout dataset (the synthetic set, or a real one
such as the CUHK03 camera-pair development set of ``../shared/realdata``) with the same seeds, the same
trunk, input size, P×K batches, optimiser, schedule and **the same number of training images**, then is
evaluated on the dataset's query/gallery. It writes ``OUT/ablation.md`` (mAP / rank-1 / mINP mean ± spread
over seeds, the share of feature-map positions the drop erased) and ``OUT/ablation.json`` (every run), and
prints the table. A finished run (its ``final_metrics.json``) is reused, so an interrupted ablation picks up
where it stopped. It reports what it measures, whatever that shows.

For STADB variants that train both the drop and the attention path with shared part-head BatchNorms, it also
measures how far the running statistics (a mixture of both paths) are from the attention path's own, and the
accuracy once they are re-estimated on that path (``--bn-check``).

    python benchmarks/ablation.py                                   # synthetic set, the table's variants
    python benchmarks/ablation.py --data /path/cuhk03_pairs --seeds 0,1,2 --images 19200
    python benchmarks/ablation.py --data ... --variants stadb --variant stadb_max=stadb:threshold=max
    python benchmarks/ablation.py --data ... --variants baseline,bdb,stadb --budgets 19200,38400,76800

Each variant trains with the augmentation and evaluation settings of its model's Market-1501 preset
(``configs/<model>_market1501.yaml``: random erasing, Cutout, flip averaging at test), everything else as
above. ``--budgets`` gives a learning curve: every variant and seed at each number of training images, each
a full run with its own schedule (the warm-up and the step decay are fractions of the run's epochs, and a
budget sets the batches per epoch), written under ``OUT/img<budget>/`` and tabulated per budget
(``OUT/learning_curve.md``, every run's figures in ``OUT/learning_curve.json``); ``--report`` trains nothing
and tabulates the runs finished so far.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reidkit.engine.config import apply_overrides, config_from_dict, config_to_dict, load_config  # noqa: E402
from reidkit.engine.presets import find_preset  # noqa: E402
from reidkit.engine.trainer import Trainer  # noqa: E402
from reidkit.utils.atomic import atomic_write_json, atomic_write_text  # noqa: E402

# name -> (description, model name, model options, augment pipeline (unused: the model's preset decides))
VARIANTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "baseline": ("global baseline (ResNet + GAP + BN, CE + triplet)", "baseline", {}, "stadb"),
    "bdb": ("BDB (global + batch drop block)", "bdb", {}, "stadb"),
    "mancs": ("Mancs (FAB, curriculum triplet, focal, attention BCE)", "mancs", {}, "mancs"),
    "stadb_global": ("STADB Table 6: Global", "stadb", {"branches": "global"}, "stadb"),
    "stadb_global_drop": ("STADB Table 6: Global + Drop", "stadb", {"branches": "global+drop"}, "stadb"),
    "stadb_global_attention": ("STADB Table 6: Global + Attention", "stadb", {"branches": "global+attention"},
                               "stadb"),
    "stadb": ("STADB Table 6: Global + Drop + Attention (full)", "stadb", {"branches": "all"}, "stadb"),
}


def parse_variant(text: str) -> tuple[str, tuple[str, str, dict[str, Any], str]]:
    """``NAME=MODEL[:key=value,...]`` (values as YAML scalars) → a variant entry."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=MODEL[:key=value,...]")
    model, _, opts_text = spec.partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, opts_text.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: option {item!r} is not key=value")
        opts[key.strip()] = yaml.safe_load(value)
    return name.strip(), (f"{model} {opts_text}".strip(), model, opts, "mancs" if model == "mancs" else "stadb")


def preset_sections(model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``augment`` section (less its size) and the ``eval.flip`` setting of ``model``'s Market-1501 preset
    (defaults where the model has no preset)."""
    path = find_preset(f"{model}_market1501")
    if path is None:
        return {"pipeline": "mancs" if model == "mancs" else "stadb"}, {}
    raw = config_to_dict(load_config(path))
    augment = {k: v for k, v in raw["augment"].items() if k not in ("size", "mean", "std")}
    return augment, {"flip": raw["eval"]["flip"]}


def variant_config(variant: tuple[str, str, dict[str, Any], str], args: argparse.Namespace, root: Path,
                   seed: int, out: Path) -> Any:
    """The config of one variant: every variant gets the same data, batches, optimiser and schedule."""
    _desc, model, options, _pipeline = variant
    augment, evaluation = preset_sections(model)
    opts: dict[str, Any] = {"backbone": args.backbone, "pretrained": None, **options}
    if model == "mancs":  # the curriculum clock (t0=30, t1=60 of 160 epochs) scaled to this run's length
        opts.setdefault("t0", args.epochs * 30 / 160)
        opts.setdefault("t1", args.epochs * 60 / 160)
    raw = {
        "model": {"name": model, "options": opts},
        "data": {"dataset": "market1501", "root": str(root), "size": list(args.size), "workers": 2},
        "augment": augment,
        "sampler": {"p": args.p, "k": args.k, "num_batches": args.batches},
        "optim": {"name": "adam", "lr": args.lr, "weight_decay": 5e-4,
                  "grad_clip": 5.0 if model == "mancs" else None},
        "schedule": {"kind": "step", "warmup_epochs": max(1, args.epochs // 5), "warmup_step": 1,
                     "milestones": [max(1, int(args.epochs * 0.8))]},
        "train": {"epochs": args.epochs, "eval_every": 0, "seed": seed, "out_dir": str(out),
                  "progress": False, "tensorboard": False, "plots": False},
        "eval": evaluation,
    }
    raw, touched = apply_overrides(raw, list(args.overrides))
    return config_from_dict(raw, "ablation", None, touched)


def _mean_of(history: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in history if r.get(key) is not None]
    return statistics.mean(vals) if vals else None


def bn_check(trainer: Trainer, batches: int = 40) -> dict[str, float] | None:
    """Shared part-head BatchNorms of a two-path STADB: distance of their running statistics from the
    attention path's own (re-estimated on ``batches`` augmented training batches), and the accuracy with the
    re-estimated statistics. The model is left as it was."""
    import torch
    from torch import nn

    model = trainer.core
    head = getattr(model, "part_head", None)
    if head is None or not (getattr(model, "has_drop", False) and getattr(model, "has_attention", False)) \
            or head.drop_bn is not None:
        return None
    bns = [m for m in (head.reduction[1], head.neck) if m is not None]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in bns]
    gen = torch.Generator().manual_seed(1234)
    choose = model.choose_drop
    model.choose_drop = lambda: False  # type: ignore[method-assign]  # the attention (test-time) path only
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and all(m is not b for b in bns):
                m.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches
        cache = trainer.train_cache
        with torch.no_grad():
            for _ in range(batches):
                idx = torch.randint(0, len(cache), (trainer.cfg.sampler.p * trainer.cfg.sampler.k,), generator=gen)
                model(trainer.augment(cache.batch(idx, trainer.device), gen))
        red = head.reduction[1]
        old_mean, old_var = saved[0][0], saved[0][1]
        shift = ((old_mean - red.running_mean).abs() / (red.running_var + red.eps).sqrt()).mean()
        ratio = (old_var / (red.running_var + red.eps)).median()
        model.eval()
        after = trainer.evaluate()
    finally:
        model.choose_drop = choose  # type: ignore[method-assign]
        for m, (mean, var, count, momentum) in zip(bns, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = momentum
        model.eval()
    return {"bn_mean_shift_sd": float(shift), "bn_var_ratio": float(ratio), "mAP_reest": after["mAP"],
            "rank1_reest": after["rank1"]}


def other_evaluations(trainer: Trainer) -> dict[str, float]:
    """The trained weights evaluated the other ways, at no training cost: with flip averaging toggled
    (``mAP_flip`` / ``mAP_noflip``, whichever the run did not use) and, for the two-branch networks, with each
    branch L2-normalised before concatenating (``mAP_fuse_normalized``, flip as the run)."""
    import dataclasses

    out: dict[str, float] = {}
    e = trainer.cfg.eval
    flip = e.flip
    try:
        e.flip = not flip
        res = trainer.evaluate()
    finally:
        e.flip = flip
    tag = "flip" if not flip else "noflip"
    out[f"mAP_{tag}"], out[f"rank1_{tag}"] = res["mAP"], res["rank1"]
    model = trainer.core
    if getattr(model, "has_part", False):
        cfg = model.cfg
        try:
            model.cfg = dataclasses.replace(cfg, fuse="normalized")
            res = trainer.evaluate()
        finally:
            model.cfg = cfg
        out["mAP_fuse_normalized"], out["rank1_fuse_normalized"] = res["mAP"], res["rank1"]
    return out


def run_one(variant: tuple[str, str, dict[str, Any], str], args: argparse.Namespace, root: Path, seed: int,
            out: Path) -> dict[str, Any] | None:
    """Train (or reuse) one run and return its figures; None for a run not finished yet under ``--report``."""
    cfg = variant_config(variant, args, root, seed, out)
    summary = out / "ablation_run.json"
    if summary.is_file():  # a finished run of an earlier invocation
        return json.loads(summary.read_text())
    if args.report:
        return None
    t0 = time.perf_counter()
    trainer = Trainer(cfg, resume=True, quiet=True)
    res = trainer.fit()
    row: dict[str, Any] = {"seed": seed, "seconds": time.perf_counter() - t0,
                           "train_images": res.history[-1]["step"] * args.p * args.k if res.history else 0,
                           **{k: res.final.get(k) for k in ("mAP", "rank1", "rank5", "mINP")}}
    for key in ("drop/erased", "drop/whole"):
        row[key] = _mean_of(res.history, key)
    row.update(other_evaluations(trainer))
    if args.bn_check:
        check = bn_check(trainer)
        if check:
            row.update(check)
    atomic_write_json(summary, row)
    return row


def _fmt(values: list[float | None], digits: int = 1) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(results: dict[str, list[dict[str, Any]]], variants: dict[str, Any], header: str) -> str:
    """The markdown table of mean ± sample standard deviation over seeds."""
    bn = any("mAP_reest" in r for rows in results.values() for r in rows)
    lines = [header, "", "| variant | model | mAP (%) | rank-1 (%) | mINP (%) | erased by drop (%) | left whole (%) |"
             + (" mAP, part BN re-estimated | BN mean shift (σ) |" if bn else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if bn else "")]
    for name, rows in results.items():
        pct = [None if r.get("drop/erased") is None else 100 * r["drop/erased"] for r in rows]
        whole = [None if r.get("drop/whole") is None else 100 * r["drop/whole"] for r in rows]
        line = (f"| {name} | {variants[name][0]} | {_fmt([r['mAP'] for r in rows])} | "
                f"{_fmt([r['rank1'] for r in rows])} | {_fmt([r.get('mINP') for r in rows])} | {_fmt(pct)} | "
                f"{_fmt(whole)} |")
        if bn:
            line += (f" {_fmt([r.get('mAP_reest') for r in rows])} | "
                     f"{_fmt([r.get('bn_mean_shift_sd') for r in rows], 2)} |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the ablation; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synthetic",
                    help="a Market-1501-layout dataset root, or a folder holding the synthetic set (generated "
                         "there with the demo's settings when absent)")
    ap.add_argument("--ids", type=int, default=100, help="synthetic identities when generating (half train)")
    ap.add_argument("--out", default="runs/ablation", help="where runs and the table go")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS) + " and any --variant names")
    ap.add_argument("--variant", action="append", default=[], type=parse_variant, metavar="NAME=MODEL:k=v,...",
                    help="an extra variant, e.g. stadb_max=stadb:threshold=max (repeatable; run when named in "
                         "--variants, or always when --variants is not given)")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--images", type=int, default=None,
                    help="training images per run (the same for every variant): sets the batches per epoch to "
                         "images / (epochs·P·K); default: the sampler's own epoch length")
    ap.add_argument("--budgets", default=None, metavar="N,N,...",
                    help="a learning curve: comma-separated numbers of training images, each a full run per "
                         "variant and seed (under OUT/img<N>/); replaces --images")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(96, 48), metavar=("H", "W"))
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--report", action="store_true",
                    help="train nothing: tabulate the runs already finished in --out (the others are left out)")
    ap.add_argument("--bn-check", action="store_true",
                    help="for two-path STADB runs, measure the part-head BatchNorm mismatch and re-estimated mAP")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override applied to every variant")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a tiny synthetic set in --out, 1 epoch of 2x2 batches at 64x32")
    args = ap.parse_args(argv)
    if args.quick:
        args.data, args.ids, args.epochs, args.size, args.p, args.k = str(Path(args.out) / "data"), 8, 1, (64, 32), 2, 2
    budgets: list[int | None] = [args.images]
    if args.budgets:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
        if not budgets or min(budgets) < args.epochs * args.p * args.k:
            ap.error(f"--budgets {args.budgets!r}: expected numbers of training images of at least one batch "
                     f"per epoch ({args.epochs * args.p * args.k})")

    from reidkit.commands.demo import DEMO_DATA
    from reidkit.data.synthetic import DATASET_FOLDER, generate_dataset

    data = Path(args.data)
    if (data / "bounding_box_train").is_dir():  # a Market-1501-layout root
        root = data
    elif (data / DATASET_FOLDER).is_dir():  # reuse whatever synthetic set is there (e.g. the demo's)
        root = data / DATASET_FOLDER
    elif args.quick:
        root = generate_dataset(args.data, ids=args.ids, cams=2, seed=0, images_per_id_cam=2, size=(64, 32),
                                distractors=2, junk=1)
    else:  # the demo's generation settings
        root = generate_dataset(args.data, ids=args.ids, cams=DEMO_DATA["cams"], seed=DEMO_DATA["seed"],
                                images_per_id_cam=DEMO_DATA["images_per_id_cam"], size=DEMO_DATA["size"],
                                distractors=DEMO_DATA["distractors"], junk=DEMO_DATA["junk"], workers=2)
    variants = {**VARIANTS, **dict(args.variant)}
    given = "--variants" in " ".join(sys.argv if argv is None else argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not given:
        names += [n for n, _ in args.variant]
    unknown = [n for n in names if n not in variants]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; expected some of {', '.join(variants)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    curve: dict[int | None, dict[str, list[dict[str, Any]]]] = {}
    text = ""
    for images in budgets:
        args.images = images
        args.batches = None if images is None else max(1, round(images / (args.epochs * args.p * args.k)))
        where = out / f"img{images}" if args.budgets else out
        results = curve.setdefault(images, {})
        for name in names:
            for seed in seeds:
                row = run_one(variants[name], args, root, seed, where / f"{name}_seed{seed}")
                if row is None:
                    continue
                results.setdefault(name, []).append(row)
                erased = row.get("drop/erased")
                print(f"{name:<24} {'' if images is None else f'{images} images '}seed {seed}: mAP {row['mAP']:.1f}"
                      f"  rank-1 {row['rank1']:.1f}"
                      + (f"  erased {100 * erased:.1f}%" if erased is not None else "")
                      + (f"  re-estimated BN mAP {row['mAP_reest']:.1f}" if "mAP_reest" in row else "")
                      + f"  ({row['seconds']:.0f} s)", flush=True)
                atomic_write_json(where / "ablation.json", {"settings": {k: v for k, v in vars(args).items()
                                                                         if k != "variant"},
                                                            "variants": {n: list(variants[n]) for n in names},
                                                            "results": results})
        steps = args.epochs * (args.batches or 0)
        header = (f"Ablation on {root}: {args.backbone} from scratch, {args.size[0]}x{args.size[1]}, "
                  f"P×K {args.p}×{args.k}, {args.epochs} epochs"
                  + (f" × {args.batches} batches = {steps * args.p * args.k} training images" if args.batches else "")
                  + f", Adam {args.lr:g}, seeds {args.seeds} (mean ± sample std).")
        text = table(results, variants, header)
        if results:  # under --report a budget may have no finished run: nothing to write
            atomic_write_text(where / "ablation.md", text)
    if args.budgets:
        text = curve_table(curve, variants, root, args)
        atomic_write_text(out / "learning_curve.md", text)
        atomic_write_json(out / "learning_curve.json", {
            "settings": {k: v for k, v in vars(args).items() if k not in ("variant", "images", "batches")},
            "runs": [{"variant": name, "training_images": images, **row} for images, results in curve.items()
                     for name, rows in results.items() for row in rows]})
    print(text)
    return 0


def curve_table(curve: dict[Any, dict[str, list[dict[str, Any]]]], variants: dict[str, Any], root: Path,
                args: argparse.Namespace) -> str:
    """The learning-curve markdown table: one row per variant and budget with finished runs, mean ± sample std
    over seeds; beside the run's own evaluation, the same weights with flip averaging toggled and, for the
    two-branch networks, with each branch L2-normalised before concatenating."""
    lines = [f"Learning curve on {root}: {args.backbone} from scratch, {args.size[0]}x{args.size[1]}, P×K "
             f"{args.p}×{args.k}, {args.epochs} epochs a run (warm-up and decay scaled to it), Adam {args.lr:g}, "
             f"seeds {args.seeds} (mean ± sample std).", "",
             "| variant | training images | runs | mAP (%) | rank-1 (%) | mINP (%) | mAP with flip (%) | "
             "mAP without flip (%) | mAP, branches normalised (%) | erased by drop (%) | minutes a run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(n for results in curve.values() for n in results))
    for name in names:
        for images, results in curve.items():
            rows = results.get(name, [])
            if not rows:
                continue
            pct = [None if r.get("drop/erased") is None else 100 * r["drop/erased"] for r in rows]
            flip = [r["mAP"] if "mAP_noflip" in r else r.get("mAP_flip") for r in rows]
            noflip = [r["mAP"] if "mAP_flip" in r else r.get("mAP_noflip") for r in rows]
            lines.append(f"| {name} | {images:,} | {len(rows)} | {_fmt([r['mAP'] for r in rows])} | "
                         f"{_fmt([r['rank1'] for r in rows])} | {_fmt([r.get('mINP') for r in rows])} | {_fmt(flip)} | "
                         f"{_fmt(noflip)} | {_fmt([r.get('mAP_fuse_normalized') for r in rows])} | {_fmt(pct)} | "
                         f"{_fmt([r['seconds'] / 60 for r in rows], 0)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
