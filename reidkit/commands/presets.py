"""``reidkit presets``: list the training presets shipped with reidkit and the paper row each reproduces.

Examples:
    reidkit presets
    reidkit presets --json
    reidkit train --preset stadb_market1501 --set data.root=/datasets/Market-1501-v15.09.15
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json``."""
    parser.add_argument("--json", action="store_true",
                        help='print {"name": {"reproduces": .., "file": ..}, ...} instead of the table')


def run(args: argparse.Namespace) -> int:
    """Print every preset's name and the paper row it reproduces; returns 0."""
    from reidkit.engine.presets import preset_names, preset_path, preset_summary

    names = preset_names()
    if args.json:
        print(json.dumps({n: {"reproduces": preset_summary(n), "file": str(preset_path(n))} for n in names},
                         indent=2, ensure_ascii=False))
        return 0
    width = max(len(n) for n in names)
    print(f"{'preset':<{width}}  reproduces")
    for name in names:
        print(f"{name:<{width}}  {preset_summary(name)}")
    print(f"\ntrain one with `reidkit train --preset NAME`; base a config on one with `_base_: NAME`; "
          f"files in {preset_path(names[0]).parent}")
    return 0
