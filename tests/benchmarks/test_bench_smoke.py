"""Smoke tests: every script in ``benchmarks/`` runs at tiny sizes (``--quick``) and prints its table.

Each script runs in a subprocess from a temporary working folder (so relative default output paths
land there), with one thread. Nothing here checks a timing: the figures are the scripts' business
(BENCHMARKS.md); these tests only keep the scripts working. A script without a ``--quick`` flag is
skipped with a message saying so, and any new script in ``benchmarks/`` is picked up automatically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))

# extra arguments after --quick that keep a run short; what each run must print
EXTRA: dict[str, list[str]] = {
    "bench_extract.py": ["--threads", "1"],  # eager vs ONNX Runtime (inductor compiles for minutes)
    "bench_train.py": ["--models", "stadb"],
    "bench_int8.py": ["--threads", "1"],
    "bench_gallery.py": ["--threads", "1"],
    "bench_index_writes.py": ["--threads", "1"],
    "ablation.py": ["--variants", "baseline,stadb,m0", "--variant", "m0=mancs:w_rank=0", "--bn-check"],
}
EXPECT: dict[str, list[str]] = {
    "bench_extract.py": ["| stadb | 4 | eager |", "| stadb | 4 | onnx |", "vs eager"],
    "bench_train.py": ["| stadb |", "data share", "per-image"],
    "bench_data.py": ["| stadb |", "| mancs |"],
    "bench_synth.py": ["| render + encode, 1 process |"],
    "bench_eval.py": ["| quick", "reidkit"],
    "bench_gallery.py": ["| flat |", "| hnsw |", "| ivfpq |", "| ivfpq + refine ×4 |", "| ivfpq-grown |"],
    "bench_index_writes.py": ["| 3,000 | flat |", "| 3,000 | hnsw |"],
    "bench_digest.py": ["| sha256 (reidkit's, file_digest) |", "| crc32 (zlib) |"],
    "ablation.py": ["| baseline |", "| stadb |", "| m0 |", "re-estimated"],
    "bench_int8.py": ["| stadb | 64×32 | float32 |", "| stadb | 64×32 | int8 static |", "| stadb-untrained |",
                      "avx512_vnni"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _help(script: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=REPO, env=_env(),
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, f"{script} --help failed:\n{out.stderr[-2000:]}"
    return out.stdout


def test_every_script_is_listed() -> None:
    assert {"bench_extract.py", "bench_train.py", "bench_data.py", "bench_synth.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.faiss)
                                    if s in ("bench_gallery.py", "bench_index_writes.py") else s
                                    for s in SCRIPTS])
def test_script_runs_quick(script: str, tmp_path: Path) -> None:
    if "--quick" not in _help(script):
        pytest.skip(f"benchmarks/{script} has no --quick flag; cannot smoke-test it at tiny sizes")
    cmd = [sys.executable, str(BENCH / script), "--quick", *EXTRA.get(script, [])]
    out = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, check=False,
                         timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert "|---" in out.stdout, f"{script} printed no markdown table:\n{out.stdout[-2000:]}"
    for text in EXPECT.get(script, []):
        assert text in out.stdout, f"{script}: expected {text!r} in its output:\n{out.stdout[-3000:]}"
    assert "nan" not in out.stdout.split("|---", 1)[1].lower().replace("n/a", ""), out.stdout[-3000:]


def test_bench_train_gpu_options_are_there() -> None:
    """The GPU run (not measured on the CPU machines) keeps its options: a GPU session only has to run it."""
    text = _help("bench_train.py")
    for opt in ("--device", "--amp", "--channels-last", "--compile", "--peak-tflops", "--flops"):
        assert opt in text


def test_rates_survive_a_cpu_clock_that_did_not_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick run can finish inside one tick of the CPU clock (``cpu_seconds`` unchanged): the rate is
    "n/a" in the table, never a ``ZeroDivisionError`` (``bench_data.py --quick`` once failed so on a fresh
    clone)."""
    import importlib
    import math

    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    bench_data = importlib.import_module("bench_data")
    util = importlib.import_module("_util")
    monkeypatch.setattr(bench_data, "cpu_seconds", lambda: 12.5)  # the clock never moves
    from reidkit.data.augment import AugmentConfig, TrainAugment
    from reidkit.data.cache import ImageCache
    from reidkit.data.sampler import PKSampler

    cache = ImageCache(torch.zeros(8, 3, 16, 8, dtype=torch.uint8))
    aug = TrainAugment(AugmentConfig.for_pipeline("none", size=(16, 8)))
    sampler = PKSampler([0, 0, 1, 1, 2, 2, 3, 3], 2, 2, seed=0, num_batches=2)
    wall, cpu = bench_data.bench_batched(cache, aug, sampler, "cpu")
    assert wall > 0 and math.isnan(cpu)
    assert util.fmt(cpu) == "n/a" and util.fmt(util.ratio(wall, cpu), ".1f", "×") == "n/a"
    assert util.rate(6, 2.0) == 3.0 and util.fmt(util.rate(6, 2.0), ".1f", "×") == "3.0×"


def test_ablation_learning_curve_runs_each_budget_and_reports_without_training(tmp_path: Path) -> None:
    """``--budgets`` trains every variant at each number of training images (its own schedule: the batches per
    epoch follow the budget), tabulates them per budget, and ``--report`` tabulates finished runs only."""
    base = [sys.executable, str(BENCH / "ablation.py"), "--quick", "--out", str(tmp_path / "lc"), "--variants", "bdb"]
    out = subprocess.run([*base, "--budgets", "4,8"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         check=False, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| bdb |")]
    assert [r.split(" | ")[1:3] for r in rows] == [["4", "1"], ["8", "1"]]
    for images in (4, 8):
        run = json.loads((tmp_path / "lc" / f"img{images}" / "bdb_seed0" / "ablation_run.json").read_text())
        assert run["train_images"] == images  # 1 epoch of 2×2: one batch per 4 images
        assert {"mAP_flip", "mAP_fuse_normalized"} <= set(run)  # BDB evaluates without flip: flip is the other
    report = subprocess.run([*base, "--budgets", "4,8,12", "--seeds", "0,1", "--report"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, check=False, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert not (tmp_path / "lc" / "img12").exists() and not (tmp_path / "lc" / "img4" / "bdb_seed1").exists()
    assert [line.split(" | ")[1:3] for line in report.stdout.splitlines() if line.startswith("| bdb |")] == \
        [["4", "1"], ["8", "1"]]
