"""Ablation on synthetic data: the global baseline, BDB, Mancs and STADB with its Table 6 variants.

Every variant trains on the same synthetic Market-1501-layout set with the same seeds and the
same small CPU settings (ResNet-18 trunk from scratch, small input, a few epochs), then is
evaluated on the synthetic query/gallery. The script writes a markdown table of mAP / rank-1
(mean ± std over seeds when several) to ``OUT/ablation.md`` and the raw numbers to
``OUT/ablation.json``, and prints the table. It reports what it measures, whatever that shows:
synthetic pedestrians are not Market-1501, and a few CPU epochs are not 600.

    python benchmarks/ablation_synthetic.py                      # defaults below, ~15-25 min on 2 cores
    python benchmarks/ablation_synthetic.py --epochs 4 --variants stadb,baseline --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reidkit.engine.config import apply_overrides, config_from_dict  # noqa: E402
from reidkit.engine.trainer import train  # noqa: E402
from reidkit.utils.atomic import atomic_write_json, atomic_write_text  # noqa: E402

# name -> (description, model name, model options, augment pipeline)
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


def variant_config(name: str, args: argparse.Namespace, root: Path, seed: int, out: Path) -> Any:
    """The small CPU config of one variant."""
    _desc, model, options, pipeline = VARIANTS[name]
    opts: dict[str, Any] = {"backbone": args.backbone, "pretrained": None, **options}
    if model == "mancs":
        # the curriculum clock (t0=30, t1=60 of 160 epochs) scaled to this run's length
        opts.update({"t0": args.epochs * 30 / 160, "t1": args.epochs * 60 / 160})
    raw = {
        "model": {"name": model, "options": opts},
        "data": {"dataset": "market1501", "root": str(root), "size": list(args.size), "workers": 2},
        "augment": {"pipeline": pipeline},
        "sampler": {"p": args.p, "k": args.k},
        "optim": {"name": "adam", "lr": args.lr, "weight_decay": 5e-4,
                  "grad_clip": 5.0 if model == "mancs" else None},
        "schedule": {"kind": "step", "warmup_epochs": 2, "warmup_step": 1, "milestones": [int(args.epochs * 0.75)]},
        "train": {"epochs": args.epochs, "eval_every": 0, "seed": seed, "out_dir": str(out),
                  "progress": False, "tensorboard": False, "plots": False},
    }
    raw, touched = apply_overrides(raw, list(args.overrides))
    return config_from_dict(raw, "ablation_synthetic", None, touched)


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the ablation; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synthetic",
                    help="synthetic dataset folder (reused if present, else generated with the demo's settings)")
    ap.add_argument("--ids", type=int, default=100, help="synthetic identities when generating (half train)")
    ap.add_argument("--out", default="runs/ablation_synthetic", help="where runs and the table go")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(96, 48), metavar=("H", "W"))
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--p", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override applied to every variant")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a tiny synthetic set in --out, 1 epoch of 2x2 batches at 64x32")
    args = ap.parse_args(argv)
    if args.quick:
        args.data, args.ids, args.epochs, args.size, args.p, args.k = str(Path(args.out) / "data"), 8, 1, (64, 32), 2, 2

    from reidkit.commands.demo import DEMO_DATA
    from reidkit.data.synthetic import DATASET_FOLDER, generate_dataset

    existing = Path(args.data) / DATASET_FOLDER
    if existing.is_dir():  # reuse whatever synthetic set is there (e.g. the demo's)
        root = existing
    elif args.quick:
        root = generate_dataset(args.data, ids=args.ids, cams=2, seed=0, images_per_id_cam=2, size=(64, 32),
                                distractors=2, junk=1)
    else:  # the demo's generation settings
        root = generate_dataset(args.data, ids=args.ids, cams=DEMO_DATA["cams"], seed=DEMO_DATA["seed"],
                                images_per_id_cam=DEMO_DATA["images_per_id_cam"], size=DEMO_DATA["size"],
                                distractors=DEMO_DATA["distractors"], junk=DEMO_DATA["junk"], workers=2)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; expected some of {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in seeds:
            t0 = time.perf_counter()
            cfg = variant_config(name, args, root, seed, out / f"{name}_seed{seed}")
            if (Path(cfg.train.out_dir) / "final_metrics.json").is_file():  # reuse a finished run
                final = json.loads((Path(cfg.train.out_dir) / "final_metrics.json").read_text())["final"]
                seconds = float("nan")
            else:
                res = train(cfg, resume=True, quiet=True)
                final, seconds = res.final, time.perf_counter() - t0
            results.setdefault(name, []).append({"seed": seed, "mAP": final["mAP"], "rank1": final["rank1"],
                                                 "seconds": seconds})
            print(f"{name:<24} seed {seed}: mAP {final['mAP']:.1f}  rank-1 {final['rank1']:.1f}  "
                  f"({seconds:.0f} s)", flush=True)
            atomic_write_json(out / "ablation.json", {"settings": vars(args), "results": results})

    lines = [
        f"Synthetic ablation on {root}: {args.backbone} from scratch, "
        f"{args.size[0]}x{args.size[1]}, P×K {args.p}×{args.k}, {args.epochs} epochs, Adam {args.lr:g}, "
        f"seeds {args.seeds}.",
        "",
        "| variant | model | mAP (%) | rank-1 (%) |",
        "|---|---|---|---|",
    ]
    for name, rows in results.items():
        lines.append(f"| {name} | {VARIANTS[name][0]} | {_fmt([r['mAP'] for r in rows])} | "
                     f"{_fmt([r['rank1'] for r in rows])} |")
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "ablation.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
