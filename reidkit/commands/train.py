"""``reidkit train``: train a model from a YAML config (one process, or one per GPU under ``torchrun``).

Examples:
    reidkit train --preset stadb_market1501                     # `reidkit presets` lists them
    reidkit train --preset mancs_market1501 --set data.root=/data --set optim.lr=3e-4
    reidkit train --config my_run.yaml                          # a file; `_base_: stadb_market1501` inherits a preset
    reidkit train --preset stadb_market1501 --set "data.dataset=[market1501, dukemtmcreid]" \
        --set "data.root=[data/market1501, data/dukemtmc-reid]"   # several training datasets
    reidkit train --out runs/stadb_market1501 --resume          # continue from the run folder's config
    torchrun --nproc_per_node 4 -m reidkit train --preset stadb_market1501
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reidkit.commands.argtypes import path_arg
from reidkit.errors import ConfigError

if TYPE_CHECKING:
    from reidkit.engine.config import RunConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``reidkit train``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", type=path_arg, metavar="YAML",
                        help="config file (or a preset's name); with --resume and no --config, the run "
                             "folder's config.yaml is used")
    source.add_argument("--preset", "-p", metavar="NAME",
                        help="a preset shipped with reidkit, e.g. stadb_market1501 (`reidkit presets` lists them)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-4 --set train.epochs=10 "
                             "(values are YAML scalars; repeatable)")
    parser.add_argument("--out", type=path_arg, metavar="DIR", help="run folder (default: train.out_dir of the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest loadable checkpoint in the run folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--print-config", action="store_true",
                        help="print the config the run would use (every derived value written out: input "
                             "sizes, the schedule's numbers, all model options) and exit")


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config ``args`` describe: preset or file (or the run folder's config.yaml on --resume) + --set +
    --out."""
    from reidkit.engine.config import load_config
    from reidkit.engine.presets import preset_path

    overrides = list(args.overrides or [])
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    path = str(preset_path(args.preset)) if getattr(args, "preset", None) else args.config
    if path is None:
        if args.resume and args.out and (Path(args.out) / "config.yaml").is_file():
            path = str(Path(args.out) / "config.yaml")
        else:
            raise ConfigError("reidkit train: expected --preset NAME or --config FILE (or --resume --out RUN_DIR "
                              "with a config.yaml)")
    return load_config(path, overrides)


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success, 1 when training stopped on a non-finite loss."""
    from reidkit.engine.config import resolve_effective

    cfg = resolve_config(args)
    if args.quiet:
        cfg.train.progress = False
    if args.print_config:  # the values the run would use: sizes, schedule and model options resolved
        import yaml

        from reidkit.engine.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(resolve_effective(cfg)), sort_keys=False), end="")
        return 0
    from reidkit.engine.trainer import NonFiniteLossError, train

    try:
        result = train(cfg, resume=args.resume, quiet=args.quiet)
    except NonFiniteLossError as exc:
        print(f"reidkit: error: {exc}", file=sys.stderr)
        return 1
    if result.final:  # the one result line stays, even with --quiet
        f = result.final
        best = result.best or {}
        print(f"done: {result.run_dir}  mAP {f.get('mAP', float('nan')):.2f}  rank-1 {f.get('rank1', float('nan')):.2f}"
              + (f"  (best mAP {best['mAP']:.2f} at epoch {best['epoch']})" if best else ""))
    if result.test_sets and args.quiet:  # the test-set table is a result too (without --quiet the run printed it)
        from reidkit.eval.summary import table_of_test_sets

        print(table_of_test_sets(result.test_sets))
    return 0
