"""Watching a run: per-epoch metrics to CSV and JSON, TensorBoard scalars, PNG training curves, env.json.

Files written into the run folder (all atomically, by rank 0 only):

- ``metrics.csv`` / ``history.json``: one row per epoch (learning rate, each loss term,
  images/s, seconds waiting for data, mAP / rank-1 / mINP when evaluated);
- ``tb/``: TensorBoard event files (skipped, said in one warning, if ``torch.utils.tensorboard`` cannot be
  imported);
- ``losses.png``, ``lr.png``, ``accuracy.png``: curves over epochs;
- ``env.json``: ``{"runs": [...]}``, one record per start or resume of the run (oldest first): seed, torch /
  reidkit / Python versions, git commit, device, world size (``environment_records`` reads it, and the
  single record older versions wrote).
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from reidkit.errors import ReidkitError
from reidkit.utils.atomic import atomic_path, atomic_write_json, atomic_write_text
from reidkit.utils.limits import MAX_SIDECAR_BYTES
from reidkit.utils.textfile import read_text
from reidkit.version import __version__

__all__ = ["ENV_FILE", "RunLog", "environment_info", "environment_records", "load_history", "plot_history"]


ENV_FILE = "env.json"


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return commit + ("-dirty" if dirty else "")


def environment_info(seed: int, device: torch.device | str, world_size: int = 1) -> dict[str, Any]:
    """What a run needs to be reproduced: seed, versions, git commit (when the code is in a git clone)."""
    repo = Path(__file__).resolve().parents[2]  # the folder holding the reidkit package
    info: dict[str, Any] = {
        "seed": seed,
        "reidkit": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git_commit(repo),
        "device": str(device),
        "world_size": world_size,
        "num_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fallback_plot(series: dict[str, list[float]], x: list[float], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, ys in series.items():
        pts = [(a, b) for a, b in zip(x, ys, strict=False) if b is not None and math.isfinite(b)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None, label=name)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _plot(series: dict[str, list[float]], x: list[float], out_png: Path, title: str) -> None:
    try:
        from reidkit.viz.curves import plot_series
    except ImportError:
        _fallback_plot(series, x, out_png, title)
        return
    plot_series(series, x, out_png, title)


def plot_history(history: list[dict[str, Any]], run_dir: str | Path) -> list[Path]:
    """Draw ``losses.png``, ``lr.png`` and (if evaluated) ``accuracy.png`` from the per-epoch rows."""
    run_dir = Path(run_dir)
    if not history:
        return []
    written: list[Path] = []
    x = [float(r["epoch"]) for r in history]
    loss_keys = [k for k in history[-1] if k.startswith("loss")]
    losses = {k: [_num(r.get(k)) for r in history] for k in loss_keys}
    _plot(losses, x, run_dir / "losses.png", "training losses")
    written.append(run_dir / "losses.png")
    _plot({"lr": [_num(r.get("lr")) for r in history]}, x, run_dir / "lr.png", "learning rate")
    written.append(run_dir / "lr.png")
    evald = [r for r in history if r.get("mAP") is not None]
    if evald:
        xe = [float(r["epoch"]) for r in evald]
        series = {"mAP": [_num(r["mAP"]) for r in evald], "rank-1": [_num(r.get("rank1")) for r in evald]}
        _plot(series, xe, run_dir / "accuracy.png", "evaluation (%)")
        written.append(run_dir / "accuracy.png")
    return written


def _num(value: Any) -> float:
    if value is None or value == "":
        return float("nan")
    return float(value)


def _tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` into ``log_dir``, or None, said in one warning, when TensorBoard is not
    installed or cannot write there (TensorBoard is optional: the run goes on without it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("train.tensorboard is on, but TensorBoard is not installed (pip install tensorboard): no tb/ "
                      "logs for this run (--set train.tensorboard=false to not ask for them)", stacklevel=3)
        return None
    try:
        return SummaryWriter(log_dir=str(log_dir))
    except Exception as exc:  # any failure only costs the TensorBoard logs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(f"{log_dir}: cannot write TensorBoard logs ({first}); the run goes on without them",
                      stacklevel=3)
        return None


class RunLog:
    """Per-epoch logging into a run folder; a no-op object on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 plots: bool = True, history: list[dict[str, Any]] | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.plots = plots
        self.history: list[dict[str, Any]] = list(history or [])
        self._tb = None
        if enabled and tensorboard:
            self._tb = _tensorboard_writer(self.run_dir / "tb")

    def step(self, global_step: int, values: dict[str, float]) -> None:
        """Per-step scalars (TensorBoard only)."""
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"step/{key}", value, global_step)

    def epoch(self, row: dict[str, Any]) -> None:
        """Append (or replace, for a repeated epoch) one epoch's row and rewrite the CSV, JSON and plots."""
        if not self.enabled:
            return
        self.history = [r for r in self.history if r.get("epoch") != row.get("epoch")]
        self.history.append(dict(row))
        self.history.sort(key=lambda r: r.get("epoch", 0))
        if self._tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch" and value is not None:
                    self._tb.add_scalar(f"epoch/{key}", value, int(row.get("epoch", 0)))
            self._tb.flush()
        self.flush()

    def flush(self) -> None:
        """Write ``metrics.csv``, ``history.json`` and the plots from the rows so far."""
        if not self.enabled:
            return
        atomic_write_json(self.run_dir / "history.json", self.history)
        keys: list[str] = []
        for r in self.history:
            for k in r:
                if k not in keys and not isinstance(r[k], (list, dict)):
                    keys.append(k)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in self.history:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())
        if self.plots:
            try:
                plot_history(self.history, self.run_dir)
            except Exception as exc:  # a plotting failure must not stop training
                warnings.warn(f"could not draw training plots: {exc}", stacklevel=2)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``run_dir/name`` as JSON (rank 0 only)."""
        if self.enabled:
            atomic_write_json(self.run_dir / name, obj)

    def close(self) -> None:
        """Close TensorBoard."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def load_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Read ``history.json`` of a run folder ([] if absent or unreadable)."""
    try:
        data = json.loads(read_text(Path(run_dir) / "history.json", limit=MAX_SIDECAR_BYTES,
                                    what="a run's history.json"))
    except (ReidkitError, ValueError, RecursionError):
        return []
    return data if isinstance(data, list) else []


def environment_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run folder's ``env.json``, one per start or resume, oldest first; a file written before
    runs were recorded separately (one record) is a list of that record; [] if absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / ENV_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return [r for r in data["runs"] if isinstance(r, dict)]
    return [data] if isinstance(data, dict) else []
