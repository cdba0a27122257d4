"""``reidkit models``: list the models with parameter counts and embedding sizes."""

from __future__ import annotations

import argparse
import json

from reidkit.commands.argtypes import int_in
from reidkit.utils.limits import MAX_CLASSES

# Parameter counts the papers report (751 Market-1501 classes).
PAPER_PARAMS: dict[str, str] = {
    "stadb": "paper: 35.81M total (§4.5), 'model size 34.8M' (§4.2)",
    "bdb": "paper (STADB §4.5): 32.27M",
}
# STADB's other structures, counted beside the default one: the second branch without BDB's extra bottleneck,
# and CBAM as STADB's public code has it (r = 4, 3×3 spatial conv with bias, no BN)
STADB_STRUCTURES: tuple[dict[str, str], ...] = (
    {"part_block": "bottleneck", "cbam": "reference"},
    {"part_block": "bottleneck", "cbam": "stadb_code"},
    {"part_block": "none", "cbam": "reference"},
    {"part_block": "none", "cbam": "stadb_code"},
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--num-classes N`` (751) and ``--json``."""
    parser.add_argument("--num-classes", type=int_in(1, MAX_CLASSES), default=751, metavar="N",
                        help="training identities the classifiers are sized for (default 751, Market-1501)")
    parser.add_argument("--json", action="store_true",
                        help='print {"name": {"params": .., "params_inference": .., "embedding_dim": ..}, ...}')


def collect(num_classes: int) -> dict[str, dict[str, object]]:
    """Build every registered model (random init) and return its counts and embedding size."""
    import torch

    from reidkit.errors import ReidkitError
    from reidkit.models import build, names

    if num_classes < 1:
        raise ReidkitError(f"--num-classes must be >= 1, got {num_classes}")
    from reidkit.models.registry import option_defaults

    rows: dict[str, dict[str, object]] = {}
    defaults = option_defaults("stadb")
    variants = [(name, {}) for name in names()]
    variants += [(f"stadb[{','.join(f'{k}={v}' for k, v in opts.items())}]", opts) for opts in STADB_STRUCTURES
                 if any(defaults[k] != v for k, v in opts.items())]
    with torch.device("meta"):
        for label, opts in variants:
            model = build(label.split("[")[0], num_classes, **opts)
            counts = model.param_counts()
            rows[label] = {"params": counts["total"], "params_inference": counts["inference"],
                           "embedding_dim": model.embedding_dim, "input_size": list(model.input_size)}
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); returns 0."""
    rows = collect(args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(10, *(len(name) for name in rows))
    print(f"{'model':<{width}} {'params':>10} {'inference':>10} {'embedding':>9}  {'input':>8}  note")
    for name, row in rows.items():
        h, w = row["input_size"]  # type: ignore[misc]
        note = PAPER_PARAMS.get(name, "") or ("STADB structure, against the paper's 35.81M / 34.8M"
                                              if name.startswith("stadb[") else "")
        print(f"{name:<{width}} {row['params'] / 1e6:>9.2f}M {row['params_inference'] / 1e6:>9.2f}M "  # type: ignore[operator]
              f"{row['embedding_dim']:>9}  {h:>4}x{w:<3}  {note}")
    print(f"params: all parameters with classifiers for {args.num_classes} classes; inference: without the "
          "classifier layers (what the test embedding uses)")
    return 0
