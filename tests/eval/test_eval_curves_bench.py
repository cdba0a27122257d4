"""CMC / training-curve PNGs and the benchmark's --quick smoke run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reidkit.errors import ReidkitError
from reidkit.viz.curves import plot_cmc, plot_series

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


def test_plot_cmc_and_series(tmp_path: Path) -> None:
    p = plot_cmc([0.5, 0.7, 0.9, 1.0], tmp_path / "a" / "cmc.png", title="x")
    assert p.read_bytes()[:8] == PNG
    p2 = plot_cmc({"plain": [0.5, 0.6], "rerank": [0.6, 0.8]}, tmp_path / "cmc2.png", max_rank=1)
    assert p2.read_bytes()[:8] == PNG
    s = plot_series({"loss": [3.0, 2.0, float("nan"), 1.0], "mAP": [0.1, None]}, [1, 2, 3, 4],
                    tmp_path / "curves.png", "training")
    assert s.read_bytes()[:8] == PNG
    assert plot_series({"loss": [1.0, 0.5]}, None, tmp_path / "c2.png").read_bytes()[:8] == PNG
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith(".")) == []  # no temp files left
    with pytest.raises(ReidkitError):
        plot_series({}, None, tmp_path / "none.png")
    with pytest.raises(ReidkitError):
        plot_cmc([], tmp_path / "none.png")


def test_benchmark_quick_runs() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_eval.py"), "--quick", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| problem") and len(lines) == 4
    assert "quick" in lines[2] and "rerank" in lines[3]
