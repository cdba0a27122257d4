"""``reidkit demo``: synthetic pedestrians → train STADB → evaluate → report, in minutes on a CPU.

What it does (the README's main command, ``make demo``):

1. generates the synthetic dataset (Market-1501 layout) under ``--data`` unless it is there;
2. builds STADB on a ResNet-18 trunk at 128×64, **from scratch** (ImageNet weights are not
   downloaded: the demo must run offline), and evaluates it untrained;
3. trains it (PK batches, batched augmentation, the STADB losses) within ``--seconds-budget``;
4. evaluates it again, prints the table, and writes into ``--out`` (default ``runs/demo``):
   ``metrics.json`` (``{"trained": {...}, "untrained": {...}, "seconds": ...}``, percent, with the
   evaluation ``settings``),
   ``cmc.png``, the training curves (``losses.png``, ``lr.png``, ``accuracy.png``), a rank-list
   picture ``ranklist.png``, and the usual run files (checkpoint, ``model.safetensors``, config).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from reidkit.commands.argtypes import float_in, int_in, path_arg
from reidkit.errors import ReidkitError
from reidkit.utils.limits import MAX_EPOCHS, MAX_SECONDS, MAX_SYNTH_IDS

# The embedded demo settings (tuned for ~5 minutes on 2 CPU cores; see run()).
DEMO_DATA = {"ids": 100, "cams": 4, "seed": 0, "images_per_id_cam": 4, "size": (128, 64), "distractors": 20,
             "junk": 5}
DEMO_CONFIG: dict[str, Any] = {
    "model": {"name": "stadb", "options": {"backbone": "resnet18", "last_stride": 1, "pretrained": None}},
    "data": {"dataset": "market1501", "size": [128, 64], "pipeline": "cached", "workers": 2,
             "eval_batch_size": 128},
    "augment": {"pipeline": "stadb"},
    "sampler": {"p": 8, "k": 4},
    "optim": {"name": "adam", "lr": 1.0e-3, "weight_decay": 5.0e-4},
    "schedule": {"kind": "step", "warmup_epochs": 0, "milestones": [24], "gamma": 0.1},
    "train": {"epochs": 30, "eval_every": 10, "seed": 0, "log_every": 10, "tensorboard": False},
    "eval": {"metric": "euclidean", "flip": False},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``reidkit demo``."""
    parser.add_argument("--out", default="runs/demo", type=path_arg, metavar="DIR", help="run folder (default: runs/demo)")
    parser.add_argument("--data", default="data/synthetic", type=path_arg, metavar="DIR",
                        help="where the synthetic dataset is (generated there if absent; default: data/synthetic)")
    parser.add_argument("--seconds-budget", type=float_in(0.0, MAX_SECONDS, above=True), default=300.0, metavar="S",
                        help="wall-time budget for the whole demo; training stops early to keep it (default: 300)")
    parser.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None, help=f"training epochs (default: {DEMO_CONFIG['train']['epochs']})")
    parser.add_argument("--ids", type=int_in(2, MAX_SYNTH_IDS), default=DEMO_DATA["ids"],
                        help="identities in the synthetic set (half train, half test; default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a demo config value, e.g. --set sampler.p=4 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--force", action="store_true",
                        help="start afresh in an --out folder that holds a training run (its checkpoint.pt, "
                             "checkpoint_prev.pt and best.pt are removed); without it such a folder is refused")


def _table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["", "  model                     |   mAP  | rank-1 | rank-5 | rank-10 |  mINP",
             "  --------------------------+--------+--------+--------+---------+-------"]
    for name, m in rows.items():
        lines.append(f"  {name:<25} | {m.get('mAP', float('nan')):6.2f} | {m.get('rank1', float('nan')):6.2f} | "
                     f"{m.get('rank5', float('nan')):6.2f} | {m.get('rank10', float('nan')):7.2f} | "
                     f"{m.get('mINP', float('nan')):5.2f}")
    return "\n".join(lines)


def _rank_list(trainer: Any, out_png: Path, top: int = 8) -> Path | None:
    """Draw the first query's ranked gallery (Market protocol: same pid and camera left out)."""
    import torch

    if trainer.last_features is None:
        return None
    ds = trainer.dataset
    qf, gf = trainer.last_features
    dist = torch.cdist(qf[:1].float(), gf.float())[0]
    q = ds.query[0]
    keep = [i for i, g in enumerate(ds.gallery) if not (g.pid == q.pid and g.camid == q.camid) and g.pid != -1]
    order = sorted(keep, key=lambda i: float(dist[i]))[:top]
    try:
        from reidkit.viz.ranklist import draw_rank_list
    except ImportError:  # drawn by another module; skip the picture if it is missing
        return None
    return draw_rank_list(q.path, [ds.gallery[i].path for i in order], [ds.gallery[i].pid == q.pid for i in order],
                          out_png, distances=[float(dist[i]) for i in order],
                          title=f"query id {q.pid} (camera {q.camid + 1}), trained STADB")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0."""
    start = time.perf_counter()
    from reidkit.data.datasets import load
    from reidkit.data.synthetic import generate_dataset
    from reidkit.engine.checkpoint import RUN_STATE
    from reidkit.engine.config import apply_overrides, config_from_dict, save_config
    from reidkit.engine.runlog import RunLog
    from reidkit.engine.trainer import Trainer
    from reidkit.utils.atomic import atomic_write_json, output_folder, refuse_to_replace

    out = output_folder(args.out, "the demo's run folder", create=False)
    data_dir = output_folder(args.data, "the synthetic dataset", create=False)
    if not args.force:
        refuse_to_replace(out, RUN_STATE, "a training run", "--force")
    for stale in RUN_STATE:  # asked for with --force: the demo starts afresh
        (out / stale).unlink(missing_ok=True)
    print(f"[1/4] synthetic data in {data_dir} ...", flush=True)
    from reidkit.data.synthetic import DATASET_FOLDER

    existing = data_dir / DATASET_FOLDER
    folder = existing if existing.is_dir() else generate_dataset(data_dir, ids=args.ids, cams=DEMO_DATA["cams"], seed=DEMO_DATA["seed"],
                              images_per_id_cam=DEMO_DATA["images_per_id_cam"], size=DEMO_DATA["size"],
                              distractors=DEMO_DATA["distractors"], junk=DEMO_DATA["junk"], workers=2,
                              progress=not args.quiet)
    ds = load("market1501", str(folder))

    raw = {**DEMO_CONFIG}
    raw["data"] = {**DEMO_CONFIG["data"], "root": str(folder)}
    raw["train"] = {**DEMO_CONFIG["train"], "out_dir": str(out), "progress": not args.quiet}
    if args.epochs is not None:
        raw["train"]["epochs"] = int(args.epochs)
        raw["train"]["eval_every"] = max(1, int(args.epochs) // 2)
    raw, touched = apply_overrides(raw, list(args.overrides))
    cfg = config_from_dict(raw, "reidkit demo", None, touched)

    print("[2/4] STADB (ResNet-18 trunk, 128x64, no ImageNet weights), untrained ...", flush=True)
    trainer = Trainer(cfg, dataset=ds, quiet=args.quiet)
    trainer.setup()
    t_eval = time.perf_counter()
    untrained = trainer.evaluate()
    eval_seconds = time.perf_counter() - t_eval

    spent = time.perf_counter() - start
    reserve = 1.5 * eval_seconds + 10.0  # the final evaluation costs what the untrained one did; then pictures
    budget = float(args.seconds_budget) - spent - reserve
    if budget <= 0:
        raise ReidkitError(f"--seconds-budget {args.seconds_budget:g}: setup alone took {spent:.0f} s; "
                           "expected a larger budget")
    cfg.train.max_seconds = budget
    save_config(trainer.cfg, out / "config.yaml")  # the budget is part of what runs
    print(f"[3/4] training ({cfg.train.epochs} epochs of {len(trainer.sampler)} batches of "
          f"{cfg.sampler.p}x{cfg.sampler.k}, budget {budget:.0f} s) ...", flush=True)
    result = trainer.fit()
    trained = result.final

    print("[4/4] report ...", flush=True)
    seconds = time.perf_counter() - start
    metrics = {
        "trained": {k: trained.get(k) for k in ("mAP", "rank1", "rank5", "rank10", "mINP", "cmc")},
        "untrained": {k: untrained.get(k) for k in ("mAP", "rank1", "rank5", "rank10", "mINP", "cmc")},
        "epochs": result.epochs_run,
        "seconds": round(seconds, 1),
        "units": "percent",
        "settings": trainer.eval_settings(),
        "dataset": {"root": str(folder), **{s: v for s, v in ds.stats().items()}},
    }
    try:
        from reidkit.viz.curves import plot_cmc

        plot_cmc({"trained": [c / 100 for c in trained["cmc"]], "untrained": [c / 100 for c in untrained["cmc"]]},
                 out / "cmc.png", title="CMC, synthetic test set", max_rank=20)
    except ImportError:
        pass
    RunLog(out, enabled=True, tensorboard=False, history=result.history).flush()
    picture = _rank_list(trainer, out / "ranklist.png")
    seconds = time.perf_counter() - start
    metrics["seconds"] = round(seconds, 1)
    atomic_write_json(out / "metrics.json", metrics)
    print(_table({"STADB-R18 untrained": untrained, f"STADB-R18 trained ({result.epochs_run} ep)": trained}))
    print(f"\n  wall time {seconds:.0f} s; results in {out}/ (metrics.json, cmc.png, losses.png, accuracy.png"
          + (", ranklist.png" if picture else "") + ")")
    return 0
