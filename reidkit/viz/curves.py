"""Line plots as PNG files (matplotlib, Agg backend): CMC curves and training curves.

Both functions write atomically through ``reidkit.utils.atomic.atomic_path`` and never open a
window, so they work on headless machines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.utils.atomic import atomic_path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: object, out_png: str | os.PathLike[str]) -> Path:
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)  # type: ignore[attr-defined]
    return out


def plot_cmc(
    cmc: Sequence[float] | Mapping[str, Sequence[float]],
    out_png: str | os.PathLike[str],
    title: str = "CMC",
    max_rank: int | None = None,
) -> Path:
    """Draw one CMC curve (fractions in [0, 1], entry k-1 = rank k) or several (name -> curve) as a PNG.

    The y axis is in percent; rank 1/5/10 are marked. Returns the written path.
    """
    curves = {"CMC": list(cmc)} if not isinstance(cmc, Mapping) else {k: list(v) for k, v in cmc.items()}
    if not curves or any(len(v) == 0 for v in curves.values()):
        raise ReidkitError(f"{out_png}: expected at least one non-empty CMC curve")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    try:
        for name, values in curves.items():
            n = len(values) if max_rank is None else min(max_rank, len(values))
            ranks = list(range(1, n + 1))
            ys = [100.0 * float(v) for v in values[:n]]
            label = f"{name} (R1 {ys[0]:.1f}%)"
            ax.plot(ranks, ys, marker="o" if n <= 20 else None, markersize=3, label=label)
            for r in (1, 5, 10):
                if r <= n:
                    ax.scatter([r], [ys[r - 1]], s=14, zorder=3)
        ax.set_xlabel("rank")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("matching rate (%)")
        ax.set_ylim(0, 100.5)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        return _save(fig, out_png)
    finally:
        plt.close(fig)


def plot_series(
    series: Mapping[str, Sequence[float]],
    x: Sequence[float] | None,
    out_png: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Draw named series (e.g. losses or mAP per epoch) against ``x`` (None: 0, 1, 2, ...) as a PNG.

    Series shorter than ``x`` are drawn over the first ``len(series)`` x values; NaN/None points are
    gaps. Series whose names share a prefix before ``/`` share a colour family only by matplotlib's cycle.
    """
    if not series:
        raise ReidkitError(f"{out_png}: expected at least one series to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    try:
        for name, values in series.items():
            vals = [float("nan") if v is None else float(v) for v in values]
            xs = list(range(len(vals))) if x is None else [float(v) for v in list(x)[: len(vals)]]
            vals = vals[: len(xs)]
            if not vals or all(math.isnan(v) for v in vals):
                continue
            ax.plot(xs, vals, label=str(name), marker="o" if len(vals) <= 30 else None, markersize=2.5)
        ax.set_xlabel("epoch" if x is not None else "step")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        handles, _labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8)
        fig.tight_layout()
        return _save(fig, out_png)
    finally:
        plt.close(fig)
